"""What miners and validators share at start-up: their bucket, their uid, their commitment, the
run's start window, and catching up to the chain's current window.

In a multi-host job every process runs the node; the chain client and the buckets are opened by
the leader alone and the others receive the outcome of each call (`multihost.leader_opened`),
as they receive the leader's clock (`Node.now`), so all processes take the same decisions.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gauntlet_jax.chain.base import Chain
from gauntlet_jax.config import Config
from gauntlet_jax.errors import ChainError, CheckpointError, GauntletError, RegistrationError
from gauntlet_jax.node import multihost
from gauntlet_jax.node.metrics import ErrorSink, PrometheusExporter, uncounted
from gauntlet_jax.node.network import Network
from gauntlet_jax.node.placement import Placement
from gauntlet_jax.node.replica import Replica, initial_params, node_placement
from gauntlet_jax.protocol.catchup import AggregateUnavailable, fetch_aggregate
from gauntlet_jax.protocol.schedule import first_block_of_window, window_of_block
from gauntlet_jax.storage.base import Bucket
from gauntlet_jax.storage.checkpoint import Checkpoint, CheckpointStore

log = logging.getLogger(__name__)

# Extra wall time after the put window closes before a node gathers (clock skew, slow writes).
GATHER_GRACE_S = 0.5
# Progress lines: one per this many windows caught up, one per this many seconds of waiting.
CATCH_UP_LOG_EVERY = 50
START_LOG_EVERY = 15


class NodeError(GauntletError):
    """A node cannot start: not registered, no bucket, no start window in time."""


def bucket_url(cfg: Config, name: str) -> str:
    """This node's bucket URL from the `storage.bucket` template ({hotkey} → node name); local
    paths become absolute file:// URLs so peers on the same machine can read them."""
    raw = cfg.storage.bucket.format(hotkey=name)
    if raw.startswith("gs://") or raw.startswith("file://"):
        return raw
    return "file://" + str(Path(raw).expanduser().resolve())


@dataclass
class Node:
    """A registered participant: chain identity, own bucket, view of the network."""

    cfg: Config
    name: str
    chain: Chain
    bucket: Bucket
    url: str
    network: Network
    uid: int
    # The role's Prometheus endpoint, set by the role that opens it; None when
    # run.prometheus_port is 0 or on a follower process of a multi-host job (the leader counts).
    exporter: PrometheusExporter | None = None

    @classmethod
    def connect(cls, cfg: Config, name: str, chain: Chain, *, commit: bool = True) -> Node:
        """Opens the node's bucket and finds its uid; `commit=False` leaves publishing the
        bucket on chain to the caller (roles commit once warmed up: a committed peer is ready)."""
        url = bucket_url(cfg, name)
        network = Network(cfg, chain, url)
        bucket = network.open(url)
        hotkey = chain.hotkey
        if hotkey is None:
            raise RegistrationError(
                f"no hotkey: set the env var {cfg.chain.key_env} (chain.key_env) to the hotkey's "
                "secret (a //URI, a mnemonic or a hex seed), or chain.key_file to a file holding it"
            )
        graph = network.refresh()
        uid = graph.uid_of(hotkey)
        if uid is None:
            raise RegistrationError(
                f"hotkey {hotkey} is not registered on netuid {cfg.chain.netuid}"
            )
        node = cls(cfg, name, chain, bucket, url, network, uid)
        if commit:
            node.commit_bucket()
        return node

    def commit_bucket(self) -> None:
        """Publishes the bucket URL on chain once (re-commits only when it changed)."""
        netuid = self.cfg.chain.netuid
        if self.chain.get_commitment(netuid, self.uid) != self.url:
            self.chain.commit(netuid, self.url)
            log.info("uid %d committed bucket %s", self.uid, self.url)
        self.network.refresh()

    def count_error(self, during: str, error: BaseException) -> None:
        """Counts a typed error the node logged and went on from in step `during`
        (`gauntlet_<role>_errors_total`): a node that keeps failing then shows on a dashboard,
        not in its journal alone. Handed as the `ErrorSink` to code that holds no node."""
        if self.exporter is not None:
            self.exporter.count_error(during, error)

    # -- clock ------------------------------------------------------------------------------

    def now(self) -> float:
        """Wall time for deadlines (the leader's, in a multi-host job)."""
        return multihost.leader_time()

    def current_window(self) -> int:
        return window_of_block(self.chain.current_block(), self.cfg.protocol.blocks_per_window)

    def window_end_estimate(self, window: int) -> float:
        """Chain time at which `window` ends, extrapolated from the newest block (the chain only
        timestamps blocks that exist)."""
        block = self.chain.current_block()
        end_block = first_block_of_window(window + 1, self.cfg.protocol.blocks_per_window)
        return self.chain.block_timestamp(block) + (end_block - block) * self.cfg.chain.block_time_s

    def wait_for_window(self, window: int, stop: threading.Event) -> bool:
        """Sleeps until the chain reaches `window`; False if stopped first."""
        while not stop.is_set():
            if self.current_window() >= window:
                return True
            stop.wait(min(0.2, self.cfg.chain.block_time_s / 4))
        return False

    def gather_deadline(self, window: int) -> float:
        """Wall time after which a window's uploads can no longer be on time."""
        return (
            self.network.window_end_time(window) + self.cfg.protocol.put_window_s + GATHER_GRACE_S
        )

    # -- run start and catch-up ---------------------------------------------------------------

    def wait_for_start_window(self, stop: threading.Event, timeout_s: float) -> int:
        deadline = self.now() + timeout_s
        waits = 1  # the first wait is silent: a running network answers at once
        while not stop.is_set():
            self.network.refresh()
            start = self.network.start_window()
            if start is not None:
                return start
            if self.now() > deadline:
                break
            if waits % START_LOG_EVERY == 0:
                log.info("waiting for the lead validator to announce the start window…")
            waits += 1
            stop.wait(1.0)
        raise NodeError("the lead validator has not announced a start window")

    def catch_up(self, replica: Replica, until_window: int) -> bool | None:
        """Advances θ to `until_window` (exclusive): the lead validator's published aggregate of
        each missed window when it exists, else the window's gather payloads from the buckets.

        Returns whether θ then equals the lead's (the fingerprint in the last aggregate replayed),
        or None when that cannot be told (nothing replayed, the last window rebuilt from payloads,
        or a lead that publishes no fingerprint). A difference is logged as an error, not raised:
        the node keeps running, and the sync check shows its peers what it holds."""
        lead = self.network.lead_validator()
        lead_bucket = self.network.bucket(lead) if lead is not None else None
        if replica.next_window < until_window:
            log.info("catching θ up: windows %d to %d", replica.next_window, until_window - 1)
        replayed = False
        lead_theta: str | None = None
        while replica.next_window < until_window:
            w = replica.next_window
            if w % CATCH_UP_LOG_EVERY == 0:
                log.info("catching θ up: at window %d of %d", w, until_window - 1)
            try:
                if lead_bucket is None:
                    raise AggregateUnavailable(w, "missing", "no lead validator bucket", None)
                signs, lead_theta = fetch_aggregate(lead_bucket, w, self.cfg, replica.plan)
            except AggregateUnavailable as e:
                log.debug("window %d: %s; gathering payloads instead", w, e)
                stack = replica.new_stack()
                fetched = self.network.fetch_payloads(
                    self.network.gather_set(w), w, replica.plan, 0.0, stack
                )
                signs, _ = replica.gather_signs(list(fetched.values()), stack)
                lead_theta = None
            replica.apply_signs(w, signs)
            replayed = True
        if not replayed or lead_theta is None:
            return None
        ours = replica.fingerprint()
        if ours == lead_theta:
            log.info(
                "caught up to window %d: θ equals the lead validator's (fingerprint %s)",
                until_window - 1,
                ours,
            )
            return True
        log.error(
            "caught up to window %d, but θ's fingerprint %s differs from the lead validator's "
            "%s: this node's software stack (logged at start) or its checkpoint differs from "
            "the lead's; its uploads will fail the sync check until that is fixed",
            until_window - 1,
            ours,
            lead_theta,
        )
        return False


def new_replica(cfg: Config, start_window: int, placement: Placement | None = None) -> Replica:
    """θ of the run's start on `placement` (default: the node's mesh from `cfg.mesh`)."""
    placement = node_placement(cfg) if placement is None else placement
    params = initial_params(cfg, placement)
    return Replica(cfg, placement.plan, params, start_window, start_window, placement)


def checkpoint_store(cfg: Config, name: str) -> CheckpointStore:
    """This node's Orbax checkpoint directory (`storage.checkpoint_dir`, {hotkey} → name)."""
    raw = cfg.storage.checkpoint_dir.format(hotkey=name)
    directory = raw if raw.startswith("gs://") else str(Path(raw).expanduser().resolve())
    return CheckpointStore(directory, keep=cfg.protocol.checkpoint_keep)


def restore_replica(
    cfg: Config,
    store: CheckpointStore,
    start_window: int,
    placement: Placement,
    *,
    up_to_window: int | None = None,
    count_error: ErrorSink = uncounted,
) -> tuple[Replica, Any]:
    """θ (and momentum) from the newest checkpoint of this run at or before `up_to_window`, or a
    fresh replica at the start window; returns (replica, momentum or None). Arrays are restored
    straight into their shards on `placement`; an unusable checkpoint goes to `count_error`."""
    replica = new_replica(cfg, start_window, placement)
    # The leader's listing: every process then restores the same window (a multi-host job
    # needs a checkpoint directory all hosts share, such as gs://).
    windows = multihost.leader_call(store.windows)
    usable = [
        w for w in windows if w >= start_window and (up_to_window is None or w <= up_to_window)
    ]
    for window in reversed(usable):
        try:
            ckpt = store.restore(window, target_shardings=placement.params)
        except CheckpointError as e:
            count_error("restore", e)
            log.warning("checkpoint %d unusable (%s)", window, e)
            continue
        if ckpt.metadata.get("start_window") != start_window:
            continue  # another run's checkpoint
        replica.params, replica.next_window = ckpt.params, ckpt.window
        log.info("restored checkpoint of window %d", window)
        return replica, ckpt.momentum
    return replica, None


def maybe_checkpoint(
    cfg: Config,
    store: CheckpointStore,
    replica: Replica,
    momentum: Any = None,
    *,
    count_error: ErrorSink = uncounted,
) -> bool:
    """Saves θ (before `replica.next_window`) every `checkpoint_every` global steps; a failed
    save is logged, goes to `count_error`, and the node goes on (the next one may succeed)."""
    step = replica.next_window - replica.start_window
    if step <= 0 or step % cfg.protocol.checkpoint_every:
        return False
    try:
        store.save(
            Checkpoint(
                params=replica.params,
                window=replica.next_window,
                schedule_step=step,
                momentum=momentum,
                metadata={"start_window": replica.start_window},
            )
        )
    except CheckpointError as e:
        count_error("checkpoint", e)
        log.warning("checkpoint of window %d failed (%s)", replica.next_window, e)
        return False
    return True


__all__ = ["ChainError", "Node", "NodeError", "bucket_url", "new_replica"]
