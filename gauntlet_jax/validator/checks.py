"""Fast checks and slashes: the pure parts (GAUNTLET.md §2, §2.5, §4.2).

- Put window: an upload counts only if the server's timestamp lies in [t_min, t_min + Δ], t_min
  being the chain timestamp of the first block of the next window.
- Sync: the peer publishes its parameter values at public per-window probe positions
  (`protocol.probes`) after the window's update; x = mean |Δ| / α_t is how many outer steps it
  is behind, sync = (1 − min(x, 5)/5)^2.5.
- Slashes, inactivity and the own-vs-random evidence (b, BMA) as pure functions on a
  `PeerRecord`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from gauntlet_jax.config import ValidatorConfig
from gauntlet_jax.validator.state import LOSS_KEYS, SLASH_REASONS, PeerRecord

# ---------------------------------------------------------------------------------------------
# Sync


def steps_behind(validator_vals: Any, peer_vals: Any, lr: float) -> tuple[float, float]:
    """(mean |Δ| / lr, max |Δ| / lr): each outer step moves every weight by exactly lr (sign
    update), so these count roughly how many steps the peer is behind (§2.4)."""
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"learning rate must be positive and finite, got {lr}")
    a = np.asarray(validator_vals, dtype=np.float64)
    b = np.asarray(peer_vals, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"probe vectors must be equal, non-empty 1-D; got {a.shape}, {b.shape}")
    d = np.abs(a - b)
    return float(d.mean() / lr), float(d.max() / lr)


def sync_score(x: float, cfg: ValidatorConfig) -> float:
    """(1 − min(x, S)/S)^2.5 with S = sync_curve_steps, clipped at 0; NaN scores 0."""
    if math.isnan(x):
        return 0.0
    s = cfg.sync_curve_steps
    base = max(0.0, 1.0 - min(max(x, 0.0), s) / s)
    return base**2.5


def is_out_of_sync(x: float, cfg: ValidatorConfig) -> bool:
    """More than sync_max_steps behind (NaN counts as out of sync)."""
    return not (x <= cfg.sync_max_steps)


# ---------------------------------------------------------------------------------------------
# Slashes


def push_flag(history: tuple[int, ...], flag: int, keep: int) -> tuple[int, ...]:
    """`history` with `flag` (0/1) appended, its last `keep` entries (none if keep is 0)."""
    return (*history, flag)[-keep:] if keep > 0 else ()


def count_slash(record: PeerRecord, reason: str) -> dict[str, int]:
    if reason not in SLASH_REASONS:
        raise ValueError(f"unknown slash reason {reason!r}; known: {', '.join(SLASH_REASONS)}")
    counts = dict(record.slash_counts)
    counts[reason] = counts.get(reason, 0) + 1
    return counts


def slash(record: PeerRecord, reason: str, cfg: ValidatorConfig) -> PeerRecord:
    """final and BMA × slash_factor when final > 0 (missing, late/early, invalid, out of sync,
    eval_missing). A non-positive final is left alone; the event is counted either way."""
    counts = count_slash(record, reason)
    if record.final > 0:
        return dataclasses.replace(
            record,
            final=record.final * cfg.slash_factor,
            bma=record.bma * cfg.slash_factor,
            slash_counts=counts,
        )
    return dataclasses.replace(record, slash_counts=counts)


def zero_on_invalid_eval(record: PeerRecord) -> PeerRecord:
    """An evaluated peer's payload failed validation: final := 0 if positive, negative kept."""
    counts = count_slash(record, "eval_invalid")
    return dataclasses.replace(record, final=min(record.final, 0.0), slash_counts=counts)


def active_uids(
    last_upload_window: Mapping[int, int], window: int, cfg: ValidatorConfig
) -> set[int]:
    """uids with an upload in windows [window − active_windows, window] (the reference checks
    exactly these windows, GAUNTLET.md §2.1)."""
    lo = window - cfg.active_windows
    return {uid for uid, w in last_upload_window.items() if lo <= w <= window}


def apply_inactivity(
    peers: Mapping[int, PeerRecord],
    active: Collection[int],
    window: int,
    cfg: ValidatorConfig,
) -> tuple[dict[int, PeerRecord], list[int]]:
    """One window of inactivity bookkeeping over every known peer (§2.1).

    - An active peer stops being tracked; its scores are not restored.
    - An inactive peer is tracked from its first inactive window (`inactive_since`).
    - Once window − inactive_since > inactivity_reset_windows it is fully reset: scores, BMA,
      sync, rating (deleted), eval counter and staleness go back to a newcomer's; the slash
      history is kept for the record.
    - Otherwise a positive final is multiplied by inactivity_factor (BMA untouched).

    Returns (updated records, uids reset this window).
    """
    active_set = set(active)
    out: dict[int, PeerRecord] = {}
    reset: list[int] = []
    for uid, rec in peers.items():
        if uid in active_set:
            out[uid] = (
                rec if rec.inactive_since is None else dataclasses.replace(rec, inactive_since=None)
            )
            continue
        since = window if rec.inactive_since is None else rec.inactive_since
        counts = count_slash(rec, "inactive")
        if window - since > cfg.inactivity_reset_windows:
            # An overlap exclusion outlives the reset: waiting it out inactive ends nothing early.
            out[uid] = PeerRecord(uid=uid, slash_counts=counts, excluded_until=rec.excluded_until)
            reset.append(uid)
            continue
        final = rec.final * cfg.inactivity_factor if rec.final > 0 else rec.final
        out[uid] = dataclasses.replace(rec, inactive_since=since, final=final, slash_counts=counts)
    return out, sorted(reset)


# ---------------------------------------------------------------------------------------------
# Own-vs-random evidence (§4.2) and the evaluation record


def binary_indicator(
    own_improvement: float, random_improvement: float, dead_band: float = 0.0
) -> float:
    """+1 if the update helped the peer's own pages more than random pages by more than
    `dead_band`, −1 if by less than −`dead_band`, and 0 within it.

    The improvements come from forward passes, whose sums another device layout or backend
    takes in another order: two validators agree on them only to a few ulp. With the
    reference's strict `own > random` (dead_band 0: equal counts as −1), a peer whose two
    improvements sit within rounding of each other gets +1 on one validator and −1 on another;
    a band wider than that rounding makes them agree except when the gap lies within rounding
    of the band's edge.
    """
    if own_improvement - random_improvement > dead_band:
        return 1.0
    if own_improvement - random_improvement < -dead_band:
        return -1.0
    return 0.0 if dead_band > 0 else -1.0


def graded_indicator(margin: float, reference_margin: float) -> float:
    """2·m/M − 1 clipped to [−1, 1]: the peer's own-data margin m (own − random relative
    improvement) against the window's reference M (the median peer's m, positive). +1 at or
    above the median peer's margin, 0 at half of it, −1 at none or less.

    Continuous in the losses, so validators whose losses differ by rounding get b that differs
    by rounding, never by a flip."""
    if not reference_margin > 0:
        raise ValueError(f"reference margin must be positive, got {reference_margin}")
    return float(min(1.0, max(-1.0, 2.0 * margin / reference_margin - 1.0)))


def reference_margin(margins: Collection[float], dead_band: float) -> float | None:
    """The window's median own-data margin, or None when it is within the dead band (the
    median evaluated peer gained nothing on its own pages: graded evidence has no yardstick
    and falls back to the binary indicator)."""
    if not margins:
        return None
    median = float(np.median(np.asarray(list(margins), np.float64)))
    return median if median > max(dead_band, 0.0) else None


def own_data_indicator(
    own_improvement: float,
    random_improvement: float,
    cfg: ValidatorConfig,
    window_margin: float | None = None,
) -> float:
    """b as `validator.own_data_evidence` reads it: the binary indicator, or the graded one
    against `window_margin` (`reference_margin` of the window; binary when None)."""
    if cfg.own_data_evidence == "graded" and window_margin is not None:
        return graded_indicator(own_improvement - random_improvement, window_margin)
    return binary_indicator(own_improvement, random_improvement, cfg.indicator_dead_band)


def is_harmful(
    random_improvement: float, window_median: float, dead_band: float, fraction: float = 0.0
) -> bool:
    """The harm-reset test: this update did worse on the random pages than `fraction` of the
    window's median update (0: made them worse), beyond the dead band. Only in a window whose
    median update made them better: where the median one hurt too, the network regressed and
    no peer is blamed."""
    if not window_median > dead_band:
        return False
    return random_improvement < fraction * window_median - dead_band


def harm_debt(record: PeerRecord, window: int, half_life: float) -> float:
    """The peer's harm debt at `window`: each earlier harm catch counts 1 at its window and
    halves every `half_life` windows since (0 without memory, or before any catch)."""
    if half_life <= 0 or record.harm_window is None:
        return 0.0
    return record.harm_debt * 0.5 ** (max(0, window - record.harm_window) / half_life)


def harm_reset(record: PeerRecord, window: int, cfg: ValidatorConfig) -> PeerRecord:
    """The peer's harm is confirmed at `window`: its evidence of own work is gone. BMA to −D, D
    its harm debt before (`harm_debt`; 0 without `harm_memory_windows`, so BMA to 0 as the
    plain reset): its final (ordinal × max(0, BMA) × sync) is 0 until new evaluations rebuild
    the evidence at the BMA's pace, longer the more it was caught lately. The reset adds 1 to
    the debt and empties the confirmation history. The rating is kept (the window's match
    ranks the peer last anyway) unless `harm_resets_rating` (a newcomer's μ and σ); with
    `harm_exclude_windows` the peer becomes a newcomer kept out of gather and evaluation."""
    prior = harm_debt(record, window, cfg.harm_memory_windows)
    counts = count_slash(record, "harmful")
    if cfg.harm_memory_windows > 0:
        debt, debt_window = prior + 1.0, window
    else:
        debt, debt_window = record.harm_debt, record.harm_window
    if cfg.harm_exclude_windows > 0:
        excluded = max(record.excluded_until or 0, window + 1 + cfg.harm_exclude_windows)
        return PeerRecord(
            uid=record.uid,
            excluded_until=excluded,
            harm_debt=debt,
            harm_window=debt_window,
            slash_counts=counts,
        )
    caught = dataclasses.replace(
        record,
        bma=-prior if prior > 0 else 0.0,
        harm_debt=debt,
        harm_window=debt_window,
        harm_history=(),
        slash_counts=counts,
    )
    if cfg.harm_resets_rating:
        caught = dataclasses.replace(caught, mu=None, sigma=None)
    return caught


def book_harm(
    record: PeerRecord, window: int, caught: bool, cfg: ValidatorConfig
) -> tuple[PeerRecord, bool]:
    """One evaluation through the harm test (`is_harmful` gave `caught`): pushed on the peer's
    confirmation history, and the reset (`harm_reset`) once at least `harm_confirm` of its last
    `harm_confirm_of` evaluations were caught. Returns the record and whether it was reset."""
    history = push_flag(record.harm_history, int(caught), cfg.harm_confirm_of)
    noted = dataclasses.replace(record, harm_history=history)
    if not caught or sum(history) < cfg.harm_confirm:
        return noted, False
    return harm_reset(noted, window, cfg), True


def update_bma(bma: float, b: float, alpha: float = 0.05) -> float:
    """Exponential moving average of b: (1 − α)·BMA + α·b."""
    return (1.0 - alpha) * bma + alpha * b


def relative_improvement(loss_before: float, loss_after: float) -> float:
    """(before − after) / before: the reference's LossScore (§3.3); 0 when before is 0."""
    if loss_before == 0:
        return 0.0
    return (loss_before - loss_after) / loss_before


def record_evaluation(
    record: PeerRecord,
    window: int,
    losses: Mapping[str, float],
    sync_x: float,
    cfg: ValidatorConfig,
    window_margin: float | None = None,
) -> PeerRecord:
    """Books one evaluation: b from the own/random improvements (`own_data_indicator`, graded
    against `window_margin` when configured), BMA, sync score, counters.

    `losses` holds loss_before/after_own/random (finite). The final score is refreshed later,
    after the window's rating update (`weights.refresh_final`).
    """
    needed = ("loss_before_own", "loss_after_own", "loss_before_random", "loss_after_random")
    missing = [k for k in needed if k not in losses]
    if missing:
        raise ValueError(f"peer {record.uid}: losses missing {missing}")
    vals = {k: float(losses[k]) for k in needed}
    bad = [k for k, v in vals.items() if not math.isfinite(v)]
    if bad:
        raise ValueError(f"peer {record.uid}: non-finite losses {bad}")
    own = relative_improvement(vals["loss_before_own"], vals["loss_after_own"])
    rand = relative_improvement(vals["loss_before_random"], vals["loss_after_random"])
    b = own_data_indicator(own, rand, cfg, window_margin)
    booked = {**vals, "improvement_own": own, "improvement_random": rand}
    assert set(booked) == set(LOSS_KEYS)
    return dataclasses.replace(
        record,
        binary=b,
        bma=update_bma(record.bma, b, cfg.bma_alpha),
        sync=sync_score(sync_x, cfg),
        sync_x=float(sync_x) if math.isfinite(sync_x) else None,
        eval_count=record.eval_count + 1,
        last_eval_window=window,
        last_losses=booked,
    )
