"""Multi-host JAX: two processes of 4 simulated CPU devices each, joined by
`jax.multihost.initialize` on 127.0.0.1, compute the validator's scoring step and the shared
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
from typing import Any

import jax
import numpy as np
import pytest

from gauntlet_jax.chain.keys import dev_uri
from gauntlet_jax.compress.codec import decode_payload
from gauntlet_jax.config import MeshConfig, load_config
from gauntlet_jax.localchain import create_network
from gauntlet_jax.model.sharding import global_batch, global_tree, process_rows, to_host
from gauntlet_jax.node import multihost
from gauntlet_jax.node.replica import plan_for
from gauntlet_jax.protocol import names

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
    assert multihost.pod_detected({}, no_pci) == ""
    assert multihost.pod_detected({"TPU_WORKER_HOSTNAMES": "10.0.0.2"}, no_pci) == ""
    assert "2 workers" in multihost.pod_detected({"TPU_WORKER_HOSTNAMES": "a,b"}, no_pci)
    assert multihost.pod_detected({"JAX_COORDINATOR_ADDRESS": "h:1"}, no_pci)
    assert multihost.pod_detected({"MEGASCALE_COORDINATOR_ADDRESS": "h"}, no_pci)
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
    assert multihost.pod_detected({}, no_pci) == "2 TPU chips on this host"
    # "off" never joins, whatever the environment says; auto without a reason does not either.
    env = {"TPU_WORKER_HOSTNAMES": "a,b"}
    assert not multihost.maybe_initialize(MeshConfig(distributed="off"), env, no_pci)
    assert not multihost.maybe_initialize(MeshConfig(distributed="auto"), {}, tmp_path / "x")


def test_initialize_arguments_come_from_config_then_env() -> None:
    cfg = MeshConfig(coordinator="10.0.0.1:1234", num_processes=4, process_id=3)
    assert multihost.initialize_args(cfg, {}) == {
        "coordinator_address": "10.0.0.1:1234",
        "num_processes": 4,
        "process_id": 3,
    }
    env = {"JAX_COORDINATOR_ADDRESS": "h:9", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    assert multihost.initialize_args(MeshConfig(), env) == {
        "coordinator_address": "h:9",
        "num_processes": 2,
        "process_id": 1,
    }
    # Nothing given: JAX's own cluster detection (TPU metadata, SLURM, …) decides.
    assert multihost.initialize_args(MeshConfig(), {}) == {}
    with pytest.raises(multihost.DistributedError, match="process_id 4"):
        multihost.initialize_args(MeshConfig(num_processes=4, process_id=4), {})
    with pytest.raises(multihost.DistributedError, match="host:port"):
        multihost.initialize_args(MeshConfig(coordinator="nohost", num_processes=1), {})
    with pytest.raises(multihost.DistributedError, match=r"needs mesh\.num_processes"):
        multihost.initialize_args(MeshConfig(coordinator="h:1"), {})
    with pytest.raises(multihost.DistributedError, match="not an integer"):
        multihost.initialize_args(MeshConfig(), {"JAX_NUM_PROCESSES": "two"})
    with pytest.raises(multihost.DistributedError, match="valid: auto, on, off"):
        multihost.maybe_initialize(MeshConfig(distributed="yes"), {})


def test_single_process_helpers_are_the_local_case() -> None:
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    assert multihost.is_leader()
    assert multihost.broadcast_from_leader({"uids": [3, 1]}) == {"uids": [3, 1]}
    mesh = jax.make_mesh(
        (1,), ("data",), axis_types=(jax.sharding.AxisType.Auto,), devices=jax.devices()[:1]
    )
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    rows = np.arange(12, dtype=np.int32).reshape(4, 3)
    assert process_rows(sharding, rows.shape) == slice(0, 4)
    batch = global_batch(rows, sharding, rows.shape)
    np.testing.assert_array_equal(to_host(batch), rows)
    with pytest.raises(multihost.DistributedError, match="rows 0:4"):
        global_batch(rows[:2], sharding, rows.shape)
    placed = global_tree({"a": rows}, {"a": sharding})
    np.testing.assert_array_equal(np.asarray(placed["a"]), rows)


MINER_WORKER = Path(__file__).with_name("multihost_miner_worker.py")
WINDOW = 3
MESH_8 = ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2"]


def _miner_root(root: Path) -> list[str]:
    """A local chain with a validator and one miner (uid 1) under `root`; the overrides."""
    overrides = [
        f"chain.url=sqlite:///{root}/chain.db",
        f"storage.bucket={root}/buckets/{{hotkey}}",
        f"storage.checkpoint_dir={root}/checkpoints/{{hotkey}}",
        "train.max_micro_batches=2",
    ]
    create_network(load_config("tiny", overrides), 2)
    return overrides


def _spawn_miner(root: Path, overrides: list[str], devices: int, pid: int, port: int) -> Any:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env.pop("GAUNTLET_HOTKEY_SECRET", None)
    if pid == 0:  # only the leader can sign: a follower that talked to the chain would fail
        env["GAUNTLET_HOTKEY_SECRET"] = dev_uri(1)
    if port:
        env.update(
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
        )
    cmd = [sys.executable, str(MINER_WORKER), "--root", str(root), "--window", str(WINDOW)]
    cmd += [a for o in overrides for a in ("--set", o)]
    log = root / f"process{pid}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    return proc, log


def test_two_host_miner_uploads_like_one_host_of_eight_devices(tmp_path: Path) -> None:
    roots = {name: tmp_path / name for name in ("pair", "single")}
    overrides = {name: [*_miner_root(root), *MESH_8] for name, root in roots.items()}
    overrides["pair"].append("mesh.distributed=on")
    port = _free_port()
    pair = [_spawn_miner(roots["pair"], overrides["pair"], 4, pid, port) for pid in range(2)]
    single = _spawn_miner(roots["single"], overrides["single"], 8, 0, 0)
    leader, follower = (_report(_finish(p, log)) for p, log in pair)
    one = _report(_finish(*single))

    # One job of 8 devices over two processes; each host sent its devices half of every batch.
    assert (leader["processes"], leader["devices"], one["processes"]) == (2, 8, 1)
    assert leader["rows"] == [0, 2] and follower["rows"] == [2, 4]
    assert leader["params_sharded_over"] == one["params_sharded_over"] == 8
    assert leader["micro_batches"] == one["micro_batches"] == 2
    # Only the leader uploaded (the follower's upload was the leader's, not a second write).
    assert leader["uploaded"] == follower["uploaded"] == one["uploaded"] > 0
    cfg = load_config("tiny")
    plan = plan_for(cfg)
    name = names.gradient_name(WINDOW, 1, cfg.protocol.version)
    payloads = {}
    for key, root in roots.items():
        objects = [p for p in (root / "buckets" / "miner").rglob("*") if p.is_file()]
        assert [p.name for p in objects] == [name.rsplit("/", 1)[-1]]
        data = objects[0].read_bytes()
        payloads[key] = decode_payload(
            data, plan, expected_uid=1, expected_window=WINDOW, max_bytes=len(data)
        )
    # The same gradient to a few ulp (the cross-host all-reduce sums in another order): the same
    # top-k chunks and, but for a rare tie at a quantisation boundary, the same values.
    assert leader["loss"] == pytest.approx(one["loss"], rel=1e-6)
    for a, b in zip(
        jax.tree.leaves(payloads["pair"].idx), jax.tree.leaves(payloads["single"].idx), strict=True
    ):
        assert np.mean(np.asarray(a) == np.asarray(b)) > 0.999
    for a, b in zip(
        jax.tree.leaves(payloads["pair"].vals),
        jax.tree.leaves(payloads["single"].vals),
        strict=True,
    ):
        assert np.mean(np.isclose(a, b, rtol=1e-3, atol=1e-6)) > 0.999


def test_a_leader_error_reaches_the_followers_as_the_same_typed_error() -> None:
    from gauntlet_jax.chain.errors import SettingWeightsTooFast
    from gauntlet_jax.errors import InvalidPayload, PreconditionFailed
    from gauntlet_jax.protocol.catchup import AggregateUnavailable

    errors = [
        SettingWeightsTooFast(detail="3 blocks left"),
        InvalidPayload(7, "nan values", "leaf embed"),
        AggregateUnavailable(12, "missing", "no object", None),
        PreconditionFailed("gradient-3-1 exists"),
    ]
    for error in errors:
        # What a follower raises from the leader's outcome (its __init__ is never called).
        with pytest.raises(type(error)) as got:
            multihost._unpack_outcome(multihost._pack_error(error))
        assert str(got.value) == str(error)
        assert vars(got.value) == vars(error)

    class Unpicklable(Exception):  # a local class cannot be named in a pickle
        pass

    with pytest.raises(multihost.DistributedError, match="Unpicklable: boom"):
        multihost._unpack_outcome(multihost._pack_error(Unpicklable("boom")))
    assert multihost._unpack_outcome(multihost.pickle.dumps(("ok", {"uid": 3}))) == {"uid": 3}
