"""One websocket to a subtensor node, and the fault handling every call on it goes through.

`SubstrateConnection.call` runs a function on the substrate-interface handle with `timeout_s` on
every receive; a dropped or timed-out connection is reopened once and the function run again,
and whatever still goes wrong leaves as a typed error: ChainTimeout, ChainConnectionError,
ChainDataError (an answer we cannot decode) or ChainError (the node refused the request). A
retried call must be safe to run twice (reads are; a submission resends the same signed bytes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from scalecodec.exceptions import RemainingScaleBytesNotEmptyException
from substrateinterface import SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException
from websocket import WebSocketException, WebSocketTimeoutException

from gauntlet_jax.chain.errors import ChainConnectionError, ChainDataError, ChainTimeout
from gauntlet_jax.errors import ChainError

log = logging.getLogger(__name__)

T = TypeVar("T")
# Connection faults worth one retry on a fresh websocket.
CONNECTION_ERRORS = (WebSocketException, ConnectionError, OSError)


class SubstrateConnection:
    """A substrate-interface handle on `url`, opened now, reopened when it drops. Thread-safe:
    `lock` serialises every call (hold it across calls that must not interleave)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self.url = url
        self.timeout_s = float(timeout_s)
        self.lock = threading.RLock()
        self._substrate: SubstrateInterface | None = None
        self._connect()

    def _connect(self) -> None:
        try:
            self._substrate = SubstrateInterface(
                url=self.url, ws_options={"timeout": self.timeout_s}, auto_reconnect=True
            )
        except WebSocketTimeoutException:
            raise ChainTimeout(f"{self.url}: no answer within {self.timeout_s} s") from None
        except CONNECTION_ERRORS as exc:
            raise ChainConnectionError(f"{self.url}: cannot connect ({exc})") from None

    def _reconnect(self) -> None:
        """A fresh websocket on the same interface (its metadata cache survives)."""
        substrate = self._substrate
        if substrate is None:
            self._connect()
            return
        with contextlib.suppress(CONNECTION_ERRORS):
            substrate.close()
        try:
            substrate.connect_websocket()
        except WebSocketTimeoutException:
            raise ChainTimeout(f"{self.url}: no answer within {self.timeout_s} s") from None
        except CONNECTION_ERRORS as exc:
            raise ChainConnectionError(f"{self.url}: cannot reconnect ({exc})") from None

    def call(self, what: str, fn: Callable[[SubstrateInterface], T]) -> T:
        """Runs fn; on a dropped or timed-out connection reconnects once and runs it again."""
        with self.lock:
            for attempt in (1, 2):
                if self._substrate is None:
                    self._connect()
                try:
                    return fn(self._substrate)  # type: ignore[arg-type]
                except WebSocketTimeoutException:
                    if attempt == 2:
                        raise ChainTimeout(
                            f"{self.url}: {what}: no answer within {self.timeout_s} s"
                        ) from None
                    log.warning("%s: %s timed out; reconnecting once", self.url, what)
                except CONNECTION_ERRORS as exc:
                    if attempt == 2:
                        raise ChainConnectionError(f"{self.url}: {what}: {exc}") from None
                    log.warning(
                        "%s: %s: connection lost (%s); reconnecting once", self.url, what, exc
                    )
                except SubstrateRequestException as exc:
                    raise ChainError(f"{self.url}: {what}: {exc}") from None
                except json.JSONDecodeError as exc:
                    # websocket-client hands over an empty frame when the peer closes.
                    if exc.doc.strip():
                        raise ChainDataError(f"{self.url}: {what}: malformed JSON") from None
                    if attempt == 2:
                        raise ChainConnectionError(
                            f"{self.url}: {what}: connection closed"
                        ) from None
                    log.warning("%s: %s: connection closed; reconnecting once", self.url, what)
                except (
                    ValueError,
                    TypeError,
                    KeyError,
                    RemainingScaleBytesNotEmptyException,
                ) as exc:
                    raise ChainDataError(
                        f"{self.url}: {what}: undecodable answer ({exc})"
                    ) from None
                self._reconnect()
        raise AssertionError("unreachable")

    @property
    def substrate(self) -> SubstrateInterface:
        """The underlying interface (tests and admin tools; it is not thread-safe)."""
        if self._substrate is None:
            self._connect()
        return self._substrate  # type: ignore[return-value]

    def close(self) -> None:
        with self.lock:
            if self._substrate is not None:
                with contextlib.suppress(CONNECTION_ERRORS):
                    self._substrate.close()
                self._substrate = None
