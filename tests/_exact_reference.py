"""The exact outer step (docs/protocol.md §2) written again in plain numpy with int64 and Python
integers, independently of the jitted int32 code: float64 scaling instead of bit manipulation,
`math.isqrt` instead of the corrected float estimate, int64 matmuls instead of float32 ones. int64
cannot overflow at these sizes, so equality with the device code also proves that no int32 or
float32 intermediate there overflowed or rounded."""

from __future__ import annotations

import math

import numpy as np

from gauntlet_jax.compress import dct, fixedpoint


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int64)


def _div_round(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sign(a) * ((2 * np.abs(a) + b) // (2 * b))


def _exponent_field(v: np.ndarray) -> np.ndarray:
    return ((v.astype(np.float32).view(np.uint32) >> 23) & 0xFF).astype(np.int64)


def normalise(vals: np.ndarray, mode: str, n_batch: int, k: int, chunks_per_slice: int):
    """vals [P, *batch, *grid, k] float32 → int64 units (|u| ≤ 2^UNIT_BITS)."""
    q_bits = fixedpoint.value_bits(k)
    axes = (-1,) if mode == "chunk" else tuple(range(1 + n_batch, vals.ndim))
    e = np.maximum(np.max(_exponent_field(vals), axis=axes, keepdims=True), 1)
    # The group's largest value lies in [2^(e−127), 2^(e−126)): scale it into [2^(q−1), 2^q).
    q = _round_half_away(vals.astype(np.float64) * np.exp2((q_bits + 126 - e).astype(np.float64)))
    chunk_sq = np.sum(q * q, axis=-1, keepdims=True)
    shift = 0
    if mode == "tensor":
        shift = max(
            0, fixedpoint.ceil_log2(chunks_per_slice) + 2 * q_bits + fixedpoint.ceil_log2(k) - 30
        )
        shift += shift % 2
        norm_sq = np.sum(chunk_sq >> shift, axis=axes, keepdims=True)
    else:
        norm_sq = chunk_sq
    norm = np.vectorize(math.isqrt, otypes=[np.int64])(norm_sq)
    scaled = q << (fixedpoint.UNIT_BITS - shift // 2)
    u = np.where(norm > 0, _div_round(scaled, np.maximum(norm, 1)), 0)
    return np.clip(u, -(2**fixedpoint.UNIT_BITS), 2**fixedpoint.UNIT_BITS)


def _block_float(y: np.ndarray, bits: int) -> np.ndarray:
    mag = np.abs(y)
    top = np.max(np.vectorize(int.bit_length, otypes=[np.int64])(mag), axis=-1, keepdims=True)
    shift = np.maximum(top - bits, 0)
    scaled = np.where(shift > 0, (mag + (1 << np.maximum(shift - 1, 0))) >> shift, mag)
    return np.sign(y) * scaled


def _idct(y: np.ndarray, lp) -> np.ndarray:
    """Integer coefficients (coeff layout) → pre-sign integers (parameter layout), int64."""
    if len(lp.chunks) == 1:
        basis = dct.integer_basis_np(lp.chunks[0]).astype(np.int64)
        return np.einsum("...k,ka->...a", y, basis).reshape(lp.shape)
    c1, c2 = lp.chunks
    b1 = dct.integer_basis_np(c1).astype(np.int64)
    b2 = dct.integer_basis_np(c2).astype(np.int64)
    rows = np.einsum("...ijkl,lb->...ijkb", y, b2)
    rows = np.round(rows / 2.0 ** dct.stage_shift(c2)).astype(np.int64)  # half to even
    blocks = np.einsum("...ijkb,ka->...iajb", rows, b1)
    return blocks.reshape(lp.shape)


def merged_update(plan, idx, vals, mask, mode: str) -> dict[str, np.ndarray]:
    """Pre-sign A per leaf name (int64), from stacked payload trees and a peer mask."""
    out = {}
    for lp, i, v in zip(plan.leaves, plan.flatten(idx), plan.flatten(vals), strict=True):
        v = np.asarray(v, np.float32)
        units = normalise(v, mode, lp.n_batch, lp.k, math.prod(lp.grid))
        sums = np.zeros((lp.n_chunks, lp.chunk_elems), np.int64)
        counts = np.zeros((lp.n_chunks, lp.chunk_elems), np.int64)
        rows = np.repeat(np.arange(lp.n_chunks)[:, None], lp.k, axis=1)
        for p in np.flatnonzero(np.asarray(mask)):
            cols = np.asarray(i[p]).reshape(lp.n_chunks, lp.k).astype(np.int64)
            np.add.at(sums, (rows, cols), units[p].reshape(lp.n_chunks, lp.k))
            np.add.at(counts, (rows, cols), 1)
        means = np.where(counts > 0, _div_round(sums, np.maximum(counts, 1)), 0)
        coeffs = _block_float(means, dct.coeff_bits(lp.chunks)).reshape(lp.coeff_shape)
        out[lp.name] = _idct(coeffs, lp)
    return out
