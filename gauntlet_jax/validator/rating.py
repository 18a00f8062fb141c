"""Who is evaluated each window, and the OpenSkill rating update (GAUNTLET.md §3.1, §5.1–§5.3).

Selection: eval peers sorted by ordinal (descending) are cut into contiguous bins when there are
enough of them; one bin is picked uniformly at random and, inside it, `uids_per_window` peers are
drawn without replacement with probability proportional to their staleness counters.

Rating: the window's evaluated peers form a Plackett–Luce match of single-player teams, ranked
by descending LossScore on random data, rated by the `openskill` library with the reference's
settings (β = 7, τ = 0.1, library defaults otherwise).

All randomness comes from a `numpy.random.Generator` the caller derives from (seed, window)
with `window_rng`, never from process state: a restarted validator makes the same choices.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from openskill.models import PlackettLuce

from gauntlet_jax.config import ValidatorConfig
from gauntlet_jax.validator.state import PeerRecord

ORDINAL_Z = 3.0


@dataclass(frozen=True)
class Rating:
    """An OpenSkill rating: skill mean μ and uncertainty σ."""

    mu: float
    sigma: float


def ordinal(r: Rating) -> float:
    """μ − 3σ: a conservative skill estimate that rewards being evaluated often (§5.3)."""
    return r.mu - ORDINAL_Z * r.sigma


def peer_ordinal(record: PeerRecord) -> float:
    """The ordinal of a peer's rating; 0 before its first rating."""
    if not record.rated:
        return 0.0
    return ordinal(Rating(record.mu, record.sigma))  # type: ignore[arg-type]


def make_model(cfg: ValidatorConfig) -> PlackettLuce:
    """The reference's model: PlackettLuce(β, τ), library defaults for everything else."""
    return PlackettLuce(beta=cfg.openskill_beta, tau=cfg.openskill_tau)


def default_rating(cfg: ValidatorConfig) -> Rating:
    """The rating the library gives a newcomer (μ 25, σ 25/3 with the defaults)."""
    r = make_model(cfg).rating()
    return Rating(float(r.mu), float(r.sigma))


def window_rng(seed: int, window: int, purpose: str) -> np.random.Generator:
    """A generator that depends only on (seed, window, purpose).

    `purpose` separates independent streams (e.g. "select" vs "random_pages"); it is hashed with
    CRC-32, which, unlike `hash()`, is identical in every process.
    """
    if seed < 0 or window < 0:
        raise ValueError(f"seed and window must be non-negative, got {seed}, {window}")
    tag = zlib.crc32(purpose.encode())
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, window, tag])))


# ---------------------------------------------------------------------------------------------
# Selection


def bin_peers(
    eval_peers: Collection[int], ordinals: Mapping[int, float], cfg: ValidatorConfig
) -> list[list[int]]:
    """Eval peers sorted by ordinal (descending, ties by uid), cut into contiguous bins.

    Binning applies only when there are at least num_bins·uids_per_window peers; otherwise all
    peers form one bin. With n peers in b bins the first n mod b bins hold one extra peer. A peer
    without an ordinal ranks as a newcomer (the default rating's ordinal).
    """
    newcomer = ordinal(default_rating(cfg))
    peers = sorted(set(eval_peers), key=lambda u: (-ordinals.get(u, newcomer), u))
    n = len(peers)
    if n == 0:
        return []
    n_bins = cfg.num_bins
    if n_bins <= 1 or n < n_bins * cfg.uids_per_window:
        return [peers]
    base, remainder = divmod(n, n_bins)
    bins, start = [], 0
    for b in range(n_bins):
        size = base + (1 if b < remainder else 0)
        bins.append(peers[start : start + size])
        start += size
    return bins


def select_eval_uids(
    eval_peers: Collection[int],
    ordinals: Mapping[int, float],
    staleness: Mapping[int, int],
    cfg: ValidatorConfig,
    rng: np.random.Generator,
) -> list[int]:
    """The peers to evaluate this window, in draw order.

    One bin uniformly at random, then k = min(uids_per_window, |bin|) peers drawn without
    replacement, each draw proportional to the staleness counter (1 for peers without one).
    The result depends only on the arguments (not on the order of `eval_peers`).
    """
    bins = bin_peers(eval_peers, ordinals, cfg)
    if not bins:
        return []
    chosen_bin = bins[int(rng.integers(len(bins)))]
    k = min(cfg.uids_per_window, len(chosen_bin))
    weights = np.array([staleness.get(u, 1) for u in chosen_bin], dtype=np.float64)
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise ValueError(f"staleness counters must be positive, got {weights.tolist()}")
    picks = rng.choice(len(chosen_bin), size=k, replace=False, p=weights / weights.sum())
    return [chosen_bin[int(i)] for i in picks]


def update_staleness(
    staleness: Mapping[int, int], eval_peers: Collection[int], chosen: Collection[int]
) -> dict[int, int]:
    """Chosen peers restart at 1; every other eval peer waits one window longer (+1).

    Counters of uids that are not eval peers this window are left as they are.
    """
    chosen_set = set(chosen)
    out = dict(staleness)
    for uid in set(eval_peers) | chosen_set:
        out[uid] = 1 if uid in chosen_set else staleness.get(uid, 1) + 1
    return out


# ---------------------------------------------------------------------------------------------
# OpenSkill


def ranks_from_scores(scores: Sequence[float]) -> list[int]:
    """Strict ranks 0..k−1 by descending score; equal scores keep their input order
    (`rate_window` passes them by uid).

    This reproduces the reference's strict ranks. It passed float `scores` to openskill 6.1.0a0, whose
    `_calculate_rankings` replaced every non-int rank by the team's sorted position, so no two
    peers ever tied, even with equal scores, and equal scores were ordered by the stable sort of
    the input (the order in which the peers were evaluated). openskill ≥ 6.2 detects ties in
    `scores` and averages tied players' μ changes; we therefore pass explicit integer ranks.
    """
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0] * len(scores)
    for position, i in enumerate(order):
        ranks[i] = position
    return ranks


def rate_window(
    ratings: Mapping[int, Rating], scores: Mapping[int, float], cfg: ValidatorConfig
) -> dict[int, Rating]:
    """One Plackett–Luce update over the peers scored this window (GAUNTLET.md §5.2).

    `scores` maps uid → LossScore on random data. Equal scores rank by uid, the lower first: the
    reference broke ties by evaluation order, which differs between validators (and between the
    processes of one validator's chunks), so two validators with the same scores could rate
    differently. Runs only if at least two peers have a score; otherwise the ratings come back
    unchanged. Peers without a rating start from the library default. Returns all ratings,
    updated ones included.
    """
    out = dict(ratings)
    if len(scores) < 2:
        return out
    uids = sorted(scores)
    values = [float(scores[u]) for u in uids]
    bad = [u for u, v in zip(uids, values, strict=True) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite LossScores for uids {bad}; treat those peers as failed")
    model = make_model(cfg)
    teams = []
    for uid in uids:
        r = ratings.get(uid)
        player = (
            model.rating(name=str(uid))
            if r is None
            else model.rating(mu=r.mu, sigma=r.sigma, name=str(uid))
        )
        teams.append([player])
    rated = model.rate(teams, ranks=ranks_from_scores(values))
    for uid, team in zip(uids, rated, strict=True):
        out[uid] = Rating(float(team[0].mu), float(team[0].sigma))
    return out
