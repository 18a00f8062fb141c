"""Sharding on 8 simulated CPU devices: the rules table decides every parameter's spec, and a
(data 2, fsdp 2, tensor 2) mesh computes the same loss and gradients as one device."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from gauntlet_jax.config import MeshConfig, ModelConfig, TrainConfig, load_config
from gauntlet_jax.model import grad, llama, sharding

pytestmark = pytest.mark.multidevice


@pytest.fixture(scope="module")
def model_cfg() -> ModelConfig:
    # tiny, with GQA so kv_heads is its own logical axis with its own fallback.
    return dataclasses.replace(load_config("tiny").model, n_kv_heads=2)


@pytest.fixture(scope="module")
def mesh() -> jax.sharding.Mesh:
    return sharding.make_mesh(MeshConfig(peers=1, data=2, fsdp=2, tensor=2))


def test_make_mesh_sizes_fill_and_errors() -> None:
    mesh = sharding.make_mesh(MeshConfig(data=-1, fsdp=2, tensor=2))
    assert dict(mesh.shape) == {"peers": 1, "data": 2, "fsdp": 2, "tensor": 2}
    assert sharding.make_mesh(MeshConfig(peers=2, data=-1)).shape["data"] == 4
    assert sharding.make_mesh(MeshConfig(), devices=jax.devices()[:1]).size == 1
    with pytest.raises(sharding.ShardingRulesError, match="do not divide"):
        sharding.make_mesh(MeshConfig(data=-1, fsdp=3))
    with pytest.raises(sharding.ShardingRulesError, match="at most one"):
        sharding.make_mesh(MeshConfig(data=-1, fsdp=-1))
    with pytest.raises(sharding.ShardingRulesError, match="use 4 devices but 8"):
        sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=1))


def test_rules_refuse_two_dims_on_one_mesh_axis(mesh) -> None:
    rules = dict(sharding.LOGICAL_AXIS_RULES, mlp="fsdp")  # w_up: (layers, embed→fsdp, mlp→fsdp)
    with pytest.raises(sharding.ShardingRulesError, match=r"layers/w_down.*'fsdp'"):
        sharding.param_shardings(load_config("tiny").model, mesh, rules)
    with pytest.raises(sharding.ShardingRulesError, match="no rule"):
        sharding.logical_to_spec(("embed", "bogus"), (8, 8), mesh)


def test_indivisible_dims_fall_back_to_replicated(mesh) -> None:
    assert sharding.logical_to_spec(("embed", "mlp"), (8, 6), mesh) == P("fsdp", "tensor")
    assert sharding.logical_to_spec(("embed", "mlp"), (7, 5), mesh) == P(None, None)
    assert sharding.logical_to_spec(("batch", "seq"), (8, 3), mesh) == P(("data", "fsdp"), None)
    # A tuple of mesh axes keeps its longest dividing prefix.
    assert sharding.logical_to_spec(("batch",), (2,), mesh) == P("data")
    assert sharding.logical_to_spec(("batch",), (3,), mesh) == P(None)


def test_every_param_is_sharded_as_the_rules_table_says(model_cfg, mesh) -> None:
    params = sharding.shard_params(llama.init_params(model_cfg, jax.random.key(0)), model_cfg, mesh)
    axes = llama.logical_axes_leaves(model_cfg)
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        name = llama.path_name(path)
        want = sharding.logical_to_spec(axes[name], leaf.shape, mesh, name=name)
        assert leaf.sharding.spec == want, name
    # Spelled out for the tiny config: 2 kv heads × 16 dims = 32 divide the tensor axis of 2.
    specs = {
        llama.path_name(p): x.sharding.spec for p, x in jax.tree_util.tree_leaves_with_path(params)
    }
    assert specs["embed"] == P("tensor", "fsdp")
    assert specs["lm_head"] == P("fsdp", "tensor")
    assert specs["layers/wq"] == P(None, "fsdp", "tensor")
    assert specs["layers/wk"] == P(None, "fsdp", "tensor")
    assert specs["layers/wo"] == P(None, "tensor", "fsdp")
    assert specs["layers/w_down"] == P(None, "tensor", "fsdp")
    assert specs["layers/attn_norm"] == P(None, None)
    assert specs["final_norm"] == P(None)
    # Shards really are split: the embedding's local block is 1/4 of it.
    shard = params["embed"].addressable_shards[0].data
    assert shard.shape == (model_cfg.vocab_size // 2, model_cfg.d_model // 2)


def test_sharded_loss_and_grads_equal_one_device(model_cfg, mesh) -> None:
    params = llama.init_params(model_cfg, jax.random.key(1))
    data = jax.random.randint(jax.random.key(2), (2, 8, 32), 3, model_cfg.vocab_size, jnp.int32)

    one = jax.devices()[0]
    want_grads, want_loss = grad.accumulate_grads(
        jax.device_put(params, one), jax.device_put(data, one), model_cfg
    )
    assert len(want_loss.devices()) == 1

    sharded = sharding.shard_params(params, model_cfg, mesh)
    batch = sharding.shard_batch(data, mesh, batch_axis=1)
    assert batch.sharding.spec == P(None, ("data", "fsdp"), None)
    got_grads, got_loss = grad.accumulate_grads(sharded, batch, model_cfg)
    assert len(got_loss.devices()) == 8
    np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=2e-5, atol=1e-7),
        got_grads,
        want_grads,
    )


def test_optimizer_state_is_sharded_like_params(model_cfg, mesh) -> None:
    shardings = sharding.param_shardings(model_cfg, mesh)
    params = sharding.init_sharded_params(model_cfg, jax.random.key(0), mesh)
    jax.tree.map(lambda x, s: (x.sharding.spec == s.spec) or pytest.fail(str(s)), params, shardings)
    opt = grad.make_adamw(TrainConfig(), total_steps=10)
    state = sharding.shard_like(opt.init(params), shardings)
    adam = next(
        s for s in jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "mu")) if hasattr(s, "mu")
    )
    assert adam.mu["layers"]["wq"].sharding.spec == P(None, "fsdp", "tensor")
    assert adam.nu["embed"].sharding.spec == P("tensor", "fsdp")
    assert adam.count.sharding.spec == P()
    # A sharded AdamW step runs and keeps the layout.
    batch = sharding.shard_batch(jnp.ones((1, 8, 16), jnp.int32) * 5, mesh, batch_axis=1)
    new_params, _, loss = grad.adamw_step(params, state, batch, model_cfg, opt)
    assert np.isfinite(float(loss))
    assert new_params["layers"]["wq"].sharding.spec == P(None, "fsdp", "tensor")


def test_candidate_axis_over_peers() -> None:
    mesh = sharding.make_mesh(MeshConfig(peers=4, data=-1))
    cfg = load_config("tiny").model
    specs = sharding.candidate_shardings(cfg, mesh, n_candidates=4)
    # Size-1 mesh axes stay named in the spec (harmless: nothing is split along them).
    assert specs["layers"]["wq"].spec == P("peers", None, "fsdp", "tensor")
    assert specs["embed"].spec == P("peers", "tensor", "fsdp")
    stacked = jax.tree.map(
        lambda *xs: jnp.stack(xs),
        *(llama.init_params(cfg, jax.random.key(s)) for s in range(4)),
    )
    stacked = jax.device_put(stacked, specs)
    toks = jnp.full((2, 16), 7, jnp.int32).at[:, ::3].set(11)
    losses = jax.jit(jax.vmap(llama.loss_fn, in_axes=(0, None, None)), static_argnums=2)(
        stacked, toks, cfg
    )
    assert losses.shape == (4,) and len(set(np.asarray(losses).round(6).tolist())) == 4
