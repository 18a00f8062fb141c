"""A validator SIGKILLed again and again while it replays the recorded local network
(`tests/localnet_recording.py`) decides and posts the same weights as the live one that never
stopped (its per-peer records and its logged weight posts). The replay is not
on wall-clock time (the chain is frozen, every upload is on disk): it runs windows of the
recording as fast as it can score them, loading the programs the live validator compiled from
the run's XLA cache.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from localnet_recording import (
    live_weight_posts,
    recorded_run,
    recorded_windows,
    replica_of,
    validate_cmd,
    validator_env,
)

from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.config import load_config
from gauntlet_jax.node.metrics import read_records
from gauntlet_jax.validator.state import load_state

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

# Windows of the recording the killed validator replays (one weight post at least:
# validator.windows_per_weights is 4).
KILLED_REPLAY_WINDOWS = 6
# SIGKILLs per run: each costs a restart (imports, state and program loads), and two already
# land at different points of a window (the moment is drawn, seeded).
MAX_KILLS = 2


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return recorded_run(tmp_path_factory)


def test_validator_killed_anywhere_posts_the_same_weights(
    live_run: tuple[Path, dict], tmp_path: Path
) -> None:
    root, _ = live_run
    last = recorded_windows(root)[KILLED_REPLAY_WINDOWS - 1]
    killed, killed_over = replica_of(root, tmp_path / "killed")

    state_path = killed / "validator-validator" / "validator_state.json"
    rng = np.random.default_rng(0)
    kills = 0
    for _ in range(20):
        proc = subprocess.Popen(
            validate_cmd(killed_over, last),
            env=validator_env(killed),
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
            if proc.poll() is None and kills < MAX_KILLS:
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

    # The live validator is the one that never stopped: at window `last` every peer's weight as
    # it recorded it, and on chain what it posted last up to then.
    killed_state = load_state(state_path, 0)
    assert killed_state.last_window == last
    live = read_records(root / "validator-validator" / "metrics.jsonl")
    live_weights = {
        r["uid"]: r["weight"] for r in live if r.get("kind") == "peer" and r["window"] == last
    }
    assert {u: r.weight for u, r in killed_state.peers.items()} == live_weights
    posts = live_weight_posts(root)
    posted = max(w for w in posts if w <= last)
    cfg = load_config("tiny", killed_over)
    with LocalChain(killed / "chain.db") as chain:
        assert chain.get_weights(cfg.chain.netuid, 0) == posts[posted], (posted, posts)
