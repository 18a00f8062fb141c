"""What a validator writes for the others (GAUNTLET.md §1.6, §5.5, §6): weights on the chain;
and, as the lead validator, in its bucket: the run's start window, the next gather set and each
window's sign aggregate (what catching-up nodes replay).

A write that fails (the chain refusing, a bucket error) is logged, counted
(`Node.count_error`) and the window goes on: weights are retried the next window, a gather set or
aggregate already there stays as it is. A permanent
refusal (`errors.is_permanent`: the hotkey deregistered or without a permit, the subnet's weights
version key above this node's) is raised: no later window can post, and the node exits 78.

Weights go with this node's version key (the package version, `chain.base.NODE_VERSION_KEY`);
a validator does not start on a subnet whose WeightsVersionKey is higher (`check_version_key`).
The chain picks set_weights, hash commit-reveal or timelocked commit-reveal from the subnet's
hyperparameters; each window `post_weights` first reveals due hash commits and reads back
timelocked ones (`Chain.reveal_pending`).
"""

from __future__ import annotations

import logging
from typing import Any

from gauntlet_jax.chain.base import NODE_VERSION_KEY
from gauntlet_jax.chain.errors import NodeVersionTooOld
from gauntlet_jax.config import Config
from gauntlet_jax.errors import ChainError, PreconditionFailed, StorageError, is_permanent
from gauntlet_jax.node.replica import Replica
from gauntlet_jax.node.startup import Node
from gauntlet_jax.protocol import announcements, names
from gauntlet_jax.protocol.catchup import encode_aggregate
from gauntlet_jax.validator import ladder, overlap, weights
from gauntlet_jax.validator.state import PeerRecord

log = logging.getLogger(__name__)


def is_lead(node: Node) -> bool:
    return node.network.lead_validator() == node.uid


def announce_start_window(node: Node, cfg: Config) -> None:
    """The lead validator's once-only announcement of the run's first window (a start window
    already announced is left as it is)."""
    if not is_lead(node):
        return
    first = node.current_window() + 1 + cfg.protocol.start_delay_windows
    body = announcements.encode_start_window(first)
    try:
        node.bucket.put(names.start_window_name(cfg.protocol.version), body, if_absent=True)
        log.info("announced start window %d", first)
    except PreconditionFailed:
        pass


def check_version_key(node: Node, cfg: Config, node_key: int = NODE_VERSION_KEY) -> None:
    """Raises NodeVersionTooOld when the subnet demands a newer node than this one."""
    subnet_key = node.chain.weights_version_key(cfg.chain.netuid)
    if subnet_key > node_key:
        raise NodeVersionTooOld(
            f"netuid {cfg.chain.netuid} requires weights version key {subnet_key} and this node "
            f"sends {node_key}: upgrade gauntlet-jax before validating"
        )


def reveal_commits(node: Node, cfg: Config, window: int) -> None:
    """Reveals due hash commits and logs what became of timelocked ones; a failure is retried
    next window (the pending commits stay with the chain handle)."""
    try:
        results = node.chain.reveal_pending(cfg.chain.netuid)
    except ChainError as e:
        if is_permanent(e):
            raise
        node.count_error("reveal", e)
        log.warning("window %d: reveal failed (retried next window): %s", window, e)
        return
    for result in results:
        if result.included:
            log.info(
                "window %d: weights revealed (%s) at block %s", window, result.method, result.block
            )
        else:
            log.warning("window %d: %s", window, result.message)


def weights_due(window: int, last_posted: int | None, cfg: Config) -> bool:
    """Every `windows_per_weights` windows; a post the chain refused (rate limit, a
    dropped connection) is retried each window until it lands."""
    vcfg = cfg.validator
    if last_posted is None:
        return weights.should_post_weights(window, vcfg)
    return window - last_posted >= vcfg.windows_per_weights


def post_weights(
    node: Node, cfg: Config, window: int, w: dict[int, float], last_posted: int | None
) -> bool:
    """Posts the positive weights when due; True once the chain included them (for a commit:
    the commit; its reveal follows in a later window)."""
    reveal_commits(node, cfg, window)
    if not weights_due(window, last_posted, cfg):
        return False
    uids = sorted(u for u, v in w.items() if v > 0)
    if not uids:
        log.info("window %d: all weights zero; nothing posted", window)
        return False
    try:
        result = node.chain.set_weights(
            cfg.chain.netuid, uids, [w[u] for u in uids], version_key=NODE_VERSION_KEY
        )
    except ChainError as e:
        if is_permanent(e):
            raise
        node.count_error("post_weights", e)
        log.warning("window %d: set_weights failed (retried next window): %s", window, e)
        return False
    log.info(
        "window %d: weights posted (%s) %s",
        window,
        result.method,
        dict(zip(uids, result.values, strict=False)),
    )
    return result.included


def publish_gather_set(
    node: Node,
    cfg: Config,
    window: int,
    w: dict[int, float],
    active: list[int],
    peers: dict[int, PeerRecord],
    schedule: dict[int, tuple[int, ...]],
) -> None:
    """Chooses the next gather set (lead validator); it takes effect `peer_effective_lag`
    windows after the chain's current window, so every miner sees it before it is used.
    `schedule` gains the set once it is published."""
    if not is_lead(node):
        return
    excluded = overlap.excluded_uids(peers, window) | ladder.negative_excluded(peers, cfg.validator)
    chosen = weights.gather_set(w, active, cfg.protocol.gather_peers, excluded)
    if not chosen:
        return  # nobody active: keep the set in force rather than announce an empty one
    try:
        chain_window = node.current_window()
    except ChainError as e:
        if is_permanent(e):
            raise
        node.count_error("gather_set", e)
        log.warning("gather set of window %d not published, block number unread (%s)", window, e)
        return
    effective = max(
        weights.gather_effective_window(window, cfg),
        chain_window + cfg.protocol.peer_effective_lag,
    )
    body = announcements.encode_peer_list(chosen, window)
    try:
        node.bucket.put(names.peers_name(effective, cfg.protocol.version), body, if_absent=True)
        schedule[effective] = tuple(chosen)
    except StorageError as e:
        # Write-once: a set another writer put there first is no fault of this node.
        if not isinstance(e, PreconditionFailed):
            node.count_error("gather_set", e)
        log.info("gather set for %d not published (%s)", effective, e)


def publish_aggregate(node: Node, cfg: Config, window: int, signs: Any, replica: Replica) -> None:
    """The window's sign aggregate (lead validator), packed, with θ's fingerprint after the step,
    for nodes that catch up (and check they ended where the lead did)."""
    if not is_lead(node):
        return
    data = encode_aggregate(signs, replica.plan, replica.fingerprint())
    try:
        node.bucket.put(names.aggregate_name(window, cfg.protocol.version), data)
    except StorageError as e:
        node.count_error("aggregate", e)
        log.warning("aggregate %d not published (%s)", window, e)
