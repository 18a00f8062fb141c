"""The simulation benchmarks' arithmetic: exact_vs_float's verdict against the run-to-run noise,
payload_directions' leave-one-out cosines."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.exact_vs_float import compare
from benchmarks.payload_directions import leave_one_out_cosines

STEPS = [0, 1, 2]


def _curves(offset: float) -> dict[str, dict[int, list[float]]]:
    """Three seeds of the exact path spread by ±0.1 at steps 1 and 2; the float path is the exact
    one shifted by `offset` after step 0."""
    exact = {s: [10.0, 9.5 + 0.1 * (s - 1), 9.0 + 0.1 * (s - 1)] for s in range(3)}
    old = {s: [c[0], c[1] + offset, c[2] + offset] for s, c in exact.items()}
    return {"exact": exact, "float": old}


def test_a_shift_inside_the_seed_spread_is_within_noise() -> None:
    result = compare(_curves(0.15), STEPS)
    assert result["exact_sd"][1:] == pytest.approx([0.1, 0.1])
    assert result["float_minus_exact_mean"] == pytest.approx([0.0, 0.15, 0.15])
    assert result["final"]["exact_mean"] == pytest.approx(9.0)
    assert result["within_noise"] is True


def test_a_shift_beyond_twice_the_spread_is_not() -> None:
    result = compare(_curves(0.25), STEPS)
    assert result["within_noise"] is False
    assert result["final"]["max_abs_float_minus_exact"] == pytest.approx(0.25)


def test_one_seed_gives_no_verdict() -> None:
    one = {k: {0: v[0]} for k, v in _curves(0.0).items()}
    assert compare(one, STEPS)["within_noise"] is None


def test_leave_one_out_cosines_see_a_peer_against_the_rest() -> None:
    rng = np.random.default_rng(0)
    common = rng.standard_normal(64)
    units = {u: common + 0.1 * rng.standard_normal(64) for u in (1, 2, 3)}
    units[4] = -common  # pushes against what the others agree on
    others = sum(units.values())
    axis = np.eye(64)[0]
    units[5] = axis - (axis @ others) / (others @ others) * others  # orthogonal to their sum
    cos = leave_one_out_cosines(units)
    assert all(cos[u] > 0.4 for u in (1, 2, 3)) and cos[4] < -0.9
    assert cos[5] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="at least two payloads"):
        leave_one_out_cosines({1: common})
