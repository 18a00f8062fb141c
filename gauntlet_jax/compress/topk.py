"""Per-chunk top-k of DCT coefficients, the scatter back, and 8-bit value quantisation.

GAUNTLET.md §1.4: each chunk keeps the k largest |coefficients| (int16 offsets into the flattened
chunk, signed values); decoding scatters into zeros and averages duplicate indices
(`scatter_reduce(..., "mean", include_self=False)`). `Quantize8` is the reference's per-tensor
8-bit code at P: shift by the mean, 256 bins of width 6σ/256 centred on code 128, and a lookup table
of each bin's mean. With stacked layers, "per tensor" means per layer slice.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gauntlet_jax.compress.plan import LeafPlan

QUANT_BINS = 256
QUANT_RANGE = 6.0
QUANT_CENTRE = 128


class Quantized(NamedTuple):
    """8-bit codes of one leaf's values and the parameters that decode them.

    codes: uint8, `lp.payload_shape`; shift, scale: float32, `lp.batch_shape`;
    lookup: float32, `lp.batch_shape + (256,)`. Value = lookup[code] + shift.
    """

    codes: jax.Array
    shift: jax.Array
    scale: jax.Array
    lookup: jax.Array


def topk_leaf(coeffs: jax.Array, lp: LeafPlan) -> tuple[jax.Array, jax.Array]:
    """Coefficients (`lp.coeff_shape`) → (indices, values), each `lp.payload_shape`."""
    flat = coeffs.reshape(*lp.batch_shape, *lp.grid, lp.chunk_elems)
    _, idx = jax.lax.top_k(jnp.abs(flat), lp.k)
    vals = jnp.take_along_axis(flat, idx, axis=-1)
    return idx.astype(lp.index_dtype), vals


def _rows_and_cols(idx: jax.Array, lp: LeafPlan) -> tuple[jax.Array, jax.Array]:
    cols = idx.reshape(lp.n_chunks, lp.k).astype(jnp.int32)
    rows = jnp.arange(lp.n_chunks, dtype=jnp.int32)[:, None]
    return rows, cols


def scatter_sum_count(
    idx: jax.Array, vals: jax.Array, lp: LeafPlan, weight: jax.Array | float = 1.0
) -> tuple[jax.Array, jax.Array]:
    """Scatter-add of `weight·vals` and of `weight` per index: flat (n_chunks, chunk_elems) arrays.

    Out-of-range indices are dropped. With distinct indices per chunk (what top-k produces and the
    codec enforces) no position is written twice, so the result is bit-deterministic on any device.
    """
    rows, cols = _rows_and_cols(idx, lp)
    values = vals.reshape(lp.n_chunks, lp.k).astype(jnp.float32)
    zeros = jnp.zeros((lp.n_chunks, lp.chunk_elems), jnp.float32)
    ones = jnp.broadcast_to(jnp.asarray(weight, jnp.float32), values.shape)
    sums = zeros.at[rows, cols].add(values * weight, mode="drop")
    counts = zeros.at[rows, cols].add(ones, mode="drop")
    return sums, counts


def mean_of(sums: jax.Array, counts: jax.Array, lp: LeafPlan) -> jax.Array:
    """Scatter-mean result in coefficient layout: sums/counts where hit, zero elsewhere."""
    dense = jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0)
    return dense.reshape(lp.coeff_shape)


def scatter_leaf(idx: jax.Array, vals: jax.Array, lp: LeafPlan) -> jax.Array:
    """(indices, values) → dense coefficients (`lp.coeff_shape`); duplicate indices average."""
    sums, counts = scatter_sum_count(idx, vals, lp)
    return mean_of(sums, counts, lp)


def quantize_leaf(vals: jax.Array, lp: LeafPlan) -> Quantized:
    """The reference's 8-bit code, once per tensor (per layer slice of a stacked leaf)."""
    n_slices = math.prod(lp.batch_shape)
    v = vals.reshape(n_slices, -1).astype(jnp.float32)
    n = v.shape[1]
    shift = jnp.mean(v, axis=1)
    centred = v - shift[:, None]
    std = jnp.sqrt(jnp.sum(centred * centred, axis=1)) / jnp.sqrt(jnp.float32(n - 1))
    scale = QUANT_RANGE * std / QUANT_BINS
    scale = jnp.where(jnp.isfinite(scale) & (scale != 0), scale, 1.0)
    codes = jnp.clip(jnp.round(centred / scale[:, None] + QUANT_CENTRE), 0, QUANT_BINS - 1)
    codes = codes.astype(jnp.uint8)
    rows = jnp.arange(n_slices)[:, None]
    bins = jnp.zeros((n_slices, QUANT_BINS), jnp.float32)
    sums = bins.at[rows, codes.astype(jnp.int32)].add(centred)
    counts = bins.at[rows, codes.astype(jnp.int32)].add(1.0)
    lookup = jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), 0.0)
    return Quantized(
        codes=codes.reshape(lp.payload_shape),
        shift=shift.reshape(lp.batch_shape),
        scale=scale.reshape(lp.batch_shape),
        lookup=lookup.reshape(*lp.batch_shape, QUANT_BINS),
    )


def dequantize_leaf(q: Quantized, lp: LeafPlan) -> jax.Array:
    """lookup[code] + shift, in `lp.payload_shape` (float32)."""
    lookup = q.lookup.reshape(-1, QUANT_BINS)
    codes = q.codes.reshape(lookup.shape[0], -1).astype(jnp.int32)
    values = jnp.take_along_axis(lookup, codes, axis=1) + q.shift.reshape(-1, 1)
    return values.reshape(lp.payload_shape)
