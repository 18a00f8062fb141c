"""Error-feedback momentum: update rule, first call, what is sent, what is kept, quantisation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft
from _pytrees import plan_for, random_tree

from gauntlet_jax.config import load_config
from gauntlet_jax.protocol import momentum
from gauntlet_jax.protocol.momentum import init_momentum, momentum_step

PLAN = plan_for()
CFG = load_config("tiny", ["protocol.momentum_decay=0.9", "protocol.error_feedback_after=0"])
LR = 0.01
decompress_tree = momentum.decompress_tree


def _leaves(tree) -> dict[str, np.ndarray]:
    return {n: np.asarray(x) for n, x in zip(PLAN.names, PLAN.flatten(tree), strict=True)}


def _sum(a, b):
    return jax.tree.map(lambda x, y: np.asarray(x, np.float64) + np.asarray(y, np.float64), a, b)


def _assert_tree_close(a, b, atol=1e-6) -> None:
    for name, x in _leaves(a).items():
        np.testing.assert_allclose(x, _leaves(b)[name], rtol=0, atol=atol, err_msg=name)


def test_first_call_sends_topk_of_dct_and_keeps_the_rest() -> None:
    g = random_tree(0)
    res = momentum_step(init_momentum(g), g, LR, 0, CFG, PLAN)
    pre = jax.tree.map(lambda x: LR * x, g)
    # Error feedback: kept + sent == α·g.
    _assert_tree_close(_sum(res.m, decompress_tree(res.idx, res.vals, PLAN)), pre)
    # Independent check on one stacked matrix leaf with scipy: the sent values are the 32 largest
    # |DCT coefficients| of each 64×64 block.
    w = LR * _leaves(g)["layers.w"].astype(np.float64)
    idx, vals = _leaves(res.idx)["layers.w"], _leaves(res.vals)["layers.w"]
    for layer in range(3):
        for bi in range(2):
            block = scipy.fft.dctn(w[layer, bi * 64 : (bi + 1) * 64, :], norm="ortho").ravel()
            want = np.sort(np.argsort(-np.abs(block))[:32])
            got = idx[layer, bi, 0]
            np.testing.assert_array_equal(np.sort(got), want)
            np.testing.assert_allclose(vals[layer, bi, 0], block[got], atol=1e-7)
    # What is kept has less energy than the momentum.
    for name, kept in _leaves(res.m).items():
        assert np.linalg.norm(kept) < np.linalg.norm(_leaves(pre)[name])


def test_first_call_ignores_loaded_momentum() -> None:
    g = random_tree(1)
    garbage = jax.tree.map(lambda x: np.full_like(x, 5.0), g)
    a = momentum_step(garbage, g, LR, 0, CFG, PLAN)
    b = momentum_step(init_momentum(g), g, LR, 0, CFG, PLAN)
    _assert_tree_close(a.m, b.m, atol=0)


def test_later_call_decays_then_adds() -> None:
    g1, g2 = random_tree(2), random_tree(3)
    first = momentum_step(init_momentum(g1), g1, LR, 0, CFG, PLAN)
    second = momentum_step(first.m, g2, 2 * LR, 1, CFG, PLAN)
    pre = jax.tree.map(lambda m, g: 0.9 * np.asarray(m) + 2 * LR * np.asarray(g), first.m, g2)
    _assert_tree_close(_sum(second.m, decompress_tree(second.idx, second.vals, PLAN)), pre)


def test_error_feedback_skipped_for_the_first_calls() -> None:
    cfg = load_config("tiny", ["protocol.momentum_decay=0.9", "protocol.error_feedback_after=2"])
    g = random_tree(4)
    m = init_momentum(g)
    for step in range(3):
        pre = jax.tree.map(lambda mi, gi: 0.9 * np.asarray(mi) + LR * np.asarray(gi), m, g)
        res = momentum_step(m, g, LR, step, cfg, PLAN)
        if step < 2:
            _assert_tree_close(res.m, pre, atol=1e-7)
        else:
            sent = decompress_tree(res.idx, res.vals, PLAN)
            _assert_tree_close(_sum(res.m, sent), pre)
            assert np.abs(_leaves(res.m)["embed"] - _leaves(pre)["embed"]).max() > 1e-4
        m = res.m


def test_quantised_feedback_subtracts_the_dequantised_values() -> None:
    cfg = load_config("tiny", ["compress.quantize=true", "protocol.error_feedback_after=0"])
    g = random_tree(5)
    res = momentum_step(init_momentum(g), g, LR, 0, cfg, PLAN)
    assert res.quant is not None
    exact = momentum_step(init_momentum(g), g, LR, 0, CFG, PLAN)
    np.testing.assert_array_equal(_leaves(res.idx)["embed"], _leaves(exact.idx)["embed"])
    # Sent values are 8-bit approximations, and the kept momentum accounts for exactly them.
    assert not np.array_equal(_leaves(res.vals)["embed"], _leaves(exact.vals)["embed"])
    pre = jax.tree.map(lambda x: LR * x, g)
    _assert_tree_close(_sum(res.m, decompress_tree(res.idx, res.vals, PLAN)), pre)


def test_vmaps_over_a_peer_axis() -> None:
    gs = [random_tree(10 + p) for p in range(3)]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *gs)
    batched = jax.vmap(lambda m, g: momentum_step(m, g, LR, 0, CFG, PLAN))(
        init_momentum(stacked), stacked
    )
    for p, g in enumerate(gs):
        single = momentum_step(init_momentum(g), g, LR, 0, CFG, PLAN)
        for a, b in zip(jax.tree.leaves(single.idx), jax.tree.leaves(batched.idx), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[p])
        for a, b in zip(jax.tree.leaves(single.m), jax.tree.leaves(batched.m), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b)[p], atol=1e-7)
