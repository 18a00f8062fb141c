"""Explainable scoring: a JSONL log of every input to every score, TensorBoard scalars, and
human-readable summaries.

File format (`<out_dir>/metrics.jsonl`, one JSON object per line):

- `{"kind": "peer", "window": w, "uid": u, ...}`: one per peer per window with the fields of
  `PeerWindowRecord` (checks passed, losses before/after on own and random data, improvements,
  b, rating μ/σ/ordinal, BMA, sync x and score, slash reasons, final score, weight).
- `{"kind": "window", "window": w, ...}`: one per window with window-level numbers (learning
  rate, timings, gather set, whether weights were posted, ...).

Records are written as they come and flushed (and fsynced) by `end_window`, so a crash loses at
most the window in progress. TensorBoard event files go to `<out_dir>/tb` when enabled.

`PrometheusExporter` serves the same figures as gauges, and counts the typed errors a node
logged and went on from (`gauntlet_<role>_errors_total{error, during}`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from rich.table import Table

METRICS_FILE = "metrics.jsonl"

# Where code that caught a typed error, logged it and went on reports it: (during, error), with
# `during` a short fixed word for the step (docs/operators.md lists them). `Node.count_error` is
# the one a node passes down.
ErrorSink = Callable[[str, BaseException], None]


def uncounted(during: str, error: BaseException) -> None:
    """The error sink of code called without a node: counts nothing."""


@dataclass(frozen=True)
class PeerWindowRecord:
    """Everything that went into one peer's score in one window. None = not measured."""

    window: int
    uid: int
    # Fast checks: name → "ok" / "missing" / "too_late" / "invalid" / "out_of_sync" / ...;
    # "theta" → "equal" / "differs": the peer's published θ fingerprint against the validator's.
    checks: Mapping[str, str] = field(default_factory=dict)
    in_gather: bool = False
    evaluated: bool = False
    loss_before_own: float | None = None
    loss_after_own: float | None = None
    loss_before_random: float | None = None
    loss_after_random: float | None = None
    improvement_own: float | None = None
    improvement_random: float | None = None
    # The first-order screen's estimate of improvement_random (validator/screen.py); never rated.
    screen: float | None = None
    binary: float | None = None
    mu: float | None = None
    sigma: float | None = None
    ordinal: float | None = None
    bma: float | None = None
    sync_x: float | None = None
    sync_max_x: float | None = None
    sync_score: float | None = None
    overlap: float | None = None
    slashes: Sequence[str] = ()
    final: float | None = None
    weight: float | None = None

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["checks"] = dict(self.checks)
        d["slashes"] = list(self.slashes)
        return {"kind": "peer", **{k: _clean(v) for k, v in d.items()}}


def _clean(value: Any) -> Any:
    # JSON has no NaN/Inf; keep them readable as strings rather than producing invalid JSON.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class MetricsLogger:
    """Appends peer and window records to `<out_dir>/metrics.jsonl`; optional TensorBoard."""

    def __init__(
        self,
        out_dir: str | Path,
        tensorboard: bool = True,
        *,
        write: bool = True,
        exporter: PrometheusExporter | None = None,
    ) -> None:
        """`write=False` records nothing (a follower process of a multi-host validator: the
        leader writes the metrics); `exporter` also gets every record's figures."""
        self.exporter = exporter
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / METRICS_FILE
        self._file = None
        self._writer = None
        if not write:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._writer = SummaryWriter(logdir=str(self.out_dir / "tb"))

    def _write(self, obj: Mapping[str, Any]) -> None:
        if self._file is not None:
            self._file.write(json.dumps(obj, allow_nan=False, sort_keys=False) + "\n")

    def log_peer(self, record: PeerWindowRecord) -> None:
        self._write(record.to_json())
        if self.exporter is not None:
            self.exporter.peer(record)
        if self._writer is not None:
            for name in (
                "final",
                "weight",
                "ordinal",
                "mu",
                "sigma",
                "bma",
                "sync_score",
                "sync_x",
                "improvement_own",
                "improvement_random",
                "overlap",
            ):
                value = getattr(record, name)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(f"peer/{record.uid}/{name}", value, record.window)

    def log_window(self, window: int, fields: Mapping[str, Any]) -> None:
        self._write({"kind": "window", "window": window, **_clean(dict(fields))})
        if self.exporter is not None:
            self.exporter.window(window, fields)
        if self._writer is not None:
            for name, value in fields.items():
                numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
                if numeric and math.isfinite(value):
                    self._writer.add_scalar(f"window/{name}", value, window)

    def end_window(self, window: int) -> None:
        """Makes the window's records durable (flush + fsync; TensorBoard flush)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
        if self._writer is not None:
            self._writer.flush()

    def records(self) -> list[dict[str, Any]]:
        """Every complete record written so far (flushes first)."""
        if self._file is None:
            return []
        self._file.flush()
        return read_records(self.path)

    def explain(self, uid: int, last: int = 10) -> str:
        return explain(self.records(), uid, last=last)

    def close(self) -> None:
        if self.exporter is not None:
            self.exporter.close()
            self.exporter = None
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Per-peer figures exported as gauges labelled by uid (the validator's view of each peer).
PROMETHEUS_PEER_FIELDS = ("final", "weight", "ordinal", "mu", "sigma", "bma", "sync_score")


class PrometheusExporter:
    """The per-window figures of a validator or miner as Prometheus gauges on
    http://ADDR:PORT/metrics: `gauntlet_<role>_<name>` for window figures, for a validator
    `gauntlet_validator_peer_<field>{uid="…"}` per peer, and the counter
    `gauntlet_<role>_errors_total{error="…", during="…"}` of typed errors the node logged and
    went on from. Off unless run.prometheus_port is set."""

    def __init__(self, role: str, port: int, addr: str = "127.0.0.1") -> None:
        self.role = role
        self.registry = CollectorRegistry()
        self._gauges: dict[str, Gauge] = {}
        # Labelled by class, never by message: messages carry blocks, URLs and uids, and every
        # distinct label set is a series Prometheus keeps.
        self._errors = Counter(
            f"gauntlet_{role}_errors_total",
            f"typed errors a {role} logged and went on from, by error class and step",
            ("error", "during"),
            registry=self.registry,
        )
        self.server, self.thread = start_http_server(port, addr=addr, registry=self.registry)
        self.port = self.server.server_port

    def _gauge(self, name: str, labels: tuple[str, ...] = ()) -> Gauge:
        if name not in self._gauges:
            self._gauges[name] = Gauge(
                f"gauntlet_{self.role}_{name}",
                f"{self.role} per-window figure {name}",
                labels,
                registry=self.registry,
            )
        return self._gauges[name]

    def window(self, window: int, fields: Mapping[str, Any]) -> None:
        """Sets `window` and every finite numeric field (booleans as 0/1)."""
        self._gauge("window").set(window)
        for name, value in fields.items():
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._gauge(name).set(float(value))

    def peer(self, record: PeerWindowRecord) -> None:
        for name in PROMETHEUS_PEER_FIELDS:
            value = getattr(record, name)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self._gauge(f"peer_{name}", ("uid",)).labels(uid=str(record.uid)).set(value)

    def count_error(self, during: str, error: BaseException) -> None:
        """One more `error` (by its class name) in step `during`."""
        self._errors.labels(error=type(error).__name__, during=during).inc()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def open_exporter(
    role: str, port: int, addr: str, *, enabled: bool = True
) -> PrometheusExporter | None:
    """The role's exporter when `port` is set (and this process writes metrics), else None."""
    return PrometheusExporter(role, port, addr) if port and enabled else None


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a metrics file; a torn last line (crash mid-write) is skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # an unterminated last line: the write was cut off
                continue
            raise
    return out


# ---------------------------------------------------------------------------------------------
# Human-readable views


def _f(value: Any, fmt: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, float)):
        return format(value, fmt)
    return str(value)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * value:+.3f}%"


def explain(records: Iterable[Mapping[str, Any]], uid: int, last: int = 10) -> str:
    """A short "why this score" text for one uid from its most recent peer records."""
    mine = [r for r in records if r.get("kind") == "peer" and r.get("uid") == uid]
    if not mine:
        return f"uid {uid}: no records."
    mine.sort(key=lambda r: r["window"])
    now = mine[-1]
    lines = [
        f"uid {uid} at window {now['window']}: weight {_f(now.get('weight'))}, "
        f"final {_f(now.get('final'))}."
    ]
    evals = [r for r in mine if r.get("evaluated")]
    if evals:
        ev = evals[-1]
        lines.append(
            f"  final = ordinal {_f(ev.get('ordinal'))} (μ {_f(ev.get('mu'))}, σ {_f(ev.get('sigma'))})"
            f" × max(0, BMA {_f(ev.get('bma'))}) × sync {_f(ev.get('sync_score'))}"
            f" = {_f(ev.get('final'))} at its last evaluation (window {ev['window']})."
        )
        lines.append(
            f"  that evaluation: own loss {_f(ev.get('loss_before_own'))} → "
            f"{_f(ev.get('loss_after_own'))} ({_pct(ev.get('improvement_own'))}), random loss "
            f"{_f(ev.get('loss_before_random'))} → {_f(ev.get('loss_after_random'))} "
            f"({_pct(ev.get('improvement_random'))}), so b = {_f(ev.get('binary'), '+.2g')};"
            f" {_f(ev.get('sync_x'), '.2f')} steps behind."
        )
        lines.append(f"  evaluated {len(evals)} time(s) in the records shown.")
    else:
        lines.append("  never evaluated in these records: its final comes only from slashes/decay.")
    recent = mine[-last:]
    slashes: dict[str, list[int]] = {}
    for r in recent:
        for reason in r.get("slashes", []):
            slashes.setdefault(reason, []).append(r["window"])
    if slashes:
        parts = [
            f"{reason} ×{len(ws)} (windows {', '.join(map(str, ws))})"
            for reason, ws in slashes.items()
        ]
        lines.append(f"  slashes in the last {len(recent)} windows: " + "; ".join(parts) + ".")
    else:
        lines.append(f"  no slashes in the last {len(recent)} windows.")
    failed = {
        name: status
        for name, status in now.get("checks", {}).items()
        if status not in ("ok", True, "equal")
    }
    if failed:
        lines.append(
            "  failed checks now: " + ", ".join(f"{k}={v}" for k, v in failed.items()) + "."
        )
    return "\n".join(lines)


def peer_line(record: Mapping[str, Any] | PeerWindowRecord) -> str:
    """One peer's window as one log line: the table's columns as `name=value`, unmeasured ones
    left out (what a log file or journal gets instead of a table cut to its width)."""
    r = record.to_json() if isinstance(record, PeerWindowRecord) else dict(record)
    checks = dict(r.get("checks", {}))
    theta = checks.pop("theta", None)
    bad = [f"{k}={v}" for k, v in checks.items() if v not in ("ok", True)]
    parts = [
        f"window {r['window']} uid {r['uid']}:",
        "checks " + ("ok" if not bad else ",".join(bad)),
        f"gather={'yes' if r.get('in_gather') else 'no'}",
        f"evaluated={'yes' if r.get('evaluated') else 'no'}",
    ]
    for name, key, fmt in (
        ("Δown", "improvement_own", None),
        ("Δrand", "improvement_random", None),
        ("b", "binary", "+.2g"),
        ("μ", "mu", ".2f"),
        ("σ", "sigma", ".2f"),
        ("ordinal", "ordinal", ".2f"),
        ("BMA", "bma", ".3f"),
        ("sync", "sync_score", ".2f"),
    ):
        if r.get(key) is not None:
            parts.append(f"{name}={_pct(r[key]) if fmt is None else _f(r[key], fmt)}")
    if theta:
        parts.append(f"θ={theta}")
    if r.get("slashes"):
        parts.append("slashes=" + ",".join(r["slashes"]))
    parts.append(f"final={_f(r.get('final'), '.4g')} weight={_f(r.get('weight'), '.3f')}")
    return " ".join(parts)


def render_window_table(records: Iterable[Mapping[str, Any] | PeerWindowRecord]) -> Table:
    """A rich table of one window's peer records (sorted by weight, heaviest first)."""
    rows = [r.to_json() if isinstance(r, PeerWindowRecord) else dict(r) for r in records]
    rows = [r for r in rows if r.get("kind", "peer") == "peer"]
    rows.sort(key=lambda r: (-(r.get("weight") or 0.0), r["uid"]))
    windows = sorted({r["window"] for r in rows})
    title = (
        f"window {windows[0]}" if len(windows) == 1 else "windows " + ", ".join(map(str, windows))
    )
    table = Table(title=title)
    for name, justify in (
        ("uid", "right"),
        ("checks", "left"),
        ("G", "center"),
        ("E", "center"),
        ("Δown", "right"),
        ("Δrand", "right"),
        ("b", "right"),
        ("μ", "right"),
        ("σ", "right"),
        ("ordinal", "right"),
        ("BMA", "right"),
        ("θ", "center"),
        ("sync", "right"),
        ("slashes", "left"),
        ("final", "right"),
        ("weight", "right"),
    ):
        table.add_column(name, justify=justify)
    for r in rows:
        checks = dict(r.get("checks", {}))
        theta = {"equal": "=", "differs": "≠"}.get(checks.pop("theta", ""), "")
        bad = [f"{k}={v}" for k, v in checks.items() if v not in ("ok", True)]
        table.add_row(
            str(r["uid"]),
            "ok" if not bad else ", ".join(bad),
            "●" if r.get("in_gather") else "",
            "●" if r.get("evaluated") else "",
            _pct(r.get("improvement_own")),
            _pct(r.get("improvement_random")),
            _f(r.get("binary"), "+.2g"),
            _f(r.get("mu"), ".2f"),
            _f(r.get("sigma"), ".2f"),
            _f(r.get("ordinal"), ".2f"),
            _f(r.get("bma"), ".3f"),
            theta,
            _f(r.get("sync_score"), ".2f"),
            ", ".join(r.get("slashes", [])),
            _f(r.get("final"), ".4g"),
            _f(r.get("weight"), ".3f"),
        )
    return table
