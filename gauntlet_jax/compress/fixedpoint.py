"""Integer arithmetic for the exact outer step: float32 values to fixed point by their bits, an
integer L2 normalisation, rounded integer division and block-floating-point rescaling.

Everything here is int32 (no x64 needed) and uses only integer operations — bit masks, shifts,
compares, additions, multiplications and divisions that cannot overflow by the bounds asserted at
trace time — so the result is a function of the input bits alone: no backend, fusion, reduction order
or flush-to-zero mode can change it (integer addition is associative; a float value is read through
its bit pattern, denormals included, never through float arithmetic).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

# int32 leaves one sign bit: every intermediate below stays under this.
INT32_LIMIT = 2**31 - 1
# Bits of the normalised per-peer values (|u| ≤ 2^UNIT_BITS): the merge sums up to
# 2^(31 − UNIT_BITS − 2) peers without overflow.
UNIT_BITS = 16
MAX_PEERS = 2 ** (31 - UNIT_BITS - 2)
_MANTISSA_BITS = 23
_EXPONENT_MASK = 0xFF
_MANTISSA_MASK = (1 << _MANTISSA_BITS) - 1


def ceil_log2(n: int) -> int:
    """Smallest e with 2^e ≥ n (n ≥ 1)."""
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def value_bits(k: int) -> int:
    """Fixed-point bits Q per value for groups of `k` values: one chunk's sum of squares,
    k·(2^Q)², stays ≤ 2^30, and 2·|q|·2^UNIT_BITS stays ≤ 2^30 (the rounded division)."""
    return min(29 - UNIT_BITS, (30 - ceil_log2(k)) // 2)


def exponents(vals: jax.Array) -> jax.Array:
    """The biased binary exponent field of each float32 value (int32; 0 for zeros, denormals)."""
    bits = jax.lax.bitcast_convert_type(vals.astype(jnp.float32), jnp.int32)
    return jnp.right_shift(bits, _MANTISSA_BITS) & _EXPONENT_MASK


def to_fixed(vals: jax.Array, group_exponent: jax.Array, q_bits: int) -> jax.Array:
    """round(v · 2^(q_bits − e)) as int32, e = `group_exponent` (broadcast against `vals`) the
    largest exponent of the value's group, so |result| ≤ 2^q_bits. Computed from the bit pattern:
    v = ±m·2^(exp − 150) with m the 24-bit significand (no implicit bit for denormals)."""
    bits = jax.lax.bitcast_convert_type(vals.astype(jnp.float32), jnp.int32)
    field = jnp.right_shift(bits, _MANTISSA_BITS) & _EXPONENT_MASK
    significand = (bits & _MANTISSA_MASK) | jnp.where(field > 0, 1 << _MANTISSA_BITS, 0)
    # v·2^(q − e) = m·2^(field_eff − 150 + q − e_eff − …): with the group's largest value in
    # [2^(e−127), 2^(e−126)), its significand lands in [2^(q−1), 2^q) after a right shift by
    # 24 − q + (e − field).
    field_eff = jnp.maximum(field, 1)
    group_eff = jnp.maximum(group_exponent, 1)
    shift = (_MANTISSA_BITS + 1 - q_bits) + (group_eff - field_eff)
    magnitude = round_shift(significand, shift)
    return jnp.where(bits < 0, -magnitude, magnitude)


def round_shift(x: jax.Array, shift: jax.Array | int) -> jax.Array:
    """round(x / 2^shift), half away from zero, for x ≥ 0 and any shift ≥ 0 (≥ 31 gives 0
    unless rounding up): integer only, and never a shift by the bit width (undefined in C,
    clamped here)."""
    shift = jnp.asarray(shift, jnp.int32)
    safe = jnp.clip(shift, 1, 30)
    rounded = jnp.right_shift(x + jnp.left_shift(jnp.int32(1), safe - 1), safe)
    rounded = jnp.where(shift > 30, 0, rounded)
    return jnp.where(shift <= 0, x, rounded)


def isqrt(n: jax.Array) -> jax.Array:
    """floor(√n) for int32 n ≥ 0, exactly: a float estimate (within ±1 even where the backend's
    sqrt is approximate) corrected by integer compares in uint32 (46341² > 2^31)."""
    s = jnp.floor(jnp.sqrt(n.astype(jnp.float32))).astype(jnp.int32)
    s = jnp.clip(s, 0, 46340)
    nu = n.astype(jnp.uint32)
    for _ in range(2):
        su = s.astype(jnp.uint32)
        s = jnp.where(su * su > nu, s - 1, s)
        su = s.astype(jnp.uint32)
        s = jnp.where((su + 1) * (su + 1) <= nu, s + 1, s)
    return s


def div_round(a: jax.Array, b: jax.Array) -> jax.Array:
    """round(a / b), half away from zero, for b > 0 and 2|a| + b ≤ 2^31 − 1 (callers bound it)."""
    magnitude = (2 * jnp.abs(a) + b) // (2 * b)
    return jnp.where(a < 0, -magnitude, magnitude)


def bit_length(x: jax.Array) -> jax.Array:
    """Bits needed for x ≥ 0 (0 for 0): 32 − clz(x)."""
    return 32 - jax.lax.clz(x.astype(jnp.int32))


def to_block_float(y: jax.Array, bits: int, axis: int = -1) -> jax.Array:
    """Rescales each block along `axis` by a power of two so its largest |y| has at most `bits`
    bits: a positive per-block factor, which no sign after a block-wise linear map can see."""
    magnitude = jnp.abs(y)
    top = jnp.max(bit_length(magnitude), axis=axis, keepdims=True)
    shift = jnp.maximum(top - bits, 0)
    scaled = round_shift(magnitude, shift)
    return jnp.where(y < 0, -scaled, scaled)


def normalise_fixed(
    vals: jax.Array, mode: str, n_batch: int, k: int, chunks_per_slice: int
) -> jax.Array:
    """Per-peer L2 normalisation in integers: u ≈ v/‖v‖ · 2^UNIT_BITS (|u| ≤ 2^UNIT_BITS), per
    chunk (`mode="chunk"`, along the last axis of k values) or per tensor slice (`"tensor"`, over
    every axis after the peer axis and the `n_batch` batch axes). `vals`: [P, *batch, *grid, k]."""
    q_bits = value_bits(k)
    if mode == "chunk":
        group_axes: tuple[int, ...] = (-1,)
        norm_shift = 0
    elif mode == "tensor":
        group_axes = tuple(range(1 + n_batch, vals.ndim))
        # Per-chunk sums of squares (≤ 2^30) are right-shifted by an even number of bits before
        # the sum over the slice's chunks so that the sum fits int32.
        norm_shift = max(0, ceil_log2(chunks_per_slice) + 2 * q_bits + ceil_log2(k) - 30)
        norm_shift += norm_shift % 2
    else:
        raise ValueError(f"protocol.normalise must be 'chunk' or 'tensor', got {mode!r}")
    group_exponent = jnp.max(exponents(vals), axis=group_axes, keepdims=True)
    q = to_fixed(vals, group_exponent, q_bits)
    chunk_sq = jnp.sum(q * q, axis=-1, keepdims=True)
    if mode == "chunk":
        norm_sq = chunk_sq
    else:
        shifted = jnp.right_shift(chunk_sq, norm_shift)
        norm_sq = jnp.sum(shifted, axis=group_axes, keepdims=True)
    norm = isqrt(norm_sq)
    scaled = jnp.left_shift(q, UNIT_BITS - norm_shift // 2)
    u = div_round(scaled, jnp.maximum(norm, 1))
    u = jnp.where(norm > 0, u, 0)
    return jnp.clip(u, -(2**UNIT_BITS), 2**UNIT_BITS)
