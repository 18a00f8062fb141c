"""Multi-host JAX: two processes of 4 simulated CPU devices each, joined by
`jax.distributed.initialize` on 127.0.0.1, compute the validator's scoring step and the shared
outer step on one 8-device mesh, and agree with one process holding all 8 devices.

Each host loads only its half of every token batch; the step parameters come from the leader
(the follower is handed different ones and must ignore them); only the leader writes results.
The outer step (θ after it) must match to the bit. The losses may differ in the last place: the
cross-host all-reduce (gloo) sums the data-parallel partial losses in another order than the
in-process one, which is why they are compared to 2 ulp.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gauntlet_jax import distributed
from gauntlet_jax.config import MeshConfig

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("multihost_worker.py")
DECISION = {"beta": 0.01, "lr": 0.002, "mask": [1, 1, 0, 1]}
# What the follower is told: a leader-following process must never use it.
WRONG_DECISION = {"beta": 0.5, "lr": 0.1, "mask": [0, 0, 0, 1]}
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(
    out: Path, log: Path, devices: int, extra: list[str], decision: dict
) -> subprocess.Popen:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        env.pop(key, None)
    cmd = [sys.executable, str(WORKER), "--out", str(out), "--decision", json.dumps(decision)]
    # Output to a file, not a pipe: a pipe nobody drains while the test waits on the other
    # process fills up, and a worker blocked on it stalls its peer inside a collective.
    with open(log, "wb") as sink:
        return subprocess.Popen([*cmd, *extra], env=env, stdout=sink, stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"worker timed out:\n{log.read_text()[-4000:]}")
    output = log.read_text()
    assert proc.returncode == 0, output[-4000:]
    return output


def _report(output: str) -> dict:
    lines = [line for line in output.splitlines() if line.startswith('{"process"')]
    assert len(lines) == 1, output[-4000:]
    return json.loads(lines[0])


def test_two_hosts_score_and_step_like_one_host_of_eight_devices(tmp_path: Path) -> None:
    port = _free_port()
    logs = [tmp_path / f"{name}.log" for name in ("leader", "follower", "single")]
    pair = [
        _spawn(
            tmp_path / "pair",
            logs[i],
            4,
            ["--num-processes", "2", "--process-id", str(i), "--port", str(port)],
            DECISION if i == 0 else WRONG_DECISION,
        )
        for i in range(2)
    ]
    single = _spawn(tmp_path / "single", logs[2], 8, [], DECISION)
    leader, follower = (_report(_finish(p, log)) for p, log in zip(pair, logs[:2], strict=True))
    _finish(single, logs[2])

    # Two processes of 4 devices made one job of 8; each host loaded only its half of a batch.
    assert (leader["processes"], leader["local_devices"], leader["devices"]) == (2, 4, 8)
    assert leader["own_rows"] == [0, 2] and follower["own_rows"] == [2, 4]
    assert leader["random_rows"] == [0, 2] and follower["random_rows"] == [2, 4]
    # The follower acted on the leader's decision, not on its own argument.
    assert follower["decision"] == DECISION
    # Only the leader wrote.
    assert sorted(p.name for p in (tmp_path / "pair").iterdir()) == ["result.json"]

    two = json.loads((tmp_path / "pair" / "result.json").read_text())
    one = json.loads((tmp_path / "single" / "result.json").read_text())
    assert two["joined"] and not one["joined"]
    assert two["params_sharded_over"] == one["params_sharded_over"] == 8
    assert two["outer_moved"] > 0
    assert two["outer_sha256"] == one["outer_sha256"]
    assert two["losses"].keys() == one["losses"].keys()
    for key, value in one["losses"].items():
        a = np.asarray(value, np.float32)
        b = np.asarray(two["losses"][key], np.float32)
        ulps = np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))
        assert ulps.max() <= 2, (key, value, two["losses"][key])
    # The candidates really differ (the comparison is not between constants).
    assert len(set(one["losses"]["own_after"])) == 3


def test_auto_mode_joins_only_when_the_environment_names_a_job(tmp_path: Path) -> None:
    no_pci = tmp_path / "pci"
    no_pci.mkdir()
    assert distributed.pod_detected({}, no_pci) == ""
    assert distributed.pod_detected({"TPU_WORKER_HOSTNAMES": "10.0.0.2"}, no_pci) == ""
    assert "2 workers" in distributed.pod_detected({"TPU_WORKER_HOSTNAMES": "a,b"}, no_pci)
    assert distributed.pod_detected({"JAX_COORDINATOR_ADDRESS": "h:1"}, no_pci)
    assert distributed.pod_detected({"MEGASCALE_COORDINATOR_ADDRESS": "h"}, no_pci)
    # Two v5e chips, an Intel device and Google's gVNIC network card (not a TPU).
    devices = [
        ("0x1ae0", "0x0063"),
        ("0x8086", "0x0063"),
        ("0x1ae0", "0x0063"),
        ("0x1ae0", "0x0042"),
    ]
    for i, (vendor, device) in enumerate(devices):
        dev = no_pci / f"0000:00:0{i}.0"
        dev.mkdir()
        (dev / "vendor").write_text(vendor + "\n")
        (dev / "device").write_text(device + "\n")
    assert distributed.pod_detected({}, no_pci) == "2 TPU chips on this host"
    # "off" never joins, whatever the environment says; auto without a reason does not either.
    env = {"TPU_WORKER_HOSTNAMES": "a,b"}
    assert not distributed.maybe_initialize(MeshConfig(distributed="off"), env, no_pci)
    assert not distributed.maybe_initialize(MeshConfig(distributed="auto"), {}, tmp_path / "x")


def test_initialize_arguments_come_from_config_then_env() -> None:
    cfg = MeshConfig(coordinator="10.0.0.1:1234", num_processes=4, process_id=3)
    assert distributed.initialize_args(cfg, {}) == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 4,
        "process_id": 3,
    }
    env = {"JAX_COORDINATOR_ADDRESS": "h:9", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert distributed.initialize_args(MeshConfig(), env) == {
        "coordinator_address": "h:9",
        "num_processes": 2,
        "process_id": 1,
    }
    # Nothing given: JAX's own cluster detection (TPU metadata, SLURM, …) decides.
    assert distributed.initialize_args(MeshConfig(), {}) == {}
    with pytest.raises(distributed.DistributedError, match="process_id 4"):
        distributed.initialize_args(MeshConfig(num_processes=4, process_id=4), {})
    with pytest.raises(distributed.DistributedError, match="host:port"):
        distributed.initialize_args(MeshConfig(coordinator="nohost", num_processes=1), {})
    with pytest.raises(distributed.DistributedError, match=r"needs mesh\.num_processes"):
        distributed.initialize_args(MeshConfig(coordinator="h:1"), {})
    with pytest.raises(distributed.DistributedError, match="not an integer"):
        distributed.initialize_args(MeshConfig(), {"JAX_NUM_PROCESSES": "two"})
    with pytest.raises(distributed.DistributedError, match="valid: auto, on, off"):
        distributed.maybe_initialize(MeshConfig(distributed="yes"), {})


def test_single_process_helpers_are_the_local_case() -> None:
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    assert distributed.is_leader()
    assert distributed.broadcast_from_leader({"uids": [3, 1]}) == {"uids": [3, 1]}
    mesh = jax.make_mesh(
        (1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1]
    )
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    rows = np.arange(12, dtype=np.int32).reshape(4, 3)
    assert distributed.process_rows(sharding, rows.shape) == slice(0, 4)
    batch = distributed.global_batch(rows, sharding, rows.shape)
    np.testing.assert_array_equal(distributed.to_host(batch), rows)
    with pytest.raises(distributed.DistributedError, match="rows 0:4"):
        distributed.global_batch(rows[:2], sharding, rows.shape)
    placed = distributed.global_tree({"a": rows}, {"a": sharding})
    np.testing.assert_array_equal(np.asarray(placed["a"]), rows)
