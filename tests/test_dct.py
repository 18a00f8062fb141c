"""Chunked DCT: every block equals scipy's orthonormal DCT-II; the inverse round-trips."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.fft
from _pytrees import plan_for, random_tree

from gauntlet_jax.compress import dct

PLAN = plan_for()
TREE = random_tree(0)


def _blocks_2d(x: np.ndarray, c1: int, c2: int):
    r, c = x.shape
    for i in range(r // c1):
        for j in range(c // c2):
            yield (i, j), x[i * c1 : (i + 1) * c1, j * c2 : (j + 1) * c2]


@pytest.mark.parametrize("lp", PLAN.leaves, ids=lambda lp: lp.name)
def test_matches_scipy_on_every_block(lp) -> None:
    x = dict(zip(PLAN.names, PLAN.flatten(TREE), strict=True))[lp.name]
    y = np.asarray(jax.jit(dct.dct_leaf, static_argnums=1)(x, lp))
    assert y.shape == lp.coeff_shape
    slices = x.reshape(-1, *lp.shape[lp.n_batch :])
    coeffs = y.reshape(-1, *lp.coeff_shape[lp.n_batch :])
    for xs, ys in zip(slices, coeffs, strict=True):
        if len(lp.chunks) == 2:
            for (i, j), block in _blocks_2d(xs, *lp.chunks):
                want = scipy.fft.dctn(block.astype(np.float64), type=2, norm="ortho")
                np.testing.assert_allclose(ys[i, j], want, rtol=0, atol=2e-5)
        else:
            for i in range(lp.grid[0]):
                block = xs[i * lp.chunks[0] : (i + 1) * lp.chunks[0]].astype(np.float64)
                want = scipy.fft.dct(block, type=2, norm="ortho")
                np.testing.assert_allclose(ys[i], want, rtol=0, atol=2e-5)


@pytest.mark.parametrize("lp", PLAN.leaves, ids=lambda lp: lp.name)
def test_round_trip(lp) -> None:
    x = dict(zip(PLAN.names, PLAN.flatten(TREE), strict=True))[lp.name]
    back = np.asarray(dct.idct_leaf(dct.dct_leaf(x, lp), lp))
    assert back.shape == x.shape
    rel = np.linalg.norm(back - x) / np.linalg.norm(x)
    assert rel < 1e-6


def test_basis_is_orthonormal() -> None:
    for n in (1, 7, 48, 64):
        d = dct.dct_basis_np(n).astype(np.float64)
        np.testing.assert_allclose(d @ d.T, np.eye(n), atol=1e-6)
