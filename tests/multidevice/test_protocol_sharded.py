"""Momentum compression and the outer step on params sharded over 8 simulated CPU devices (fsdp 2
× tensor 4, as the rules table says) agree with the same computation on one device."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from gauntlet_jax.config import MeshConfig, load_config
from gauntlet_jax.model import llama, sharding
from gauntlet_jax.protocol import outer
from gauntlet_jax.protocol.honest import plan_for_model
from gauntlet_jax.protocol.momentum import init_momentum, momentum_step

pytestmark = pytest.mark.multidevice


def test_sharded_momentum_and_outer_step_match_one_device() -> None:
    cfg = load_config("tiny")
    plan = plan_for_model(cfg)
    mesh = sharding.make_mesh(MeshConfig(peers=1, data=1, fsdp=2, tensor=4))
    one = jax.devices()[0]
    params = llama.init_params(cfg.model, jax.random.key(0))
    grads = [
        jax.tree.map(lambda p, s=seed: jax.random.normal(jax.random.key(s), p.shape), params)
        for seed in (1, 2, 3)
    ]

    def run(place):
        p = place(params)
        results = [momentum_step(init_momentum(p), place(g), 1e-3, 0, cfg, plan) for g in grads]
        idx = jax.tree.map(lambda *x: jax.numpy.stack(x), *[r.idx for r in results])
        vals = jax.tree.map(lambda *x: jax.numpy.stack(x), *[r.vals for r in results])
        new = outer.outer_step(p, idx, vals, np.array([True, False, True]), 1e-3, cfg, plan)
        return results[0], new

    shard = lambda t: sharding.shard_params(t, cfg.model, mesh)  # noqa: E731
    sharded_res, sharded_new = run(shard)
    local_res, local_new = run(lambda t: jax.device_put(t, one))
    # The inputs really were split over the mesh.
    assert len(shard(params)["embed"].sharding.device_set) == 8
    for a, b in zip(jax.tree.leaves(sharded_res.m), jax.tree.leaves(local_res.m), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    for a, b in zip(jax.tree.leaves(sharded_res.idx), jax.tree.leaves(local_res.idx), strict=True):
        assert np.mean(np.asarray(a) != np.asarray(b)) < 1e-3  # only near-ties may swap
    for a, b, p in zip(
        jax.tree.leaves(sharded_new),
        jax.tree.leaves(local_new),
        jax.tree.leaves(params),
        strict=True,
    ):
        moved_a, moved_b = np.asarray(a) - np.asarray(p), np.asarray(b) - np.asarray(p)
        assert np.mean(np.sign(moved_a) != np.sign(moved_b)) < 1e-3
