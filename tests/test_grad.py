"""Gradient accumulation over micro-batches (GAUNTLET.md §1.3 steps 3–4) and the AdamW baseline."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gauntlet_jax.config import ModelConfig, TrainConfig
from gauntlet_jax.model import grad, llama

CFG = ModelConfig(
    vocab_size=97,
    d_model=32,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    d_mlp=48,
    seq_len=12,
    compute_dtype="float32",
    pad_id=2,
)
N, B, T = 3, 2, 12


def batches(seed: int, n: int = N, avoid_pad: bool = True) -> jax.Array:
    low = CFG.pad_id + 1 if avoid_pad else 0
    return jax.random.randint(jax.random.key(seed), (n, B, T), low, CFG.vocab_size, jnp.int32)


def params(seed: int = 0) -> llama.Params:
    return llama.init_params(CFG, jax.random.key(seed))


def assert_trees_close(a, b, rtol=1e-5, atol=1e-7) -> None:
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def test_accumulated_grads_equal_grad_of_mean_over_concatenated_batch() -> None:
    p, data = params(), batches(0)
    mean_grads, mean_loss = grad.accumulate_grads(p, data, CFG)
    # Without pad targets every micro-batch counts B*(T-1) targets, so the mean of per-batch
    # means is the mean over the concatenated batch.
    whole = data.reshape(N * B, T)
    loss, want = jax.jit(jax.value_and_grad(llama.loss_fn), static_argnums=2)(p, whole, CFG)
    np.testing.assert_allclose(float(mean_loss), float(loss), rtol=1e-6)
    assert_trees_close(mean_grads, want)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(mean_grads))


def test_each_micro_batch_weighs_the_same_as_in_the_reference() -> None:
    """With pad targets the reference divides the sum of per-batch mean-loss grads by the number
    of batches; it does not re-weight by target count."""
    p = params()
    data = batches(1, avoid_pad=False).at[0, :, 1:8].set(CFG.pad_id)  # batch 0: few targets
    got, got_loss = grad.accumulate_grads(p, data, CFG)
    vg = jax.jit(jax.value_and_grad(llama.loss_fn), static_argnums=2)
    per_batch = [vg(p, data[i], CFG) for i in range(N)]
    want = jax.tree.map(lambda *g: sum(g) / N, *(g for _, g in per_batch))
    assert_trees_close(got, want)
    np.testing.assert_allclose(float(got_loss), sum(float(x) for x, _ in per_batch) / N, rtol=1e-6)


def test_n_valid_ignores_the_rest_of_a_static_buffer_without_recompiling() -> None:
    p, buffer = params(), batches(2)  # 3 slots
    vg = jax.jit(jax.value_and_grad(llama.loss_fn), static_argnums=2)
    per_batch = [vg(p, buffer[i], CFG) for i in range(N)]
    before = grad._accumulate_grads._cache_size()
    for n_valid in (2, 1, N):
        got, loss = grad.accumulate_grads(p, buffer, CFG, n_valid)
        want = jax.tree.map(lambda *g, n=n_valid: sum(g) / n, *(g for _, g in per_batch[:n_valid]))
        assert_trees_close(got, want)
        np.testing.assert_allclose(
            float(loss), sum(float(x) for x, _ in per_batch[:n_valid]) / n_valid, rtol=1e-6
        )
    # A different filler in the unused slots changes nothing.
    masked = grad.accumulate_grads(p, buffer, CFG, jnp.int32(2))
    other = grad.accumulate_grads(p, buffer.at[2:].set(7), CFG, jnp.int32(2))
    assert_trees_close(masked, other, rtol=0, atol=0)
    # One compiled function serves every count, including "all" (n_valid=None).
    grad.accumulate_grads(p, buffer, CFG)
    assert grad._accumulate_grads._cache_size() <= before + 1


def test_zero_valid_batches_give_zero() -> None:
    grads, loss = grad.accumulate_grads(params(), batches(3), CFG, 0)
    assert float(loss) == 0.0
    assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads))


def test_bf16_compute_grads_are_fp32_and_close() -> None:
    p, data = params(), batches(4)
    g32, l32 = grad.accumulate_grads(p, data, CFG)
    bf16 = dataclasses.replace(CFG, compute_dtype="bfloat16")
    g16, l16 = grad.accumulate_grads(p, data, bf16)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(g16))
    np.testing.assert_allclose(float(l16), float(l32), rtol=1e-2)
    a, b = (jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)]) for g in (g32, g16))
    assert float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b))) > 0.99


def test_adamw_schedule_and_decay_mask() -> None:
    cfg = TrainConfig(adamw_lr=1e-3, adamw_warmup=10, adamw_weight_decay=0.1)
    opt = grad.make_adamw(cfg, total_steps=100)
    p = params()
    state = opt.init(p)
    update = jax.jit(opt.update)
    # Zero gradients: only weight decay moves params, and never the norm scales.
    zero = jax.tree.map(jnp.zeros_like, p)
    for _ in range(12):  # past warm-up, where the learning rate is non-zero
        updates, state = update(zero, state, p)
    assert float(jnp.abs(updates["final_norm"]).max()) == 0.0
    assert float(jnp.abs(updates["layers"]["mlp_norm"]).max()) == 0.0
    assert float(jnp.abs(updates["layers"]["wq"]).max()) > 0.0
    # The schedule: 0 → lr over warm-up, cosine down to 0.1·lr at the end.
    schedule = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 10, 100, 1e-4)
    np.testing.assert_allclose(float(schedule(10)), 1e-3)
    np.testing.assert_allclose(float(schedule(100)), 1e-4)


def test_adamw_steps_reduce_the_loss() -> None:
    opt = grad.make_adamw(TrainConfig(adamw_lr=1e-2, adamw_warmup=2), total_steps=30)
    p = params()
    state = opt.init(p)
    data = batches(5, n=2)
    losses = []
    for _ in range(30):
        p, state, loss = grad.adamw_step(p, state, data, CFG, opt)
        losses.append(float(loss))
    assert losses[0] > 4.4  # ≈ ln(97) at init
    assert losses[-1] < 0.5 * losses[0], losses
