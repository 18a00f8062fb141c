"""The shared outer step every node applies (GAUNTLET.md §1.6), exact on every backend.

    A = IDCT( mean-scatter over valid peers p of normalise(V_p) at I_p )
    (optionally a coordinate-wise trimmed mean: `protocol.merge_trim`, the robust merge)
    θ ← θ·(1 − α·λ) − α·sign(A)

Every node must hold the same θ to the bit, on CPUs, GPUs and TPUs alike, so sign(A) is computed
in integer arithmetic (DESIGN.md principle 1; the protocol's definition is docs/protocol.md §2):
each peer's float32 values are read through their bits into fixed point and L2-normalised in
integers (`compress.fixedpoint`), merged by integer scatter-adds (associative, so neither peer order
nor scatter order matters) and averaged by rounded integer division, rescaled per chunk by a power
of two (block floating point) and inverse-transformed with an integer DCT basis in float32
matmuls whose every product and partial sum is an integer below 2^24 (`compress.dct`). The
elementwise step multiplies only by ±1 and powers of two (α·λ as a short sum of them), so each
subtraction's IEEE rounding is the same fused or not. `outer_step` is literally `apply_sign(aggregate_sign(...))`, the path a node
replaying published aggregates takes, and the validator's trial sign is the same function over a
gather set of one peer.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.compress import dct, fixedpoint, topk
from gauntlet_jax.compress.plan import CompressionPlan, LeafPlan
from gauntlet_jax.config import Config
from gauntlet_jax.errors import InvalidPayload
from gauntlet_jax.model.sharding import to_host

NORMALISE_MODES = ("chunk", "tensor")


def _trimmed_sums(
    idx_P: jax.Array, units_P: jax.Array, weight_P: jax.Array, lp: LeafPlan, trim: int
) -> tuple[jax.Array, jax.Array]:
    """The robust merge's sums and counts: at each coefficient, of the peers that sent it (n),
    the `trim` largest and smallest normalised values are dropped (at most (n − 1) // 2 each
    side, so one is always kept). Integer sort and sum: exact, and the same in any peer order."""
    zeros = topk.chunk_zeros(lp, jnp.int32)
    dense_P, present_P = jax.vmap(lambda i, u, w: topk.scatter_add(zeros, zeros, i, u, lp, w))(
        idx_P, units_P, weight_P
    )
    absent = jnp.iinfo(jnp.int32).max  # sorts after every real value
    ordered = jnp.sort(jnp.where(present_P > 0, dense_P, absent), axis=0)
    n = jnp.sum(present_P, axis=0)
    cut = jnp.clip((n - 1) // 2, 0, trim)
    rank = jnp.arange(idx_P.shape[0], dtype=jnp.int32).reshape(-1, *([1] * n.ndim))
    keep = (rank >= cut) & (rank < n - cut)
    return jnp.sum(jnp.where(keep, ordered, 0), axis=0), n - 2 * cut


def _exact_leaf_update(
    idx_P: jax.Array, vals_P: jax.Array, mask_P: jax.Array, lp: LeafPlan, mode: str, trim: int = 0
) -> jax.Array:
    """A of one leaf before the sign, in integers (float32 holding integers, parameter-shaped):
    each valid peer's values normalised in fixed point, summed at their indices, averaged per
    coefficient, rescaled per chunk to the transform's coefficient bits and inverse-transformed exactly."""
    if idx_P.shape[0] > fixedpoint.MAX_PEERS:
        raise ValueError(f"{idx_P.shape[0]} peers exceed the exact merge's {fixedpoint.MAX_PEERS}")
    units_P = fixedpoint.normalise_fixed(vals_P, mode, lp.n_batch, lp.k, math.prod(lp.grid))
    keep = mask_P.reshape(-1, *([1] * (units_P.ndim - 1)))
    units_P = jnp.where(keep, units_P, 0)
    weight_P = mask_P.astype(jnp.int32)

    def add_peer(carry, peer):
        idx, units, weight = peer
        return topk.scatter_add(*carry, idx, units, lp, weight), None

    if trim:
        sums, counts = _trimmed_sums(idx_P, units_P, weight_P, lp, trim)
    else:
        zeros = topk.chunk_zeros(lp, jnp.int32)
        (sums, counts), _ = jax.lax.scan(add_peer, (zeros, zeros), (idx_P, units_P, weight_P))
    means = jnp.where(counts > 0, fixedpoint.div_round(sums, jnp.maximum(counts, 1)), 0)
    coeffs = fixedpoint.to_block_float(means, dct.coeff_bits(lp.chunks), axis=-1)
    return dct.idct_leaf_exact(coeffs.reshape(lp.coeff_shape), lp)


def _merged_update(
    idx: Any, vals: Any, mask: jax.Array, normalise: str, plan: CompressionPlan, trim: int = 0
) -> Any:
    if normalise not in NORMALISE_MODES:
        raise ValueError(f"protocol.normalise must be one of {NORMALISE_MODES}, got {normalise!r}")
    if trim < 0:
        raise ValueError(f"protocol.merge_trim must be ≥ 0, got {trim}")
    out = []
    for lp, i, v in zip(plan.leaves, plan.flatten(idx), plan.flatten(vals), strict=True):
        out.append(_exact_leaf_update(i, v, mask, lp, normalise, trim))
    return plan.unflatten(out)


def _signs_of(update: Any) -> Any:
    return jax.tree.map(lambda a: jnp.sign(a).astype(jnp.int8), update)


@functools.partial(jax.jit, static_argnames=("normalise", "plan", "trim"))
def _aggregate_sign(
    idx: Any, vals: Any, mask: jax.Array, *, normalise: str, plan: CompressionPlan, trim: int
) -> Any:
    return _signs_of(_merged_update(idx, vals, mask, normalise, plan, trim))


def aggregate_sign(idx: Any, vals: Any, mask: Any, cfg: Config, plan: CompressionPlan) -> Any:
    """sign(A) per parameter (int8 in {-1, 0, 1}) from payloads stacked on a leading peer axis;
    a function of the payloads' bits alone, the same on every backend and device layout.

    idx/vals: trees of [P, *payload_shape]; mask: bool [P] (False = absent or invalid peer).
    """
    return _aggregate_sign(
        idx,
        vals,
        jnp.asarray(mask, bool),
        normalise=cfg.protocol.normalise,
        plan=plan,
        trim=cfg.protocol.merge_trim,
    )


_merged_update_jit = jax.jit(_merged_update, static_argnames=("normalise", "plan", "trim"))


def merged_update(idx: Any, vals: Any, mask: Any, cfg: Config, plan: CompressionPlan) -> Any:
    """A itself before the sign (float32 holding integers, each chunk on its own power-of-two
    scale): for diagnostics and tests."""
    return _merged_update_jit(
        idx,
        vals,
        jnp.asarray(mask, bool),
        normalise=cfg.protocol.normalise,
        plan=plan,
        trim=cfg.protocol.merge_trim,
    )


# α·λ as a sum of this many signed powers of two (relative error below 2 %, tests/test_outer.py).
DECAY_TERMS = 4
# |θ| below this is zero before the step: θ·2^e of any decay term then stays a normal float.
_FLUSH_BELOW = 2.0**-100


def decay_terms(lr: float, weight_decay: float) -> np.ndarray:
    """α·λ ≈ Σ_j ±2^e_j (DECAY_TERMS terms, greedy to the nearest power of two, computed on the
    host in float64): θ·2^e is exact, so θ·(1 − α·λ) = θ − Σ θ·2^e_j rounds at each subtraction
    and nowhere else, fused into multiply-adds or not."""
    terms = np.zeros(DECAY_TERMS, np.float32)
    rest = float(lr) * float(weight_decay)
    for j in range(DECAY_TERMS):
        if rest == 0.0 or not math.isfinite(rest):
            break
        terms[j] = math.copysign(2.0 ** round(math.log2(abs(rest))), rest)
        rest -= float(terms[j])
    return terms


@functools.partial(jax.jit, static_argnames=("decay",))
def _apply_sign(params: Any, signs: Any, lr: jax.Array, terms: jax.Array, *, decay: bool) -> Any:
    def step(p: jax.Array, s: jax.Array) -> jax.Array:
        new = p
        if decay:
            p = jnp.where(jnp.abs(p) < _FLUSH_BELOW, jnp.zeros_like(p), p)
            new = p
            for j in range(DECAY_TERMS):
                new = new - p * terms[j]
        # α·s is exact (s ∈ {−1, 0, 1}): one rounding, the same fused or not.
        return new - lr * s.astype(p.dtype)

    return jax.tree.map(step, params, signs)


def apply_sign(params: Any, signs: Any, lr: float | jax.Array, cfg: Config) -> Any:
    """θ ← θ·(1 − α·λ) − α·sign: the step itself, shared by the live path and catch-up replay.
    Every multiplication in it is exact (by ±1 or a power of two), so each subtraction's one
    IEEE rounding is the whole story on every backend."""
    weight_decay = float(cfg.protocol.weight_decay)
    if isinstance(lr, jax.core.Tracer):
        # Only ahead-of-time compiles trace α (bench/tpu_compile); nodes pass the host value.
        terms = jnp.zeros(DECAY_TERMS, jnp.float32).at[0].set(lr * weight_decay)
        lr32 = lr.astype(jnp.float32)
    else:
        terms, lr32 = jnp.asarray(decay_terms(lr, weight_decay)), jnp.asarray(np.float32(lr))
    return _apply_sign(params, signs, lr32, terms, decay=bool(weight_decay))


def outer_step(
    params: Any,
    idx: Any,
    vals: Any,
    mask: Any,
    lr: float | jax.Array,
    cfg: Config,
    plan: CompressionPlan,
) -> Any:
    """The shared outer step: new params from the gather set's stacked payloads."""
    return apply_sign(params, aggregate_sign(idx, vals, mask, cfg, plan), lr, cfg)


@functools.partial(jax.jit, static_argnames=("plan", "normalise"))
def single_peer_sign(idx: Any, vals: Any, plan: CompressionPlan, normalise: str = "chunk") -> Any:
    """sign(A) of one peer alone (int8): the outer step's own function over a gather set of one,
    for the validator's trial step θ' = θ − β·sign(...). vmap it over a candidate axis."""
    one = jnp.ones((1,), bool)
    stacked_idx = jax.tree.map(lambda x: x[None], idx)
    stacked_vals = jax.tree.map(lambda x: x[None], vals)
    return _signs_of(_merged_update(stacked_idx, stacked_vals, one, normalise, plan))


# Aggregate publication: 1 bit per weight (bit 1 ↔ +1, as the reference's aggregator), plus a
# second bit-plane marking exact zeros, present only for leaves that have any, so a replayed
# aggregate reproduces sign(A) exactly, zeros included.
_POS_SUFFIX = ".pos"
_ZERO_SUFFIX = ".zero"


@jax.jit
def _pack_tree(signs: Any) -> Any:
    def pack(s: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        flat = s.reshape(-1)
        zero = flat == 0
        return jnp.packbits(flat > 0), jnp.packbits(zero), jnp.any(zero)

    return [pack(s) for s in jax.tree.leaves(signs)]


def pack_signs(signs: Any, plan: CompressionPlan) -> dict[str, np.ndarray]:
    """Sign tree → {"<name>.pos": uint8 bits, optionally "<name>.zero": uint8 bits} (host numpy);
    ready for `safetensors.numpy.save`. Packed on the device: 1/8 of the bytes cross to the host."""
    packed: dict[str, np.ndarray] = {}
    # to_host: signs sharded over several hosts are gathered (every process calls this).
    leaves = to_host(_pack_tree(plan.unflatten(plan.flatten(signs))))
    for lp, (pos, zero, any_zero) in zip(plan.leaves, leaves, strict=True):
        packed[lp.name + _POS_SUFFIX] = pos
        if bool(any_zero):
            packed[lp.name + _ZERO_SUFFIX] = zero
    return packed


def unpack_signs(packed: Mapping[str, np.ndarray], plan: CompressionPlan) -> Any:
    """Inverse of `pack_signs` → int8 sign tree (numpy). Checks names, dtypes and sizes: a
    malformed aggregate raises InvalidPayload (uid None: it names no peer)."""
    expected = {lp.name + _POS_SUFFIX for lp in plan.leaves}
    optional = {lp.name + _ZERO_SUFFIX for lp in plan.leaves}
    names = set(packed)
    if not expected <= names or not names <= expected | optional:
        missing = sorted(expected - names)[:3]
        extra = sorted(names - expected - optional)[:3]
        raise InvalidPayload(None, "malformed aggregate", f"missing {missing}, unexpected {extra}")
    out = []
    for lp in plan.leaves:
        n_bytes = (lp.n_params + 7) // 8
        planes = [packed[lp.name + _POS_SUFFIX], packed.get(lp.name + _ZERO_SUFFIX)]
        for plane in planes:
            if plane is not None and (plane.dtype != np.uint8 or plane.shape != (n_bytes,)):
                raise InvalidPayload(None, "malformed aggregate", f"{lp.name}: bad bit-plane")
        pos = np.unpackbits(planes[0], count=lp.n_params).astype(bool)
        signs = np.where(pos, 1, -1).astype(np.int8)
        if planes[1] is not None:
            signs[np.unpackbits(planes[1], count=lp.n_params).astype(bool)] = 0
        out.append(signs.reshape(lp.shape))
    return plan.unflatten(out)
