"""The sharding helpers on a single device (the default mesh of a laptop or CI runner)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.config import MeshConfig, ModelConfig
from gauntlet_jax.model import llama, sharding

CFG = ModelConfig(
    vocab_size=64,
    d_model=16,
    n_layers=1,
    n_heads=2,
    n_kv_heads=2,
    d_mlp=32,
    seq_len=8,
    compute_dtype="float32",
)


def test_default_mesh_and_sharded_loss_on_one_device() -> None:
    mesh = sharding.make_mesh(MeshConfig(), devices=jax.devices()[:1])
    assert dict(mesh.shape) == {"peers": 1, "data": 1, "fsdp": 1, "tensor": 1}
    params = llama.init_params(CFG, jax.random.key(0))
    placed = sharding.shard_params(params, CFG, mesh)
    assert placed["layers"]["wq"].sharding.spec == jax.sharding.PartitionSpec(
        None, "fsdp", "tensor"
    )
    toks = sharding.shard_batch(jnp.arange(16, dtype=jnp.int32).reshape(2, 8) % 64, mesh)
    loss = jax.jit(llama.loss_fn, static_argnums=2)
    np.testing.assert_allclose(loss(placed, toks, CFG), loss(params, toks, CFG), rtol=1e-6)
