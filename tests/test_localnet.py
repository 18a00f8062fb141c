"""End to end: the local network as real processes (issue 6's demo and integration tests).

One validator, three honest miners and one miner uploading well-formed noise run for 10 validator
windows on the tiny model (`tests/localnet_recording.py`); weights must land on the local chain,
every honest miner with positive weight and the noisy one with none. The recording is then
replayed by `test_localnet_killed.py` and `test_localnet_two_hosts.py`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from localnet_recording import WINDOWS, network_logs, recorded_run

from gauntlet_jax.node.metrics import read_records

# Real processes on short windows: minutes, more on a loaded machine; alone in `.ci/run`.
pytestmark = [pytest.mark.slow, pytest.mark.wallclock, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return recorded_run(tmp_path_factory)


def test_validator_rewards_honest_miners_and_not_noise(live_run: tuple[Path, dict]) -> None:
    root, weights = live_run
    on_chain = weights["0"]  # the validator's row: miner uid → u16 weight
    honest, noisy = ["1", "2", "3"], "4"
    assert all(on_chain.get(uid, 0) > 0 for uid in honest), (on_chain, network_logs(root))
    assert on_chain.get(noisy, 0) == 0, (on_chain, network_logs(root))

    records = read_records(root / "validator-validator" / "metrics.jsonl")
    windows = {r["window"] for r in records if r.get("kind") == "window"}
    assert len(windows) == WINDOWS
    evaluated = [r for r in records if r.get("kind") == "peer" and r.get("evaluated")]
    assert {r["uid"] for r in evaluated} >= {1, 2, 3, 4}
    last = {r["uid"]: r for r in records if r.get("kind") == "peer" and r["window"] == max(windows)}
    assert last[4]["ordinal"] < 0 < min(last[u]["ordinal"] for u in (1, 2, 3)), last
