"""Validator state: JSON round trip, strict loading, atomic replacement under SIGKILL, and
restart determinism of the scoring bookkeeping."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from gauntlet_jax.config import ValidatorConfig
from gauntlet_jax.errors import StateError
from gauntlet_jax.validator import checks, rating, weights
from gauntlet_jax.validator.state import (
    PeerRecord,
    ValidatorState,
    fresh_state,
    load_state,
    save_state,
    state_from_json,
    state_to_json,
)

REPO = Path(__file__).resolve().parent.parent


def sample_state() -> ValidatorState:
    peers = {
        3: PeerRecord(
            uid=3,
            mu=27.5,
            sigma=4.25,
            bma=-0.4,  # a harm catch with memory (checks.harm_reset) leaves it negative
            binary=1.0,
            sync=0.97,
            sync_x=0.2,
            final=6.1,
            weight=0.8,
            staleness=2,
            eval_count=5,
            last_eval_window=40,
            harm_debt=1.4,
            harm_window=39,
            harm_history=(0, 1),
            slash_counts={"missing": 2, "out_of_sync": 1, "harmful": 2},
            last_losses={"loss_before_own": 3.5, "improvement_own": 0.01},
        ),
        11: PeerRecord(uid=11, final=-0.5, inactive_since=38, staleness=4, excluded_until=300),
    }
    return ValidatorState(
        seed=9,
        last_window=41,
        peers=peers,
        evaluated_uids=(3, 11),
        gather_schedule={42: (3, 11), 47: (11,)},
        last_weights_window=40,
    )


def test_round_trip_through_file(tmp_path):
    state = sample_state()
    path = tmp_path / "state.json"
    save_state(state, path)
    assert load_state(path, seed=9) == state
    assert list(tmp_path.iterdir()) == [path]  # no temp files left behind


def test_missing_file_gives_fresh_state(tmp_path):
    assert load_state(tmp_path / "nope.json", seed=4) == fresh_state(4)


def test_truncated_file_is_a_typed_error(tmp_path):
    path = tmp_path / "state.json"
    save_state(sample_state(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateError, match="corrupt file, not valid JSON"):
        load_state(path, seed=9)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schema=99), "expected version 3 \\(or an older \\(1, 2\\)\\)"),
        (lambda d: d.pop("peers"), "missing \\['peers'\\]"),
        (lambda d: d.update(extra=1), "unknown \\['extra'\\]"),
        (lambda d: d["peers"]["3"].update(final="high"), "peers.3.final: expected a number"),
        (lambda d: d["peers"]["3"].update(staleness=0), "staleness: 0 is below 1"),
        (lambda d: d["peers"]["3"].update(eval_count=True), "eval_count: expected an integer"),
        (lambda d: d["peers"]["3"].update(sigma=None), "mu and sigma must both be set"),
        (lambda d: d["peers"]["3"].update(sigma=-1.0), "sigma: must be positive"),
        (lambda d: d["peers"]["3"].update(uid=4), "record uid 4 under key 3"),
        (lambda d: d["peers"]["3"].update(harm_debt=-0.5), "harm_debt: must be ≥ 0"),
        (lambda d: d["peers"]["3"].update(harm_history=[2]), "flags must be 0 or 1"),
        (lambda d: d["peers"]["3"].update(harm_window="39"), "harm_window: expected an integer"),
        (lambda d: d["peers"]["3"].pop("harm_debt"), "missing \\['harm_debt'\\]"),
        (lambda d: d["peers"]["3"]["slash_counts"].update(bribe=1), "unknown slash reason"),
        (lambda d: d["peers"].update(x={}), "key 'x' is not a non-negative integer"),
        (lambda d: d["gather_schedule"].update({"50": [1, "2"]}), "gather_schedule.50\\[1\\]"),
        (lambda d: d.update(evaluated_uids={}), "evaluated_uids: expected a list"),
    ],
)
def test_schema_and_type_faults_are_reported(mutate, message):
    d = json.loads(json.dumps(state_to_json(sample_state())))
    mutate(d)
    with pytest.raises(StateError, match=message):
        state_from_json(d, "s.json")


def test_non_finite_numbers_are_rejected(tmp_path):
    path = tmp_path / "state.json"
    save_state(sample_state(), path)
    text = path.read_text().replace('"final": 6.1', '"final": NaN')
    path.write_text(text)
    with pytest.raises(StateError, match="non-finite"):
        load_state(path, seed=9)
    with pytest.raises(ValueError):  # and we never write one
        save_state(sample_state().with_peer(PeerRecord(uid=1, final=float("inf"))), path)


def test_seed_mismatch_is_refused(tmp_path):
    path = tmp_path / "state.json"
    save_state(sample_state(), path)
    with pytest.raises(StateError, match="seed 9, configured seed is 2"):
        load_state(path, seed=2)


def test_stale_temp_files_are_removed_and_ignored(tmp_path):
    path = tmp_path / "state.json"
    (tmp_path / ".state.json.abc123.tmp").write_text("{half a st")
    save_state(sample_state(), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


WRITER = textwrap.dedent(
    """
    import sys
    from gauntlet_jax.validator.state import PeerRecord, ValidatorState, save_state

    path = sys.argv[1]
    w = 0
    while True:
        # 400 peers whose every field encodes w: a torn or mixed file cannot pass the check.
        peers = {
            u: PeerRecord(uid=u, final=w + u / 1000, bma=w / 7, staleness=w + 1,
                          slash_counts={"missing": w})
            for u in range(400)
        }
        save_state(ValidatorState(seed=5, last_window=w, peers=peers), path)
        if w == 0:
            print("ready", flush=True)
        w += 1
    """
)


def test_sigkill_during_saves_never_leaves_a_broken_state(tmp_path):
    path = tmp_path / "state.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = np.random.default_rng(0)
    windows_seen = []
    for _ in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env
        )
        try:
            assert proc.stdout.readline().strip() == b"ready"
            time.sleep(float(rng.uniform(0.0, 0.25)))
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        state = load_state(path, seed=5)  # must always be complete and well-typed
        w = state.last_window
        assert w is not None and len(state.peers) == 400
        for u, r in state.peers.items():
            assert r.final == w + u / 1000 and r.bma == w / 7 and r.staleness == w + 1
            assert r.slash_counts == {"missing": w}
        windows_seen.append(w)
    assert max(windows_seen) > 0  # the kills did land mid-run, not only after the first save


# ---------------------------------------------------------------------------------------------
# Restart determinism: the window's scoring depends only on (state, seed, window, inputs).


def score_window(state: ValidatorState, window: int, cfg: ValidatorConfig) -> ValidatorState:
    """A miniature of the validator's scoring step built from the pure parts."""
    eval_peers = list(range(12))
    ordinals = {
        u: rating.ordinal(rating.Rating(r.mu, r.sigma)) for u, r in state.peers.items() if r.rated
    }
    stale = {u: r.staleness for u, r in state.peers.items()}
    chosen = rating.select_eval_uids(
        eval_peers, ordinals, stale, cfg, rating.window_rng(state.seed, window, "select")
    )
    stale = rating.update_staleness(stale, eval_peers, chosen)
    records = {u: dataclasses.replace(state.peer(u), staleness=stale[u]) for u in eval_peers}
    noise = rating.window_rng(state.seed, window, "test-losses")
    scores = {}
    for u in chosen:
        drop = 0.01 * (u + 1) / 12 + noise.normal(0, 0.002)
        losses = {
            "loss_before_own": 3.0,
            "loss_after_own": 3.0 * (1 - drop - 0.001 * (u % 3)),
            "loss_before_random": 3.1,
            "loss_after_random": 3.1 * (1 - drop),
        }
        records[u] = checks.record_evaluation(records[u], window, losses, 0.1 * (u % 4), cfg)
        scores[u] = records[u].last_losses["improvement_random"]
    ratings = {u: rating.Rating(r.mu, r.sigma) for u, r in records.items() if r.rated}
    for u, r in rating.rate_window(ratings, scores, cfg).items():
        records[u] = dataclasses.replace(records[u], mu=r.mu, sigma=r.sigma)
    if len(scores) >= 2:
        for u in scores:
            records[u] = weights.refresh_final(records[u])
    if window % 3 == 0:
        records[5] = checks.slash(records[5], "missing", cfg)
    w = weights.weights_from_finals({u: r.final for u, r in records.items()}, cfg.power)
    records = {u: dataclasses.replace(r, weight=w[u]) for u, r in records.items()}
    evaluated = tuple(sorted(set(state.evaluated_uids) | set(chosen)))
    return dataclasses.replace(
        state.with_peers(records), last_window=window, evaluated_uids=evaluated
    )


def test_restarting_after_every_window_gives_identical_weights(tmp_path):
    cfg = ValidatorConfig()
    straight = fresh_state(seed=21)
    for w in range(30):
        straight = score_window(straight, w, cfg)
    path = tmp_path / "state.json"
    for w in range(30):
        state = load_state(path, seed=21)  # a new "process" every window
        assert state.last_window == (w - 1 if w else None)
        save_state(score_window(state, w, cfg), path)
    restarted = load_state(path, seed=21)
    assert restarted == straight
    assert sum(r.weight for r in straight.peers.values()) == pytest.approx(1.0)
    assert sum(r.weight > 0 for r in straight.peers.values()) >= 3
