"""What `localnet` tells its console: the window length it picks for the machine, one line per
validator window (and why a window has no weights or a miner missed its put window), and the
final weights with each uid's name and role.

Pure functions over the validator's metrics records (`node/metrics.py`) and numbers measured at
start-up, so tests can check every line without a network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# A miner window's least work (one micro-batch, compression, the outer step, the probes), timed
# in every process of the network at once, must fit this many times in the part of a window
# before its put window: the miner trains there after the previous window's gather, and the
# validator scores beside it.
WORK_PER_WINDOW = 2.0

# Fetch statuses of a payload (`node/network.py`) in words.
_PAYLOAD_WHY = {
    "missing": "no upload by the end of the put window",
    "too_late": "uploaded after the put window closed",
    "too_early": "uploaded before the window ended",
    "invalid": "a malformed payload",
}


@dataclass(frozen=True)
class Peer:
    """A uid of the local network as the console names it."""

    uid: int
    name: str
    role: str  # "validator", "honest miner", "noise miner"

    def label(self) -> str:
        return f"uid {self.uid} ({self.name}, {self.role})"


@dataclass(frozen=True)
class WindowPlan:
    """The window length and put window `localnet` runs with, and why."""

    window_s: float
    put_window_s: float
    reason: str

    def overrides(self, blocks_per_window: int) -> list[str]:
        """The `--set` overrides every process gets (one block time for all of them)."""
        return [
            f"chain.block_time_s={self.window_s / blocks_per_window:g}",
            f"protocol.put_window_s={self.put_window_s:g}",
        ]


def plan_window(
    *,
    configured_s: float,
    configured_put_s: float,
    compile_s: float,
    step_s: float,
    processes: int,
    grace_s: float,
) -> WindowPlan:
    """The shortest whole-second window (never shorter than the config's) whose part before the
    put window holds `WORK_PER_WINDOW` times `step_s` (a window's least work, timed in
    `processes` processes running at once, so the machine's contention is in it) plus the
    gather's grace. The put window keeps the config's share of the window."""
    share = configured_put_s / configured_s
    needed = (WORK_PER_WINDOW * step_s + grace_s) / (1.0 - share)
    window_s = float(max(math.ceil(configured_s), math.ceil(needed)))
    put_s = configured_put_s * window_s / configured_s
    reason = (
        f"a miner window's least work took {step_s:.1f} s with {processes} processes at once, "
        f"after a {compile_s:.0f} s compile"
    )
    return WindowPlan(window_s, put_s, reason)


def _name(peers: Mapping[int, Peer], uid: int) -> str:
    peer = peers.get(uid)
    return peer.label() if peer else f"uid {uid}"


def window_line(
    records: Sequence[Mapping[str, Any]],
    window: int,
    peers: Mapping[int, Peer],
    plan: WindowPlan,
) -> str:
    """One console line for a validator window: payloads on time, who was evaluated, the
    weights (normalised); when a payload missed its put window or there are no weights, why
    and what to change."""
    rows = [r for r in records if r.get("kind") == "peer" and r.get("window") == window]
    summary = next(
        (r for r in records if r.get("kind") == "window" and r.get("window") == window), {}
    )
    payload = {int(r["uid"]): r.get("checks", {}).get("payload") for r in rows}
    checked = {u: s for u, s in payload.items() if s is not None}
    on_time = sorted(u for u, s in checked.items() if s == "ok")
    parts = [f"window {window}: {len(on_time)}/{len(checked)} payloads on time"]
    evaluated = sorted(int(r["uid"]) for r in rows if r.get("evaluated"))
    if evaluated:
        parts.append("evaluated " + ", ".join(f"uid {u}" for u in evaluated))
    weights = {int(r["uid"]): r.get("weight") or 0.0 for r in rows}
    positive = {u: w for u, w in sorted(weights.items()) if w > 0}
    if positive:
        shown = " ".join(f"uid {u} {w:.2f}" for u, w in positive.items())
        parts.append(("weights posted: " if summary.get("posted_weights") else "weights ") + shown)
    missed = {u: s for u, s in checked.items() if s != "ok"}
    late = [u for u, s in missed.items() if s in ("missing", "too_late")]
    for uid, status in missed.items():
        parts.append(f"{_name(peers, uid)} {status}: {_PAYLOAD_WHY.get(status, status)}")
    if late:
        parts.append(
            f"windows here are {plan.window_s:g} s with a {plan.put_window_s:g} s put window; "
            f"if honest miners keep missing it, give them more (--window-s "
            f"{2 * plan.window_s:g})"
        )
    if not positive:
        if not checked:
            why = "no payload was checked (no miner in the gather set yet)"
        elif not on_time:
            why = "no payload arrived on time"
        elif not any(r.get("ordinal") is not None for r in rows):
            why = "no peer has been rated yet (ratings start with the first evaluations)"
        else:
            why = "every rated peer's score is 0 or below"
        parts.append(f"no weights: {why}")
    return "; ".join(parts)


def final_weights(
    raw: Mapping[str, Mapping[str, int]], peers: Mapping[int, Peer]
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Each validator's weight row normalised to sum 1 (the chain holds u16), and the console
    lines that name every miner with its role."""
    normalised: dict[str, dict[str, float]] = {}
    lines = []
    for validator, row in raw.items():
        total = sum(row.values())
        normalised[validator] = {uid: (v / total if total else 0.0) for uid, v in row.items()}
        lines.append(f"weights posted by {_name(peers, int(validator))}:")
        for peer in sorted(peers.values(), key=lambda p: p.uid):
            if peer.role == "validator":
                continue
            uid = str(peer.uid)
            share = normalised[validator].get(uid, 0.0)
            lines.append(f"  {peer.label():<32} {share:6.3f}  (u16 {row.get(uid, 0)})")
    return normalised, lines


def nothing_scored(raw: Mapping[str, Mapping[str, int]]) -> bool:
    return not any(v > 0 for row in raw.values() for v in row.values())
