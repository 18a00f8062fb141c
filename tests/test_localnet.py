"""End to end: the local network as real processes (issue 6's demo and integration tests).

One validator, three honest miners and one miner uploading well-formed noise run for 10 validator
windows on the tiny model; weights must land on the local chain, every honest miner with positive
weight and the noisy one with none. The recorded run is then replayed on a frozen chain by two
fresh validators, one that never stops and one SIGKILLed again and again, which must post the same
weights; and by a validator running as a two-process JAX job (issue 9), which must decide as the
live one did. The replays are not on wall-clock time (the chain is frozen, every upload is on
disk): they run windows of the recording as fast as they can score them, loading the programs
the live validator compiled from the run's XLA cache.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from gauntlet_jax.chain.keys import dev_uri
from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.config import load_config
from gauntlet_jax.localnet import child_env
from gauntlet_jax.node.metrics import read_records
from gauntlet_jax.node.replica import initial_params, plan_for
from gauntlet_jax.protocol.catchup import catch_up
from gauntlet_jax.storage.base import open_bucket
from gauntlet_jax.storage.checkpoint import CheckpointStore
from gauntlet_jax.validator.state import load_state

# Real processes on short windows: minutes, more on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.wallclock, pytest.mark.timeout(1500)]

WINDOWS = 10
# Windows of the recording the killed and steady validators replay (one weight post at least:
# validator.windows_per_weights is 4), and those the two-host job replays.
KILLED_REPLAY_WINDOWS = 6
TWO_HOST_REPLAY_WINDOWS = 3


def _overrides(root: Path) -> list[str]:
    return [
        f"run.out_dir={root}",
        f"storage.bucket={root}/buckets/{{hotkey}}",
        f"storage.checkpoint_dir={root}/checkpoints/{{hotkey}}",
        f"chain.url=sqlite:///{root}/chain.db",
        "chain.block_time_s=1.0",
        "protocol.blocks_per_window=10",
        "protocol.put_window_s=5.0",
        "validator.windows_per_weights=4",
        "protocol.retention_windows=100",  # keep every upload: the replays re-read them all
        "run.tensorboard=false",
    ]


def _set_args(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _logs(root: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((root / "logs").glob("*.log"))
    )


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("localnet") / "run"
    cmd = [sys.executable, "-m", "gauntlet_jax.localnet", "--config", "tiny", "--miners", "4"]
    cmd += ["--noise", "1", "--windows", str(WINDOWS), *_set_args(_overrides(root))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: localnet then stops its miners and validator too.
        proc.terminate()
        out, err = proc.communicate(timeout=120)
        pytest.fail("localnet did not finish in 900 s\n" + err[-3000:] + _logs(root))
    assert proc.returncode == 0, err + _logs(root)
    return root, json.loads(out.strip().splitlines()[-1])["weights"]


def test_validator_rewards_honest_miners_and_not_noise(live_run: tuple[Path, dict]) -> None:
    root, weights = live_run
    on_chain = weights["0"]  # the validator's row: miner uid → u16 weight
    honest, noisy = ["1", "2", "3"], "4"
    assert all(on_chain.get(uid, 0) > 0 for uid in honest), (on_chain, _logs(root))
    assert on_chain.get(noisy, 0) == 0, (on_chain, _logs(root))

    records = read_records(root / "validator-validator" / "metrics.jsonl")
    windows = {r["window"] for r in records if r.get("kind") == "window"}
    assert len(windows) == WINDOWS
    evaluated = [r for r in records if r.get("kind") == "peer" and r.get("evaluated")]
    assert {r["uid"] for r in evaluated} >= {1, 2, 3, 4}
    last = {r["uid"]: r for r in records if r.get("kind") == "peer" and r["window"] == max(windows)}
    assert last[4]["ordinal"] < 0 < min(last[u]["ordinal"] for u in (1, 2, 3)), last


def _replica_of(root: Path, dest: Path) -> tuple[Path, list[str]]:
    """A copy of the recorded network for a replaying validator: its own state and metrics
    start empty; the chain is frozen after the run and accepts weights every block."""
    shutil.copytree(root, dest)
    shutil.rmtree(dest / "validator-validator")
    shutil.rmtree(dest / "checkpoints", ignore_errors=True)
    cfg = load_config("tiny", _overrides(dest))
    with LocalChain(dest / "chain.db") as chain:
        chain.set_clock_mode("manual")
        chain.set_param(cfg.chain.netuid, "weights_rate_limit", 0)
    return dest, _overrides(dest)


def _validate_cmd(overrides: list[str], until_window: int) -> list[str]:
    # --until-window, not --windows: a restarted validator resumes past its saved state and
    # must stop at the same window as the one that never stopped.
    return [
        sys.executable, "-m", "gauntlet_jax.validate", "--config", "tiny", "--hotkey",
        "validator", "--until-window", str(until_window), *_set_args(overrides),
    ]  # fmt: skip


def _env(replica: Path) -> dict[str, str]:
    """The live validator's environment (localnet's: the same XLA flags and the run's compiled
    programs, copied with it), with the validator's key."""
    return {**child_env(replica), "GAUNTLET_HOTKEY_SECRET": dev_uri(0)}


def _recorded_windows(root: Path) -> list[int]:
    live = read_records(root / "validator-validator" / "metrics.jsonl")
    return sorted({r["window"] for r in live if r.get("kind") == "window"})


def test_validator_killed_anywhere_posts_the_same_weights(
    live_run: tuple[Path, dict], tmp_path: Path
) -> None:
    root, _ = live_run
    last = _recorded_windows(root)[KILLED_REPLAY_WINDOWS - 1]
    steady, steady_over = _replica_of(root, tmp_path / "steady")
    killed, killed_over = _replica_of(root, tmp_path / "killed")

    done = subprocess.run(
        _validate_cmd(steady_over, last), env=_env(steady), capture_output=True, timeout=600
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]

    state_path = killed / "validator-validator" / "validator_state.json"
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(20):
        proc = subprocess.Popen(
            _validate_cmd(killed_over, last),
            env=_env(killed),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            # Kill while it is scoring: once its state has moved at least one window past where
            # this attempt started (or at a random moment shortly after start-up).
            before = load_state(state_path, 0).last_window if state_path.exists() else None
            deadline = time.time() + float(rng.uniform(20, 60))
            while proc.poll() is None and time.time() < deadline:
                now = load_state(state_path, 0).last_window if state_path.exists() else None
                if now is not None and now != before and rng.random() < 0.5:
                    time.sleep(float(rng.uniform(0.0, 1.0)))
                    break
                time.sleep(0.2)
            if proc.poll() is None and kills < 3:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                continue
            _, err = proc.communicate(timeout=600)
            assert proc.returncode == 0, err.decode()[-3000:]
            break
        finally:
            if proc.poll() is None:  # a failed wait: never leave a validator running
                proc.kill()
                proc.wait()
    assert kills >= 1

    cfg = load_config("tiny", steady_over)
    steady_state = load_state(steady / "validator-validator" / "validator_state.json", 0)
    killed_state = load_state(state_path, 0)
    assert steady_state.last_window == killed_state.last_window == last
    assert {u: r.weight for u, r in steady_state.peers.items()} == {
        u: r.weight for u, r in killed_state.peers.items()
    }
    with LocalChain(steady / "chain.db") as a, LocalChain(killed / "chain.db") as b:
        assert a.get_weights(cfg.chain.netuid, 0) == b.get_weights(cfg.chain.netuid, 0)
        assert a.get_weights(cfg.chain.netuid, 0)  # weights were actually posted


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
        cmd = _validate_cmd([*overrides, *TWO_HOST_MESH], until_window)
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
    windows = _recorded_windows(root)
    until = windows[TWO_HOST_REPLAY_WINDOWS - 1]
    pair, overrides = _replica_of(root, tmp_path / "pair")
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
