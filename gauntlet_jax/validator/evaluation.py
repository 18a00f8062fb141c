"""Step 3 of a validator window: who is evaluated, their loss deltas, their ratings
(GAUNTLET.md §3, §5.1–§5.4).

A few active peers are chosen (staleness-weighted, from a random ordinal bin); each chosen
peer's own pseudo-gradient is scored by the loss change it makes on its own pages and on the
window's random pages, all candidates in one call (`loss_delta.score_candidates`); the scored
peers are then rated as one OpenSkill match and their final scores refreshed. All randomness
derives from (seed, window).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Collection
from typing import Any

import numpy as np

from gauntlet_jax.compress.codec import stack_payloads
from gauntlet_jax.config import Config, ValidatorConfig
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.data.pages import batches_for, random_batches
from gauntlet_jax.errors import DataError
from gauntlet_jax.model.sharding import to_host
from gauntlet_jax.node.network import Fetched, Network, pad_to
from gauntlet_jax.node.replica import Replica
from gauntlet_jax.validator import checks, overlap, rating, weights
from gauntlet_jax.validator.loss_delta import LossDeltas, pad_batches, score_candidates
from gauntlet_jax.validator.window_record import WindowLedger

log = logging.getLogger(__name__)


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
    excluded = overlap.excluded_uids(peers, window)
    eval_peers = [u for u in active if u in set(miners) and u not in excluded]
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


def score_payloads(
    replica: Replica,
    cfg: Config,
    payloads: list[Any],
    own: list[np.ndarray],
    rand: np.ndarray,
    beta: float,
) -> LossDeltas:
    """Loss deltas of candidates (`score_candidates`) at static shapes: payloads padded to
    `uids_per_window` (absent ones weigh nothing), everything placed on the node's mesh."""
    vcfg = cfg.validator
    placement = replica.placement
    k_static = vcfg.uids_per_window
    n_static = max(len(b) for b in own)
    own_KNBT, own_w = pad_batches(pad_to(own, k_static, own[0]), n_static)
    own_w[len(own) :] = 0.0
    idx, vals, _ = stack_payloads(pad_to(payloads, k_static), replica.plan)
    idx, vals = placement.place_payloads(idx, vals)
    deltas = score_candidates(
        replica.params,
        idx,
        vals,
        placement.place_tokens(own_KNBT, ("peers", "micro", "batch", "seq")),
        placement.place_replicated(own_w),
        placement.place_tokens(rand, ("micro", "batch", "seq")),
        placement.place_replicated(np.ones(len(rand), np.float32)),
        placement.place_replicated(np.float32(beta)),
        model_cfg=cfg.model,
        plan=replica.plan,
        chunk=vcfg.candidate_chunk,
        normalise=cfg.protocol.normalise,
    )
    return LossDeltas(*to_host(tuple(deltas)))


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
) -> dict[int, float]:
    """Scores the chosen peers; returns uid → LossScore (relative gain on random data). A
    chosen peer without a valid payload or own data is slashed in `ledger` instead."""
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
            log.warning("window %d uid %d: no own data (%s)", window, uid, e)
            peers[uid] = checks.slash(peers[uid], "eval_missing", vcfg)
            continue
        candidates.append(f)
    if not candidates:
        return {}
    random_seed = int(rating.window_rng(seed, window, "random").integers(1000, 10_000_000))
    rand = sample_batches(random_batches(corpus, cfg, random_seed, window), rng, vcfg)
    beta = vcfg.eval_lr_factor * replica.lr(window)
    deltas = score_payloads(replica, cfg, [c.value for c in candidates], own, rand, beta)
    scores: dict[int, float] = {}
    for i, f in enumerate(candidates):
        uid = f.uid
        losses = {
            "loss_before_own": float(deltas.own_before[i]),
            "loss_after_own": float(deltas.own_after[i]),
            "loss_before_random": float(deltas.random_before),
            "loss_after_random": float(deltas.random_after[i]),
        }
        if not all(math.isfinite(v) for v in losses.values()):
            peers[uid] = checks.zero_on_invalid_eval(peers[uid])
            ledger.flag(uid, "eval_invalid")
            continue
        x = sync_x.get(uid, math.inf)
        peers[uid] = checks.record_evaluation(peers[uid], window, losses, x, vcfg)
        scores[uid] = peers[uid].last_losses["improvement_random"]
        ledger.note(uid, "evaluated", "ok")
    return scores


def rate_scored(
    scores: dict[int, float],
    ledger: WindowLedger,
    evaluated_before: Collection[int],
    vcfg: ValidatorConfig,
) -> set[int]:
    """Rates the scored peers as one match and refreshes their finals in `ledger`; returns
    every peer evaluated so far (the ones whose finals count toward the weights)."""
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
    return evaluated
