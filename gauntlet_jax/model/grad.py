"""Gradient steps: the miner's accumulated gradient (GAUNTLET.md §1.3 steps 3–4) and the
centralised AdamW baseline.

Gradients are taken with respect to the fp32 master params; the forward pass casts to the
compute dtype (llama.py), so the gradients come back in fp32.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from gauntlet_jax.config import ModelConfig, TrainConfig
from gauntlet_jax.model import llama

# AdamW constants of the baseline; the tunable knobs (lr, decay, warm-up) live in TrainConfig.
ADAMW_B1 = 0.9
ADAMW_B2 = 0.95
ADAMW_CLIP_NORM = 1.0
ADAMW_FINAL_LR_FACTOR = 0.1


def loss_and_grad(
    params: llama.Params, tokens_BT: jax.Array, cfg: ModelConfig
) -> tuple[jax.Array, llama.Params]:
    """(mean loss of one micro-batch, its gradient w.r.t. params). Not jitted: a building block."""
    return jax.value_and_grad(llama.loss_fn)(params, tokens_BT, cfg)


def add_grad(
    acc: llama.Params, params: llama.Params, tokens_BT: jax.Array, cfg: ModelConfig
) -> tuple[llama.Params, jax.Array]:
    """(acc + the gradient of one micro-batch, its loss): the miner's step, one micro-batch at a
    time so it can stop when the window's compute budget is spent. Not jitted: the miner jits
    it, and `bench.tpu_compile` compiles the same function for a TPU topology."""
    loss, g = loss_and_grad(params, tokens_BT, cfg)
    return jax.tree.map(jnp.add, acc, g), loss


def accumulate_grads(
    params: llama.Params,
    batches_NBT: jax.Array,
    cfg: ModelConfig,
    n_valid: jax.Array | int | None = None,
) -> tuple[llama.Params, jax.Array]:
    """(mean of per-micro-batch gradients, mean of per-micro-batch losses) over the first
    `n_valid` of the N micro-batches in `batches_NBT` [N, B, T] (all N when None).

    As the reference miner: each micro-batch contributes the gradient of its own mean loss, and
    the sum is divided by the number of micro-batches processed. `n_valid` is traced, so a
    static [max_micro, B, T] buffer serves every count without recompiling; micro-batches past
    `n_valid` are not computed (under vmap, until every member's count is reached). With
    n_valid = 0 the result is zero gradients and zero loss.
    """
    n_total = batches_NBT.shape[0]
    count = n_total if n_valid is None else n_valid
    return _accumulate_grads(params, batches_NBT, cfg, jnp.asarray(count, jnp.int32))


@functools.partial(jax.jit, static_argnames=("cfg",))
def _accumulate_grads(
    params: llama.Params, batches_NBT: jax.Array, cfg: ModelConfig, n_valid: jax.Array
) -> tuple[llama.Params, jax.Array]:
    n = jnp.clip(n_valid, 0, batches_NBT.shape[0])

    def step(i: jax.Array, carry: tuple[llama.Params, jax.Array]) -> tuple[llama.Params, jax.Array]:
        grad_sum, loss_sum = carry
        loss, grads = loss_and_grad(params, batches_NBT[i], cfg)
        return jax.tree.map(jnp.add, grad_sum, grads), loss_sum + loss

    # A loop with a traced trip count: nothing is computed for unused slots. (A scan with
    # lax.cond per slot measured twice as slow on CPU.)
    zeros = (jax.tree.map(jnp.zeros_like, params), jnp.zeros((), jnp.float32))
    grad_sum, loss_sum = jax.lax.fori_loop(0, n, step, zeros)
    denom = jnp.maximum(n, 1).astype(jnp.float32)
    return jax.tree.map(lambda g: g / denom.astype(g.dtype), grad_sum), loss_sum / denom


def _decay_mask(params: llama.Params) -> Any:
    """Weight decay on matrices, not on norm scales."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not llama.path_name(path).endswith("norm"), params
    )


def make_adamw(cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """AdamW with linear warm-up to `adamw_lr` and cosine decay to 0.1·lr at `total_steps`,
    global-norm clipping at 1.0, no decay on norm scales."""
    warmup = max(0, min(cfg.adamw_warmup, total_steps - 1))
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.adamw_lr,
        warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1),
        end_value=cfg.adamw_lr * ADAMW_FINAL_LR_FACTOR,
    )
    return optax.chain(
        optax.clip_by_global_norm(ADAMW_CLIP_NORM),
        optax.adamw(
            schedule,
            b1=ADAMW_B1,
            b2=ADAMW_B2,
            weight_decay=cfg.adamw_weight_decay,
            mask=_decay_mask,
        ),
    )


@functools.partial(jax.jit, static_argnames=("cfg", "optimizer"), donate_argnums=(0, 1))
def adamw_step(
    params: llama.Params,
    opt_state: optax.OptState,
    batches_NBT: jax.Array,
    cfg: ModelConfig,
    optimizer: optax.GradientTransformation,
) -> tuple[llama.Params, optax.OptState, jax.Array]:
    """One optimizer step on the mean gradient of N micro-batches [N, B, T]; returns
    (params, opt_state, mean loss before the step). Donates params and opt_state."""
    grads, loss = accumulate_grads(params, batches_NBT, cfg)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss
