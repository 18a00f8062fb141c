"""The report from a small synthetic metrics log: series extraction, plots, the page, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from gauntlet_jax import report
from gauntlet_jax.node.metrics import MetricsLogger, PeerWindowRecord, read_records

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WINDOWS = range(10, 22)


def _write_log(directory: Path) -> None:
    """Three peers over 12 windows: uid 1 rises, uid 2 is evaluated with a NaN LossScore once, uid 3
    is never evaluated and is slashed as late."""
    with MetricsLogger(directory, tensorboard=False) as m:
        for i, w in enumerate(WINDOWS):
            for uid in (1, 2, 3):
                evaluated = uid != 3 and (i + uid) % 2 == 0
                score = 0.001 * (i + 1) if uid == 1 else (math.nan if i == 4 else -0.0005)
                m.log_peer(
                    PeerWindowRecord(
                        window=w,
                        uid=uid,
                        checks={"payload": "too_late" if uid == 3 else "ok"},
                        in_gather=True,
                        evaluated=evaluated,
                        improvement_random=score if evaluated else None,
                        ordinal=(i * (1.0 if uid == 1 else -0.5)) if uid != 3 else None,
                        bma=0.05 * i if uid == 1 else -0.01 * i,
                        sync_x=0.0 if uid != 2 else 2.0 + 0.1 * i,
                        sync_score=1.0 if uid != 2 else 0.2,
                        slashes=("late",) if uid == 3 else (),
                        final=float(i) if uid == 1 else 0.0,
                        weight=1.0 if uid == 1 else 0.0,
                    )
                )
            m.log_window(w, {"gathered": 2, "evaluated": 2})
            m.end_window(w)


def _summary(directory: Path) -> None:
    steps = list(range(13))
    summary = {
        "scenario": "synthetic",
        "peers_spec": "honest:1,stale:1,late:1",
        "windows": 12,
        "peers": {
            "1": {"kind": "honest", "weight": 1.0, "final": 11.0, "slash_counts": {}},
            "2": {"kind": "stale", "weight": 0.0, "final": 0.0, "slash_counts": {}},
            "3": {"kind": "late", "weight": 0.0, "final": 0.0, "slash_counts": {"late": 12}},
        },
        "honest_weight_share": 1.0,
        "class_weight": {"honest": 1.0, "stale": 0.0, "late": 0.0},
        "heldout_loss": {"steps": steps, "loss": [10.4 - 0.05 * s for s in steps]},
        "baselines": {
            "adamw": {"steps": steps, "loss": [10.4 - 0.08 * s for s in steps]},
            "honest": {"steps": steps, "loss": [10.4 - 0.05 * s for s in steps]},
        },
        "bars": {"honest_share": {"value": 1.0, "bar": 0.9, "passed": True}},
        "separation": {"rating_in_order_from_window": 14},
        "seconds": {"total": 1.0},
        "config": {"validator": {"sync_max_steps": 3.0}},
    }
    (directory / "summary.json").write_text(json.dumps(summary))


def test_peer_series_reads_the_log(tmp_path: Path) -> None:
    _write_log(tmp_path)
    series = report.peer_series(read_records(tmp_path / "metrics.jsonl"), {1: "honest"})
    assert sorted(series) == [1, 2, 3]
    one, two, three = series[1], series[2], series[3]
    assert one.kind == "honest" and two.kind == "peer"
    assert one.windows == list(WINDOWS)
    assert one.eval_windows == [w for i, w in enumerate(WINDOWS) if (i + 1) % 2 == 0]
    assert one.loss_score == pytest.approx([0.001 * (i + 1) for i in range(12) if (i + 1) % 2 == 0])
    # A NaN LossScore (written as a string) is not plotted; unmeasured values are None.
    assert math.nan not in two.loss_score and len(two.eval_windows) == 5
    assert three.ordinal == [None] * 12 and three.eval_windows == []
    assert three.last["slashes"] == ["late"]


def test_report_with_a_simulation_summary(tmp_path: Path) -> None:
    _write_log(tmp_path)
    _summary(tmp_path)
    page = report.build_report(tmp_path)
    assert page == tmp_path / "report.html"
    text = page.read_text()
    for name in ("heldout", "scores", "weights", "sync", "bma"):
        png = tmp_path / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
        assert f"src='plots/{name}.png'" in text
    assert "synthetic" in text and "PASS" in text and "rating_in_order_from_window" in text
    # The AdamW gap in numbers: final 9.8 vs 9.44.
    assert "final gap to AdamW +0.3600" in text
    assert "stale" in text and "late 12" in text


def test_report_from_a_live_validator_log_only(tmp_path: Path) -> None:
    _write_log(tmp_path)
    out = tmp_path / "elsewhere"
    assert report.main([str(tmp_path), "--out", str(out)]) == 0
    assert (out / "report.html").exists()
    made = sorted(p.name for p in (out / "plots").iterdir())
    assert made == ["bma.png", "scores.png", "sync.png", "weights.png"]  # no held-out curve
    assert not (tmp_path / "report.html").exists()


def test_cli_reports_a_missing_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report.main([str(tmp_path / "nothing")]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err


def test_live_log_counts_slashes_and_marks_what_was_not_measured(tmp_path: Path) -> None:
    """A live validator directory has no summary: slash counts come from the per-window
    records, unmeasured values are gaps (NaN), posted windows and the title are on the page."""
    _write_log(tmp_path)
    with MetricsLogger(tmp_path, tensorboard=False) as m:  # one more window: uid 2 unmeasured
        m.log_peer(PeerWindowRecord(window=22, uid=2, weight=0.0))
        m.log_window(22, {"posted_weights": True})
        m.end_window(22)
    records = read_records(tmp_path / "metrics.jsonl")
    series = report.peer_series(records)
    assert series[3].slash_counts == {"late": 12} and not series[1].slash_counts
    xs, ys = report.line_points(series[2], "sync_x")
    assert xs[-1] == 22 and math.isnan(ys[-1]) and ys[0] == pytest.approx(2.0)
    assert report.posted_windows(records) == [22]
    rows = {row[0]: row for row in report._peer_rows(series, None)}
    assert rows[3][-1] == {"late": 12}

    page = report.build_report(tmp_path).read_text()
    assert "late 12" in page and "weights posted in windows 22" in page
    assert "commit " in page and "config not recorded" in page and " UTC" in page


def test_peers_of_one_kind_get_distinct_shades(tmp_path: Path) -> None:
    _write_log(tmp_path)
    series = report.peer_series(
        read_records(tmp_path / "metrics.jsonl"), {1: "honest", 2: "honest", 3: "late"}
    )
    colours = report.peer_colours(series)
    assert colours[1] != colours[2]
    assert colours[3] == report.KIND_COLOURS["late"]  # a kind's only peer keeps its colour
    png = report.plot_weights(series, tmp_path / "w.png", posted=[12, 16], title="t")
    assert png.read_bytes()[:8] == PNG_MAGIC


def _write_sim_run(directory: Path, honest_weight: float, exact: int, order_from: int) -> None:
    """A two-peer simulation run: an honest and a stale peer, weights fixed, `exact` peers
    evaluated exactly and 2 screened per window."""
    directory.mkdir()
    with MetricsLogger(directory, tensorboard=False) as m:
        for w in WINDOWS:
            for uid, weight in ((1, honest_weight), (2, 1.0 - honest_weight)):
                m.log_peer(PeerWindowRecord(window=w, uid=uid, weight=weight))
            m.log_window(w, {"gathered": 2, "evaluated": exact, "exact": exact, "screened": 2})
            m.end_window(w)
    summary = {
        "scenario": directory.name,
        "windows": len(WINDOWS),
        "peers": {"1": {"kind": "honest"}, "2": {"kind": "stale"}},
        "honest_weight_share": honest_weight,
        "honest_weight_share_tail_mean": honest_weight,
        "separation": {"rating_in_order_from_window": order_from, "rating_in_order_fraction": 0.5},
    }
    (directory / "summary.json").write_text(json.dumps(summary))


def test_evaluations_per_window_are_plotted_and_runs_compared(tmp_path: Path) -> None:
    sampled, screened = tmp_path / "sampled", tmp_path / "screened"
    _write_sim_run(sampled, 0.75, 1, 17)
    _write_sim_run(screened, 0.25, 2, 12)
    records = read_records(screened / "metrics.jsonl")
    counts = report.evaluation_counts(records)
    assert counts == {"windows": list(WINDOWS), "screened": [2] * 12, "exact": [2] * 12}
    page = report.build_report(screened).read_text()
    assert "src='plots/evaluations.png'" in page
    assert "2.0 peers screened, 2.0 evaluated exactly" in page

    run = report.compared_run("screened", screened)
    assert run.honest_share == {w: 0.25 for w in WINDOWS} and run.order_from == 12
    out = tmp_path / "cmp"
    assert report.main(["--compare", str(sampled), str(screened), "--out", str(out)]) == 0
    assert (out / "plots" / "compare.png").read_bytes()[:8] == PNG_MAGIC
    text = (out / "compare.html").read_text()
    # Per run: order from window, honest share (last window), exact evaluations per window.
    assert "<td>sampled</td><td>12</td><td>17</td><td>0.5</td><td>0.75</td>" in text
    assert "<td>screened</td><td>12</td><td>12</td><td>0.5</td><td>0.25</td>" in text


def test_comparison_needs_simulation_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_log(tmp_path)  # a live log: no summary.json
    assert report.main(["--compare", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "summary.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report.main(["--compare", str(tmp_path)])  # no --out


@pytest.mark.filterwarnings("error:No artists with labels")
def test_a_panel_where_nothing_was_measured_has_no_legend(tmp_path: Path) -> None:
    # Every peer late: no score, no rating, no sync measured; the panels are drawn empty.
    with MetricsLogger(tmp_path, tensorboard=False) as m:
        for w in WINDOWS:
            for uid in (1, 2):
                m.log_peer(
                    PeerWindowRecord(
                        window=w, uid=uid, checks={"payload": "too_late"}, in_gather=False,
                        evaluated=False, slashes=("late",), final=0.0, weight=0.0,
                    )
                )  # fmt: skip
            m.end_window(w)
    assert report.main([str(tmp_path)]) == 0
    assert (tmp_path / "plots" / "scores.png").read_bytes().startswith(PNG_MAGIC)
