"""`PhaseTimer`: consecutive phases that tile a window."""

from __future__ import annotations

import pytest

from gauntlet_jax.node.phases import PhaseTimer


def test_laps_tile_the_window_and_a_repeated_phase_adds_up() -> None:
    ticks = iter([10.0, 10.5, 12.0, 12.25, 15.0])
    timer = PhaseTimer(clock=lambda: next(ticks))
    timer.lap("fetch")
    timer.lap("decode")
    timer.lap("fetch")
    timer.lap("scoring")
    assert timer.seconds == {"fetch": 0.75, "decode": 1.5, "scoring": 2.75}
    assert list(timer.seconds) == ["fetch", "decode", "scoring"]
    assert timer.total() == pytest.approx(sum(timer.seconds.values())) == 5.0
