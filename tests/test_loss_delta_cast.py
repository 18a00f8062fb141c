"""`for_compute` (the score's one-time cast of matrices to the compute dtype) changes no loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.config import Config, with_overrides
from gauntlet_jax.model import llama
from gauntlet_jax.validator.loss_delta import for_compute, mean_loss


def test_cast_once_gives_the_same_bf16_losses_and_keeps_norms_fp32(tiny_config: Config) -> None:
    cfg = with_overrides(
        tiny_config, ["model.seq_len=16", "model.n_layers=1", "model.compute_dtype=bfloat16"]
    ).model
    params = llama.init_params(cfg, jax.random.key(0))
    # Norm scales away from 1, so keeping them fp32 is visible in the loss.
    params = jax.tree.map(lambda p: p * 1.001 if p.ndim < 3 else p, params)
    cast = for_compute(params, cfg)
    assert cast["embed"].dtype == jnp.bfloat16 and cast["layers"]["wq"].dtype == jnp.bfloat16
    assert cast["final_norm"].dtype == jnp.float32
    assert cast["layers"]["attn_norm"].dtype == jnp.float32
    tokens = np.random.default_rng(0).integers(3, 1000, (2, 2, 16)).astype(np.int32)
    want = mean_loss(params, tokens, jnp.int32(2), cfg)
    got = mean_loss(cast, tokens, jnp.int32(2), cfg)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)


def test_cast_is_a_no_op_for_fp32_compute(tiny_config: Config) -> None:
    params = llama.init_params(tiny_config.model, jax.random.key(1))
    cast = for_compute(params, tiny_config.model)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(cast), strict=True):
        assert a.dtype == b.dtype == jnp.float32
        np.testing.assert_array_equal(a, b)
