"""End to end: a short simulated network (real validator, manual clock, simulated bucket time).

Three honest peers, one uploading noise, one uploading a differently malformed payload every
window and one uploading after the put window, for 6 validator windows on the tiny model (the
network has learnt, noise is rated below every honest peer and weights are posted by then).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gauntlet_jax import simulate
from gauntlet_jax.cli import EX_CONFIG
from gauntlet_jax.node.metrics import read_records

pytestmark = pytest.mark.slow

WINDOWS = 6
SPEC = "honest:3,noise:1,malformed:1,late:1"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    code = simulate.main(
        [
            "--config",
            "tiny",
            "--peers",
            SPEC,
            "--windows",
            str(WINDOWS),
            "--out",
            str(out),
            "--baseline",
            "honest",
            # One micro-batch per peer and window: the test is about the mechanism, not speed.
            "--set",
            "train.max_micro_batches=1",
        ]
    )
    assert code == 0
    return out


def test_summary_structure_and_outcome(run_dir: Path) -> None:
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["peers_spec"] == SPEC and s["windows"] == WINDOWS
    assert s["config"]["train"]["max_micro_batches"] == 1
    kinds = {u: p["kind"] for u, p in s["peers"].items()}
    assert kinds == {
        "1": "honest",
        "2": "honest",
        "3": "honest",
        "4": "noise",
        "5": "malformed",
        "6": "late",
    }
    for p in s["peers"].values():
        assert {"weight", "final", "ordinal", "bma", "sync", "slash_counts", "eval_count"} <= set(p)
    # Malformed uploads never stopped the run; they were rejected every time they were gathered.
    assert s["validator_windows"] == list(range(s["start_window"], s["start_window"] + WINDOWS))
    assert s["peers"]["5"]["uploads"] == WINDOWS
    assert s["peers"]["5"]["slash_counts"]["invalid"] == WINDOWS
    assert s["bars"]["malformed_never_stopped"]["passed"]
    # The late peer's uploads land after the put window in simulated time: never on time.
    assert s["peers"]["6"]["slash_counts"]["late"] == WINDOWS
    # Weight: late, malformed and noise earn nothing; honest peers hold it all.
    for uid in ("4", "5", "6"):
        assert s["peers"][uid]["weight"] == 0.0
    assert s["honest_weight_share"] == pytest.approx(1.0)
    assert sum(p["weight"] for p in s["peers"].values()) == pytest.approx(1.0)
    assert s["class_weight"]["honest"] == pytest.approx(1.0)
    # Weights reached the chain, honest uids only.
    assert set(s["weights_on_chain"]) <= {"1", "2", "3"} and s["weights_on_chain"]
    # The network trained, and about as well as the honest peers alone.
    losses = s["heldout_loss"]["loss"]
    assert len(losses) == WINDOWS + 1 and losses[-1] < losses[0] - 0.05
    base = s["baselines"]["honest"]["loss"]
    assert abs(losses[-1] - base[-1]) < 0.5 * (base[0] - base[-1])


def test_validator_saw_what_a_live_network_shows(run_dir: Path) -> None:
    records = [r for r in read_records(run_dir / "metrics.jsonl") if r.get("kind") == "peer"]
    by_uid: dict[int, list[dict]] = {}
    for r in records:
        by_uid.setdefault(r["uid"], []).append(r)
    # Honest peers hold exactly the validator's θ: the simulated outer step is the real one.
    for uid in (1, 2, 3):
        xs = [r["sync_x"] for r in by_uid[uid] if r["sync_x"] is not None]
        assert xs and all(x == 0.0 for x in xs)
        assert all(r["checks"].get("payload") == "ok" for r in by_uid[uid])
    assert all(r["checks"].get("payload") == "too_late" for r in by_uid[6])
    assert all(r["checks"].get("payload") == "invalid" for r in by_uid[5])
    # Noise was evaluated and rated below every honest peer.
    noise_evals = [r for r in by_uid[4] if r["evaluated"]]
    assert noise_evals
    last = {uid: rs[-1]["ordinal"] for uid, rs in by_uid.items()}
    assert all(last[4] < last[u] for u in (1, 2, 3) if last[u] is not None)


def test_report_was_built(run_dir: Path) -> None:
    page = (run_dir / "report.html").read_text()
    for name in ("heldout", "scores", "weights", "sync", "bma"):
        assert (run_dir / "plots" / f"{name}.png").stat().st_size > 5000
        assert f"plots/{name}.png" in page
    assert "honest_share" in page


def test_refuses_to_overwrite_an_earlier_run(run_dir: Path) -> None:
    code = simulate.main(["--peers", "honest:1", "--windows", "1", "--out", str(run_dir)])
    assert code == EX_CONFIG
    assert (run_dir / "summary.json").exists()
