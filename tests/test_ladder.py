"""The escalating slash and negative-evaluation tracking (validator/ladder.py) on Templar's
numbers, and that both are the paper's rules while off (the default)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gauntlet_jax.config import ValidatorConfig
from gauntlet_jax.errors import StateError
from gauntlet_jax.validator import checks, ladder
from gauntlet_jax.validator.evaluation import rate_scored
from gauntlet_jax.validator.state import (
    PeerRecord,
    ValidatorState,
    state_from_json,
    state_to_json,
)
from gauntlet_jax.validator.window_record import WindowLedger

OFF = ValidatorConfig()
ON = dataclasses.replace(OFF, escalating_slash=True, negative_evaluation=True)


def peer(**kw) -> PeerRecord:
    return PeerRecord(uid=7, final=1.0, bma=0.8, mu=30.0, sigma=2.0, **kw)


def test_off_by_default_is_the_flat_paper_slash() -> None:
    record, flat = peer(), peer()
    for _ in range(5):
        record, reset = ladder.payload_fault(record, "missing", 10, OFF)
        flat = checks.slash(flat, "missing", OFF)
        assert not reset and record == flat
    assert record.final == pytest.approx(0.75**5) and record.fault_history == ()
    assert ladder.payload_ok(record, OFF) is record
    assert ladder.track_negative_evaluations({7: record}, {7: -1.0}, OFF) == ({}, [])
    assert (
        ladder.negative_excluded({7: dataclasses.replace(record, negative_streak=9)}, OFF) == set()
    )


def test_consecutive_faults_climb_the_ladder_and_a_good_window_ends_the_streak() -> None:
    record = peer()
    finals = []
    for reason in ("missing", "late", "invalid", "missing"):
        record, reset = ladder.payload_fault(record, reason, 10, ON)
        assert not reset
        finals.append(record.final)
    assert finals == pytest.approx([0.75, 0.375, 0.0, 0.0])
    assert record.bma == 0.0 and record.fault_streak == 4
    assert record.slash_counts == {"missing": 2, "late": 1, "invalid": 1}
    record = ladder.payload_ok(dataclasses.replace(record, final=1.0, bma=0.5), ON)
    assert record.fault_streak == 0 and record.fault_history == (1, 1, 1, 1, 0)
    record, _ = ladder.payload_fault(record, "missing", 11, ON)
    assert record.final == pytest.approx(0.75)  # back on the first rung


def test_faults_in_most_of_the_last_eight_windows_reset_and_exclude() -> None:
    # 4 faults in 7 gather windows, then a fifth: 5 of 8 > half → reset and 200 windows out.
    record = peer(fault_history=(1, 0, 1, 1, 0, 1, 0), fault_streak=0)
    out, reset = ladder.payload_fault(record, "missing", 40, ON)
    assert reset
    assert not out.rated and out.final == 0.0 and out.bma == 0.0
    assert out.excluded_until == 40 + 1 + 200
    assert out.slash_counts == {"missing": 1, "repeated_faults": 1}
    assert len(out.fault_history) == 8 and sum(out.fault_history) == 5
    # 3 of 8 is not most: the ladder's first rung only.
    record = peer(fault_history=(1, 0, 0, 0, 1, 0, 0))
    out, reset = ladder.payload_fault(record, "missing", 40, ON)
    assert not reset and out.final == pytest.approx(0.75) and out.excluded_until is None
    # Fewer than 8 gather windows seen: never the reset, however many faults.
    out, reset = ladder.payload_fault(peer(fault_history=(1, 1, 1)), "missing", 40, ON)
    assert not reset


def test_mostly_negative_evaluations_cut_the_final_by_three_quarters() -> None:
    scores = {1: 0.5, 2: 0.4, 3: 0.3, 4: 0.2, 5: 0.1, 7: -0.1}
    records = {u: PeerRecord(uid=u, final=1.0) for u in scores}
    records[7] = peer(eval_history=(1, 0, 1, 1, 0, 1, 0, 1), negative_streak=1)
    out, slashed = ladder.track_negative_evaluations(records, scores, ON)
    assert slashed == [7]
    assert out[7].final == pytest.approx(0.25) and out[7].slash_counts == {"negative": 1}
    assert out[7].eval_history == (0, 1, 1, 0, 1, 0, 1, 1) and out[7].negative_streak == 2
    assert all(out[u].final == 1.0 and out[u].negative_streak == 0 for u in (1, 2, 3, 4, 5))
    # 4 of 8 is not more than half.
    records[7] = peer(eval_history=(0, 1, 0, 1, 0, 1, 0, 0))
    out, slashed = ladder.track_negative_evaluations(records, {**scores, 7: 0.1}, ON)
    assert slashed == [] and out[7].final == 1.0


def test_three_consecutive_negatives_leave_the_gather_set_until_a_positive_one() -> None:
    scores = {1: 0.5, 2: 0.4, 3: 0.3, 4: 0.2, 5: 0.1, 7: -0.1}
    records = {u: PeerRecord(uid=u, final=1.0) for u in scores}
    for n in range(1, 4):
        out, _ = ladder.track_negative_evaluations(records, scores, ON)
        records.update(out)
        assert records[7].negative_streak == n
        assert ladder.negative_excluded(records, ON) == ({7} if n >= 3 else set())
    out, _ = ladder.track_negative_evaluations(records, {**scores, 7: 0.0}, ON)
    records.update(out)
    assert records[7].negative_streak == 0 and ladder.negative_excluded(records, ON) == set()


def test_a_window_where_the_fifth_best_is_negative_counts_for_nobody() -> None:
    scores = {1: 0.2, 2: 0.1, 3: 0.05, 4: -0.1, 5: -0.2, 7: -0.3}
    assert ladder.network_regressed(scores, ON)
    assert not ladder.network_regressed({1: 0.3, 2: 0.1, 3: 0.05}, ON)
    assert ladder.network_regressed({1: 0.3, 2: 0.1, 3: -0.2}, ON)  # fewer: the lowest
    records = {u: peer(eval_history=(1,) * 8, negative_streak=2) for u in scores}
    assert ladder.track_negative_evaluations(records, scores, ON) == ({}, [])


def test_the_state_file_keeps_the_history_and_reads_a_version_1_file() -> None:
    record = peer(fault_streak=2, fault_history=(0, 1, 1), negative_streak=1, eval_history=(1,))
    state = ValidatorState(seed=3, last_window=9, peers={7: record})
    assert state_from_json(json.loads(json.dumps(state_to_json(state)))) == state
    old = state_to_json(ValidatorState(seed=3, last_window=9, peers={7: peer()}))
    old["schema"] = 1
    for key in ("fault_streak", "fault_history", "negative_streak", "eval_history"):
        del old["peers"]["7"][key]
    for key in ("harm_debt", "harm_window", "harm_history"):  # version 3's
        del old["peers"]["7"][key]
    assert state_from_json(old).peers[7] == peer()
    bad = state_to_json(state)
    bad["peers"]["7"]["eval_history"] = [2]
    with pytest.raises(StateError, match="flags must be 0 or 1"):
        state_from_json(bad)


def test_rating_a_window_tracks_negative_evaluations_when_on() -> None:
    scores = {1: 0.5, 2: 0.4, 3: 0.3, 4: 0.2, 5: 0.1, 7: -0.1}
    saved = {u: PeerRecord(uid=u) for u in scores}
    saved[7] = PeerRecord(uid=7, eval_history=(1, 1, 1, 1, 0, 0, 0), negative_streak=2)
    for cfg, expect_streak in ((OFF, 2), (ON, 3)):
        ledger = WindowLedger.open(saved, list(scores))
        rate_scored(scores, ledger, (), cfg)
        assert ledger.peers[7].rated and ledger.peers[7].negative_streak == expect_streak
        assert ("negative" in ledger.slashes[7]) == (cfg is ON)
