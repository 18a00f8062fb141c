"""Error-feedback momentum and its compression: what a miner sends (GAUNTLET.md §1.4).

    m ← β·m + α·g            (the very first call of a process: m = α·g)
    (I, V) ← top-k per chunk of DCT(m)       (V 8-bit quantised and dequantised when configured)
    m ← m − IDCT(scatter(I, V))              (skipped for the first `error_feedback_after` calls)

Weight decay is not applied here: the reference decays the miner's parameters between the gradient
and the outer step, which is the same arithmetic as decaying inside the shared outer step, so the
one place it happens is `protocol.outer.apply_sign`.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gauntlet_jax.compress import dct, topk
from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.config import Config


class MomentumResult(NamedTuple):
    """New momentum and what is sent: idx (int16) and vals (float32, exactly as receivers decode
    them), plus the 8-bit codes (a tree of `topk.Quantized`) when quantisation is on, else None."""

    m: Any
    idx: Any
    vals: Any
    quant: Any


def init_momentum(params: Any) -> Any:
    """Zero fp32 momentum shaped (and, for arrays on a mesh, sharded) like the parameters."""
    return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=jnp.float32), params)


@functools.partial(jax.jit, static_argnames=("plan", "quantize"))
def compress_tree(m: Any, plan: CompressionPlan, quantize: bool) -> tuple[Any, Any, Any]:
    """DCT + per-chunk top-k of every leaf: (idx tree, sent-value tree, Quantized tree or None).
    Jitted; vals are float32 (dequantised when `quantize`)."""
    idx_leaves, val_leaves, q_leaves = [], [], []
    for lp, leaf in zip(plan.leaves, plan.flatten(m), strict=True):
        idx, vals = topk.topk_leaf(dct.dct_leaf(leaf.astype(jnp.float32), lp), lp)
        if quantize:
            q = topk.quantize_leaf(vals, lp)
            vals = topk.dequantize_leaf(q, lp)
            q_leaves.append(q)
        idx_leaves.append(idx)
        val_leaves.append(vals)
    quant = plan.unflatten(q_leaves) if quantize else None
    return plan.unflatten(idx_leaves), plan.unflatten(val_leaves), quant


@functools.partial(jax.jit, static_argnames=("plan",))
def decompress_tree(idx: Any, vals: Any, plan: CompressionPlan) -> Any:
    """IDCT(scatter(idx, vals)) of every leaf: the dense tensor a payload stands for (jitted)."""
    out = [
        dct.idct_leaf(topk.scatter_leaf(i, v, lp), lp)
        for lp, i, v in zip(plan.leaves, plan.flatten(idx), plan.flatten(vals), strict=True)
    ]
    return plan.unflatten(out)


@functools.partial(jax.jit, static_argnames=("decay", "error_feedback_after", "quantize", "plan"))
def _momentum_step(
    m: Any,
    grads: Any,
    lr: jax.Array,
    step: jax.Array,
    *,
    decay: float,
    error_feedback_after: int,
    quantize: bool,
    plan: CompressionPlan,
) -> MomentumResult:
    first = step == 0
    m = jax.tree.map(
        lambda mi, g: jnp.where(first, lr * g, decay * mi + lr * g).astype(jnp.float32), m, grads
    )
    idx, vals, quant = compress_tree(m, plan, quantize)
    sent = decompress_tree(idx, vals, plan)
    feedback = step >= error_feedback_after
    m = jax.tree.map(lambda mi, s: jnp.where(feedback, mi - s, mi), m, sent)
    return MomentumResult(m=m, idx=idx, vals=vals, quant=quant)


def momentum_step(
    m: Any,
    grads: Any,
    lr: float | jax.Array,
    step: int | jax.Array,
    cfg: Config,
    plan: CompressionPlan,
) -> MomentumResult:
    """One window's momentum update and compression (jitted over the whole pytree).

    `step` counts this process's earlier calls (0 on the first: m = α·g, ignoring any loaded m).
    `lr` is α_t from `schedule.outer_lr`. vmap-able over a leading peer axis of m and grads.
    """
    return _momentum_step(
        m,
        grads,
        jnp.asarray(lr, jnp.float32),
        jnp.asarray(step, jnp.int32),
        decay=float(cfg.protocol.momentum_decay),
        error_feedback_after=int(cfg.protocol.error_feedback_after),
        quantize=bool(cfg.compress.quantize),
        plan=plan,
    )
