"""Orbax checkpoints: round trip (bit-exact), keep-last-N, missing/partial checkpoints, and the
same through gs:// on the GCS emulator."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from gcs_emulator import FakeGcs, FaultProxy

from gauntlet_jax.config import Config
from gauntlet_jax.errors import CheckpointError
from gauntlet_jax.model import llama
from gauntlet_jax.storage.checkpoint import (
    Checkpoint,
    CheckpointStore,
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)

pytest_plugins = ["gcs_fixtures"]


@pytest.fixture(scope="module")
def tiny_state(tiny_config: Config) -> Checkpoint:
    params = llama.init_params(tiny_config.model, jax.random.key(0))
    momentum = jax.tree.map(
        lambda p: jax.random.normal(jax.random.key(1), p.shape, p.dtype) * 1e-3, params
    )
    return Checkpoint(
        params=params,
        momentum=momentum,
        window=7,
        schedule_step=5,
        metadata={"uid": 3, "note": "tiny"},
    )


def assert_trees_equal(a: object, b: object) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def with_window(state: Checkpoint, window: int) -> Checkpoint:
    return Checkpoint(state.params, window, state.schedule_step, state.momentum, state.metadata)


def test_round_trip_is_bit_exact(tmp_path: Path, tiny_state: Checkpoint) -> None:
    save_checkpoint(str(tmp_path / "ck"), 7, tiny_state)
    assert latest_checkpoint(str(tmp_path / "ck")) == 7
    back = restore_checkpoint(str(tmp_path / "ck"))
    assert (back.window, back.schedule_step) == (7, 5)
    assert back.metadata == {"uid": 3, "note": "tiny"}
    assert_trees_equal(back.params, tiny_state.params)
    assert_trees_equal(back.momentum, tiny_state.momentum)
    leaf = jax.tree.leaves(back.params)[0]
    assert leaf.sharding == jax.sharding.SingleDeviceSharding(jax.devices()[0])


def test_mixed_dtypes_and_no_momentum(tmp_path: Path) -> None:
    params = {
        "w": jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
        "b": {"x": jnp.ones(4, jnp.bfloat16)},
    }
    save_checkpoint(str(tmp_path), 1, Checkpoint(params, window=1, schedule_step=0))
    back = restore_checkpoint(str(tmp_path), 1)
    assert back.momentum is None
    assert_trees_equal(back.params, params)


def test_keeps_the_newest_n(tmp_path: Path) -> None:
    params = {"w": jnp.zeros(3)}
    with CheckpointStore(str(tmp_path), keep=3) as store:
        for w in (10, 20, 30, 40, 50):
            store.save(Checkpoint({"w": jnp.full(3, float(w))}, w, w // 10))
        assert store.windows() == [30, 40, 50]
        assert float(store.restore(40).params["w"][0]) == 40.0
        with pytest.raises(CheckpointError, match="window 10"):
            store.restore(10)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "30",
        "40",
        "50",
    ]
    del params


def test_missing_and_partial_checkpoints(tmp_path: Path) -> None:
    assert latest_checkpoint(str(tmp_path / "empty")) is None
    with pytest.raises(CheckpointError, match="no checkpoint"):
        restore_checkpoint(str(tmp_path / "empty"))
    save_checkpoint(str(tmp_path / "ck"), 3, Checkpoint({"w": jnp.ones(2)}, 3, 1))
    # A save that died half-way: Orbax's temporary directory of a later step.
    (tmp_path / "ck" / "4.orbax-checkpoint-tmp-123").mkdir()
    (tmp_path / "ck" / "4.orbax-checkpoint-tmp-123" / "junk").write_bytes(b"x")
    assert latest_checkpoint(str(tmp_path / "ck")) == 3
    assert restore_checkpoint(str(tmp_path / "ck")).window == 3


def test_save_refuses_mismatched_window(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        save_checkpoint(str(tmp_path), 5, Checkpoint({"w": jnp.ones(2)}, 4, 1))


def test_target_shardings_must_match_the_tree(tmp_path: Path) -> None:
    save_checkpoint(str(tmp_path), 1, Checkpoint({"w": jnp.ones(2), "v": jnp.ones(3)}, 1, 0))
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    assert restore_checkpoint(str(tmp_path), 1, {"w": one, "v": one}).params["v"].shape == (3,)
    with pytest.raises(CheckpointError, match="shardings"):
        restore_checkpoint(str(tmp_path), 1, {"w": one})


def test_gcs_round_trip_and_retention(
    fake_gcs: FakeGcs, gcs_proxy: FaultProxy, tiny_state: Checkpoint
) -> None:
    """gs:// through the emulator: tensorstore writes the arrays, gcsfs the directories."""
    bucket = fake_gcs.new_bucket()
    url = f"gs://{bucket}/v0.1.0/checkpoint-3"
    save_checkpoint(url, 7, tiny_state, keep=2)
    back = restore_checkpoint(url)
    assert back.window == 7 and back.metadata["uid"] == 3
    assert_trees_equal(back.params, tiny_state.params)
    assert_trees_equal(back.momentum, tiny_state.momentum)
    with CheckpointStore(url, keep=2) as store:
        for w in (8, 9):
            store.save(Checkpoint({"w": jnp.full(3, float(w))}, w, w))
        assert store.windows() == [8, 9]
        assert float(store.restore().params["w"][0]) == 9.0
    media = [r for r in gcs_proxy.requests if "/o/" in r or "/o?" in r]
    assert media, "the checkpoint did not go through the emulator"
