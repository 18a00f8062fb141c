"""Windows and the outer LR: warm-up then cosine with warm restarts, at every boundary."""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gauntlet_jax.config import ProtocolConfig
from gauntlet_jax.protocol.schedule import first_block_of_window, outer_lr, window_of_block

P = ProtocolConfig()  # lr 4e-4, warm-up 250 from 0.1·lr, T0 20000, T_mult 2, η_min 0.1·lr
LR, ETA = 4e-4, 4e-5


def _cos(t_cur: int, t_i: int) -> float:
    return ETA + (LR - ETA) * (1 + math.cos(math.pi * t_cur / t_i)) / 2


HAND = {
    0: 4e-5,
    1: LR * (0.1 + 0.9 / 250),
    125: 2.2e-4,
    249: LR * (0.1 + 0.9 * 249 / 250),
    250: LR,  # cosine starts at T_cur = 0
    251: _cos(1, 20000),
    250 + 10000: 2.2e-4,  # half-way down the first cycle
    250 + 19999: _cos(19999, 20000),
    250 + 20000: LR,  # first restart; the next cycle is twice as long
    250 + 20000 + 20000: 2.2e-4,
    250 + 59999: _cos(39999, 40000),
    250 + 60000: LR,  # second restart, T_i = 80000
    250 + 60000 + 40000: 2.2e-4,
    250 + 140000: LR,
}


@pytest.mark.parametrize("step", sorted(HAND))
def test_hand_computed_values(step: int) -> None:
    got = outer_lr(step, P)
    assert isinstance(got, float)
    assert got == pytest.approx(HAND[step], rel=1e-12, abs=1e-18)


def test_jnp_version_agrees_under_jit_and_vmap() -> None:
    steps = np.array(sorted(HAND) + list(range(0, 300, 7)) + [20249, 20251, 60249, 60251])
    got = jax.jit(jax.vmap(lambda s: outer_lr(s, P)))(jnp.asarray(steps, jnp.int32))
    assert got.dtype == jnp.float32
    want = np.array([outer_lr(int(s), P) for s in steps])
    np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6)


def test_constant_restart_period_and_no_warmup() -> None:
    p = ProtocolConfig(learning_rate=1.0, warmup_steps=0, cosine_t0=10, cosine_t_mult=1)
    assert outer_lr(0, p) == 1.0
    assert outer_lr(5, p) == pytest.approx(0.1 + 0.9 * 0.5)
    assert outer_lr(10, p) == 1.0 and outer_lr(25, p) == outer_lr(5, p)
    got = jax.jit(lambda s: outer_lr(s, p))(jnp.arange(40))
    np.testing.assert_allclose(np.asarray(got), [outer_lr(s, p) for s in range(40)], rtol=2e-6)


def test_schedule_is_monotone_within_phases() -> None:
    warm = [outer_lr(s, P) for s in range(251)]
    assert all(a < b for a, b in itertools.pairwise(warm))
    down = [outer_lr(s, P) for s in range(250, 20250, 97)]
    assert all(a > b for a, b in itertools.pairwise(down))
    assert min(outer_lr(s, P) for s in range(0, 100000, 13)) >= ETA * 0.999


def test_windows_of_blocks() -> None:
    assert [window_of_block(b, 7) for b in (0, 6, 7, 13, 14, 700)] == [0, 0, 1, 1, 2, 100]
    assert first_block_of_window(3, 7) == 21 and window_of_block(21, 7) == 3
    with pytest.raises(ValueError):
        window_of_block(5, 0)
    with pytest.raises(ValueError):
        outer_lr(-1, P)
