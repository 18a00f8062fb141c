"""Windows and the outer learning-rate schedule (GAUNTLET.md §1.2, §1.6).

The reference steps torch's `SequentialLR([LinearLR(start_factor, 1.0, total_iters=W),
CosineAnnealingWarmRestarts(T_0, T_mult, eta_min)], milestones=[W])` once per applied window:

    step < W:  α = lr·(f + (1 − f)·step/W)
    step ≥ W:  e = step − W; find the restart cycle i with e in [S_i, S_i + T_i), where
               T_i = T_0·T_mult^i and S_i = Σ_{j<i} T_j; T_cur = e − S_i;
               α = η_min + (lr − η_min)·(1 + cos(π·T_cur/T_i))/2,   η_min = eta_min_factor·lr.
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp

from gauntlet_jax.config import ProtocolConfig


def window_of_block(block: int, blocks_per_window: int) -> int:
    """The window a chain block belongs to (reference: int(block / blocks_per_window))."""
    if blocks_per_window < 1:
        raise ValueError(f"blocks_per_window must be ≥ 1, got {blocks_per_window}")
    if block < 0:
        raise ValueError(f"block must be ≥ 0, got {block}")
    return block // blocks_per_window


def first_block_of_window(window: int, blocks_per_window: int) -> int:
    """The first chain block of a window."""
    return window * blocks_per_window


def _cycle_start(i: int, t0: int, t_mult: int) -> int:
    return t0 * i if t_mult == 1 else t0 * (t_mult**i - 1) // (t_mult - 1)


def _cycle_py(e: int, t0: int, t_mult: int) -> tuple[int, int]:
    """(T_cur, T_i) for epoch e ≥ 0 of CosineAnnealingWarmRestarts, in exact integers."""
    if t_mult == 1:
        return e % t0, t0
    i = 0
    while _cycle_start(i + 1, t0, t_mult) <= e:
        i += 1
    return e - _cycle_start(i, t0, t_mult), t0 * t_mult**i


def _outer_lr_py(step: int, p: ProtocolConfig) -> float:
    lr = p.learning_rate
    if step < p.warmup_steps:
        f = p.warmup_start_factor
        return lr * (f + (1.0 - f) * step / p.warmup_steps)
    t_cur, t_i = _cycle_py(step - p.warmup_steps, p.cosine_t0, p.cosine_t_mult)
    eta_min = p.eta_min_factor * lr
    return eta_min + (lr - eta_min) * (1.0 + math.cos(math.pi * t_cur / t_i)) / 2.0


def _outer_lr_jnp(step: jax.Array, p: ProtocolConfig) -> jax.Array:
    lr = p.learning_rate
    step = jnp.asarray(step)
    s = step.astype(jnp.float32)
    f = p.warmup_start_factor
    warm = lr * (f + (1.0 - f) * s / max(p.warmup_steps, 1))
    e = jnp.maximum(step - p.warmup_steps, 0).astype(jnp.int32)
    t0, m = p.cosine_t0, p.cosine_t_mult
    if m == 1:
        t_cur, t_i = e % t0, jnp.full_like(e, t0)
    else:
        # Closed-form cycle index, then nudged by ±1 with exact integer starts so float rounding
        # at the restart boundaries cannot pick the wrong cycle.
        est = jnp.log(e.astype(jnp.float32) * (m - 1) / t0 + 1.0) / math.log(m)
        i = jnp.floor(est).astype(jnp.int32)

        def start(j: jax.Array) -> jax.Array:
            return t0 * (jnp.power(m, j) - 1) // (m - 1)

        i = jnp.where(start(i + 1) <= e, i + 1, i)
        i = jnp.where(start(i) > e, i - 1, i)
        t_cur, t_i = e - start(i), t0 * jnp.power(m, i)
    eta_min = p.eta_min_factor * lr
    cos = eta_min + (lr - eta_min) * (1.0 + jnp.cos(jnp.pi * t_cur / t_i)) / 2.0
    return jnp.where(step < p.warmup_steps, warm, cos).astype(jnp.float32)


def outer_lr(step: int | jax.Array, p: ProtocolConfig) -> float | jax.Array:
    """α_t for the `step`-th applied outer step (0-based).

    A Python int gives a Python float, computed in double precision with exact integer cycle
    arithmetic: every node computes the same value, which the jitted steps then take as an argument.
    A JAX array gives a float32 array (usable inside jit/scan); it agrees to float32 rounding.
    """
    if isinstance(step, int) or (hasattr(step, "__index__") and not isinstance(step, jax.Array)):
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be ≥ 0, got {step}")
        return _outer_lr_py(step, p)
    return _outer_lr_jnp(step, p)


PutStatus = Literal["ok", "too_early", "too_late"]


def put_window_status(
    last_modified: float, window_end_time: float, put_window_s: float
) -> PutStatus:
    """Whether an object's server timestamp lies in the window's put window (§2.2).

    `window_end_time` is the chain timestamp of the first block of the next window (t_min);
    the put window is [t_min, t_min + put_window_s], both ends inclusive. Too early and too
    late both count as missing.
    """
    if not (math.isfinite(last_modified) and math.isfinite(window_end_time)):
        raise ValueError(f"timestamps must be finite, got {last_modified}, {window_end_time}")
    if last_modified < window_end_time:
        return "too_early"
    if last_modified > window_end_time + put_window_s:
        return "too_late"
    return "ok"
