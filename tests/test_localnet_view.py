"""What localnet prints: the window it picks for the machine, one line per validator window, the
final weights by role (pure functions over metrics records; no network)."""

from __future__ import annotations

import pytest

from gauntlet_jax.localnet_view import (
    Peer,
    WindowPlan,
    final_weights,
    nothing_scored,
    plan_window,
    window_line,
)

PEERS = {
    0: Peer(0, "validator", "validator"),
    1: Peer(1, "miner1", "honest miner"),
    2: Peer(2, "miner2", "noise miner"),
}
PLAN = WindowPlan(8.0, 4.0, "test")


def _peer(window: int, uid: int, payload: str, **fields: object) -> dict:
    return {"kind": "peer", "window": window, "uid": uid, "checks": {"payload": payload}, **fields}


def test_windows_grow_with_the_step_timed_in_every_process_at_once() -> None:
    idle = dict(configured_s=8.0, configured_put_s=4.0, compile_s=40.0)
    # A fast step on an idle machine keeps the config's window.
    fast = plan_window(step_s=0.5, processes=5, grace_s=0.5, **idle)
    assert (fast.window_s, fast.put_window_s) == (8.0, 4.0)
    # 3 s per step with 5 processes at once: (2 × 3 + 0.5) / (1 − 4/8) = 13 s before rounding;
    # the put window keeps its half.
    slow = plan_window(step_s=3.0, processes=5, grace_s=0.5, **idle)
    assert (slow.window_s, slow.put_window_s) == (13.0, 6.5)
    loaded = plan_window(step_s=7.2, processes=5, grace_s=0.5, **idle)
    assert loaded.window_s == 30.0 and "7.2 s with 5 processes at once" in loaded.reason
    assert WindowPlan(30.0, 15.0, "").overrides(8) == [
        "chain.block_time_s=3.75",
        "protocol.put_window_s=15",
    ]


def test_a_window_line_says_who_missed_the_put_window_and_what_to_change() -> None:
    records = [
        _peer(5, 1, "ok", evaluated=True, ordinal=1.0, weight=1.0),
        _peer(5, 2, "too_late", ordinal=-1.0, weight=0.0),
        {"kind": "window", "window": 5, "posted_weights": True},
    ]
    line = window_line(records, 5, PEERS, PLAN)
    assert "\n" not in line
    assert line.startswith("window 5: 1/2 payloads on time; evaluated uid 1")
    assert "weights posted: uid 1 1.00" in line
    assert "uid 2 (miner2, noise miner) too_late: uploaded after the put window closed" in line
    assert "--window-s 16" in line and "no weights" not in line


@pytest.mark.parametrize(
    ("records", "why"),
    [
        ([_peer(3, 1, "missing"), _peer(3, 2, "missing")], "no payload arrived on time"),
        ([_peer(3, 1, "ok"), _peer(3, 2, "ok")], "no peer has been rated yet"),
        ([_peer(3, 1, "ok", ordinal=-0.5)], "every rated peer's score is 0 or below"),
        ([{"kind": "peer", "window": 3, "uid": 1, "checks": {}}], "no payload was checked"),
    ],
)
def test_a_window_without_weights_says_why(records: list[dict], why: str) -> None:
    line = window_line(records, 3, PEERS, PLAN)
    assert f"no weights: {why}" in line


def test_final_weights_are_named_and_normalised() -> None:
    raw = {"0": {"1": 65535, "2": 0}}
    normalised, lines = final_weights(raw, PEERS)
    assert normalised == {"0": {"1": 1.0, "2": 0.0}}
    assert lines[0] == "weights posted by uid 0 (validator, validator):"
    assert "uid 1 (miner1, honest miner)" in lines[1] and "1.000" in lines[1]
    assert "noise miner" in lines[2] and "0.000" in lines[2]
    assert not nothing_scored(raw)
    assert nothing_scored({"0": {}}) and nothing_scored({"0": {"1": 0}})
