"""A thin subtensor client over substrate-interface (no bittensor SDK).

Reads: the block clock (`chain_getHeader`), `Timestamp.Now` at a block, the metagraph
(SubtensorModule `SubnetworkN`, `Keys`, `TotalHotkeyAlpha`, `LastUpdate`, `ValidatorPermit`, all at
one block hash so they agree), `Commitments.CommitmentOf` (raw `RawN` fields, validated as hostile),
`Weights`. Writes: signed extrinsics `SubtensorModule.set_weights`, `commit_weights`,
`reveal_weights` and `Commitments.set_commitment`, included in a block before we return, with every
`ExtrinsicFailed` module error mapped to its typed `PalletError` and every pool rejection
(`Invalid Transaction`) to `TransactionRejected`.

Before sending weights we do bittensor's u16 conversion and check the rate limit ourselves
(the extrinsic executes in the next block: block + 1 − LastUpdate ≥ WeightsSetRateLimit), so a
doomed extrinsic never costs a fee. Subnets with commit-reveal get a hash commit
(`commit_weights`, hash as subtensor recomputes it) and a later `reveal_pending`; runtimes whose
commit-reveal is timelocked (they have `CommitRevealWeightsVersion`, CRv3 via drand) raise
`TimelockedCommitRevealUnsupported` instead of guessing.

Connections: a websocket with `timeout_s` on every receive. A dropped or timed-out connection is
reopened once and the read retried; a retried submission resends the same signed bytes (same
nonce, so it can never apply twice). Nonces come from `system_accountNextIndex` and never go
backwards within this process, so two quick extrinsics get n and n + 1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from scalecodec.exceptions import RemainingScaleBytesNotEmptyException
from substrateinterface import SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException
from websocket import WebSocketException, WebSocketTimeoutException

from gauntlet_jax.chain import weights as wmath
from gauntlet_jax.chain.base import (
    CUSTOM_TX_ERRORS,
    MAX_COMMITMENT_CHARS,
    ChainConnectionError,
    ChainDataError,
    ChainTimeout,
    CommittingWeightsTooFast,
    HotKeyNotRegisteredInSubNet,
    Metagraph,
    PalletError,
    PendingReveal,
    SettingWeightsTooFast,
    SubnetNotExists,
    TimelockedCommitRevealUnsupported,
    TransactionRejected,
    WeightsResult,
    blocks_until_weights_allowed,
    pallet_error,
    validate_commitment,
    window_of,
)
from gauntlet_jax.chain.keys import Hotkey
from gauntlet_jax.errors import ChainError

log = logging.getLogger(__name__)

T = TypeVar("T")
RAO_PER_TOKEN = 1e9
RAW_FIELD_MAX = 128  # the largest `Data::RawN` variant
_RAW_VARIANT = re.compile(r"^Raw(\d{1,3})$")
# Connection faults worth one retry on a fresh websocket.
_CONNECTION_ERRORS = (WebSocketException, ConnectionError, OSError)


@dataclass(frozen=True)
class _WeightsContext:
    head: int
    uid: int
    last_update: int
    commit_reveal: bool
    rate_limit: int
    timelocked: bool


class SubtensorChain:
    """A `Chain` on a subtensor node (`ws://` / `wss://`). Writes are signed by `hotkey`."""

    def __init__(
        self,
        url: str,
        hotkey: Hotkey | None = None,
        *,
        timeout_s: float = 30.0,
        wait_for_inclusion: bool = True,
    ) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ChainError(f"subtensor url must start with ws:// or wss://, got {url!r}")
        self.url = url
        self._hotkey = hotkey
        self.timeout_s = float(timeout_s)
        self.wait_for_inclusion = wait_for_inclusion
        self._lock = threading.RLock()
        self._substrate: SubstrateInterface | None = None
        self._last_nonce: int | None = None
        self._pending: list[PendingReveal] = []
        self._connect()

    def with_hotkey(self, hotkey: Hotkey | None) -> SubtensorChain:
        """Another handle on the same connection, signing with `hotkey` (its own nonces and
        pending reveals). Saves a metadata download per key, e.g. in simulations and tests."""
        other = object.__new__(SubtensorChain)
        other.url = self.url
        other._hotkey = hotkey
        other.timeout_s = self.timeout_s
        other.wait_for_inclusion = self.wait_for_inclusion
        other._lock = self._lock
        other._substrate = self.substrate
        other._last_nonce = None
        other._pending = []
        return other

    def __repr__(self) -> str:
        return f"SubtensorChain({self.url!r}, hotkey={self.hotkey!r})"

    # -------------------------------------------------------------------------------- connection

    def _connect(self) -> None:
        try:
            self._substrate = SubstrateInterface(
                url=self.url, ws_options={"timeout": self.timeout_s}, auto_reconnect=True
            )
        except WebSocketTimeoutException:
            raise ChainTimeout(f"{self.url}: no answer within {self.timeout_s} s") from None
        except _CONNECTION_ERRORS as exc:
            raise ChainConnectionError(f"{self.url}: cannot connect ({exc})") from None

    def _reconnect(self) -> None:
        """A fresh websocket on the same interface (its metadata cache survives)."""
        substrate = self._substrate
        if substrate is None:
            self._connect()
            return
        with contextlib.suppress(_CONNECTION_ERRORS):
            substrate.close()
        try:
            substrate.connect_websocket()
        except WebSocketTimeoutException:
            raise ChainTimeout(f"{self.url}: no answer within {self.timeout_s} s") from None
        except _CONNECTION_ERRORS as exc:
            raise ChainConnectionError(f"{self.url}: cannot reconnect ({exc})") from None

    def _with_retry(self, what: str, fn: Callable[[SubstrateInterface], T]) -> T:
        """Runs fn; on a dropped or timed-out connection reconnects once and runs it again."""
        with self._lock:
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
                except _CONNECTION_ERRORS as exc:
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

    def close(self) -> None:
        with self._lock:
            if self._substrate is not None:
                with contextlib.suppress(_CONNECTION_ERRORS):
                    self._substrate.close()
                self._substrate = None

    def __enter__(self) -> SubtensorChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def hotkey(self) -> str | None:
        return None if self._hotkey is None else self._hotkey.ss58_address

    def _require_hotkey(self) -> Hotkey:
        if self._hotkey is None:
            raise ChainError("this chain handle has no hotkey; writes need one")
        return self._hotkey

    @property
    def substrate(self) -> SubstrateInterface:
        """The underlying interface (tests and admin tools; it is not thread-safe)."""
        if self._substrate is None:
            self._connect()
        return self._substrate  # type: ignore[return-value]

    # ---------------------------------------------------------------------------------- reading

    @staticmethod
    def _head(si: SubstrateInterface) -> tuple[str, int]:
        header = si.rpc_request("chain_getHeader", [])["result"]
        number = header["number"]
        number = int(number, 16) if isinstance(number, str) else int(number)
        block_hash = si.rpc_request("chain_getBlockHash", [number])["result"]
        if not isinstance(block_hash, str):
            raise ChainDataError(f"no hash for head block {number}")
        return block_hash, number

    def current_block(self) -> int:
        def read(si: SubstrateInterface) -> int:
            number = si.rpc_request("chain_getHeader", [])["result"]["number"]
            return int(number, 16) if isinstance(number, str) else int(number)

        return self._with_retry("current block", read)

    def window(self, blocks_per_window: int) -> int:
        return window_of(self.current_block(), blocks_per_window)

    def block_hash(self, block: int) -> str:
        def read(si: SubstrateInterface) -> str:
            result = si.rpc_request("chain_getBlockHash", [int(block)])["result"]
            if not isinstance(result, str):
                raise ChainError(f"{self.url}: block {block} not found")
            return result

        return self._with_retry(f"hash of block {block}", read)

    def block_timestamp(self, block: int) -> float:
        block_hash = self.block_hash(block)

        def read(si: SubstrateInterface) -> float:
            millis = si.query("Timestamp", "Now", block_hash=block_hash).value
            if not isinstance(millis, int) or millis <= 0:
                raise ChainDataError(f"Timestamp.Now at block {block} is {millis!r}")
            return millis / 1000.0

        return self._with_retry(f"timestamp of block {block}", read)

    def _has_storage(self, si: SubstrateInterface, pallet: str, name: str) -> bool:
        si.init_runtime()
        return si.get_metadata_storage_function(pallet, name) is not None

    def _subnet_n(self, si: SubstrateInterface, netuid: int, block_hash: str) -> int:
        if not si.query("SubtensorModule", "NetworksAdded", [netuid], block_hash=block_hash).value:
            raise SubnetNotExists(detail=f"netuid {netuid} does not exist")
        return int(
            si.query("SubtensorModule", "SubnetworkN", [netuid], block_hash=block_hash).value
        )

    def metagraph(self, netuid: int) -> Metagraph:
        def read(si: SubstrateInterface) -> Metagraph:
            block_hash, block = self._head(si)
            n = self._subnet_n(si, netuid, block_hash)
            uids: list[int] = []
            hotkeys: list[str] = []
            if n:
                keys = [
                    si.create_storage_key("SubtensorModule", "Keys", [netuid, uid])
                    for uid in range(n)
                ]
                for uid, (_, value) in enumerate(si.query_multi(keys, block_hash=block_hash)):
                    if isinstance(value.value, str):
                        uids.append(uid)
                        hotkeys.append(value.value)
            stake = [0.0] * len(hotkeys)
            if hotkeys:
                stake_keys = [
                    si.create_storage_key("SubtensorModule", "TotalHotkeyAlpha", [hk, netuid])
                    for hk in hotkeys
                ]
                by_key = {
                    k.to_hex(): v.value
                    for k, v in si.query_multi(stake_keys, block_hash=block_hash)
                }
                stake = [
                    _as_int(by_key.get(k.to_hex()), "stake") / RAO_PER_TOKEN for k in stake_keys
                ]
            last = _as_vector(
                si.query("SubtensorModule", "LastUpdate", [netuid], block_hash=block_hash).value,
                n,
                0,
            )
            permits = _as_vector(
                si.query(
                    "SubtensorModule", "ValidatorPermit", [netuid], block_hash=block_hash
                ).value,
                n,
                False,
            )
            return Metagraph(
                netuid=netuid,
                block=block,
                uids=uids,
                hotkeys=tuple(hotkeys),
                stake=stake,
                validator_permit=[bool(permits[u]) for u in uids],
                last_update=[int(last[u]) for u in uids],
            )

        return self._with_retry(f"metagraph of netuid {netuid}", read)

    def _uid_of(
        self, si: SubstrateInterface, netuid: int, hotkey: str, block_hash: str
    ) -> int | None:
        found = si.query("SubtensorModule", "Uids", [netuid, hotkey], block_hash=block_hash)
        return None if found.value is None else int(found.value)

    def _hotkey_of(
        self, si: SubstrateInterface, netuid: int, uid: int, block_hash: str
    ) -> str | None:
        obj = si.query("SubtensorModule", "Keys", [netuid, uid], block_hash=block_hash)
        if not obj.meta_info.get("result_found", True):
            return None
        return obj.value if isinstance(obj.value, str) else None

    def get_commitment(self, netuid: int, who: int | str) -> str | None:
        def read(si: SubstrateInterface) -> str | None:
            block_hash, _ = self._head(si)
            hotkey = (
                who if isinstance(who, str) else self._hotkey_of(si, netuid, int(who), block_hash)
            )
            if hotkey is None:
                return None
            value = si.query(
                "Commitments", "CommitmentOf", [netuid, hotkey], block_hash=block_hash
            ).value
            return decode_commitment(value, f"commitment of {hotkey} on netuid {netuid}")

        return self._with_retry(f"commitment of {who} on netuid {netuid}", read)

    def get_commitments(self, netuid: int) -> dict[int, str]:
        graph = self.metagraph(netuid)

        def read(si: SubstrateInterface) -> dict[int, str]:
            keys = [
                si.create_storage_key("Commitments", "CommitmentOf", [netuid, hk])
                for hk in graph.hotkeys
            ]
            out: dict[int, str] = {}
            if not keys:
                return out
            values = {k.to_hex(): v.value for k, v in si.query_multi(keys)}
            for uid, hotkey, key in zip(graph.uids, graph.hotkeys, keys, strict=True):
                try:
                    data = decode_commitment(
                        values.get(key.to_hex()), f"commitment of uid {uid} ({hotkey})"
                    )
                except ChainDataError as exc:
                    log.warning("skipping %s", exc)
                    continue
                if data is not None:
                    out[int(uid)] = data
            return out

        return self._with_retry(f"commitments of netuid {netuid}", read)

    def get_weights(self, netuid: int, uid: int) -> dict[int, int]:
        def read(si: SubstrateInterface) -> dict[int, int]:
            rows = si.query("SubtensorModule", "Weights", [netuid, uid]).value or []
            out: dict[int, int] = {}
            for row in rows:
                dest, value = (row[0], row[1]) if isinstance(row, (list, tuple)) else (None, None)
                if not isinstance(dest, int) or not isinstance(value, int):
                    raise ChainDataError(f"Weights({netuid}, {uid}) row {row!r} is not (u16, u16)")
                out[dest] = value
            return out

        return self._with_retry(f"weights of uid {uid} on netuid {netuid}", read)

    def subnet_value(self, name: str, netuid: int) -> Any:
        """One SubtensorModule storage value keyed by netuid (e.g. WeightsSetRateLimit)."""
        return self._with_retry(
            f"{name} of netuid {netuid}",
            lambda si: si.query("SubtensorModule", name, [netuid]).value,
        )

    # ---------------------------------------------------------------------------------- writing

    def _next_nonce(self, si: SubstrateInterface, address: str) -> int:
        chain_nonce = int(si.rpc_request("system_accountNextIndex", [address])["result"])
        if self._last_nonce is not None and self._last_nonce + 1 > chain_nonce:
            return self._last_nonce + 1
        return chain_nonce

    def submit(self, module: str, function: str, params: dict[str, Any]) -> tuple[int | None, str]:
        """Signs and submits one call; returns (block it was included in, extrinsic hash).

        Raises the typed PalletError of an `ExtrinsicFailed`, TransactionRejected when the pool
        refuses it, ChainConnectionError / ChainTimeout when the node cannot be reached."""
        hotkey = self._require_hotkey()
        what = f"{module}.{function}"
        with self._lock:

            def build(si: SubstrateInterface):
                call = si.compose_call(
                    call_module=module, call_function=function, call_params=params
                )
                nonce = self._next_nonce(si, hotkey.ss58_address)
                return si.create_signed_extrinsic(
                    call=call, keypair=hotkey.keypair, nonce=nonce
                ), nonce

            extrinsic, nonce = self._with_retry(f"sign {what}", build)
            resent = False

            def send(si: SubstrateInterface):
                nonlocal resent
                try:
                    return si.submit_extrinsic(
                        extrinsic, wait_for_inclusion=self.wait_for_inclusion
                    )
                except SubstrateRequestException as exc:
                    error = exc.args[0] if exc.args else {}
                    rejected = _rejection(error, what)
                    if resent and rejected.reason in ("AlreadyImported", "Stale"):
                        raise ChainConnectionError(
                            f"{self.url}: {what}: the connection dropped after sending and the node "
                            f"now reports the extrinsic as {rejected.reason}; its inclusion is "
                            "unconfirmed"
                        ) from None
                    self._last_nonce = None  # re-read the nonce next time
                    raise rejected from None
                finally:
                    resent = True

            receipt = self._with_retry(f"submit {what}", send)
            self._last_nonce = nonce
            extrinsic_hash = f"0x{extrinsic.extrinsic_hash.hex()}"
            if not self.wait_for_inclusion:
                return None, extrinsic_hash

            def check(si: SubstrateInterface) -> int:
                for event in receipt.triggered_events:
                    value = event.value
                    if (
                        value.get("module_id") == "System"
                        and value.get("event_id") == "ExtrinsicFailed"
                    ):
                        raise _dispatch_error(si, value.get("attributes"), what)
                return int(si.get_block_number(receipt.block_hash))

            return self._with_retry(f"events of {what}", check), extrinsic_hash

    def commit(self, netuid: int, data: str) -> int:
        validate_commitment(data, f"commitment of {self.hotkey}")
        raw = data.encode("ascii")
        block, _ = self.submit(
            "Commitments",
            "set_commitment",
            {"netuid": netuid, "info": {"fields": [[{f"Raw{len(raw)}": raw}]]}},
        )
        return -1 if block is None else block

    def _weights_context(self, netuid: int) -> _WeightsContext:
        """What the weights checks need, read at one head block."""
        hotkey = self._require_hotkey().ss58_address

        def read(si: SubstrateInterface):
            block_hash, block = self._head(si)
            self._subnet_n(si, netuid, block_hash)
            uid = self._uid_of(si, netuid, hotkey, block_hash)
            if uid is None:
                raise HotKeyNotRegisteredInSubNet(
                    detail=f"{hotkey} on netuid {netuid} (checked before sending)"
                )
            last = _as_vector(
                si.query("SubtensorModule", "LastUpdate", [netuid], block_hash=block_hash).value,
                uid + 1,
                0,
            )[uid]
            commit_reveal = bool(
                si.query(
                    "SubtensorModule", "CommitRevealWeightsEnabled", [netuid], block_hash=block_hash
                ).value
            )
            rate_limit = int(
                si.query(
                    "SubtensorModule", "WeightsSetRateLimit", [netuid], block_hash=block_hash
                ).value
            )
            timelocked = self._has_storage(si, "SubtensorModule", "CommitRevealWeightsVersion")
            return _WeightsContext(block, uid, int(last), commit_reveal, rate_limit, timelocked)

        return self._with_retry(f"weights context on netuid {netuid}", read)

    def set_weights(
        self,
        netuid: int,
        uids: object,
        weights: object,
        version_key: int,
        *,
        precheck: bool = True,
    ) -> WeightsResult:
        """bittensor's u16 conversion, a local rate-limit check (skip with precheck=False), then
        `set_weights` (or `commit_weights` on a commit-reveal subnet)."""
        send_uids, send_values = wmath.convert_weights_for_emit(uids, weights)
        if not send_uids:
            return WeightsResult(included=False, method="none", message="all weights are zero")
        ctx = self._weights_context(netuid)
        uid, last, rate_limit = ctx.uid, ctx.last_update, ctx.rate_limit
        # The extrinsic executes in the next block at the earliest.
        next_block = ctx.head + 1
        if ctx.commit_reveal:
            if ctx.timelocked:
                raise TimelockedCommitRevealUnsupported(
                    f"netuid {netuid} has commit-reveal on and this runtime's commit-reveal is "
                    "timelocked (CRv3, CommitRevealWeightsVersion); this client only does hash "
                    "commit-reveal, so nothing was sent"
                )
            wait = blocks_until_weights_allowed(next_block, last, rate_limit)
            if precheck and wait:
                raise CommittingWeightsTooFast(
                    detail=f"uid {uid}: last commit at block {last}, next block {next_block}, "
                    f"rate limit {rate_limit} ({wait} blocks to go; checked locally, nothing sent)"
                )
            return self._commit_weights(netuid, send_uids, send_values, version_key, next_block)
        wait = blocks_until_weights_allowed(next_block, last, rate_limit)
        if precheck and wait:
            raise SettingWeightsTooFast(
                detail=f"uid {uid}: last update at block {last}, next block {next_block}, rate "
                f"limit {rate_limit} ({wait} blocks to go; checked locally, nothing sent)"
            )
        block, extrinsic_hash = self.submit(
            "SubtensorModule",
            "set_weights",
            {
                "netuid": netuid,
                "dests": send_uids,
                "weights": send_values,
                "version_key": version_key,
            },
        )
        return WeightsResult(
            included=self.wait_for_inclusion,
            method="set_weights",
            block=block,
            uids=tuple(send_uids),
            values=tuple(send_values),
            version_key=version_key,
            extrinsic_hash=extrinsic_hash,
        )

    def commit_timelocked_weights(self, netuid: int, *args: object, **kwargs: object) -> None:
        """Timelocked commit-reveal (CRv3, drand encryption) is not implemented: always raises."""
        raise TimelockedCommitRevealUnsupported(
            f"netuid {netuid}: timelocked commit-reveal (commit_timelocked_weights) is not "
            "implemented by this client"
        )

    def _commit_weights(
        self, netuid: int, uids: list[int], values: list[int], version_key: int, next_block: int
    ) -> WeightsResult:
        hotkey = self._require_hotkey()
        salt = wmath.new_salt()
        commit_hash = (
            "0x"
            + wmath.weight_commit_hash(
                hotkey.public_key, netuid, uids, values, salt, version_key
            ).hex()
        )
        block, extrinsic_hash = self.submit(
            "SubtensorModule", "commit_weights", {"netuid": netuid, "commit_hash": commit_hash}
        )
        commit_block = block if block is not None else next_block
        self._pending.append(
            PendingReveal(
                netuid, tuple(uids), tuple(values), salt, version_key, commit_hash, commit_block
            )
        )
        return WeightsResult(
            included=self.wait_for_inclusion,
            method="commit_weights",
            block=block,
            uids=tuple(uids),
            values=tuple(values),
            version_key=version_key,
            extrinsic_hash=extrinsic_hash,
            commit_hash=commit_hash,
        )

    def reveal_weights(
        self,
        netuid: int,
        uids: list[int],
        values: list[int],
        salt: list[int] | tuple[int, ...],
        version_key: int,
    ) -> tuple[int | None, str]:
        return self.submit(
            "SubtensorModule",
            "reveal_weights",
            {
                "netuid": netuid,
                "uids": list(uids),
                "values": list(values),
                "salt": list(salt),
                "version_key": version_key,
            },
        )

    def reveal_pending(self, netuid: int) -> list[WeightsResult]:
        """Reveals pending commits whose reveal window holds the next block; drops expired ones."""
        mine = [p for p in self._pending if p.netuid == netuid]
        if not mine:
            return []

        def read(si: SubstrateInterface) -> tuple[int, int, int]:
            block_hash, block = self._head(si)
            tempo = int(si.query("SubtensorModule", "Tempo", [netuid], block_hash=block_hash).value)
            period = int(
                si.query(
                    "SubtensorModule", "RevealPeriodEpochs", [netuid], block_hash=block_hash
                ).value
            )
            return block, tempo, period

        block, tempo, period = self._with_retry(f"reveal window of netuid {netuid}", read)
        next_block = block + 1
        results: list[WeightsResult] = []
        done: set[str] = set()
        for pending in mine:
            first, last = wmath.reveal_blocks(netuid, pending.commit_block, tempo, period)
            if next_block < first:
                continue
            done.add(pending.commit_hash)
            if next_block > last:
                results.append(
                    WeightsResult(
                        included=False,
                        method="reveal_weights",
                        commit_hash=pending.commit_hash,
                        message=f"reveal window {first}..{last} passed (next block {next_block})",
                    )
                )
                continue
            try:
                at, extrinsic_hash = self.reveal_weights(
                    netuid,
                    list(pending.uids),
                    list(pending.values),
                    pending.salt,
                    pending.version_key,
                )
            except PalletError as exc:
                results.append(
                    WeightsResult(
                        included=False,
                        method="reveal_weights",
                        commit_hash=pending.commit_hash,
                        message=str(exc),
                    )
                )
                continue
            results.append(
                WeightsResult(
                    included=self.wait_for_inclusion,
                    method="reveal_weights",
                    block=at,
                    uids=pending.uids,
                    values=pending.values,
                    version_key=pending.version_key,
                    extrinsic_hash=extrinsic_hash,
                    commit_hash=pending.commit_hash,
                )
            )
        self._pending = [p for p in self._pending if p.commit_hash not in done]
        return results

    @property
    def pending_reveals(self) -> tuple[PendingReveal, ...]:
        return tuple(self._pending)


# ----------------------------------------------------------------------------------- decoding


def _as_int(value: object, what: str) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ChainDataError(f"{what}: expected a non-negative integer, got {value!r}")
    return value


def _as_vector(value: object, n: int, fill: Any) -> list[Any]:
    """A per-uid storage vector padded (or cut) to n entries."""
    items = list(value) if isinstance(value, (list, tuple)) else []
    return items + [fill] * (n - len(items))


def decode_commitment(value: object, who: str) -> str | None:
    """A `Commitments.CommitmentOf` value → the committed string, validated; None when absent.

    Only `RawN` fields count (concatenated in order); the bytes must be printable ASCII and fit
    MAX_COMMITMENT_CHARS."""
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("info"), dict):
        raise ChainDataError(f"{who}: unexpected shape {type(value).__name__}")
    fields = value["info"].get("fields")
    if not isinstance(fields, (list, tuple)) or not fields:
        raise ChainDataError(f"{who}: no fields")
    raw = bytearray()
    for entry in fields:
        if not isinstance(entry, dict) or len(entry) != 1:
            raise ChainDataError(f"{who}: malformed field")
        ((variant, payload),) = entry.items()
        match = _RAW_VARIANT.match(str(variant))
        if not match:
            raise ChainDataError(f"{who}: field kind {str(variant)[:32]!r} is not raw data")
        if isinstance(payload, str) and payload.startswith("0x"):
            try:
                chunk = bytes.fromhex(payload[2:])
            except ValueError:
                raise ChainDataError(f"{who}: field is not hex") from None
        elif isinstance(payload, (bytes, bytearray)):
            chunk = bytes(payload)
        else:
            raise ChainDataError(f"{who}: field payload of type {type(payload).__name__}")
        if len(chunk) != int(match.group(1)) or len(chunk) > RAW_FIELD_MAX:
            raise ChainDataError(f"{who}: {variant} holds {len(chunk)} bytes")
        raw += chunk
        if len(raw) > MAX_COMMITMENT_CHARS:
            raise ChainDataError(f"{who}: longer than {MAX_COMMITMENT_CHARS} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ChainDataError(f"{who}: not ASCII") from None
    return validate_commitment(text, who)


def _rejection(error: object, what: str) -> TransactionRejected:
    """A JSON-RPC error of author_submit* → TransactionRejected (code/reason when known)."""
    if not isinstance(error, dict):
        return TransactionRejected(f"{what} rejected: {str(error)[:300]}")
    message = str(error.get("message", ""))
    data = str(error.get("data", ""))
    code = error.get("code")
    custom = re.search(r"Custom error: (\d+)", data)
    if custom:
        number = int(custom.group(1))
        reason = CUSTOM_TX_ERRORS.get(number, f"Custom({number})")
        return TransactionRejected(
            f"{what} rejected by the transaction pool: {reason} (custom code {number})",
            code=number,
            reason=reason,
        )
    text = f"{message} {data}".lower()
    if "already imported" in text or code == 1013:
        reason = "AlreadyImported"
    elif "stale" in text or "outdated" in text:
        reason = "Stale"
    elif "priority is too low" in text or code == 1014:
        reason = "PriorityTooLow"
    elif "inability to pay" in text or "payment" in text:
        reason = "Payment"
    elif "bad signature" in text or "badproof" in text.replace(" ", ""):
        reason = "BadProof"
    else:
        reason = None
    return TransactionRejected(
        f"{what} rejected: {message} {data}".strip()[:300],
        code=code if isinstance(code, int) else None,
        reason=reason,
    )


def _dispatch_error(si: SubstrateInterface, attributes: object, what: str) -> ChainError:
    """The `dispatch_error` of an ExtrinsicFailed event → the typed error."""
    if isinstance(attributes, dict):
        error = attributes.get("dispatch_error")
    elif isinstance(attributes, (list, tuple)) and attributes:
        error = attributes[0]
    else:
        error = None
    if isinstance(error, dict) and "Module" in error:
        module = error["Module"]
        if isinstance(module, (list, tuple)):
            pallet_index, error_index = module[0], module[1]
        else:
            pallet_index, error_index = module.get("index"), module.get("error")
        if isinstance(error_index, str):
            error_index = int(error_index[2:4], 16)  # first byte of the [u8; 4]
        elif isinstance(error_index, (list, tuple, bytes)):
            error_index = int(error_index[0])
        pallet = _pallet_name(si, int(pallet_index))
        found = si.metadata.get_module_error(
            module_index=int(pallet_index), error_index=int(error_index)
        )
        if found is None:
            return pallet_error(f"Error{error_index}", f"{what} failed", pallet=pallet)
        docs = " ".join(found.docs) if isinstance(found.docs, list) else str(found.docs or "")
        return pallet_error(found.name, f"{what} failed", pallet=pallet, docs=docs)
    if isinstance(error, dict) and error:
        name = next(iter(error))
        return pallet_error(str(name), f"{what} failed", pallet="System")
    if isinstance(error, str):
        return pallet_error(error, f"{what} failed", pallet="System")
    return ChainError(f"{what} failed: {attributes!r}"[:300])


def _pallet_name(si: SubstrateInterface, index: int) -> str:
    for pallet in si.metadata.pallets:
        if (
            int(pallet["index"].value if hasattr(pallet["index"], "value") else pallet["index"])
            == index
        ):
            return str(pallet.name)
    return f"Pallet{index}"
