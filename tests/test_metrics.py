"""Metrics log: JSONL records, TensorBoard scalars, "why this score" text, window table."""

from __future__ import annotations

import re
import struct
import urllib.request
from pathlib import Path

import pytest
from rich.console import Console
from tensorboardX.proto import event_pb2

from gauntlet_jax.node.metrics import (
    MetricsLogger,
    PeerWindowRecord,
    PrometheusExporter,
    explain,
    read_records,
    render_window_table,
)


def evaluated_record(window: int = 12) -> PeerWindowRecord:
    return PeerWindowRecord(
        window=window,
        uid=3,
        checks={"active": "ok", "put_window": "ok", "valid": "ok", "sync": "ok"},
        in_gather=True,
        evaluated=True,
        loss_before_own=4.0,
        loss_after_own=3.96,
        loss_before_random=4.0,
        loss_after_random=3.98,
        improvement_own=0.01,
        improvement_random=0.005,
        binary=1.0,
        mu=27.0,
        sigma=3.0,
        ordinal=18.0,
        bma=0.4,
        sync_x=0.25,
        sync_score=0.88,
        final=6.336,
        weight=0.75,
    )


def test_records_round_trip_and_flush_per_window(tmp_path):
    log = MetricsLogger(tmp_path, tensorboard=False)
    log.log_peer(evaluated_record())
    log.log_peer(
        PeerWindowRecord(
            window=12, uid=7, checks={"put_window": "too_late"}, slashes=["late"], final=0.3
        )
    )
    log.log_window(12, {"lr": 4e-4, "gather": [3, 7], "posted_weights": False, "nan": float("nan")})
    log.end_window(12)
    # Another reader sees the whole window before close (flushed to the OS and fsynced).
    recs = read_records(tmp_path / "metrics.jsonl")
    assert [r["kind"] for r in recs] == ["peer", "peer", "window"]
    assert recs[0]["improvement_own"] == 0.01 and recs[0]["checks"]["sync"] == "ok"
    assert recs[1]["slashes"] == ["late"]
    assert recs[2]["gather"] == [3, 7] and recs[2]["nan"] == "nan"
    log.close()


def test_torn_last_line_is_skipped(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log_peer(evaluated_record())
        log.end_window(12)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "peer", "window": 13, "ui')  # a crash mid-write
    assert len(read_records(tmp_path / "metrics.jsonl")) == 1


def read_scalars(tb_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars from TensorBoard event files (TFRecord framing: u64 length, u32 crc, data, u32
    crc), decoded with tensorboardX's own protobuf classes."""
    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_tensorboard_scalars_are_written(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=True) as log:
        log.log_peer(evaluated_record(12))
        log.log_peer(evaluated_record(13))
        log.log_window(13, {"lr": 4e-4, "posted_weights": True})
        log.end_window(13)
    scalars = read_scalars(tmp_path / "tb")
    assert "peer/3/final" in scalars and "window/lr" in scalars
    assert "window/posted_weights" not in scalars  # booleans are not scalars
    assert [step for step, _ in scalars["peer/3/weight"]] == [12, 13]
    assert scalars["peer/3/final"][0][1] == pytest.approx(6.336)
    assert scalars["window/lr"] == [(13, pytest.approx(4e-4))]


def test_explain(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as log:
        log.log_peer(evaluated_record(12))
        log.log_peer(
            PeerWindowRecord(
                window=13,
                uid=3,
                checks={"put_window": "missing"},
                slashes=["missing"],
                final=4.752,
                weight=0.7,
            )
        )
        log.end_window(13)
        text = log.explain(3)
    assert "uid 3 at window 13: weight 0.7, final 4.752." in text
    assert "ordinal 18 (μ 27, σ 3) × max(0, BMA 0.4) × sync 0.88 = 6.336" in text
    assert "own loss 4 → 3.96 (+1.000%)" in text and "b = +1" in text
    assert "missing ×1 (windows 13)" in text
    assert "failed checks now: put_window=missing" in text
    assert explain([], 9) == "uid 9: no records."


def test_render_window_table():
    table = render_window_table(
        [
            PeerWindowRecord(
                window=12,
                uid=7,
                checks={"put_window": "too_late"},
                slashes=["late"],
                final=0.3,
                weight=0.25,
            ),
            evaluated_record(12),
        ]
    )
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "window 12" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("│")]
    assert len(rows) == 2
    cells = [[c.strip() for c in row.strip("│").split("│")] for row in rows]
    assert cells[0][0] == "3" and cells[1][0] == "7"  # heaviest first
    assert cells[0][1:7] == ["ok", "●", "●", "+1.000%", "+0.500%", "+1"]
    assert cells[0][-2:] == ["6.336", "0.750"]
    assert cells[1][1] == "put_window=too_late" and cells[1][-3] == "late"


def test_prometheus_endpoint_serves_the_window_and_peer_figures(tmp_path: Path) -> None:
    exporter = PrometheusExporter("validator", 0)  # port 0: any free port
    assert exporter.server.server_address[0] == "127.0.0.1"
    with MetricsLogger(tmp_path, tensorboard=False, exporter=exporter) as metrics:
        metrics.log_window(3, {"gathered": 2, "lr": 0.5, "posted_weights": True, "note": "x"})
        metrics.log_peer(PeerWindowRecord(window=3, uid=7, final=0.25, weight=1.0, mu=None))
        url = f"http://127.0.0.1:{exporter.port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
    values = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith("gauntlet_")
    }
    assert values["gauntlet_validator_window"] == 3
    assert values["gauntlet_validator_gathered"] == 2
    assert values["gauntlet_validator_lr"] == 0.5
    assert values["gauntlet_validator_posted_weights"] == 1
    assert values['gauntlet_validator_peer_final{uid="7"}'] == 0.25
    assert values['gauntlet_validator_peer_weight{uid="7"}'] == 1.0
    assert not any(k.startswith("gauntlet_validator_peer_mu") for k in values)
    assert "gauntlet_validator_note" not in values


def test_every_counted_step_is_documented_for_operators() -> None:
    # `during` labels are what an operator filters a dashboard by: each must be explained.
    root = Path(__file__).resolve().parents[1]
    steps = {
        match
        for path in (root / "gauntlet_jax").rglob("*.py")
        for match in re.findall(r'count_error\(\s*"([a-z_]+)"', path.read_text())
    }
    assert {"post_weights", "reveal", "checkpoint", "upload"} <= steps
    operators = (root / "docs" / "operators.md").read_text()
    section = operators.split("gauntlet_<role>_errors_total", 1)[1].split("\n## ", 1)[0]
    assert {step for step in steps if f"`{step}`" not in section} == set()
