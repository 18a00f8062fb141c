"""Chunked orthonormal DCT-II (GAUNTLET.md §1.4 `TransformDCT`), as matmuls with a fixed basis.

A matrix leaf (…, R, C) becomes coefficient blocks (…, R/c₁, C/c₂, c₁, c₂) with the DCT-II on both
in-block axes; a vector leaf (…, N) becomes (…, N/c, c). Leading batch axes (stacked layers) are
kept. Matmuls against a precomputed basis are what TPUs and GPUs run fastest; HIGHEST precision
keeps them true fp32 (no TF32/bf16 passes), so every node computes the same coefficients.
"""

from __future__ import annotations

import functools
import math

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


# ---------------------------------------------------------------------------------------------
# The exact inverse transform of the outer step (docs/protocol.md §2).
#
# The basis is round(D·2^BASIS_BITS); coefficients arrive as integers of at most
# `coeff_bits(chunks)` bits (block floating point), so that each of the two in-block products is a
# float32 matmul whose every product and partial sum is an integer below 2^24: exactly
# representable, so no rounding happens at all and the order in which any backend accumulates
# (split-K, trees, FMA contraction, the TPU's bf16 passes, which split such small integers exactly)
# cannot change a bit. Between the two stages the rows are rounded back to the coefficients' bits
# by a power of two. Bits are shared between coefficients and basis where the float algorithm's
# signs are best kept (measured in tests/test_outer.py: 12 and 9 bits at chunk 64).

BASIS_BITS = 9
MAX_COEFF_BITS = 16
_EXACT_FP32_LIMIT = 2**24
# An entry of D·2^BASIS_BITS this close to a half-integer would round differently where libm's
# cos differs in the last bit; no chunk size up to 256 comes near (asserted).
_ROUNDING_MARGIN = 1e-6


@functools.cache
def integer_basis_np(n: int) -> np.ndarray:
    """round(D·2^BASIS_BITS) for the n×n DCT-II basis D, as float32 holding small integers."""
    scaled = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * np.arange(n)[:, None] / (2 * n))
    scaled *= np.sqrt(2.0 / n) * 2.0**BASIS_BITS
    scaled[0] *= np.sqrt(0.5)
    frac = np.abs(scaled - np.floor(scaled) - 0.5)
    if np.any(frac < _ROUNDING_MARGIN):
        raise ValueError(f"DCT basis of size {n} has an entry at a rounding boundary")
    return np.rint(scaled).astype(np.float32)


@functools.cache
def _column_sum(n: int) -> int:
    """max over columns of Σ|D_int|: the most a stage can multiply a coefficient bound by."""
    return int(np.abs(integer_basis_np(n)).sum(axis=0).max())


def coeff_bits(chunks: tuple[int, ...]) -> int:
    """Bits of the integer coefficients a leaf with these chunk sizes takes: every stage's output,
    2^bits · Σ|D_int|, stays below 2^24."""
    bits = min((_EXACT_FP32_LIMIT - 1) // _column_sum(n) for n in chunks).bit_length() - 1
    if bits < 1:
        raise ValueError(f"chunks {chunks}: no coefficient bits fit an exact float32 stage")
    return min(bits, MAX_COEFF_BITS)


def stage_shift(n: int) -> int:
    """Bits dropped after the first stage: 2^shift ≥ Σ|D_int|, so the rows return to the
    coefficients' bits."""
    return max(0, math.ceil(math.log2(_column_sum(n))))


def _exact_basis(n: int) -> jax.Array:
    return jnp.asarray(integer_basis_np(n))


def idct_leaf_exact(y: jax.Array, lp: LeafPlan) -> jax.Array:
    """Integer coefficients (`lp.coeff_shape`, |y| ≤ 2^coeff_bits(lp.chunks)) → parameter-shaped
    float32 array of integers whose signs are those of the inverse DCT, identical on every
    backend."""
    y = y.astype(jnp.float32)
    if len(lp.chunks) == 1:
        (c,) = lp.chunks
        x = jnp.einsum("...k,ka->...a", y, _exact_basis(c), precision=_HIGHEST)
        return x.reshape(lp.shape)
    (c1, c2) = lp.chunks
    rows = jnp.einsum("...ijkl,lb->...ijkb", y, _exact_basis(c2), precision=_HIGHEST)
    rows = jnp.round(rows * (2.0 ** -stage_shift(c2)))
    blocks = jnp.einsum("...ijkb,ka->...iajb", rows, _exact_basis(c1), precision=_HIGHEST)
    return blocks.reshape(lp.shape)
