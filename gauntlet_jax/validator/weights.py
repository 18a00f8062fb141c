"""Final scores, weights and the gather-set schedule (GAUNTLET.md §1.6, §5.4, §5.5).

final_p = ordinal_p × max(0, BMA_p) × sync_p, recomputed only for peers rated this window.
w_p ∝ final_p^c over positive finals (c = `power`, 2 in the paper). The same weights choose the
next gather set: the top `gather_peers` active peers, refreshed every `peer_refresh_windows`
windows and effective `peer_effective_lag` windows after the refresh.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping

from gauntlet_jax.config import Config, ValidatorConfig
from gauntlet_jax.validator.rating import Rating, ordinal
from gauntlet_jax.validator.state import PeerRecord

# Below this total no peer has earned anything and all weights are zero (the reference's 1e-8).
MIN_WEIGHT_SUM = 1e-8


def final_score(ordinal_value: float, bma: float, sync: float) -> float:
    """ordinal × max(0, BMA) × sync. A negative ordinal gives a negative final (no weight)."""
    return ordinal_value * max(0.0, bma) * sync


def refresh_final(record: PeerRecord) -> PeerRecord:
    """The record with its final score recomputed from its rating, BMA and sync score.

    Call for the peers rated this window only; others keep their (possibly slashed) final.
    """
    if not record.rated:
        raise ValueError(f"peer {record.uid} has no rating; rate it before computing its final")
    value = final_score(ordinal(Rating(record.mu, record.sigma)), record.bma, record.sync)
    return dataclasses.replace(record, final=value)


def weights_from_finals(finals: Mapping[int, float], power: float) -> dict[int, float]:
    """w_p = final_p^c / Σ_{q: final_q > 0} final_q^c; 0 for non-positive finals.

    All weights are 0 when the sum is at most 1e-8. Every uid in `finals` gets an entry.
    """
    if power <= 0:
        raise ValueError(f"power must be positive, got {power}")
    for uid, f in finals.items():
        if not math.isfinite(f):
            raise ValueError(f"final score of peer {uid} is not finite: {f}")
    powered = {uid: (f**power if f > 0 else 0.0) for uid, f in finals.items()}
    total = math.fsum(powered.values())
    if total <= MIN_WEIGHT_SUM:
        return dict.fromkeys(finals, 0.0)
    return {uid: p / total for uid, p in powered.items()}


def gather_set(
    weights: Mapping[int, float],
    active_uids: Collection[int],
    n: int,
    excluded: Collection[int] = (),
) -> list[int]:
    """Top n active peers by weight, heaviest first; ties (and zero weights) by ascending uid.

    Zero-weight active peers fill the remainder, as in the reference. `excluded` peers (e.g.
    an index-overlap exclusion) are never chosen.
    """
    banned = set(excluded)
    pool = [u for u in set(active_uids) if u not in banned]
    pool.sort(key=lambda u: (-weights.get(u, 0.0), u))
    return pool[:n]


# ---------------------------------------------------------------------------------------------
# Schedules


def is_gather_refresh_window(window: int, cfg: Config) -> bool:
    """Whether a new gather set is chosen at this window (every peer_refresh_windows)."""
    return window % cfg.protocol.peer_refresh_windows == 0


def gather_effective_window(refresh_window: int, cfg: Config) -> int:
    """The first window in which a set chosen at `refresh_window` is used."""
    return refresh_window + cfg.protocol.peer_effective_lag


def gather_set_for_window(
    schedule: Mapping[int, Collection[int]], window: int
) -> tuple[int, ...] | None:
    """The set in force at `window`: the one with the latest effective window ≤ window.

    `schedule` maps effective window → uids. None when no set is in force yet (the caller falls
    back to the initial list, GAUNTLET.md §1.6).
    """
    effective = [w for w in schedule if w <= window]
    if not effective:
        return None
    return tuple(schedule[max(effective)])


def prune_schedule(
    schedule: Mapping[int, Collection[int]], window: int
) -> dict[int, tuple[int, ...]]:
    """Drops sets superseded before `window`; keeps the one in force and any future ones."""
    effective = [w for w in schedule if w <= window]
    keep_from = max(effective) if effective else None
    return {w: tuple(uids) for w, uids in schedule.items() if keep_from is None or w >= keep_from}


def should_post_weights(window: int, cfg: ValidatorConfig) -> bool:
    """Weights go on chain every windows_per_weights windows."""
    return window % cfg.windows_per_weights == 0
