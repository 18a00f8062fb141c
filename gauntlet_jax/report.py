"""`python -m gauntlet_jax.report DIR`: plots (PNG) and one HTML page from a validator's metrics log.

DIR holds `metrics.jsonl` (the format is in gauntlet_jax/node/metrics.py): a simulation's output
directory, or a live validator's (e.g. runs/local/validator-validator). When a simulation's
`summary.json` is there too, the report adds the peers' kinds, the held-out loss with its
baselines (all-honest run, centralised AdamW), the issue's bars and the Figure 2 separation.

Plots, each a PNG beside the page (in DIR/plots):
- heldout.png: held-out loss per outer step (plus baselines on the same tokens);
- scores.png: each evaluation's LossScore (noisy) above the OpenSkill ordinal (the rating);
- weights.png: every peer's weight per window, and the weight share of each kind;
- sync.png: steps behind (x) and sync score per window;
- bma.png: the own-vs-random moving average (BMA) per window;
- evaluations.png: peers screened and peers evaluated exactly per window.

`python -m gauntlet_jax.report --compare A B [...] --out DIR` compares simulation runs of the
same peers (e.g. `benchmarks/screen_vs_sampled.py`): DIR/compare.html with compare.png, the
honest share of the weights per window with the window from which the Figure 2 rating order
holds to the end, and the evaluations per window of each run.
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.colors import to_hex, to_rgb
from matplotlib.ticker import MaxNLocator

from gauntlet_jax.node.metrics import METRICS_FILE, read_records
from gauntlet_jax.sim.judging import honest_share_per_window

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.html"
COMPARE_FILE = "compare.html"
PLOTS_DIR = "plots"
# Colours of the simulator's peer kinds; a live log has no kinds and colours by uid.
KIND_COLOURS = {
    "honest": "#2b7bba",
    "heavy": "#1a9850",
    "sybil": "#7fbf7b",
    "copycat": "#d73027",
    "copycat_noisy": "#f46d43",
    "free_rider": "#984ea3",
    "noise": "#000000",
    "lazy": "#e6ab02",
    "stale": "#a6761d",
    "late": "#999999",
    "malformed": "#e7298a",
}


@dataclass
class PeerSeries:
    """One peer's per-window numbers from the log (None where not measured)."""

    uid: int
    kind: str
    windows: list[int] = field(default_factory=list)
    weight: list[float | None] = field(default_factory=list)
    ordinal: list[float | None] = field(default_factory=list)
    bma: list[float | None] = field(default_factory=list)
    sync_x: list[float | None] = field(default_factory=list)
    sync_score: list[float | None] = field(default_factory=list)
    eval_windows: list[int] = field(default_factory=list)
    loss_score: list[float] = field(default_factory=list)
    slash_counts: Counter[str] = field(default_factory=Counter)
    last: dict[str, Any] = field(default_factory=dict)


def _num(value: Any) -> float | None:
    """A finite float, or None (the log writes NaN/Inf as strings)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def peer_series(
    records: Sequence[Mapping[str, Any]], kinds: Mapping[int, str] | None = None
) -> dict[int, PeerSeries]:
    """Per-uid time series from metrics records (window order)."""
    out: dict[int, PeerSeries] = {}
    peers = sorted(
        (r for r in records if r.get("kind") == "peer"), key=lambda r: (r["window"], r["uid"])
    )
    for r in peers:
        uid = int(r["uid"])
        s = out.setdefault(uid, PeerSeries(uid, (kinds or {}).get(uid, "peer")))
        s.windows.append(int(r["window"]))
        s.weight.append(_num(r.get("weight")))
        s.ordinal.append(_num(r.get("ordinal")))
        s.bma.append(_num(r.get("bma")))
        s.sync_x.append(_num(r.get("sync_x")))
        s.slash_counts.update(r.get("slashes") or [])
        s.sync_score.append(_num(r.get("sync_score")))
        score = _num(r.get("improvement_random"))
        if r.get("evaluated") and score is not None:
            s.eval_windows.append(int(r["window"]))
            s.loss_score.append(score)
        s.last = dict(r)
    return out


def peer_colours(series: Mapping[int, PeerSeries]) -> dict[int, str]:
    """A colour per uid: peers of one kind get distinct shades of the kind's hue (darkest to
    lightest by uid); peers of no known kind (a live log) get tab20's colours."""
    by_kind: dict[str, list[int]] = {}
    for uid in sorted(series):
        by_kind.setdefault(series[uid].kind, []).append(uid)
    out: dict[int, str] = {}
    palette = plt.get_cmap("tab20")
    for kind, uids in by_kind.items():
        if kind not in KIND_COLOURS:
            out.update({u: to_hex(palette(i % 20)) for i, u in enumerate(uids)})
            continue
        base = to_rgb(KIND_COLOURS[kind])
        for i, uid in enumerate(uids):
            # From 30 % darker to 45 % lighter than the kind's colour.
            t = -0.3 + 0.75 * i / (len(uids) - 1) if len(uids) > 1 else 0.0
            target = (1.0, 1.0, 1.0) if t > 0 else (0.0, 0.0, 0.0)
            out[uid] = to_hex(
                tuple(c + abs(t) * (g - c) for c, g in zip(base, target, strict=True))
            )
    return out


def _label(s: PeerSeries) -> str:
    return f"{s.uid}" if s.kind == "peer" else f"{s.uid} {s.kind}"


def line_points(s: PeerSeries, attr: str) -> tuple[list[int], list[float]]:
    """A series as plotted: unmeasured windows are NaN, so the line has a gap there."""
    return list(s.windows), [math.nan if y is None else y for y in getattr(s, attr)]


def _lines(ax: Any, series: Mapping[int, PeerSeries], attr: str) -> None:
    colours = peer_colours(series)
    for uid, s in series.items():
        xs, ys = line_points(s, attr)
        if any(not math.isnan(y) for y in ys):
            ax.plot(xs, ys, color=colours[uid], lw=1.2, marker=".", ms=3, label=_label(s))


def _legend(ax: Any) -> None:
    """Beside the axes, never over the data (the early windows matter); none when nothing with a
    label was drawn (every series unmeasured)."""
    n = len(ax.get_legend_handles_labels()[0])
    if n:
        ax.legend(fontsize=7, ncol=2 if n > 16 else 1, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _save(fig: Any, path: Path, title: str = "") -> Path:
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def posted_windows(records: Sequence[Mapping[str, Any]]) -> list[int]:
    """The windows whose weights went on chain."""
    return sorted(
        int(r["window"]) for r in records if r.get("kind") == "window" and r.get("posted_weights")
    )


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def report_title(name: str, summary: Mapping[str, Any] | None, metrics: Path) -> str:
    """The run's name, the date of its log, the code's commit and the config."""
    config = ((summary or {}).get("config") or {}).get("name", "not recorded")
    when = datetime.datetime.fromtimestamp(metrics.stat().st_mtime, datetime.UTC)
    return f"{name} · {when:%Y-%m-%d %H:%M} UTC · commit {_git_commit()} · config {config}"


def plot_heldout(summary: Mapping[str, Any], path: Path) -> Path | None:
    curve = summary.get("heldout_loss")
    if not curve or not curve.get("steps"):
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(curve["steps"], curve["loss"], color="#2b7bba", lw=2, label="this run (gathered peers)")
    styles = {"honest": ("#1a9850", "--"), "adamw": ("#d73027", "-.")}
    names = {
        "honest": "honest peers alone, all gathered",
        "adamw": "centralised AdamW, same tokens",
    }
    for name, base in summary.get("baselines", {}).items():
        colour, ls = styles.get(name, ("#555555", ":"))
        ax.plot(
            base["steps"], base["loss"], color=colour, ls=ls, lw=1.6, label=names.get(name, name)
        )
    ax.set_xlabel("iteration (outer step = window; AdamW step)")
    ax.set_ylabel("held-out loss")
    ax.set_title("held-out loss per iteration")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_scores(series: Mapping[int, PeerSeries], path: Path, title: str = "") -> Path:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    colours = peer_colours(series)
    for uid, s in series.items():
        if s.eval_windows:
            top.plot(
                s.eval_windows,
                [100 * v for v in s.loss_score],
                marker="o",
                ms=3,
                lw=0.6,
                color=colours[uid],
                label=_label(s),
            )
    top.axhline(0, color="k", lw=0.5)
    top.set_ylabel("LossScore (% loss drop, random pages)")
    top.set_title("per-evaluation loss score (noisy) and the rating built from it")
    top.grid(alpha=0.3)
    _legend(top)
    _lines(bottom, series, "ordinal")
    bottom.axhline(0, color="k", lw=0.5)
    bottom.set_ylabel("OpenSkill ordinal (μ − 3σ)")
    bottom.set_xlabel("window")
    bottom.grid(alpha=0.3)
    return _save(fig, path, title)


def plot_weights(
    series: Mapping[int, PeerSeries], path: Path, posted: Sequence[int] = (), title: str = ""
) -> Path:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for ax in (top, bottom):
        for i, w in enumerate(posted):
            label = "weights posted" if i == 0 and ax is top else None
            ax.axvline(w, color="#555555", lw=0.7, ls=":", label=label)
    _lines(top, series, "weight")
    top.set_ylabel("weight")
    top.set_title("weights over windows")
    top.grid(alpha=0.3)
    _legend(top)
    windows = sorted({w for s in series.values() for w in s.windows})
    kinds = sorted({s.kind for s in series.values()})
    shares = {k: [0.0] * len(windows) for k in kinds}
    position = {w: i for i, w in enumerate(windows)}
    for s in series.values():
        for w, v in zip(s.windows, s.weight, strict=True):
            shares[s.kind][position[w]] += v or 0.0
    if kinds and windows:
        colours = [KIND_COLOURS.get(k, "#888888") for k in kinds]
        bottom.stackplot(windows, [shares[k] for k in kinds], labels=kinds, colors=colours)
        bottom.set_ylim(0, 1.05)
        _legend(bottom)
    bottom.set_ylabel("weight share by kind")
    bottom.set_xlabel("window")
    return _save(fig, path, title)


def plot_sync(
    series: Mapping[int, PeerSeries], path: Path, max_steps: float, title: str = ""
) -> Path:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    _lines(top, series, "sync_x")
    top.axhline(max_steps, color="r", lw=0.8, ls="--", label=f"slash above {max_steps:g}")
    top.set_ylabel("steps behind (x)")
    top.set_title("synchronisation: probes against the validator's θ")
    top.grid(alpha=0.3)
    _legend(top)
    _lines(bottom, series, "sync_score")
    bottom.set_ylabel("sync score (latest evaluation)")
    bottom.set_xlabel("window")
    bottom.grid(alpha=0.3)
    return _save(fig, path, title)


def plot_bma(series: Mapping[int, PeerSeries], path: Path, title: str = "") -> Path:
    fig, ax = plt.subplots(figsize=(9, 4))
    _lines(ax, series, "bma")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("BMA (own vs random pages)")
    ax.set_xlabel("window")
    ax.set_title("did each peer train on its own pages? (final score uses max(0, BMA))")
    ax.grid(alpha=0.3)
    _legend(ax)
    return _save(fig, path, title)


def evaluation_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, list[int]]:
    """Per window (ascending): peers screened and peers evaluated exactly (window records)."""
    rows = sorted((r for r in records if r.get("kind") == "window"), key=lambda r: r["window"])
    return {
        "windows": [int(r["window"]) for r in rows],
        "screened": [int(r.get("screened") or 0) for r in rows],
        "exact": [int(r.get("exact") or 0) for r in rows],
    }


def plot_evaluations(records: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> Path:
    counts = evaluation_counts(records)
    fig, ax = plt.subplots(figsize=(9, 3))
    ax.step(counts["windows"], counts["screened"], where="mid", color="#7fbf7b", label="screened")
    ax.step(counts["windows"], counts["exact"], where="mid", color="#2b7bba", label="exact")
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("peers")
    ax.set_xlabel("window")
    ax.set_title("evaluations per window (screen: first-order estimate; exact: loss deltas)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path, title)


@dataclass
class ComparedRun:
    """One run of a comparison: its honest share and evaluations per window, its Figure 2
    separation (None without one) and its summary."""

    label: str
    honest_share: dict[int, float]
    counts: dict[str, list[int]]
    order_from: int | None
    summary: Mapping[str, Any]


def compared_run(label: str, run_dir: Path) -> ComparedRun:
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.exists():
        raise FileNotFoundError(f"no {SUMMARY_FILE} in {run_dir} (a comparison needs simulations)")
    summary = json.loads(summary_path.read_text())
    kinds = {int(u): p["kind"] for u, p in summary.get("peers", {}).items()}
    records = read_records(run_dir / METRICS_FILE)
    separation = summary.get("separation") or {}
    return ComparedRun(
        label,
        honest_share_per_window(records, kinds),
        evaluation_counts(records),
        separation.get("rating_in_order_from_window"),
        summary,
    )


def plot_comparison(runs: Sequence[ComparedRun], path: Path, title: str = "") -> Path:
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    palette = plt.get_cmap("tab10")
    for i, run in enumerate(runs):
        colour = palette(i % 10)
        windows = sorted(run.honest_share)
        top.plot(
            windows,
            [run.honest_share[w] for w in windows],
            color=colour,
            lw=1.6,
            marker=".",
            ms=3,
            label=run.label,
        )
        if run.order_from is not None:
            top.axvline(
                run.order_from,
                color=colour,
                ls=":",
                lw=1.2,
                label=f"{run.label}: rating order holds from window {run.order_from}",
            )
        c = run.counts
        bottom.step(c["windows"], c["exact"], where="mid", color=colour, label=f"{run.label} exact")
        if any(c["screened"]):
            bottom.step(
                c["windows"],
                c["screened"],
                where="mid",
                color=colour,
                ls="--",
                label=f"{run.label} screened",
            )
    top.set_ylim(0, 1.02)
    top.set_ylabel("honest share of the weights")
    top.set_title("honest share per window; dotted: from here the rating order holds to the end")
    top.grid(alpha=0.3)
    _legend(top)
    bottom.set_ylim(bottom=0)
    bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    bottom.set_ylabel("peers evaluated")
    bottom.set_xlabel("window")
    bottom.grid(alpha=0.3)
    _legend(bottom)
    return _save(fig, path, title)


def build_comparison(runs: Mapping[str, Path], out_dir: str | Path) -> Path:
    """Writes compare.html and plots/compare.png for simulation runs (label → run directory);
    returns the page's path."""
    out = Path(out_dir)
    (out / PLOTS_DIR).mkdir(parents=True, exist_ok=True)
    compared = [compared_run(label, Path(d)) for label, d in runs.items()]
    png = plot_comparison(compared, out / PLOTS_DIR / "compare.png")
    rows = []
    for run in compared:
        s = run.summary
        windows = sorted(run.honest_share)
        rows.append(
            [
                run.label,
                s.get("windows"),
                run.order_from,
                (s.get("separation") or {}).get("rating_in_order_fraction"),
                run.honest_share[windows[-1]] if windows else None,
                s.get("honest_weight_share_tail_mean"),
                sum(run.counts["screened"]) / max(1, len(run.counts["windows"])),
                sum(run.counts["exact"]) / max(1, len(run.counts["windows"])),
            ]
        )
    header = [
        "run",
        "windows",
        "rating order holds from window",
        "windows in order",
        "honest share (last window)",
        "honest share (mean, last quarter)",
        "screened / window",
        "exact / window",
    ]
    page = out / COMPARE_FILE
    page.write_text(
        "\n".join(
            [
                "<!doctype html><html><head><meta charset='utf-8'><title>comparison</title>",
                "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
                "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;"
                "font-size:13px}img{max-width:100%}</style></head><body>",
                "<h1>gauntlet-jax: runs compared</h1>",
                _table(header, rows),
                f"<img src='{html.escape(str(png.relative_to(out)))}'>",
                "</body></html>",
            ]
        ),
        encoding="utf-8",
    )
    return page


# ---------------------------------------------------------------------------------------------
# The page


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items() if v) or "–"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _peer_rows(
    series: Mapping[int, PeerSeries], summary: Mapping[str, Any] | None
) -> list[list[Any]]:
    rows = []
    info = (summary or {}).get("peers", {})
    for uid, s in sorted(series.items(), key=lambda kv: -(kv[1].last.get("weight") or 0.0)):
        p = info.get(str(uid), {})
        last = s.last
        rows.append(
            [
                uid,
                s.kind,
                p.get("weight", last.get("weight")),
                p.get("weight_tail_mean"),
                p.get("final", last.get("final")),
                p.get("ordinal", last.get("ordinal")),
                p.get("bma", last.get("bma")),
                p.get("sync", last.get("sync_score")),
                p.get("eval_count", len(s.eval_windows)),
                p.get("slash_counts") or dict(s.slash_counts),
            ]
        )
    return rows


def _bars_rows(bars: Mapping[str, Any]) -> list[list[Any]]:
    rows = []
    for name, bar in bars.items():
        detail = {k: v for k, v in bar.items() if k != "passed"}
        rows.append([name, "PASS" if bar.get("passed") else "MISS", detail])
    return rows


def _heldout_text(summary: Mapping[str, Any]) -> str:
    curve = summary.get("heldout_loss") or {}
    if not curve.get("loss"):
        return ""
    parts = [f"this run: {curve['loss'][0]:.4f} → {curve['loss'][-1]:.4f}"]
    for name, base in summary.get("baselines", {}).items():
        parts.append(f"{name}: {base['loss'][0]:.4f} → {base['loss'][-1]:.4f}")
    adamw = summary.get("baselines", {}).get("adamw")
    if adamw:
        gap = curve["loss"][-1] - adamw["loss"][-1]
        parts.append(f"final gap to AdamW {gap:+.4f} ({100 * gap / adamw['loss'][-1]:+.2f} %)")
    return "<p>Held-out loss " + html.escape("; ".join(parts)) + ".</p>"


def build_report(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Writes report.html and plots/*.png for the run in `run_dir`; returns the page's path."""
    run = Path(run_dir)
    metrics = run / METRICS_FILE if run.is_dir() else run
    if not metrics.exists():
        raise FileNotFoundError(f"no {METRICS_FILE} in {run}")
    out = Path(out_dir) if out_dir is not None else metrics.parent
    plots = out / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    summary_path = metrics.parent / SUMMARY_FILE
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    kinds = {int(u): p["kind"] for u, p in (summary or {}).get("peers", {}).items()}
    records = read_records(metrics)
    series = peer_series(records, kinds)
    max_steps = float(
        ((summary or {}).get("config", {}).get("validator", {}) or {}).get("sync_max_steps", 3.0)
    )

    figures: list[tuple[str, Path]] = []
    if summary is not None:
        held = plot_heldout(summary, plots / "heldout.png")
        if held is not None:
            figures.append(("Held-out loss", held))
    title = report_title(
        str((summary or {}).get("scenario", metrics.parent.name)), summary, metrics
    )
    posted = posted_windows(records)
    figures.append(("Loss score and rating", plot_scores(series, plots / "scores.png", title)))
    figures.append(("Weights", plot_weights(series, plots / "weights.png", posted, title)))
    figures.append(("Synchronisation", plot_sync(series, plots / "sync.png", max_steps, title)))
    figures.append(("Own-vs-random evidence (BMA)", plot_bma(series, plots / "bma.png", title)))
    counts = evaluation_counts(records)
    if any(r.get("kind") == "window" and "exact" in r for r in records):
        figures.append(
            ("Evaluations per window", plot_evaluations(records, plots / "evaluations.png", title))
        )

    windows = sorted({r["window"] for r in records if r.get("kind") == "window"})
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>gauntlet-jax report</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;font-size:13px}img{max-width:100%}</style></head><body>",
        f"<h1>gauntlet-jax: {html.escape(title)}</h1>",
        f"<p>{len(windows)} validator windows"
        + (f" ({windows[0]}–{windows[-1]})" if windows else "")
        + f", {len(series)} peers; weights posted in windows "
        + html.escape(", ".join(map(str, posted)) or "none")
        + f"; log: {html.escape(str(metrics))}</p>",
    ]
    if counts["windows"] and (any(counts["screened"]) or any(counts["exact"])):
        n = len(counts["windows"])
        parts.append(
            f"<p>Per window: {sum(counts['screened']) / n:.1f} peers screened, "
            f"{sum(counts['exact']) / n:.1f} evaluated exactly (mean; "
            f"exact {min(counts['exact'])}–{max(counts['exact'])}).</p>"
        )
    if summary is not None:
        parts.append(
            "<p>"
            + html.escape(
                f"peers: {summary.get('peers_spec', '')}; honest weight share "
                f"{summary.get('honest_weight_share', 0):.4f}; wall time "
                f"{summary.get('seconds', {}).get('total')} s"
            )
            + "</p>"
        )
        if summary.get("bars"):
            parts.append(
                "<h2>Bars</h2>" + _table(["bar", "result", "numbers"], _bars_rows(summary["bars"]))
            )
        if summary.get("class_weight"):
            tail = summary.get("class_weight_tail_mean", {})
            parts.append(
                "<h2>Weight share by kind</h2>"
                + _table(
                    [
                        "kind",
                        "final",
                        f"mean of the last {summary.get('tail_windows', '?')} windows",
                    ],
                    [[k, v, tail.get(k)] for k, v in sorted(summary["class_weight"].items())],
                )
            )
        if summary.get("separation"):
            parts.append(
                "<h2>Rating separation (Figure 2)</h2>"
                + _table(["measure", "value"], list(summary["separation"].items()))
            )
        parts.append(_heldout_text(summary))
    parts.append(
        "<h2>Peers (latest)</h2>"
        + _table(
            [
                "uid",
                "kind",
                "weight",
                "mean weight (last quarter)",
                "final",
                "ordinal",
                "BMA",
                "sync",
                "evaluations",
                "slashes",
            ],
            _peer_rows(series, summary),
        )
    )
    for title, path in figures:
        rel = path.relative_to(out) if path.is_relative_to(out) else path
        parts.append(f"<h2>{html.escape(title)}</h2><img src='{html.escape(str(rel))}'>")
    parts.append("</body></html>")
    page = out / REPORT_FILE
    page.write_text("\n".join(parts), encoding="utf-8")
    return page


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gauntlet_jax.report", description=__doc__)
    parser.add_argument(
        "run_dir", nargs="?", help="directory with metrics.jsonl (and maybe summary.json)"
    )
    parser.add_argument(
        "--compare", nargs="+", metavar="RUN_DIR", help="simulation runs to compare (needs --out)"
    )
    parser.add_argument("--out", default=None, help="where to write (default: run_dir)")
    args = parser.parse_args(argv)
    if (args.run_dir is None) == (args.compare is None) or (args.compare and args.out is None):
        parser.error("give either RUN_DIR or --compare RUN_DIR ... --out DIR")
    try:
        if args.compare:
            names = [Path(d).name for d in args.compare]
            runs = {
                n if names.count(n) == 1 else d: Path(d)
                for n, d in zip(names, args.compare, strict=True)
            }
            page = build_comparison(runs, args.out)
        else:
            page = build_report(args.run_dir, args.out)
    except (FileNotFoundError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
