"""Chunked orthonormal DCT-II (GAUNTLET.md §1.4 `TransformDCT`), as matmuls with a fixed basis.

A matrix leaf (…, R, C) becomes coefficient blocks (…, R/c₁, C/c₂, c₁, c₂) with the DCT-II on both
in-block axes; a vector leaf (…, N) becomes (…, N/c, c). Leading batch axes (stacked layers) are
kept. Matmuls against a precomputed basis are what TPUs and GPUs run fastest; HIGHEST precision
keeps them true fp32 (no TF32/bf16 passes), so every node computes the same coefficients.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.compress.plan import LeafPlan

_HIGHEST = jax.lax.Precision.HIGHEST


@functools.cache
def dct_basis_np(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix D (n×n): coefficients y = D @ x, inverse x = Dᵀ @ y."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    basis = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    basis[0] *= np.sqrt(0.5)
    return basis.astype(np.float32)


def _basis(n: int) -> jax.Array:
    return jnp.asarray(dct_basis_np(n))


def dct_leaf(x: jax.Array, lp: LeafPlan) -> jax.Array:
    """Parameter-shaped array → chunked DCT coefficients of shape `lp.coeff_shape`."""
    batch = lp.batch_shape
    if len(lp.chunks) == 1:
        (c,) = lp.chunks
        blocks = x.reshape(*batch, lp.grid[0], c)
        return jnp.einsum("...a,ka->...k", blocks, _basis(c), precision=_HIGHEST)
    (c1, c2), (g1, g2) = lp.chunks, lp.grid
    blocks = x.reshape(*batch, g1, c1, g2, c2)
    rows = jnp.einsum("...iajb,ka->...ijkb", blocks, _basis(c1), precision=_HIGHEST)
    return jnp.einsum("...ijkb,lb->...ijkl", rows, _basis(c2), precision=_HIGHEST)


def idct_leaf(y: jax.Array, lp: LeafPlan) -> jax.Array:
    """Chunked DCT coefficients (`lp.coeff_shape`) → parameter-shaped array (inverse of dct_leaf)."""
    if len(lp.chunks) == 1:
        (c,) = lp.chunks
        x = jnp.einsum("...k,ka->...a", y, _basis(c), precision=_HIGHEST)
        return x.reshape(lp.shape)
    (c1, c2) = lp.chunks
    rows = jnp.einsum("...ijkl,lb->...ijkb", y, _basis(c2), precision=_HIGHEST)
    blocks = jnp.einsum("...ijkb,ka->...iajb", rows, _basis(c1), precision=_HIGHEST)
    return blocks.reshape(lp.shape)
