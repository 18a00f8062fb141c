"""Step 3 of a validator window: who is evaluated, their loss deltas, their ratings
(GAUNTLET.md §3, §5.1–§5.4; docs/protocol.md, "Scoring every peer").

With `validator.screen` (the default) every active peer's payload is screened first: the
first-order estimate of its LossScore on the window's random pages (`validator.screen`). The
peers then evaluated exactly are as many as the window's time budget holds
(`validator.budget`): the top by estimate, plus a share given to the stalest others, so that
every eligible peer is evaluated exactly within a bounded number of windows (`choose_exact`).
Without the screen the reference's selection runs (staleness-weighted, from a random ordinal
bin). Each exactly evaluated peer's own pseudo-gradient is scored by the loss change it makes on
its own pages and on the random pages, one compiled chunk of candidates at a time (`loss_delta.score_candidates`); the scored peers are
then rated as one OpenSkill match and their final scores refreshed. Screen values are never
rated. All randomness derives from (seed, window).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gauntlet_jax.compress.codec import stack_payloads
from gauntlet_jax.config import Config, ValidatorConfig
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.data.pages import batches_for, random_batches
from gauntlet_jax.errors import DataError
from gauntlet_jax.model.sharding import to_host
from gauntlet_jax.node import multihost
from gauntlet_jax.node.metrics import ErrorSink, uncounted
from gauntlet_jax.node.network import Fetched, Network, pad_to
from gauntlet_jax.node.replica import Replica
from gauntlet_jax.validator import checks, ladder, overlap, rating, weights
from gauntlet_jax.validator.budget import ScoringPace, exact_count
from gauntlet_jax.validator.loss_delta import (
    LossDeltas,
    pad_batches,
    score_candidates,
    static_batch_count,
)
from gauntlet_jax.validator.screen import random_gradient, screen_candidates
from gauntlet_jax.validator.window_record import WindowLedger

log = logging.getLogger(__name__)


def eval_candidates(
    window: int, active: Collection[int], miners: Collection[int], ledger: WindowLedger
) -> list[int]:
    """The active miners that may be screened and evaluated this window, in `active`'s order
    (the selection's random draws follow it): every one but those serving an overlap
    exclusion."""
    excluded = overlap.excluded_uids(ledger.peers, window)
    return [u for u in active if u in set(miners) and u not in excluded]


def choose_eval_peers(
    window: int,
    active: list[int],
    miners: list[int],
    ledger: WindowLedger,
    seed: int,
    vcfg: ValidatorConfig,
) -> list[int]:
    """The window's evaluated peers among the active miners; every candidate's staleness
    counter is updated in `ledger` (reset when chosen, grown when not). Peers serving an
    overlap exclusion are not candidates."""
    peers = ledger.peers
    eval_peers = eval_candidates(window, active, miners, ledger)
    ordinals = {u: rating.peer_ordinal(peers[u]) for u in eval_peers}
    staleness = {u: peers[u].staleness for u in eval_peers}
    rng = rating.window_rng(seed, window, "select")
    chosen = rating.select_eval_uids(eval_peers, ordinals, staleness, vcfg, rng)
    for uid, s in rating.update_staleness(staleness, eval_peers, chosen).items():
        peers[uid] = dataclasses.replace(peers[uid], staleness=s)
    return chosen


def sample_batches(
    batches: np.ndarray, rng: np.random.Generator, vcfg: ValidatorConfig
) -> np.ndarray:
    """The reference's evaluation sample: max(1, ⌊rate·n⌋) batches, sorted indices."""
    n = max(1, int(vcfg.sample_rate * len(batches)))
    return batches[np.sort(rng.choice(len(batches), size=n, replace=False))]


def _chunks(n: int, chunk: int) -> list[range]:
    return [range(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def padded_random(rand: np.ndarray) -> tuple[np.ndarray, int]:
    """The window's random batches padded to `static_batch_count`, and their real count."""
    padded, counts = pad_batches([rand], static_batch_count(len(rand)))
    return padded[0], int(counts[0])


def score_payloads(
    replica: Replica,
    cfg: Config,
    payloads: list[Any],
    own: list[np.ndarray],
    rand: np.ndarray,
    beta: float,
) -> LossDeltas:
    """Loss deltas of candidates (`score_candidates`) at static shapes: one compiled call per
    chunk of `candidate_chunk` payloads (the last padded; absent ones weigh nothing), batch
    counts padded to `static_batch_count`, so any number of candidates and of batches runs one
    of a few programs; everything placed on the node's mesh."""
    vcfg = cfg.validator
    placement = replica.placement
    chunk = max(1, vcfg.candidate_chunk)
    n_static = static_batch_count(max(len(b) for b in own))
    rand_padded, rand_n = padded_random(rand)
    rand_p = placement.place_tokens(rand_padded, ("micro", "batch", "seq"))
    rand_n_p = placement.place_replicated(np.int32(rand_n))
    beta_p = placement.place_replicated(np.float32(beta))
    parts = []
    for span in _chunks(len(payloads), chunk):
        own_c = [own[i] for i in span]
        own_KNBT, own_n = pad_batches(pad_to(own_c, chunk, own_c[0]), n_static)
        own_n[len(own_c) :] = 0
        idx, vals, _ = stack_payloads(pad_to([payloads[i] for i in span], chunk), replica.plan)
        idx, vals = placement.place_payloads(idx, vals)
        deltas = score_candidates(
            replica.params,
            idx,
            vals,
            placement.place_tokens(own_KNBT, ("peers", "micro", "batch", "seq")),
            placement.place_replicated(own_n),
            rand_p,
            rand_n_p,
            beta_p,
            model_cfg=cfg.model,
            plan=replica.plan,
            chunk=chunk,
            normalise=cfg.protocol.normalise,
        )
        parts.append((LossDeltas(*to_host(tuple(deltas))), len(span)))
    return LossDeltas(
        np.concatenate([np.asarray(d.own_before)[:n] for d, n in parts]),
        np.concatenate([np.asarray(d.own_after)[:n] for d, n in parts]),
        np.asarray(parts[0][0].random_before),
        np.concatenate([np.asarray(d.random_after)[:n] for d, n in parts]),
    )


def screen_payloads(
    replica: Replica, cfg: Config, payloads: list[Any], rand: np.ndarray, beta: float
) -> np.ndarray:
    """The screen (`screen.screen_candidates`) of every payload: one gradient of the random
    pages (padded as `score_payloads` pads them), then one compiled call per chunk of
    `candidate_chunk` payloads. [len(payloads)]."""
    placement = replica.placement
    chunk = max(1, cfg.validator.candidate_chunk)
    rand_padded, rand_n = padded_random(rand)
    grad, loss = random_gradient(
        replica.params,
        placement.place_tokens(rand_padded, ("micro", "batch", "seq")),
        cfg.model,
        placement.place_replicated(np.int32(rand_n)),
    )
    beta_p = placement.place_replicated(np.float32(beta))
    out = []
    for span in _chunks(len(payloads), chunk):
        idx, vals, _ = stack_payloads(pad_to([payloads[i] for i in span], chunk), replica.plan)
        idx, vals = placement.place_payloads(idx, vals)
        est = screen_candidates(
            grad, loss, idx, vals, beta_p, plan=replica.plan, normalise=cfg.protocol.normalise
        )
        out.append(np.asarray(to_host(est), np.float64)[: len(span)])
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class WindowPages:
    """The window's shared random pages (sampled) and the trial step size β."""

    rand: np.ndarray
    beta: float


def window_pages(
    window: int, replica: Replica, corpus: TokenCorpus, cfg: Config, seed: int
) -> WindowPages:
    vcfg = cfg.validator
    random_seed = int(rating.window_rng(seed, window, "random").integers(1000, 10_000_000))
    rng = rating.window_rng(seed, window, "random_sample")
    rand = sample_batches(random_batches(corpus, cfg, random_seed, window), rng, vcfg)
    return WindowPages(rand, vcfg.eval_lr_factor * replica.lr(window))


@dataclass
class Screened:
    """The screen's outcome: finite estimates (uid → estimated LossScore), the peers whose
    estimate was not finite (unscored this window), and the valid payloads fetched."""

    estimates: dict[int, float] = field(default_factory=dict)
    nonfinite: list[int] = field(default_factory=list)
    invalid: list[int] = field(default_factory=list)
    fetched: dict[int, Fetched] = field(default_factory=dict)


def screen_peers(
    window: int,
    eval_peers: list[int],
    fetched: dict[int, Fetched],
    pages: WindowPages,
    ledger: WindowLedger,
    *,
    replica: Replica,
    network: Network,
    cfg: Config,
) -> Screened:
    """Screens every eval peer's payload. An invalid payload gets no screen value and is
    penalised as an invalid evaluated payload; a missing one is left for the exact draw (where
    it is slashed as before); a non-finite estimate (from θ or the pages: the sign is bounded)
    is logged and the peer left unscored this window."""
    peers = ledger.peers
    out = Screened()
    for uid in sorted(eval_peers):
        f = fetched.get(uid) or network.fetch_payload(uid, window, replica.plan, 0.0)
        if f.status == "invalid":
            peers[uid] = checks.zero_on_invalid_eval(peers[uid])
            ledger.flag(uid, "eval_invalid")
            ledger.note(uid, "screen", "invalid")
            out.invalid.append(uid)
        elif f.status == "ok":
            out.fetched[uid] = f
        else:
            ledger.note(uid, "screen", "missing")
    uids = list(out.fetched)
    if not uids:
        return out
    values = screen_payloads(
        replica, cfg, [out.fetched[u].value for u in uids], pages.rand, pages.beta
    )
    for uid, v in zip(uids, values, strict=True):
        if math.isfinite(v):
            out.estimates[uid] = float(v)
            ledger.screens[uid] = float(v)
            ledger.note(uid, "screen", "ok")
        else:
            log.warning("window %d uid %d: non-finite screen value %r; unscored", window, uid, v)
            out.nonfinite.append(uid)
            ledger.note(uid, "screen", "nonfinite")
    return out


def exact_split(n: int, stalest_share: float) -> tuple[int, int]:
    """(n_top, n_stalest): how many of a window's n exact slots go to the top estimates and how
    many to the stalest peers: ⌈(1 − share)·n⌉ by estimate, but at least one stalest slot
    whenever n ≥ 2 (so no share rounds the guarantee of `choose_exact` away)."""
    n_top = min(n, math.ceil((1.0 - stalest_share) * n))
    if n >= 2:
        n_top = min(n_top, n - 1)
    return n_top, n - n_top


def choose_exact(
    window: int,
    eval_peers: list[int],
    screened: Screened,
    n_exact: int,
    ledger: WindowLedger,
    seed: int,
    vcfg: ValidatorConfig,
) -> list[int]:
    """The window's exactly evaluated peers, n = min(n_exact, eligible) of them, where the
    eligible peers are the eval peers but the invalid and the non-finite ones (a peer whose
    payload is missing is eligible: chosen, it is slashed as before). `exact_split` gives
    n_top and n_stalest: the top n_top by screen estimate (ties by uid), then the n_stalest
    eligible others with the largest staleness counters (ties in the order of a permutation
    drawn from `window_rng(seed, window, "exact_share")`, so every validator process agrees).
    Staleness counters are updated as by `choose_eval_peers` (chosen → 1, other eligible +1,
    the left-out untouched).

    The guarantee: with E eligible peers (every peer eligible at some point of the span) and
    n fixed, every one of them is evaluated exactly at least once in any ⌈(E − n_top) /
    n_stalest⌉ consecutive windows. A peer p not chosen in a window is passed over only for
    peers at least as stale as it; each of those is reset to 1 when chosen, below p, and no
    other peer can overtake p (all counters grow by one a window), so the peers ahead of p
    among the E − n_top − 1 others outside the top shrink by n_stalest a window until p is
    chosen. The rule cannot be gamed: a peer raises its counter only by going unevaluated,
    which is what the rule repays with an evaluation, and a peer whose estimate is top is
    evaluated anyway. With n = 1 (and share < 1) the one slot is the top estimate: there is
    no stalest slot, and no bound."""
    peers = ledger.peers
    left_out = set(screened.nonfinite) | set(screened.invalid)
    eligible = [u for u in sorted(eval_peers) if u not in left_out]
    n = min(n_exact, len(eligible))
    n_top, _ = exact_split(n, vcfg.screen_stalest_share)
    # Fewer estimates than n_top (missing payloads) leave more slots to the stalest.
    ranked = sorted(screened.estimates, key=lambda u: (-screened.estimates[u], u))
    chosen = ranked[:n_top]
    top = set(chosen)
    rest = [u for u in eligible if u not in top]
    tiebreak = rating.window_rng(seed, window, "exact_share").permutation(len(rest))
    by_staleness = sorted(range(len(rest)), key=lambda i: (-peers[rest[i]].staleness, tiebreak[i]))
    chosen += [rest[i] for i in by_staleness[: n - len(chosen)]]
    staleness = {u: peers[u].staleness for u in eligible}
    for uid, s in rating.update_staleness(staleness, eligible, chosen).items():
        peers[uid] = dataclasses.replace(peers[uid], staleness=s)
    return chosen


@dataclass
class Evaluated:
    """An exact evaluation's outcome: uid → LossScore, and its seconds and compiled chunks (the
    pace the time budget is measured by)."""

    scores: dict[int, float]
    seconds: float = 0.0
    chunks: int = 0


def evaluate_peers(
    window: int,
    chosen: list[int],
    fetched: dict[int, Fetched],
    sync_x: dict[int, float],
    ledger: WindowLedger,
    *,
    replica: Replica,
    network: Network,
    corpus: TokenCorpus,
    cfg: Config,
    seed: int,
    pages: WindowPages,
    count_error: ErrorSink = uncounted,
) -> Evaluated:
    """Scores the chosen peers exactly; LossScore = relative gain on random data. A chosen
    peer without a valid payload or own data is slashed in `ledger` instead; own data this
    node's corpus cannot give is its own fault, counted in `count_error` too."""
    vcfg = cfg.validator
    peers = ledger.peers
    candidates, own = [], []
    rng = rating.window_rng(seed, window, "batches")
    for uid in chosen:
        f = fetched.get(uid) or network.fetch_payload(uid, window, replica.plan, 0.0)
        if f.status == "invalid":
            peers[uid] = checks.zero_on_invalid_eval(peers[uid])
            ledger.flag(uid, "eval_invalid")
            continue
        if f.status != "ok":
            ledger.slash(uid, "eval_missing", vcfg)
            continue
        try:
            own.append(sample_batches(batches_for(corpus, uid, window, cfg), rng, vcfg))
        except DataError as e:
            count_error("own_data", e)
            log.warning("window %d uid %d: no own data (%s)", window, uid, e)
            peers[uid] = checks.slash(peers[uid], "eval_missing", vcfg)
            continue
        candidates.append(f)
    if not candidates:
        return Evaluated({})
    t0 = time.perf_counter()
    deltas = score_payloads(
        replica, cfg, [c.value for c in candidates], own, pages.rand, pages.beta
    )
    seconds = time.perf_counter() - t0
    finite: dict[int, dict[str, float]] = {}
    for i, f in enumerate(candidates):
        losses = {
            "loss_before_own": float(deltas.own_before[i]),
            "loss_after_own": float(deltas.own_after[i]),
            "loss_before_random": float(deltas.random_before),
            "loss_after_random": float(deltas.random_after[i]),
        }
        if all(math.isfinite(v) for v in losses.values()):
            finite[f.uid] = losses
        else:
            peers[f.uid] = checks.zero_on_invalid_eval(peers[f.uid])
            ledger.flag(f.uid, "eval_invalid")
    scores = book_evaluations(window, finite, sync_x, ledger, vcfg)
    n_chunks = -(-len(candidates) // max(1, vcfg.candidate_chunk))
    return Evaluated(scores, seconds, n_chunks)


def book_evaluations(
    window: int,
    losses: Mapping[int, Mapping[str, float]],
    sync_x: Mapping[int, float],
    ledger: WindowLedger,
    vcfg: ValidatorConfig,
) -> dict[int, float]:
    """Books the window's finite evaluations on the peers' records and returns their LossScores
    (relative gain on random data). Evidence that needs the whole window is read here: the
    median own-data margin for graded b, the median LossScore for the harm reset."""
    peers = ledger.peers
    gains = {
        uid: (
            checks.relative_improvement(v["loss_before_own"], v["loss_after_own"]),
            checks.relative_improvement(v["loss_before_random"], v["loss_after_random"]),
        )
        for uid, v in losses.items()
    }
    margin = checks.reference_margin([o - r for o, r in gains.values()], vcfg.indicator_dead_band)
    median_score = float(np.median([r for _, r in gains.values()])) if gains else 0.0
    scores: dict[int, float] = {}
    for uid, v in losses.items():
        x = sync_x.get(uid, math.inf)
        peers[uid] = checks.record_evaluation(peers[uid], window, v, x, vcfg, margin)
        scores[uid] = peers[uid].last_losses["improvement_random"]
        ledger.note(uid, "evaluated", "ok")
        if vcfg.harm_reset:
            caught = checks.is_harmful(
                scores[uid], median_score, vcfg.indicator_dead_band, vcfg.harm_fraction
            )
            peers[uid], reset = checks.book_harm(peers[uid], window, caught, vcfg)
            if reset:
                ledger.flag(uid, "harmful")
            elif caught:
                ledger.note(uid, "harm", "unconfirmed")
    return scores


def evaluate_window(
    window: int,
    active: Collection[int],
    miners: list[int],
    fetched: dict[int, Fetched],
    sync_x: dict[int, float],
    ledger: WindowLedger,
    pace: ScoringPace,
    *,
    replica: Replica,
    network: Network,
    corpus: TokenCorpus,
    cfg: Config,
    seed: int,
    count_error: ErrorSink = uncounted,
) -> tuple[list[int], Evaluated]:
    """Step 3 up to the rating: the screen (if on), the choice of exactly evaluated peers
    (count from the time budget at `pace`, decided by the leader so every process agrees),
    and their exact scores. Returns (chosen, exact outcome); records the pace."""
    vcfg = cfg.validator
    pages = window_pages(window, replica, corpus, cfg, seed)
    eval_peers = eval_candidates(window, sorted(active), miners, ledger)
    if vcfg.screen:
        screened = screen_peers(
            window, eval_peers, fetched, pages, ledger, replica=replica, network=network, cfg=cfg
        )
        n_eligible = len(eval_peers) - len(screened.nonfinite) - len(screened.invalid)
        n_exact = multihost.leader_call(lambda: exact_count(pace, n_eligible, cfg))
        chosen = choose_exact(window, eval_peers, screened, n_exact, ledger, seed, vcfg)
        fetched = {**fetched, **screened.fetched}
    else:
        chosen = choose_eval_peers(window, list(active), miners, ledger, seed, vcfg)
    done = evaluate_peers(
        window,
        chosen,
        fetched,
        sync_x,
        ledger,
        replica=replica,
        network=network,
        corpus=corpus,
        cfg=cfg,
        seed=seed,
        pages=pages,
        count_error=count_error,
    )
    pace.record_chunks(done.seconds, done.chunks)
    return chosen, done


def rate_scored(
    scores: dict[int, float],
    ledger: WindowLedger,
    evaluated_before: Collection[int],
    vcfg: ValidatorConfig,
) -> set[int]:
    """Rates the scored peers as one match, refreshes their finals in `ledger` and tracks
    negative evaluations (`ladder`, when on); returns every peer evaluated so far (the ones
    whose finals count toward the weights)."""
    peers = ledger.peers
    ratings = {
        u: rating.Rating(r.mu, r.sigma)
        for u, r in peers.items()
        if r.rated  # type: ignore[arg-type]
    }
    updated = rating.rate_window(ratings, scores, vcfg)
    evaluated = set(evaluated_before)
    for uid in scores:
        r = updated[uid]
        peers[uid] = weights.refresh_final(dataclasses.replace(peers[uid], mu=r.mu, sigma=r.sigma))
        evaluated.add(uid)
    tracked, slashed = ladder.track_negative_evaluations(peers, scores, vcfg)
    peers.update(tracked)
    for uid in slashed:
        ledger.flag(uid, "negative")
    return evaluated
