"""benchmarks.attacks --table-from: the table of arms run as separate processes."""

import json

import pytest

from benchmarks import attacks


def _summary(run_dir, honest: float, attackers: dict, loss: float) -> str:
    run_dir.mkdir(parents=True)
    summary = {
        "windows": 4,
        "class_weight_tail_mean": {"honest": honest, **attackers},
        "honest_weight_share_tail_mean": honest,
        "heldout_loss": {"loss": [10.0, loss]},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return str(run_dir)


def test_table_from_separate_runs(tmp_path, capsys):
    base = _summary(tmp_path / "a" / "all_honest", 1.0, {}, 9.0)
    alie = _summary(tmp_path / "b" / "alie", 0.95, {"alie": 0.05}, 9.09)
    assert attacks.main(["--table-from", alie, base, "--out", str(tmp_path / "t")]) == 0
    table = (tmp_path / "t" / "attacks.md").read_text().splitlines()
    assert table[2].startswith("| all_honest | 100.00% | – | 9.0000 | 1.0000 |")
    assert table[3] == "| alie | 95.00% | alie 5.00% | 9.0900 | 1.0100 |"
    # 5 % to the attackers is over their 2 % bar, whatever the loss.
    assert '"alie": false' in capsys.readouterr().out


def test_table_from_needs_the_baseline(tmp_path):
    alie = _summary(tmp_path / "alie", 0.99, {"alie": 0.01}, 9.0)
    with pytest.raises(SystemExit, match="all_honest"):
        attacks.main(["--table-from", alie, "--out", str(tmp_path)])
