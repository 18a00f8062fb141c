"""A checkpoint written from one device restores sharded over 8 devices (and back), bit-equal."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from gauntlet_jax.config import load_config
from gauntlet_jax.model import llama
from gauntlet_jax.storage.checkpoint import Checkpoint, restore_checkpoint, save_checkpoint


def fsdp_shardings(params: object, mesh: jax.sharding.Mesh) -> object:
    """Shard each array's first dimension divisible by 8 over 'fsdp'; replicate the rest."""

    def spec(x: jax.Array) -> NamedSharding:
        axes: list[str | None] = [None] * x.ndim
        for d, n in enumerate(x.shape):
            if n % mesh.size == 0:
                axes[d] = "fsdp"
                break
        return NamedSharding(mesh, PartitionSpec(*axes))

    return jax.tree.map(spec, params)


def test_one_device_checkpoint_restores_on_eight(tmp_path: Path) -> None:
    cfg = load_config("tiny")
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    params = jax.device_put(llama.init_params(cfg.model, jax.random.key(0)), one)
    momentum = jax.tree.map(lambda p: p * 0.5, params)
    save_checkpoint(str(tmp_path), 12, Checkpoint(params, 12, 3, momentum))

    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Auto,))
    targets = fsdp_shardings(params, mesh)
    back = restore_checkpoint(str(tmp_path), target_shardings=targets)

    sharded = 0
    for tree, ref in ((back.params, params), (back.momentum, momentum)):
        for got, want, target in zip(
            jax.tree.leaves(tree), jax.tree.leaves(ref), jax.tree.leaves(targets), strict=True
        ):
            assert got.sharding == target
            assert len(got.addressable_shards) == 8
            sharded += target.spec != PartitionSpec(*([None] * got.ndim))
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert sharded > 0  # the embedding and matrices really are split over the 8 devices

    # And back: the 8-way sharded state saves and restores on a single device.
    save_checkpoint(str(tmp_path / "again"), 13, Checkpoint(back.params, 13, 4, back.momentum))
    single = restore_checkpoint(str(tmp_path / "again"))
    for got, want in zip(jax.tree.leaves(single.params), jax.tree.leaves(params), strict=True):
        assert got.sharding == one
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
