"""Final scores, weight normalisation, gather-set choice and schedules."""

from __future__ import annotations

import dataclasses

import pytest

from gauntlet_jax.config import Config, ProtocolConfig, ValidatorConfig
from gauntlet_jax.validator.state import PeerRecord
from gauntlet_jax.validator.weights import (
    final_score,
    gather_effective_window,
    gather_set,
    gather_set_for_window,
    is_gather_refresh_window,
    prune_schedule,
    refresh_final,
    should_post_weights,
    weights_from_finals,
)


def test_final_score():
    assert final_score(20.0, 0.5, 0.8) == pytest.approx(8.0)
    assert final_score(20.0, -0.3, 1.0) == 0.0  # BMA clipped at 0
    assert final_score(-4.0, 0.5, 1.0) == -2.0  # a negative ordinal stays negative
    assert final_score(20.0, 0.5, 0.0) == 0.0


def test_refresh_final_uses_ordinal():
    rec = PeerRecord(uid=1, mu=30.0, sigma=2.0, bma=0.5, sync=0.9, final=99.0)
    assert refresh_final(rec).final == pytest.approx((30 - 6) * 0.5 * 0.9)
    with pytest.raises(ValueError, match="peer 2 has no rating"):
        refresh_final(PeerRecord(uid=2))


def test_weights_power_two():
    w = weights_from_finals({1: 3.0, 2: 1.0, 3: -5.0, 4: 0.0}, power=2.0)
    assert w == pytest.approx({1: 0.9, 2: 0.1, 3: 0.0, 4: 0.0})


def test_weights_power_changes_concentration():
    finals = {1: 2.0, 2: 1.0}
    assert weights_from_finals(finals, 1.0)[1] == pytest.approx(2 / 3)
    assert weights_from_finals(finals, 2.2)[1] == pytest.approx(2**2.2 / (2**2.2 + 1))
    assert weights_from_finals(finals, 3.0)[1] == pytest.approx(8 / 9)


def test_weights_all_zero_when_nothing_positive_or_tiny():
    assert weights_from_finals({1: -1.0, 2: 0.0}, 2.0) == {1: 0.0, 2: 0.0}
    assert weights_from_finals({1: 1e-5}, 2.0) == {1: 0.0}  # 1e-10 ≤ 1e-8
    assert weights_from_finals({1: 1e-3}, 2.0) == {1: 1.0}  # 1e-6 > 1e-8
    assert weights_from_finals({}, 2.0) == {}


def test_weights_reject_nonsense():
    with pytest.raises(ValueError, match="peer 3"):
        weights_from_finals({3: float("nan")}, 2.0)
    with pytest.raises(ValueError, match="power"):
        weights_from_finals({1: 1.0}, 0.0)


def test_gather_set_top_n_active_with_uid_tiebreak():
    weights = {1: 0.1, 2: 0.4, 3: 0.4, 4: 0.1, 5: 0.0, 9: 0.9}
    active = [5, 4, 3, 2, 1, 7]  # 9 is inactive; 7 has no weight
    assert gather_set(weights, active, 3) == [2, 3, 1]
    assert gather_set(weights, active, 10) == [2, 3, 1, 4, 5, 7]  # zeros fill the remainder
    assert gather_set(weights, active, 3, excluded=[3]) == [2, 1, 4]


def test_gather_schedule():
    cfg = Config(protocol=ProtocolConfig(peer_refresh_windows=5, peer_effective_lag=2))
    assert [w for w in range(16) if is_gather_refresh_window(w, cfg)] == [0, 5, 10, 15]
    assert gather_effective_window(10, cfg) == 12
    schedule = {2: (1, 2), 7: (3,), 12: (4, 5)}
    assert gather_set_for_window(schedule, 1) is None
    assert gather_set_for_window(schedule, 2) == (1, 2)
    assert gather_set_for_window(schedule, 11) == (3,)
    assert gather_set_for_window(schedule, 40) == (4, 5)
    assert prune_schedule(schedule, 8) == {7: (3,), 12: (4, 5)}
    assert prune_schedule(schedule, 0) == schedule


def test_should_post_weights():
    cfg = dataclasses.replace(ValidatorConfig(), windows_per_weights=50)
    assert [w for w in range(151) if should_post_weights(w, cfg)] == [0, 50, 100, 150]
