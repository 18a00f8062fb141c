"""Catch-up: a node restarted from a checkpoint that replays the published aggregates ends
bit-identical (CPU) to a node that never stopped; missing or garbled aggregates are typed errors
that carry the progress so far. Runs against both bucket backends."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from gcs_emulator import FakeGcs

from gauntlet_jax.compress.plan import CompressionPlan, make_plan
from gauntlet_jax.config import Config, load_config
from gauntlet_jax.model import llama
from gauntlet_jax.protocol import names, outer
from gauntlet_jax.protocol.catchup import (
    AggregateUnavailable,
    catch_up,
    max_aggregate_bytes,
)
from gauntlet_jax.protocol.momentum import compress_tree
from gauntlet_jax.protocol.schedule import outer_lr
from gauntlet_jax.storage.base import Bucket, open_bucket
from gauntlet_jax.storage.checkpoint import Checkpoint, CheckpointStore

pytest_plugins = ["gcs_fixtures"]

START = 10  # the run's start window
CHECKPOINT_AFTER = 12  # the restarting node's last checkpoint is taken after this window
END = 16  # windows START … END − 1 are applied
PEERS = 3


@pytest.fixture(scope="module")
def cfg() -> Config:
    # Weight decay on, so that replay has to reproduce the decay term too.
    return load_config("tiny", ["protocol.weight_decay=0.1"])


@pytest.fixture(scope="module")
def plan(cfg: Config) -> CompressionPlan:
    return make_plan(
        llama.abstract_params(cfg.model), llama.param_logical_axes(cfg.model), cfg.compress
    )


def window_signs(window: int, params: Any, cfg: Config, plan: CompressionPlan) -> Any:
    """sign(A) of one window from PEERS compressed random 'momenta' (one absent peer)."""
    payloads = []
    for peer in range(PEERS):
        key = jax.random.fold_in(jax.random.key(window), peer)
        leaves = jax.tree.leaves(params)
        keys = jax.random.split(key, len(leaves))
        momentum = jax.tree.unflatten(
            jax.tree.structure(params),
            [jax.random.normal(k, p.shape) for k, p in zip(keys, leaves, strict=True)],
        )
        idx, vals, _ = compress_tree(momentum, plan, False)
        payloads.append((idx, vals))
    idx = jax.tree.map(lambda *xs: np.stack(xs), *[p[0] for p in payloads])
    vals = jax.tree.map(lambda *xs: np.stack(xs), *[p[1] for p in payloads])
    mask = np.array([True, True, False])
    return outer.aggregate_sign(idx, vals, mask, cfg, plan)


def bits(tree: Any) -> list[np.ndarray]:
    return [np.asarray(x).view(np.uint32) for x in jax.tree.leaves(tree)]


def assert_bit_identical(a: Any, b: Any) -> None:
    for x, y in zip(bits(a), bits(b), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.fixture(scope="module")
def live_run(cfg: Config, plan: CompressionPlan) -> dict[str, Any]:
    """The node that never stopped: θ after every window, and the signs it published."""
    params = llama.init_params(cfg.model, jax.random.key(cfg.train.seed))
    after: dict[int, Any] = {START - 1: params}
    published: dict[int, bytes] = {}
    for w in range(START, END):
        signs = window_signs(w, params, cfg, plan)
        params = outer.apply_sign(params, signs, outer_lr(w - START, cfg.protocol), cfg)
        after[w] = params
        published[w] = names.encode_arrays(outer.pack_signs(signs, plan))
    return {"after": after, "published": published}


@pytest.fixture(params=["local", "gcs"])
def lead_bucket(request: pytest.FixtureRequest, tmp_path: Path, cfg: Config) -> Bucket:
    if request.param == "local":
        return open_bucket(str(tmp_path / "lead"), cfg.storage)
    fake: FakeGcs = request.getfixturevalue("fake_gcs")
    request.getfixturevalue("gcs_proxy")  # points the client at the emulator
    return open_bucket(f"gs://{fake.new_bucket()}", cfg.storage)


def publish(bucket: Bucket, live_run: dict[str, Any], cfg: Config) -> None:
    for w, data in live_run["published"].items():
        bucket.put(names.aggregate_name(w, cfg.protocol.version), data)


def test_restart_from_checkpoint_and_replay_is_bit_identical(
    tmp_path: Path,
    cfg: Config,
    plan: CompressionPlan,
    live_run: dict[str, Any],
    lead_bucket: Bucket,
) -> None:
    publish(lead_bucket, live_run, cfg)
    # The restarting node checkpointed after CHECKPOINT_AFTER, then was down.
    ckpt_dir = str(tmp_path / "ck")
    with CheckpointStore(ckpt_dir, keep=cfg.protocol.checkpoint_keep) as store:
        store.save(
            Checkpoint(
                params=live_run["after"][CHECKPOINT_AFTER],
                window=CHECKPOINT_AFTER,
                schedule_step=CHECKPOINT_AFTER + 1 - START,  # the next step to apply
            )
        )
        restored = store.restore()
    params = catch_up(
        restored.params,
        restored.window + 1,
        END,
        lead_bucket,
        cfg,
        plan=plan,
        first_step=restored.schedule_step,
    )
    assert_bit_identical(params, live_run["after"][END - 1])
    # …and the replay really moved θ: it differs from the checkpoint.
    assert any((x != y).any() for x, y in zip(bits(params), bits(restored.params), strict=True))


def test_missing_and_garbled_aggregates_are_typed_errors(
    cfg: Config, plan: CompressionPlan, live_run: dict[str, Any], lead_bucket: Bucket
) -> None:
    publish(lead_bucket, live_run, cfg)
    version = cfg.protocol.version
    start = live_run["after"][CHECKPOINT_AFTER]

    lead_bucket.delete(names.aggregate_name(14, version))
    with pytest.raises(AggregateUnavailable) as err:
        catch_up(start, 13, END, lead_bucket, cfg, plan=plan, first_step=13 - START)
    assert (err.value.window, err.value.kind) == (14, "missing")
    assert_bit_identical(err.value.params, live_run["after"][13])  # progress kept

    # The caller fetches window 14 another way (here: the lead republishes) and carries on.
    lead_bucket.put(names.aggregate_name(14, version), live_run["published"][14])
    params = catch_up(err.value.params, 14, END, lead_bucket, cfg, plan=plan, first_step=14 - START)
    assert_bit_identical(params, live_run["after"][END - 1])

    good = live_run["published"][15]
    other_plan = names.encode_arrays({"embed.pos": np.zeros(3, np.uint8)})
    for garbled, kind in [
        (b"not safetensors", "malformed"),
        (good[: len(good) // 2], "malformed"),
        (other_plan, "malformed"),
        (b"\0" * (max_aggregate_bytes(plan) + 1), "unreadable"),
    ]:
        lead_bucket.put(names.aggregate_name(15, version), garbled)
        with pytest.raises(AggregateUnavailable) as err:
            catch_up(start, 13, END, lead_bucket, cfg, plan=plan, first_step=13 - START)
        assert (err.value.window, err.value.kind) == (15, kind)
        assert_bit_identical(err.value.params, live_run["after"][14])


def test_nothing_to_replay(cfg: Config, plan: CompressionPlan, tmp_path: Path) -> None:
    params = {"w": np.ones(3, np.float32)}
    bucket = open_bucket(str(tmp_path), cfg.storage)
    assert catch_up(params, 5, 5, bucket, cfg, plan=plan, first_step=0) is params
    with pytest.raises(ValueError):
        catch_up(params, 6, 5, bucket, cfg, plan=plan, first_step=0)
