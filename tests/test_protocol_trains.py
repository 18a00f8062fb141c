"""It trains: 4 honest peers with DCT top-k compression and the sign outer step lower the held-out
loss of the tiny model window after window, and error feedback measurably helps.

A real-runtime test (two to three minutes on 2 busy CPU cores). The ≥ 100-window curves are produced by
`python -m gauntlet_jax.protocol.honest --config tiny --windows 150`.
"""

from __future__ import annotations

import itertools

import pytest

from gauntlet_jax.config import Config, with_overrides
from gauntlet_jax.data.corpus import open_corpus
from gauntlet_jax.data.pages import batches_for, heldout_batches
from gauntlet_jax.protocol.honest import NO_ERROR_FEEDBACK, train_honest

WINDOWS = 30
PEERS = 4


@pytest.mark.slow
def test_honest_peers_train_and_error_feedback_helps(tiny_config: Config) -> None:
    # One micro-batch per peer and window keeps CPU time short; the larger tiny LR makes the
    # error-feedback gap visible within 30 windows (at 2e-3 it opens after ~45 windows).
    cfg = with_overrides(
        tiny_config, ["protocol.learning_rate=5.0e-3", "train.max_micro_batches=1"]
    )
    corpus = open_corpus(cfg.data, progress=False)
    heldout = heldout_batches(corpus, cfg)[:8]

    def run(variant: Config) -> list[float]:
        _, curve = train_honest(
            variant,
            lambda uid, window: batches_for(corpus, uid, window, variant),
            heldout,
            n_peers=PEERS,
            n_windows=WINDOWS,
            eval_every=10,
        )
        return curve.heldout_loss

    with_ef = run(cfg)
    without = run(with_overrides(cfg, [f"protocol.error_feedback_after={NO_ERROR_FEEDBACK}"]))
    print(f"held-out loss every 10 windows: with EF {with_ef}, without {without}")
    assert all(later < earlier for earlier, later in itertools.pairwise(with_ef)), with_ef
    assert with_ef[-1] < with_ef[0] - 2.5, with_ef
    assert with_ef[-1] < without[-1] - 0.2, (with_ef, without)
