"""The shared outer step every node applies (GAUNTLET.md §1.6).

    A = IDCT( mean-scatter over valid peers p of normalise(V_p) at I_p )
    θ ← θ·(1 − α·λ) − α·sign(A)

Peers arrive stacked on a leading axis with a validity mask, so shapes are static whatever the gather
set's health. Peers are merged one after another (`lax.scan`), each peer's indices being distinct
within a chunk, so no scatter ever races: the result is bit-identical on every run of the same
program. `outer_step` is literally `apply_sign(aggregate_sign(...))`, the same path a node replaying
published aggregates takes, so live and caught-up nodes agree to the bit.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.compress import dct, topk
from gauntlet_jax.compress.plan import CompressionPlan, LeafPlan
from gauntlet_jax.config import Config
from gauntlet_jax.errors import InvalidPayload
from gauntlet_jax.model.sharding import to_host

NORM_EPS = 1e-8
NORMALISE_MODES = ("chunk", "tensor")


def _normalise(vals_P: jax.Array, lp: LeafPlan, mode: str) -> jax.Array:
    """Per-peer L2 normalisation: along each chunk's k values, or over each peer's whole tensor
    (per layer slice of a stacked leaf, as the reference normalises each layer's tensor)."""
    if mode == "chunk":
        axes: tuple[int, ...] = (-1,)
    elif mode == "tensor":
        axes = tuple(range(1 + lp.n_batch, vals_P.ndim))
    else:
        raise ValueError(f"protocol.normalise must be one of {NORMALISE_MODES}, got {mode!r}")
    norm = jnp.sqrt(jnp.sum(vals_P * vals_P, axis=axes, keepdims=True))
    return vals_P / (norm + NORM_EPS)


def _merge_leaf(
    idx_P: jax.Array, vals_P: jax.Array, mask_P: jax.Array, lp: LeafPlan, mode: str
) -> jax.Array:
    """Dense merged DCT coefficients of one leaf: scatter-mean of all valid peers' values."""
    vals_P = _normalise(vals_P.astype(jnp.float32), lp, mode)
    keep = mask_P.reshape(-1, *([1] * (vals_P.ndim - 1)))
    vals_P = jnp.where(keep, vals_P, 0.0)
    weight_P = mask_P.astype(jnp.float32)

    def add_peer(carry, peer):
        idx, vals, weight = peer
        # vals of a masked-out peer are already 0, so weight·vals == vals bit for bit.
        return topk.scatter_add(*carry, idx, vals, lp, weight), None

    zeros = topk.chunk_zeros(lp)
    (sums, counts), _ = jax.lax.scan(add_peer, (zeros, zeros), (idx_P, vals_P, weight_P))
    return topk.mean_of(sums, counts, lp)


def _merged_update(
    idx: Any, vals: Any, mask: jax.Array, normalise: str, plan: CompressionPlan
) -> Any:
    out = []
    for lp, i, v in zip(plan.leaves, plan.flatten(idx), plan.flatten(vals), strict=True):
        out.append(dct.idct_leaf(_merge_leaf(i, v, mask, lp, normalise), lp))
    return plan.unflatten(out)


@functools.partial(jax.jit, static_argnames=("normalise", "plan"))
def _aggregate_sign(
    idx: Any, vals: Any, mask: jax.Array, *, normalise: str, plan: CompressionPlan
) -> Any:
    dense = _merged_update(idx, vals, mask, normalise, plan)
    return jax.tree.map(lambda a: jnp.sign(a).astype(jnp.int8), dense)


def aggregate_sign(idx: Any, vals: Any, mask: Any, cfg: Config, plan: CompressionPlan) -> Any:
    """sign(A) per parameter (int8 in {-1, 0, 1}) from payloads stacked on a leading peer axis.

    idx/vals: trees of [P, *payload_shape]; mask: bool [P] (False = absent or invalid peer).
    """
    return _aggregate_sign(
        idx, vals, jnp.asarray(mask, bool), normalise=cfg.protocol.normalise, plan=plan
    )


_merged_update_jit = jax.jit(_merged_update, static_argnames=("normalise", "plan"))


def merged_update(idx: Any, vals: Any, mask: Any, cfg: Config, plan: CompressionPlan) -> Any:
    """A itself (float32, parameter-shaped) before the sign: for diagnostics and tests."""
    return _merged_update_jit(
        idx, vals, jnp.asarray(mask, bool), normalise=cfg.protocol.normalise, plan=plan
    )


@functools.partial(jax.jit, static_argnames=("weight_decay",))
def _apply_sign(params: Any, signs: Any, lr: jax.Array, *, weight_decay: float) -> Any:
    def step(p: jax.Array, s: jax.Array) -> jax.Array:
        s = s.astype(p.dtype)
        if weight_decay:
            return p * (1.0 - lr * weight_decay) - lr * s
        return p - lr * s

    return jax.tree.map(step, params, signs)


def apply_sign(params: Any, signs: Any, lr: float | jax.Array, cfg: Config) -> Any:
    """θ ← θ·(1 − α·λ) − α·sign: the step itself, shared by the live path and catch-up replay."""
    return _apply_sign(
        params,
        signs,
        jnp.asarray(lr, jnp.float32),
        weight_decay=float(cfg.protocol.weight_decay),
    )


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


@functools.partial(jax.jit, static_argnames=("plan",))
def single_peer_sign(idx: Any, vals: Any, plan: CompressionPlan) -> Any:
    """sign(IDCT(scatter(idx, vals))) of one peer (int8), for the validator's trial step
    θ' = θ − β·sign(...). Normalisation is omitted: a positive per-chunk or per-tensor scale
    cannot change the signs of a block-wise IDCT. vmap it over a candidate axis."""
    out = [
        jnp.sign(dct.idct_leaf(topk.scatter_leaf(i, v, lp), lp)).astype(jnp.int8)
        for lp, i, v in zip(plan.leaves, plan.flatten(idx), plan.flatten(vals), strict=True)
    ]
    return plan.unflatten(out)


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
