from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gauntlet_jax.compress.plan import make_plan
from gauntlet_jax.config import Config, with_overrides
from gauntlet_jax.model import llama
from gauntlet_jax.protocol.momentum import compress_tree
from gauntlet_jax.protocol.outer import single_peer_sign
from gauntlet_jax.validator.loss_delta import (
    mean_loss,
    pad_batches,
    score_candidates,
    trial_params,
)


@pytest.fixture(scope="module")
def setup(tiny_config: Config):
    cfg = with_overrides(tiny_config, ["model.seq_len=16", "model.n_layers=1"])
    params = llama.init_params(cfg.model, jax.random.key(0))
    plan = make_plan(
        llama.abstract_params(cfg.model), llama.param_logical_axes(cfg.model), cfg.compress
    )
    rng = np.random.default_rng(0)
    k, b, t = 3, 2, cfg.model.seq_len
    payloads = []
    for i in range(k):
        noise = jax.tree.map(
            lambda p, i=i: jax.random.normal(jax.random.key(i + 1), p.shape), params
        )
        idx, vals, _ = compress_tree(noise, plan, quantize=False)
        payloads.append((idx, vals))
    idx = jax.tree.map(lambda *xs: jnp.stack(xs), *[p[0] for p in payloads])
    vals = jax.tree.map(lambda *xs: jnp.stack(xs), *[p[1] for p in payloads])
    # Candidates own different numbers of batches: 2, 1 and 3 (padded to 3).
    own = [rng.integers(3, 1000, (n, b, t)).astype(np.int32) for n in (2, 1, 3)]
    own_KNBT, own_n = pad_batches(own, 3)
    rand = rng.integers(3, 1000, (2, b, t)).astype(np.int32)
    return cfg, params, plan, payloads, idx, vals, own, own_KNBT, own_n, rand


def test_vmapped_scores_equal_a_one_candidate_loop(setup) -> None:
    cfg, params, plan, payloads, idx, vals, own, own_KNBT, own_n, rand = setup
    beta = jnp.float32(0.05)
    got = score_candidates(
        params,
        idx,
        vals,
        own_KNBT,
        own_n,
        rand,
        np.int32(2),
        beta,
        model_cfg=cfg.model,
        plan=plan,
        chunk=2,  # 3 candidates in chunks of 2: padding path
    )
    rand_before = mean_loss(params, rand, 2, cfg.model)
    np.testing.assert_allclose(got.random_before, rand_before, rtol=1e-6)
    for i, ((c_idx, c_vals), own_i) in enumerate(zip(payloads, own, strict=True)):
        # The trial sign is the outer step's over a gather set of one (exact integer path).
        signs = single_peer_sign(c_idx, c_vals, plan)
        trial = trial_params(params, signs, beta)
        n = own_i.shape[0]
        np.testing.assert_allclose(
            got.own_before[i], mean_loss(params, own_i, n, cfg.model), rtol=1e-5
        )
        np.testing.assert_allclose(
            got.own_after[i], mean_loss(trial, own_i, n, cfg.model), rtol=1e-5
        )
        np.testing.assert_allclose(
            got.random_after[i], mean_loss(trial, rand, 2, cfg.model), rtol=1e-5
        )
    # The step is large enough to move every loss.
    assert np.all(np.abs(np.asarray(got.random_after) - float(got.random_before)) > 1e-4)
    rel = got.random_improvement()
    assert rel.shape == (3,)
    np.testing.assert_allclose(
        rel, (float(rand_before) - np.asarray(got.random_after)) / float(rand_before), rtol=1e-6
    )


def test_padding_batches_do_not_count(setup) -> None:
    cfg, params, *_ = setup
    rng = np.random.default_rng(1)
    real = rng.integers(3, 1000, (2, 2, cfg.model.seq_len)).astype(np.int32)
    junk = rng.integers(3, 1000, (1, 2, cfg.model.seq_len)).astype(np.int32)
    padded = np.concatenate([real, junk])
    a = mean_loss(params, real, 2, cfg.model)
    b = mean_loss(params, padded, 2, cfg.model)
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_pad_batches_shapes_and_counts() -> None:
    arrs = [np.ones((n, 2, 4), np.int32) * (n + 1) for n in (1, 4)]
    out, counts = pad_batches(arrs, 3)
    assert out.shape == (2, 3, 2, 4)
    np.testing.assert_array_equal(counts, [1, 3])
    assert (out[0, 1:] == 0).all() and (out[1] == 5).all()
