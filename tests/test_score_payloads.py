"""The validator's scoring at static shapes (`evaluation.score_payloads`, `screen_payloads`):
the number of batches a window's pages yield varies with its documents' lengths, and a new
count must not compile a new program each window (it did: a 6-window simulation compiled 107
times). Counts pad to powers of two; padding changes no loss."""

from __future__ import annotations

import numpy as np
import pytest

from gauntlet_jax.config import Config, with_overrides
from gauntlet_jax.model.grad import _accumulate_grads
from gauntlet_jax.node.startup import new_replica
from gauntlet_jax.validator.evaluation import score_payloads, screen_payloads
from gauntlet_jax.validator.loss_delta import mean_loss, score_candidates, static_batch_count


@pytest.fixture(scope="module")
def setup(tiny_config: Config):
    cfg = with_overrides(tiny_config, ["model.seq_len=16", "model.n_layers=1"])
    replica = new_replica(cfg, 0)
    rng = np.random.default_rng(0)

    def batches(n: int) -> np.ndarray:
        shape = (n, cfg.data.batch_size, cfg.model.seq_len)
        return rng.integers(3, cfg.model.vocab_size, shape).astype(np.int32)

    return cfg, replica, batches


def test_static_batch_count_is_the_next_power_of_two() -> None:
    assert [static_batch_count(n) for n in (1, 2, 3, 4, 5, 8, 9, 100)] == [
        1, 2, 4, 4, 8, 8, 16, 128,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="at least one batch"):
        static_batch_count(0)


def test_batch_counts_within_a_power_of_two_share_one_program(setup) -> None:
    cfg, replica, batches = setup
    first = score_payloads(replica, cfg, [None, None], [batches(3), batches(2)], batches(3), 0.1)
    compiled = score_candidates._cache_size()
    # Other counts that pad to 4: no new program.
    for own, rand in (([batches(4), batches(1)], batches(4)), ([batches(3)], batches(3))):
        score_payloads(replica, cfg, [None] * len(own), own, rand, 0.1)
    assert score_candidates._cache_size() == compiled
    score_payloads(replica, cfg, [None], [batches(5)], batches(3), 0.1)
    assert score_candidates._cache_size() == compiled + 1
    assert first.own_before.shape == (2,)


def test_padding_changes_no_loss(setup) -> None:
    cfg, replica, batches = setup
    own, rand = [batches(3), batches(1)], batches(3)
    deltas = score_payloads(replica, cfg, [None, None], own, rand, 0.0)
    params = replica.params
    for i, o in enumerate(own):
        want = float(mean_loss(params, o, len(o), cfg.model))
        np.testing.assert_allclose(deltas.own_before[i], want, rtol=1e-6)
    np.testing.assert_allclose(
        deltas.random_before, float(mean_loss(params, rand, len(rand), cfg.model)), rtol=1e-6
    )
    # Counting one more batch would move the loss: the count, not the padding, decides.
    padded = np.concatenate([own[1], batches(1)])
    assert abs(float(mean_loss(params, padded, 2, cfg.model)) - deltas.own_before[1]) > 1e-4


def test_screen_pads_the_random_pages_without_new_programs(setup) -> None:
    cfg, replica, batches = setup
    screen_payloads(replica, cfg, [None], batches(3), 0.1)
    compiled = _accumulate_grads._cache_size()
    for n in (4, 3):
        values = screen_payloads(replica, cfg, [None, None], batches(n), 0.1)
        assert values.shape == (2,) and np.isfinite(values).all()
    assert _accumulate_grads._cache_size() == compiled
