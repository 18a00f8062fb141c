"""The peer network as one node sees it: who is registered (chain), where their buckets are
(commitments), what they published (buckets), and whether it arrived in time (put window).

Shared by miners and validators so both judge a peer's upload the same way; the outer step that
every node applies depends on that judgement agreeing. Everything read here is untrusted: bucket
URLs from commitments are checked against the node's own storage scheme, object sizes are capped
before download, and every fault becomes a typed status, never an exception that stops a node.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from gauntlet_jax.chain.base import Chain, Metagraph
from gauntlet_jax.chain.errors import ChainDataError
from gauntlet_jax.compress.codec import (
    DecodedPayload,
    PayloadStack,
    decode_payload,
    payload_cap,
)
from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.compress.streaming import StreamingDecoder
from gauntlet_jax.config import Config
from gauntlet_jax.errors import (
    InvalidPayload,
    ObjectNotFound,
    StorageError,
)
from gauntlet_jax.node import multihost
from gauntlet_jax.node.phases import PhaseTimer
from gauntlet_jax.protocol import announcements, names
from gauntlet_jax.protocol.schedule import first_block_of_window, put_window_status
from gauntlet_jax.storage.base import Bucket, ObjectInfo, open_bucket

log = logging.getLogger(__name__)

FetchStatus = Literal["ok", "missing", "too_early", "too_late", "invalid"]
# How often a node polls for an object that has not arrived yet (the reference: 0.1 s).
POLL_INTERVAL_S = 0.1


@dataclass(frozen=True)
class Fetched:
    """One peer object for one window, judged: status, the decoded value when ok, and why not."""

    uid: int
    window: int
    status: FetchStatus
    value: Any = None
    last_modified: float | None = None
    detail: str = ""


class Network:
    """Chain + buckets of every registered peer, refreshed on demand."""

    def __init__(self, cfg: Config, chain: Chain, own_bucket_url: str) -> None:
        self.cfg = cfg
        self.chain = chain
        self.own_bucket_url = own_bucket_url
        self.metagraph: Metagraph | None = None
        self.bucket_urls: dict[int, str] = {}
        self._buckets: dict[str, Bucket] = {}
        self._window_end_times: dict[int, float] = {}
        self._peer_lists: dict[int, list[int]] = {}

    # -- chain ------------------------------------------------------------------------------

    def refresh(self) -> Metagraph:
        """Re-reads the metagraph and every commitment; bad commitments are skipped, logged."""
        netuid = self.cfg.chain.netuid
        graph = self.chain.metagraph(netuid)
        urls: dict[int, str] = {}
        for uid in graph.uids.tolist():
            try:
                url = self.chain.get_commitment(netuid, int(uid))
            except ChainDataError as e:
                log.warning("uid %d: unusable commitment (%s)", uid, e)
                continue
            if url is not None and self._acceptable_url(url):
                urls[int(uid)] = url
        self.metagraph = graph
        self.bucket_urls = urls
        return graph

    def _acceptable_url(self, url: str) -> bool:
        """A peer's bucket must use the node's own storage kind: a gs:// network never reads
        local paths a hostile commitment names, and a local demo never reaches out."""
        own_remote = self.own_bucket_url.startswith("gs://")
        return url.startswith("gs://") if own_remote else url.startswith("file:///")

    def graph(self) -> Metagraph:
        return self.metagraph if self.metagraph is not None else self.refresh()

    def lead_validator(self) -> int | None:
        """The validator with the most stake that has published a bucket (GAUNTLET.md §1.1)."""
        g = self.graph()
        best: tuple[float, int] | None = None
        for uid, stake, permit in zip(
            g.uids.tolist(), g.stake.tolist(), g.validator_permit.tolist(), strict=True
        ):
            if permit and uid in self.bucket_urls and (best is None or (stake, -uid) > best):
                best = (stake, -uid)
        return None if best is None else -best[1]

    def miner_uids(self) -> list[int]:
        """Peers that may be gathered and evaluated: a bucket, stake ≤ the cap (keeps validators
        out, as the reference), and not the lead validator."""
        g = self.graph()
        lead = self.lead_validator()
        cap = self.cfg.validator.stake_cap
        return sorted(
            int(uid)
            for uid, stake in zip(g.uids.tolist(), g.stake.tolist(), strict=True)
            if uid in self.bucket_urls and stake <= cap and uid != lead
        )

    def window_end_time(self, window: int) -> float:
        """Chain timestamp of the first block of the next window (t_min of the put window)."""
        if window not in self._window_end_times:
            block = first_block_of_window(window + 1, self.cfg.protocol.blocks_per_window)
            self._window_end_times[window] = float(self.chain.block_timestamp(block))
        return self._window_end_times[window]

    # -- buckets ----------------------------------------------------------------------------

    def bucket(self, uid: int) -> Bucket | None:
        url = self.bucket_urls.get(uid)
        if url is None:
            return None
        if url not in self._buckets:
            try:
                self._buckets[url] = self.open(url)
            except StorageError as e:
                log.warning("uid %d: cannot open bucket %s (%s)", uid, url, e)
                return None
        return self._buckets[url]

    def open(self, url: str) -> Bucket:
        """A bucket by URL; in a multi-host job only the leader opens it and reads or writes
        (`multihost.leader_opened`)."""
        return multihost.leader_opened(lambda: open_bucket(url, self.cfg.storage), ("url",))

    def wait_for(self, bucket: Bucket, name: str, deadline: float) -> ObjectInfo | None:
        """Polls until the object exists or wall time passes `deadline`; None if it never came."""
        while True:
            try:
                return bucket.head(name)
            except ObjectNotFound:
                if multihost.leader_time() >= deadline:
                    return None
            except StorageError as e:
                log.info("head %s: %s", name, e)
                if multihost.leader_time() >= deadline:
                    return None
            time.sleep(POLL_INTERVAL_S)

    def fetch_bytes(
        self,
        uid: int,
        window: int,
        name: str,
        *,
        max_bytes: int,
        deadline: float,
        check_put_window: bool,
    ) -> Fetched:
        """Head (put-window check on the server time) and bounded get: one judged object whose
        value, when ok, is its undecoded bytes."""
        bucket = self.bucket(uid)
        if bucket is None:
            return Fetched(uid, window, "missing", detail="no bucket committed")
        info = self.wait_for(bucket, name, deadline)
        if info is None:
            return Fetched(uid, window, "missing", detail=f"{name} not found")
        if check_put_window:
            status = put_window_status(
                info.last_modified, self.window_end_time(window), self.cfg.protocol.put_window_s
            )
            if status != "ok":
                return Fetched(uid, window, status, last_modified=info.last_modified)  # type: ignore[arg-type]
        try:
            data = bucket.get(name, max_bytes=max_bytes)
        except ObjectNotFound:
            return Fetched(uid, window, "missing", detail=f"{name} vanished")
        except StorageError as e:
            return Fetched(uid, window, "invalid", detail=f"download failed: {e}")
        return Fetched(uid, window, "ok", data, info.last_modified)

    def fetch(
        self,
        uid: int,
        window: int,
        name: str,
        decode: Callable[[bytes], Any],
        *,
        max_bytes: int,
        deadline: float,
        check_put_window: bool,
    ) -> Fetched:
        """`fetch_bytes`, then decode: one judged object."""
        raw = self.fetch_bytes(
            uid,
            window,
            name,
            max_bytes=max_bytes,
            deadline=deadline,
            check_put_window=check_put_window,
        )
        if raw.status != "ok":
            return raw
        try:
            return _decoded(raw, decode(raw.value))
        except InvalidPayload as e:
            return _decoded(raw, e)

    def payload_cap(self, plan: CompressionPlan) -> int:
        return payload_cap(plan, self.cfg.compress.max_payload_bytes)

    def fetch_payload(
        self, uid: int, window: int, plan: CompressionPlan, deadline: float
    ) -> Fetched:
        """A peer's pseudo-gradient for `window`, validated (status "ok" → DecodedPayload)."""
        cap = self.payload_cap(plan)

        def decode(data: bytes) -> DecodedPayload:
            return decode_payload(
                data, plan, expected_uid=uid, expected_window=window, max_bytes=cap
            )

        name = names.gradient_name(window, uid, self.cfg.protocol.version)
        return self.fetch(
            uid, window, name, decode, max_bytes=cap, deadline=deadline, check_put_window=True
        )

    def fetch_payloads(
        self,
        uids: Sequence[int],
        window: int,
        plan: CompressionPlan,
        deadline: float,
        stack: PayloadStack | None = None,
        timer: PhaseTimer | None = None,
    ) -> dict[int, Fetched]:
        """The payloads of `uids` for `window`, judged, in `uids` order. Bytes are fetched in
        order on this thread; each is decoded on a worker as soon as it is in, written straight
        into row i of `stack` (uids[i]'s row) when one is given, so the outer step that follows
        finds the gather set stacked already (`Replica.gather_signs(…, stack)`). `timer` laps
        "fetch" once the last bytes are in and "decode" once every decode is done (the decoding
        that did not overlap the fetching)."""
        cap = self.payload_cap(plan)
        stack = PayloadStack(plan, 0) if stack is None else stack
        raws: list[Fetched] = []
        with StreamingDecoder(plan, stack, cap, self.cfg.compress.decode_workers) as decoder:
            pending = []
            for row, uid in enumerate(uids):
                name = names.gradient_name(window, uid, self.cfg.protocol.version)
                raw = self.fetch_bytes(
                    uid, window, name, max_bytes=cap, deadline=deadline, check_put_window=True
                )
                raws.append(raw)
                ok = raw.status == "ok"
                pending.append(decoder.submit(row, uid, window, raw.value) if ok else None)
            if timer is not None:
                timer.lap("fetch")
            judged = [
                raw if future is None else _decoded(raw, future.result())
                for raw, future in zip(raws, pending, strict=True)
            ]
        if timer is not None:
            timer.lap("decode")
        return {f.uid: f for f in judged}

    def last_upload_windows(self, uids: Sequence[int], window: int, span: int) -> dict[int, int]:
        """For each uid, the latest window in [window − span, window] with a gradient object
        written (server time) no earlier than that window's put window opens. Names alone prove
        nothing: a peer could upload objects named for windows far ahead in one go and look
        active in each of them without training. A late object still shows a live peer (its
        lateness is punished by the lateness check, not by an inactivity reset)."""
        out: dict[int, int] = {}
        for uid in uids:
            bucket = self.bucket(uid)
            if bucket is None:
                continue
            try:
                infos = bucket.list(names.gradient_prefix(self.cfg.protocol.version))
            except StorageError as e:
                log.info("uid %d: list failed (%s)", uid, e)
                continue
            for info in infos:
                parsed = names.parse_gradient_name(info.name, self.cfg.protocol.version)
                if parsed is None:
                    continue
                w, owner = parsed
                if owner == uid and window - span <= w <= window and self._not_early(info, w):
                    out[uid] = max(out.get(uid, w), w)
        return out

    def _not_early(self, info: ObjectInfo, window: int) -> bool:
        """Whether the object was written (server time) after `window`'s put window opened."""
        status = put_window_status(
            info.last_modified, self.window_end_time(window), self.cfg.protocol.put_window_s
        )
        return status != "too_early"

    # -- lead validator's announcements -------------------------------------------------------

    def _read_announcement(self, uid: int, name: str) -> bytes:
        bucket = self.bucket(uid)
        if bucket is None:
            raise ObjectNotFound(f"uid {uid} has no bucket")
        return bucket.get(name, max_bytes=announcements.MAX_ANNOUNCEMENT_BYTES)

    def start_window(self) -> int | None:
        """The run's first window as the lead validator announced it, or None if not yet (or
        if what it announced is malformed)."""
        lead = self.lead_validator()
        if lead is None:
            return None
        try:
            data = self._read_announcement(lead, names.start_window_name(self.cfg.protocol.version))
            return announcements.parse_start_window(data, lead)
        except ObjectNotFound:
            return None
        except (StorageError, InvalidPayload) as e:
            log.warning("start window of uid %d unusable (%s)", lead, e)
            return None

    def gather_set(self, window: int) -> list[int]:
        """The gather peers for `window`: the lead validator's newest list effective by then, or,
        before any list exists, the first `gather_peers` miner uids (every node computes the
        same fallback from the chain)."""
        lead = self.lead_validator()
        listed = self._published_gather_set(lead, window) if lead is not None else None
        miners = set(self.miner_uids())
        if listed:
            return [uid for uid in listed if uid in miners][: self.cfg.protocol.gather_peers]
        return sorted(miners)[: self.cfg.protocol.gather_peers]

    def _published_gather_set(self, lead: int, window: int) -> list[int] | None:
        bucket = self.bucket(lead)
        if bucket is None:
            return None
        version = self.cfg.protocol.version
        try:
            infos = bucket.list(names.peers_prefix(version))
        except StorageError as e:
            log.info("listing peer lists failed (%s)", e)
            return None
        effective = sorted(
            w
            for w in (names.parse_peers_name(i.name, version) for i in infos)
            if w is not None and w <= window
        )
        if not effective:
            return None
        first = effective[-1]
        if first not in self._peer_lists:
            try:
                data = self._read_announcement(lead, names.peers_name(first, version))
                self._peer_lists[first] = announcements.parse_peer_list(data, lead)
            except (StorageError, InvalidPayload) as e:
                log.warning("peer list %d of uid %d unusable (%s)", first, lead, e)
                return None
        return self._peer_lists[first]


def _decoded(raw: Fetched, value: Any) -> Fetched:
    """A fetched object's verdict once decoded: ok with its value, or invalid with the reason."""
    if isinstance(value, InvalidPayload):
        return Fetched(
            raw.uid, raw.window, "invalid", last_modified=raw.last_modified, detail=str(value)
        )
    return Fetched(raw.uid, raw.window, "ok", value, raw.last_modified)


def pad_to(items: Sequence[Any], n: int, fill: Any = None) -> list[Any]:
    """Fixed-length list (static shapes downstream): truncated or padded with `fill`."""
    return list(items[:n]) + [fill] * max(0, n - len(items))


def valid_mask(fetched: Sequence[Fetched | None]) -> np.ndarray:
    return np.array([f is not None and f.status == "ok" for f in fetched], dtype=bool)
