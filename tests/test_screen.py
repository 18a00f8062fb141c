"""The first-order screen, the time budget and the exact-evaluation choice (issue 21)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import spearmanr

from gauntlet_jax.compress.plan import make_plan
from gauntlet_jax.config import Config, with_overrides
from gauntlet_jax.errors import ConfigError
from gauntlet_jax.model import llama
from gauntlet_jax.protocol.momentum import compress_tree
from gauntlet_jax.sim.network import chain_pace
from gauntlet_jax.validator.budget import ScoringPace, exact_count, window_seconds
from gauntlet_jax.validator.evaluation import Screened, choose_exact, exact_split
from gauntlet_jax.validator.loss_delta import score_candidates
from gauntlet_jax.validator.screen import random_gradient, screen_candidates
from gauntlet_jax.validator.state import PeerRecord
from gauntlet_jax.validator.window_record import WindowLedger


@pytest.fixture(scope="module")
def setup(tiny_config: Config):
    cfg = with_overrides(tiny_config, ["model.seq_len=16", "model.n_layers=1"])
    params = llama.init_params(cfg.model, jax.random.key(0))
    plan = make_plan(
        llama.abstract_params(cfg.model), llama.param_logical_axes(cfg.model), cfg.compress
    )
    rng = np.random.default_rng(0)
    b, t = 2, cfg.model.seq_len
    rand = rng.integers(3, 1000, (2, b, t)).astype(np.int32)
    grad, _ = random_gradient(params, jnp.asarray(rand), cfg.model)
    # Candidates from the gradient itself (descent, scaled noise added) down to its negative
    # (ascent): a spread of true loss changes the screen must rank.
    payloads = []
    for i, (a, s) in enumerate([(1, 0), (1, 2), (0, 1), (-1, 2), (-1, 0), (0.5, 1)]):
        d = jax.tree.map(
            lambda g, k=i, a=a, s=s: (
                a * g + s * jnp.std(g) * jax.random.normal(jax.random.key(k), g.shape)
            ),
            grad,
        )
        payloads.append(compress_tree(d, plan, quantize=False)[:2])
    idx = jax.tree.map(lambda *xs: jnp.stack(xs), *[p[0] for p in payloads])
    vals = jax.tree.map(lambda *xs: jnp.stack(xs), *[p[1] for p in payloads])
    return cfg, params, plan, idx, vals, rand


def test_screen_ranks_candidates_as_the_exact_random_score(setup) -> None:
    cfg, params, plan, idx, vals, rand = setup
    k, beta = 6, jnp.float32(1e-3)
    grad, loss = random_gradient(params, jnp.asarray(rand), cfg.model)
    est = np.asarray(screen_candidates(grad, loss, idx, vals, beta, plan=plan))
    own = jnp.asarray(np.repeat(rand[None], k, 0))
    exact = score_candidates(
        params, idx, vals, own, jnp.full(k, 2, jnp.int32), jnp.asarray(rand), jnp.int32(2), beta,
        model_cfg=cfg.model, plan=plan, chunk=k,
    )  # fmt: skip
    drop = (float(exact.random_before) - np.asarray(exact.random_after)) / float(
        exact.random_before
    )
    assert est.shape == (k,)
    assert spearmanr(est, drop).statistic > 0.9
    # First order at a small step: the estimate is close to the exact relative drop.
    np.testing.assert_allclose(est, drop, rtol=0.2, atol=1e-6)
    assert est[0] > 0 > est[4]


def test_non_finite_gradient_gives_non_finite_estimates(setup) -> None:
    cfg, params, plan, idx, vals, rand = setup
    grad, loss = random_gradient(params, jnp.asarray(rand), cfg.model)
    grad = jax.tree.map(lambda g: g.at[(0,) * g.ndim].set(jnp.nan), grad)
    est = np.asarray(screen_candidates(grad, loss, idx, vals, jnp.float32(1e-3), plan=plan))
    assert not np.isfinite(est).any()


def test_exact_count_is_whole_chunks_of_the_budget_between_floor_and_cap(
    tiny_config: Config,
) -> None:
    cfg = with_overrides(
        tiny_config,
        [
            "validator.uids_per_window=4",
            "validator.candidate_chunk=8",
            "validator.score_budget_fraction=0.5",
        ],
    )
    window_s = window_seconds(cfg)
    assert exact_count(ScoringPace(), 100, cfg) == 4  # not measured yet: the floor
    pace = ScoringPace(chunk_s=window_s / 10, other_s=window_s * 0.1)
    # 0.5·W − 0.1·W = 0.4·W holds 4 chunks of W/10: 32 peers.
    assert exact_count(pace, 100, cfg) == 32
    assert exact_count(pace, 20, cfg) == 20
    assert exact_count(ScoringPace(chunk_s=window_s, other_s=0.0), 100, cfg) == 4
    capped = dataclasses.replace(cfg, validator=dataclasses.replace(cfg.validator, exact_max=10))
    assert exact_count(pace, 100, capped) == 10
    off = dataclasses.replace(
        cfg, validator=dataclasses.replace(cfg.validator, score_budget_fraction=0.0)
    )
    assert exact_count(pace, 100, off) == 4


def test_pace_is_a_moving_average_per_chunk() -> None:
    pace = ScoringPace()
    pace.record_chunks(4.0, 2)
    assert pace.chunk_s == 2.0
    pace.record_chunks(float("nan"), 1)
    pace.record_chunks(0.0, 0)
    assert pace.chunk_s == 2.0
    pace.record_chunks(12.0, 2)
    assert pace.chunk_s == pytest.approx(0.7 * 2.0 + 0.3 * 6.0)


def _ledger(peers: list[int]) -> WindowLedger:
    return WindowLedger.open({u: PeerRecord(uid=u) for u in peers}, peers)


def test_exact_split_keeps_a_stalest_slot_from_two_slots() -> None:
    assert [exact_split(n, 0.25) for n in range(6)] == [
        (0, 0), (1, 0), (1, 1), (2, 1), (3, 1), (4, 1),
    ]  # fmt: skip
    assert exact_split(8, 0.25) == (6, 2)
    assert exact_split(4, 0.0) == (3, 1)  # no share rounds the guarantee away
    assert exact_split(3, 1.0) == (0, 3)


def test_choose_exact_reaches_every_peer_within_the_bound(tiny_config: Config) -> None:
    vcfg = dataclasses.replace(tiny_config.validator, screen_stalest_share=0.25)
    peers = list(range(20))
    # The screen ranks uid 0 last, always; 16 and 17 have no payload (no estimate) and are
    # eligible (chosen, they are slashed); 18 is invalid and 19 non-finite: never chosen.
    screened = Screened(estimates={u: float(u) for u in range(16)}, nonfinite=[19], invalid=[18])
    eligible, n = 18, 8
    n_top, n_stalest = exact_split(n, 0.25)
    bound = math.ceil((eligible - n_top) / n_stalest)
    assert (n_top, bound) == (6, 6)
    ledger = _ledger(peers)
    last_chosen = {u: -1 for u in range(eligible)}
    for window in range(40):
        chosen = choose_exact(window, peers, screened, n, ledger, 0, vcfg)
        assert len(chosen) == len(set(chosen)) == n
        assert chosen[:n_top] == [15, 14, 13, 12, 11, 10]  # ⌈0.75·8⌉ by estimate
        assert not {18, 19} & set(chosen)
        assert all(ledger.peers[u].staleness == 1 for u in chosen)
        assert ledger.peers[18].staleness == ledger.peers[19].staleness == 1  # untouched
        for u in chosen:
            last_chosen[u] = window
        # Every eligible peer, the one ranked last among them, evaluated in the last `bound`.
        assert all(window - w < bound for w in last_chosen.values()), (window, last_chosen)
    # The 12 outside the top share the 2 stalest slots evenly: each every 6 windows exactly.
    assert max(ledger.peers[u].staleness for u in range(eligible)) == bound


def test_choose_exact_is_a_function_of_seed_window_and_state(tiny_config: Config) -> None:
    vcfg = tiny_config.validator
    peers = list(range(12))
    screened = Screened(estimates={u: float(u) for u in peers})
    picks = {w: choose_exact(w, peers, screened, 4, _ledger(peers), 0, vcfg) for w in range(6)}
    assert picks == {
        w: choose_exact(w, peers, screened, 4, _ledger(peers), 0, vcfg) for w in range(6)
    }
    assert all(p[:3] == [11, 10, 9] for p in picks.values())
    # Equal staleness: the tie is broken by the window's draw, not by uid.
    assert len({p[3] for p in picks.values()}) > 1
    # A staler peer wins the stalest slot whatever the draw.
    ledger = _ledger(peers)
    ledger.peers[2] = dataclasses.replace(ledger.peers[2], staleness=5)
    assert choose_exact(0, peers, screened, 4, ledger, 0, vcfg)[3] == 2


def test_choose_exact_with_one_slot_or_none(tiny_config: Config) -> None:
    vcfg = tiny_config.validator
    peers = [3, 5, 7]
    screened = Screened(estimates={3: 0.1, 5: float("-inf"), 7: 0.2}, nonfinite=[5])
    assert choose_exact(0, peers, screened, 1, _ledger(peers), 0, vcfg) == [7]
    ledger = _ledger(peers)
    assert choose_exact(0, peers, screened, 0, ledger, 0, vcfg) == []
    assert ledger.peers[3].staleness == ledger.peers[7].staleness == 2
    assert choose_exact(0, [5], screened, 4, _ledger([5]), 0, vcfg) == []


def test_the_simulated_pace_gives_the_configured_exact_count(tiny_config: Config) -> None:
    cfg = with_overrides(tiny_config, ["validator.candidate_chunk=8"])
    for per_window, count in [(8, 8), (16, 16), (12, 8), (4, 4), (64, 64)]:
        c = with_overrides(cfg, [f"sim.exact_per_window={per_window}"])
        pace = chain_pace(c)
        pace.record_chunks(1e6, 1)  # host seconds do not move it
        pace.record_other(1e6)
        assert exact_count(pace, 100, c) == count  # whole chunks, at least the floor of 4
    # 0: the host's measured pace, as a real validator.
    measured = chain_pace(with_overrides(cfg, ["sim.exact_per_window=0"]))
    assert type(measured) is ScoringPace and measured.chunk_s is None
    with pytest.raises(ConfigError, match="exact_per_window"):
        chain_pace(with_overrides(cfg, ["sim.exact_per_window=-1"]))
