"""`bench window`: one real validator window over 15 miners' payloads, timed phase by phase."""

from __future__ import annotations

import pytest

from gauntlet_jax.bench.cli import run
from gauntlet_jax.bench.measure import Options
from gauntlet_jax.config import load_config

# ~30 real compilations (the validator's start-up, a miner's programs, the first window).
pytestmark = pytest.mark.slow

# The validator's phases (`Validator.process_window`), in order.
PHASES = (
    "listing",
    "fetch",
    "decode",
    "fast_checks",
    "scoring",
    "weights",
    "outer_step",
    "state_metrics",
)
# Smaller than tiny where only compile time would grow: one layer, short sequences, one own and
# one random batch (the shapes the validator's start-up compiles), no screen.
SMALL = [
    "model.n_layers=1",
    "model.seq_len=32",
    "data.batch_size=2",
    "validator.sample_rate=0.01",
    "validator.screen=false",
    "validator.candidate_chunk=2",
    "validator.uids_per_window=2",
]


@pytest.fixture(scope="module")
def record() -> dict:
    cfg = load_config("tiny", SMALL)
    (out,) = run(["window"], cfg, Options(peers=15, micro_batches=1, peak_size=128))
    return out


def test_every_phase_is_timed_and_the_phases_make_up_the_window(record: dict) -> None:
    for window in (record, record["warmup_window"]):
        phases = window["phases_s"]
        assert tuple(phases) == PHASES
        assert all(s >= 0 for s in phases.values())
        # What is left outside the phases is the window record's own write.
        assert 0.8 * window["total_s"] <= sum(phases.values()) <= window["total_s"]
        assert window["untimed_s"] == pytest.approx(window["total_s"] - sum(phases.values()))
    assert record["median_s"] == record["total_s"]
    assert record["first_call_s"] == record["warmup_window"]["total_s"]


def test_the_measured_window_gathered_and_scored_the_peers(record: dict) -> None:
    assert record["window"] == record["warmup_window"]["window"] + 1
    assert record["gathered"] == record["gather_size"] == 15
    assert record["peers_gathered"] == 15  # the peers' own outer step saw the same set
    assert record["active"] == 15
    assert record["exact"] == 2 and record["exact_s"] > 0
    assert record["overlap_slashed"] == 0
    assert record["payload_bytes"] > 0
    # Compiled in start-up and the first window, not in the measured one.
    assert record["compiles"] == 0
    assert record["warmup_window"]["compiles"] > 0
