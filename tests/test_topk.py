"""Per-chunk top-k, the mean-scatter back, and the reference's 8-bit value code."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from _pytrees import plan_for, random_tree

from gauntlet_jax.compress import topk

PLAN = plan_for()
LEAVES = dict(zip(PLAN.names, PLAN.leaves, strict=True))


def _coeffs(lp, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(lp.coeff_shape).astype(np.float32)


def test_topk_keeps_largest_magnitudes_per_chunk() -> None:
    for lp in PLAN.leaves:
        c = _coeffs(lp)
        idx, vals = topk.topk_leaf(jnp.asarray(c), lp)
        assert idx.dtype == jnp.int16 and idx.shape == lp.payload_shape
        flat = c.reshape(-1, lp.chunk_elems)
        idx = np.asarray(idx).reshape(-1, lp.k)
        vals = np.asarray(vals).reshape(-1, lp.k)
        for row, i, v in zip(flat, idx, vals, strict=True):
            want = set(np.argsort(-np.abs(row), kind="stable")[: lp.k])
            assert set(i.tolist()) == want
            np.testing.assert_array_equal(v, row[i])


def test_scatter_round_trips_kept_values() -> None:
    lp = LEAVES["layers.w"]
    c = _coeffs(lp, 1)
    idx, vals = topk.topk_leaf(jnp.asarray(c), lp)
    dense = np.asarray(topk.scatter_leaf(idx, vals, lp)).reshape(-1, lp.chunk_elems)
    flat = c.reshape(-1, lp.chunk_elems)
    for row, d, i in zip(flat, dense, np.asarray(idx).reshape(-1, lp.k), strict=True):
        np.testing.assert_array_equal(d[i], row[i])
        others = np.setdiff1d(np.arange(lp.chunk_elems), i)
        assert np.all(d[others] == 0)


def test_scatter_averages_duplicate_indices() -> None:
    lp = LEAVES["final_norm"]  # one chunk of 64, k = 32
    idx = np.arange(lp.k, dtype=np.int16)
    idx[1] = idx[2] = idx[3] = 0  # three more hits on position 0
    vals = np.arange(1, lp.k + 1, dtype=np.float32)
    dense = np.asarray(topk.scatter_leaf(jnp.asarray(idx[None]), jnp.asarray(vals[None]), lp))
    assert dense.shape == (1, 64)
    assert dense[0, 0] == np.mean([1, 2, 3, 4])
    assert dense[0, 1] == 0 and dense[0, 2] == 0 and dense[0, 3] == 0
    np.testing.assert_array_equal(dense[0, 4:32], vals[4:])
    assert np.all(dense[0, 32:] == 0)


def test_tpu_and_default_lowerings_add_the_same_bits() -> None:
    """`scatter_add` lowers to a compare-and-sum on TPU and a scatter elsewhere: both must add
    exactly the same values, out-of-range indices dropped, NaN and -0.0 kept where they land."""
    for lp in PLAN.leaves:
        rng = np.random.default_rng(7)
        idx, vals = topk.topk_leaf(jnp.asarray(_coeffs(lp, 3)), lp)
        idx = np.asarray(idx).astype(np.int32)
        vals = np.asarray(vals).copy()
        flat_idx, flat_vals = idx.reshape(-1), vals.reshape(-1)
        flat_idx[:3] = [-1, lp.chunk_elems, 40000]  # dropped, never wrapped
        flat_vals[3], flat_vals[4] = np.nan, -0.0
        sums = jnp.asarray(rng.standard_normal(topk.chunk_zeros(lp).shape).astype(np.float32))
        counts = jnp.asarray(rng.integers(0, 3, sums.shape).astype(np.float32))
        weight = jnp.float32(0.5)
        args = (sums, counts, jnp.asarray(idx), jnp.asarray(vals), weight)
        by_scatter = jax.jit(topk._add_by_scatter, static_argnums=0)(lp, *args)
        by_compare = jax.jit(topk._add_by_compare, static_argnums=0)(lp, *args)
        for a, b in zip(by_scatter, by_compare, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
            assert np.array_equal(np.signbit(a), np.signbit(b))
        assert np.isnan(np.asarray(by_scatter[0])).sum() == 1


def _reference_quantize(v: np.ndarray):
    """GAUNTLET.md §1.4 Quantize8, written out in float64 numpy for one tensor."""
    v = v.astype(np.float64).ravel()
    shift = v.mean()
    c = v - shift
    std = np.linalg.norm(c) / np.sqrt(v.size - 1)
    scale = 6 * std / 256
    if scale == 0 or not np.isfinite(scale):
        scale = 1.0
    q = np.clip(np.round(c / scale + 128), 0, 255).astype(np.uint8)
    lookup = np.array([c[q == b].mean() if np.any(q == b) else 0.0 for b in range(256)])
    return q, shift, scale, lookup


def test_quantize_matches_reference_per_layer() -> None:
    lp = LEAVES["layers.w"]
    rng = np.random.default_rng(2)
    vals = rng.standard_normal(lp.payload_shape) * np.array([1.0, 10.0, 0.01])[:, None, None, None]
    vals = vals.astype(np.float32) + 3.0
    q = jax.jit(topk.quantize_leaf, static_argnums=1)(jnp.asarray(vals), lp)
    assert q.codes.dtype == jnp.uint8 and q.codes.shape == lp.payload_shape
    assert q.shift.shape == (3,) and q.scale.shape == (3,) and q.lookup.shape == (3, 256)
    for layer in range(3):
        codes, shift, scale, lookup = _reference_quantize(vals[layer])
        got = np.asarray(q.codes[layer]).ravel()
        # Codes may differ only where c/scale+128 sits within fp32 rounding of a .5 boundary.
        assert np.mean(got != codes) < 0.01
        np.testing.assert_allclose(float(q.shift[layer]), shift, rtol=1e-6)
        np.testing.assert_allclose(float(q.scale[layer]), scale, rtol=1e-5)
        same = got == codes
        np.testing.assert_allclose(
            np.asarray(q.lookup[layer])[got[same]], lookup[codes[same]], rtol=1e-4, atol=1e-6
        )
    back = np.asarray(topk.dequantize_leaf(q, lp))
    # A value and its bin's mean lie in the same bin, of width `scale` (edge bins are open).
    scales = np.broadcast_to(np.asarray(q.scale)[:, None, None, None], vals.shape)
    interior = (np.asarray(q.codes) > 0) & (np.asarray(q.codes) < 255)
    assert interior.mean() > 0.95
    assert np.all(np.abs(back - vals)[interior] <= 1.001 * scales[interior])


def test_quantize_constant_values_uses_unit_scale() -> None:
    lp = LEAVES["final_norm"]
    vals = jnp.full(lp.payload_shape, 2.5, jnp.float32)
    q = topk.quantize_leaf(vals, lp)
    assert float(q.scale) == 1.0 and float(q.shift) == 2.5
    assert np.all(np.asarray(q.codes) == 128)
    np.testing.assert_array_equal(np.asarray(topk.dequantize_leaf(q, lp)), 2.5)


def test_topk_of_tree_shapes() -> None:
    tree = random_tree(3)
    for lp, leaf in zip(PLAN.leaves, PLAN.flatten(tree), strict=True):
        assert leaf.shape == lp.shape
