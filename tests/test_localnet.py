"""End to end: the local network as real processes (issue 6's demo and integration test).

One validator, three honest miners and one miner uploading well-formed noise run for 12
validator windows on the tiny model; weights must land on the local chain, every honest miner
with positive weight and the noisy one with none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gauntlet_jax.config import load_config
from gauntlet_jax.metrics import read_records

pytestmark = pytest.mark.slow


def test_validator_rewards_honest_miners_and_not_noise(tmp_path: Path) -> None:
    overrides = [
        f"run.out_dir={tmp_path}/run",
        f"storage.bucket={tmp_path}/run/buckets/{{hotkey}}",
        f"chain.url=sqlite:///{tmp_path}/run/chain.db",
        "chain.block_time_s=1.0",
        "protocol.blocks_per_window=8",
        "protocol.put_window_s=4.0",
        "validator.windows_per_weights=4",
        "run.tensorboard=false",
    ]
    cmd = [
        sys.executable,
        "-m",
        "gauntlet_jax.localnet",
        "--config",
        "tiny",
        "--miners",
        "4",
        "--noise",
        "1",
        "--windows",
        "12",
    ]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text()[-3000:]}"
        for p in sorted((tmp_path / "run" / "logs").glob("*.log"))
    )
    assert proc.returncode == 0, proc.stderr + logs
    weights = json.loads(proc.stdout.strip().splitlines()[-1])["weights"]
    on_chain = weights["0"]  # the validator's row: miner uid → u16 weight
    honest, noisy = ["1", "2", "3"], "4"
    assert all(on_chain.get(uid, 0) > 0 for uid in honest), (on_chain, logs)
    assert on_chain.get(noisy, 0) == 0, (on_chain, logs)

    cfg = load_config("tiny", overrides)
    records = read_records(Path(cfg.run.out_dir) / "validator-validator" / "metrics.jsonl")
    windows = {r["window"] for r in records if r.get("kind") == "window"}
    assert len(windows) >= 8
    evaluated = [r for r in records if r.get("kind") == "peer" and r.get("evaluated")]
    assert {r["uid"] for r in evaluated} >= {1, 2, 3, 4}
