"""The local network's recorded run, shared by the tests that replay it.

One validator, three honest miners and one miner uploading well-formed noise run as real
processes (`python -m gauntlet_jax.localnet`) for WINDOWS validator windows on the tiny model, on
wall-clock windows. `tests/test_localnet.py` checks the live run (alone: `.ci/run`'s wall-clock
phase); the replays (`test_localnet_killed.py`, `test_localnet_two_hosts.py`) are not on wall-clock
time and run with the other tests. `.ci/run` points GAUNTLET_LOCALNET_RECORDING at one directory
for the whole run, so the live run records there once and the replays read it; without it (a file
run alone) each module records its own.
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gauntlet_jax.chain.keys import dev_uri
from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.config import load_config
from gauntlet_jax.localnet import child_env
from gauntlet_jax.node.metrics import read_records

RECORDING_ENV = "GAUNTLET_LOCALNET_RECORDING"
# Written last, once the run finished and its weights are known: a recording without it is
# incomplete and recorded again.
FINISHED = "recorded.json"
WINDOWS = 10


def overrides(root: Path) -> list[str]:
    return [
        f"run.out_dir={root}",
        f"storage.bucket={root}/buckets/{{hotkey}}",
        f"storage.checkpoint_dir={root}/checkpoints/{{hotkey}}",
        f"chain.url=sqlite:///{root}/chain.db",
        "chain.block_time_s=1.0",
        "protocol.blocks_per_window=10",
        "protocol.put_window_s=5.0",
        # The miners are ready before the validator starts: one window of start delay is enough.
        "protocol.start_delay_windows=1",
        "validator.windows_per_weights=4",
        "protocol.retention_windows=100",  # keep every upload: the replays re-read them all
        "run.tensorboard=false",
    ]


def set_args(values: list[str]) -> list[str]:
    return [a for o in values for a in ("--set", o)]


def network_logs(root: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((root / "logs").glob("*.log"))
    )


def recorded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(run directory, the weights on chain at the end): the shared recording when one is
    finished, else a new one (in the shared directory, or a module's own)."""
    shared = os.environ.get(RECORDING_ENV)
    root = Path(shared) if shared else tmp_path_factory.mktemp("localnet") / "run"
    root.parent.mkdir(parents=True, exist_ok=True)
    # Two test workers may ask at once: the second waits for the first's recording.
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        finished = root / FINISHED
        if finished.exists():
            return root, json.loads(finished.read_text())
        weights = _record(root)
        finished.write_text(json.dumps(weights))
        return root, weights


def _record(root: Path) -> dict:
    cmd = [sys.executable, "-m", "gauntlet_jax.localnet", "--config", "tiny", "--miners", "4"]
    cmd += ["--noise", "1", "--windows", str(WINDOWS), *set_args(overrides(root))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: localnet then stops its miners and validator too.
        proc.terminate()
        out, err = proc.communicate(timeout=120)
        pytest.fail("localnet did not finish in 900 s\n" + err[-3000:] + network_logs(root))
    assert proc.returncode == 0, err + network_logs(root)
    return json.loads(out.strip().splitlines()[-1])["weights"]


def replica_of(root: Path, dest: Path) -> tuple[Path, list[str]]:
    """A copy of the recorded network for a replaying validator: its own state and metrics
    start empty; the chain is frozen after the run, accepts weights every block and holds no
    weights of the validator (what it holds after a replay, the replay posted)."""
    shutil.copytree(root, dest)
    shutil.rmtree(dest / "validator-validator")
    shutil.rmtree(dest / "checkpoints", ignore_errors=True)
    cfg = load_config("tiny", overrides(dest))
    with LocalChain(dest / "chain.db") as chain:
        chain.set_clock_mode("manual")
        chain.set_param(cfg.chain.netuid, "weights_rate_limit", 0)
    # No API removes weights from a chain: the local chain's own table.
    with sqlite3.connect(dest / "chain.db") as db:
        db.execute("DELETE FROM weights WHERE netuid = ? AND uid = 0", (cfg.chain.netuid,))
    return dest, overrides(dest)


def validate_cmd(values: list[str], until_window: int) -> list[str]:
    # --until-window, not --windows: a restarted validator resumes past its saved state and
    # must stop at the same window as the one that never stopped.
    return [
        sys.executable, "-m", "gauntlet_jax.validate", "--config", "tiny", "--hotkey",
        "validator", "--until-window", str(until_window), *set_args(values),
    ]  # fmt: skip


def validator_env(replica: Path) -> dict[str, str]:
    """The live validator's environment (localnet's: the same XLA flags and the run's compiled
    programs, copied with it), with the validator's key."""
    return {**child_env(replica), "GAUNTLET_HOTKEY_SECRET": dev_uri(0)}


# The validator's log line for a post (gauntlet_jax/validator/publish.py).
POSTED = re.compile(r"window (\d+): weights posted \(set_weights\) (\{.*\})$")


def live_weight_posts(root: Path) -> dict[int, dict[int, int]]:
    """window → the u16 weights (by uid) the live validator posted then, from its log."""
    lines = (root / "logs" / "validator.log").read_text().splitlines()
    found = (POSTED.search(line) for line in lines)
    return {int(m[1]): ast.literal_eval(m[2]) for m in found if m}


def recorded_windows(root: Path) -> list[int]:
    live = read_records(root / "validator-validator" / "metrics.jsonl")
    return sorted({r["window"] for r in live if r.get("kind") == "window"})
