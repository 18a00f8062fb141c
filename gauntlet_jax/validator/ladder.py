"""The escalating slash and negative-evaluation tracking of Templar's last releases
(GAUNTLET.md §10.2; `one-covenant/templar`), as pure functions on a `PeerRecord`. Both are off
by default (`validator.escalating_slash`, `validator.negative_evaluation`): then every function
here is the paper-era rule (the flat `checks.slash`) and leaves the history fields empty.

Escalating slash of a gather peer's payload faults (missing, early, late, invalid: Templar's
`skipped_uids`):
- the n-th consecutive faulty gather window multiplies final and BMA by
  `slash_ladder[min(n, len) − 1]` (Templar: 0.75, 0.5, then 0), whatever their sign;
- a fault with more than `slash_mega_fraction` of the last `slash_history` gather windows faulty
  (Templar: over half of 8; counted once the peer has that many) resets the peer to a newcomer's record and keeps it out of gather
  and evaluation for `slash_exclude_windows` (Templar's 200-window "naughty" timeout);
- a window with a good payload ends the streak.

Negative evaluations (LossScore < 0 on the random pages):
- after each window's evaluations, an evaluated peer with more than `negative_fraction` of its
  last `negative_history` evaluations negative (once it has that many) has its final × `negative_slash_factor` (Templar:
  over half of 8, × 0.25);
- `negative_exclude_after` consecutive negative evaluations (Templar: 3) keep the peer out of
  the gather set the lead validator publishes until it is evaluated non-negative again; it is
  still evaluated, so it can earn its way back;
- a window whose `negative_skip_rank`-th best score (Templar: 5th; the lowest with fewer) is
  itself negative counts for nobody: the whole network regressed, not the peer. (Templar checks
  that rank again when it excludes; here the streak simply does not grow in such a window.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from gauntlet_jax.config import ValidatorConfig
from gauntlet_jax.validator import checks
from gauntlet_jax.validator.state import PeerRecord


def payload_ok(record: PeerRecord, cfg: ValidatorConfig) -> PeerRecord:
    """A gather window with the peer's payload in order: the fault streak ends."""
    if not cfg.escalating_slash:
        return record
    return dataclasses.replace(
        record,
        fault_streak=0,
        fault_history=checks.push_flag(record.fault_history, 0, cfg.slash_history),
    )


def payload_fault(
    record: PeerRecord, reason: str, window: int, cfg: ValidatorConfig
) -> tuple[PeerRecord, bool]:
    """A gather peer's payload fault (`reason` one of checks' slash reasons); returns the
    record after the penalty and whether it was the reset of repeated faults."""
    if not cfg.escalating_slash:
        return checks.slash(record, reason, cfg), False
    history = checks.push_flag(record.fault_history, 1, cfg.slash_history)
    streak = record.fault_streak + 1
    counts = checks.count_slash(record, reason)
    if len(history) == cfg.slash_history and sum(history) > cfg.slash_mega_fraction * len(history):
        counts["repeated_faults"] = counts.get("repeated_faults", 0) + 1
        excluded = max(record.excluded_until or 0, window + 1 + cfg.slash_exclude_windows)
        reset = PeerRecord(uid=record.uid, excluded_until=excluded, slash_counts=counts)
        return dataclasses.replace(reset, fault_streak=streak, fault_history=history), True
    factor = cfg.slash_ladder[min(streak, len(cfg.slash_ladder)) - 1] if cfg.slash_ladder else 1.0
    return (
        dataclasses.replace(
            record,
            final=record.final * factor,
            bma=record.bma * factor,
            fault_streak=streak,
            fault_history=history,
            slash_counts=counts,
        ),
        False,
    )


def network_regressed(scores: Mapping[int, float], cfg: ValidatorConfig) -> bool:
    """Whether the window's `negative_skip_rank`-th best score (the lowest when fewer were
    scored) is negative."""
    if not scores:
        return False
    ranked = sorted(scores.values(), reverse=True)
    return ranked[min(cfg.negative_skip_rank, len(ranked)) - 1] < 0


def track_negative_evaluations(
    peers: Mapping[int, PeerRecord], scores: Mapping[int, float], cfg: ValidatorConfig
) -> tuple[dict[int, PeerRecord], list[int]]:
    """The evaluated peers' records after this window's scores (call once their finals are
    refreshed) and the uids slashed for mostly negative evaluations."""
    if not cfg.negative_evaluation or network_regressed(scores, cfg):
        return {}, []
    out: dict[int, PeerRecord] = {}
    slashed: list[int] = []
    for uid in sorted(scores):
        record = peers[uid]
        negative = int(scores[uid] < 0)
        history = checks.push_flag(record.eval_history, negative, cfg.negative_history)
        record = dataclasses.replace(
            record,
            eval_history=history,
            negative_streak=record.negative_streak + 1 if negative else 0,
        )
        full = len(history) == cfg.negative_history
        if full and sum(history) > cfg.negative_fraction * len(history):
            record = dataclasses.replace(
                record,
                final=record.final * cfg.negative_slash_factor,
                slash_counts=checks.count_slash(record, "negative"),
            )
            slashed.append(uid)
        out[uid] = record
    return out, slashed


def negative_excluded(peers: Mapping[int, PeerRecord], cfg: ValidatorConfig) -> set[int]:
    """Peers kept out of the next gather set for consecutive negative evaluations."""
    if not cfg.negative_evaluation:
        return set()
    return {uid for uid, r in peers.items() if r.negative_streak >= cfg.negative_exclude_after}
