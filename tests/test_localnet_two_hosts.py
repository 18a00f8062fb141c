"""The validator as a two-process JAX job (issue 9) replays the recorded local network
(`tests/localnet_recording.py`) and must decide as the live single-process one did. Not on
wall-clock time: the chain is frozen and every upload is on disk.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import jax
import numpy as np
import pytest
from localnet_recording import recorded_run, recorded_windows, replica_of, validate_cmd

from gauntlet_jax.chain.keys import dev_uri
from gauntlet_jax.config import load_config
from gauntlet_jax.node.metrics import read_records
from gauntlet_jax.node.replica import initial_params, plan_for
from gauntlet_jax.protocol.catchup import catch_up
from gauntlet_jax.storage.base import open_bucket
from gauntlet_jax.storage.checkpoint import CheckpointStore
from gauntlet_jax.validator.state import load_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

# Windows of the recording the two-host job replays (a checkpoint among them).
TWO_HOST_REPLAY_WINDOWS = 3


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return recorded_run(tmp_path_factory)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Two processes of 4 simulated CPU devices joined on 127.0.0.1: one validator on an 8-device
# mesh (data 2 × fsdp 2 × tensor 2), the data axis split across the two hosts.
TWO_HOST_MESH = ["mesh.distributed=on", "mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]


def replay_on_two_hosts(overrides: list[str], until_window: int, logs: Path) -> None:
    """Runs the validator as a two-process JAX job until `until_window`; only the leader gets
    the hotkey secret (a follower never talks to the chain)."""
    port = _free_port()
    procs = []
    for pid in range(2):
        env = {
            **os.environ,
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(pid),
        }
        env.pop("GAUNTLET_HOTKEY_SECRET", None)
        if pid == 0:
            env["GAUNTLET_HOTKEY_SECRET"] = dev_uri(0)
        cmd = validate_cmd([*overrides, *TWO_HOST_MESH], until_window)
        # Output to files: a pipe nobody drains would stall one process inside a collective.
        with open(logs / f"process{pid}.log", "wb") as sink:
            procs.append(subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT))
    try:
        for pid, proc in enumerate(procs):
            proc.wait(timeout=600)
            text = (logs / f"process{pid}.log").read_text()[-4000:]
            assert proc.returncode == 0, f"process {pid}:\n{text}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# What a validator decides for a peer in a window; a two-host replay must decide the same.
DECISIONS = ("weight", "mu", "sigma", "final", "evaluated", "slashes", "sync_score", "checks")
LOSSES = ("loss_before_own", "loss_after_own", "loss_before_random", "loss_after_random")


def _in_time(record: dict) -> dict:
    """The record with "late" read as "missing". A replay runs after the fact: an upload that
    landed after the live validator's last look (it saw nothing: missing) is there for the
    replay, stamped after the put window (late). Both say "not there in time", slash the same and
    leave every number equal; which one a validator sees depends on when it looks, not on its
    device layout."""
    checks = dict(record["checks"])
    if checks.get("payload") == "too_late":
        checks["payload"] = "missing"
    slashes = ["missing" if s == "late" else s for s in record["slashes"]]
    return {**record, "checks": checks, "slashes": slashes}


def test_validator_on_two_hosts_decides_like_the_recorded_one(
    live_run: tuple[Path, dict], tmp_path: Path
) -> None:
    """The validator as a two-process JAX job (a TPU pod slice's shape, on CPU) replays the first
    windows of the recorded run (a checkpoint among them): every decision as the live
    single-process validator made it, θ as the recorded aggregates give it, and only the leader
    wrote."""
    root, _ = live_run
    live = read_records(root / "validator-validator" / "metrics.jsonl")
    windows = recorded_windows(root)
    until = windows[TWO_HOST_REPLAY_WINDOWS - 1]
    pair, overrides = replica_of(root, tmp_path / "pair")
    logs = tmp_path / "logs"
    logs.mkdir()
    replay_on_two_hosts([*overrides, "protocol.checkpoint_every=2"], until, logs)

    # The leader alone wrote the metrics: each window and peer record exactly once.
    replayed = read_records(pair / "validator-validator" / "metrics.jsonl")
    assert [r["window"] for r in replayed if r.get("kind") == "window"] == [
        w for w in windows if w <= until
    ]
    peer = {(r["window"], r["uid"]): r for r in live if r.get("kind") == "peer"}
    mine = [r for r in replayed if r.get("kind") == "peer"]
    assert len(mine) == len({(r["window"], r["uid"]) for r in mine}) > 0
    for record in mine:
        recorded = _in_time(peer[(record["window"], record["uid"])])
        record = _in_time(record)
        for name in DECISIONS:
            assert record[name] == recorded[name], (name, record, recorded)
        for name in LOSSES:  # sums over 8 devices in another order: equal to a few ulp
            if recorded[name] is not None:
                assert record[name] == pytest.approx(recorded[name], rel=1e-6), name
    state = load_state(pair / "validator-validator" / "validator_state.json", 0)
    assert state.last_window == until

    # θ in the Orbax checkpoint the two processes wrote together equals θ rebuilt in this
    # process from the aggregates the live validator published: the same outer steps, bit
    # for bit.
    cfg = load_config("tiny", overrides)
    with CheckpointStore(str(pair / "checkpoints" / "validator")) as store:
        ckpt = store.restore()
    start = ckpt.metadata["start_window"]
    assert start < ckpt.window <= until + 1
    expected = catch_up(
        initial_params(cfg),
        start,
        ckpt.window,
        open_bucket(str(root / "buckets" / "validator"), cfg.storage),
        cfg,
        plan=plan_for(cfg),
        first_step=0,
    )
    for got, want in zip(jax.tree.leaves(ckpt.params), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
