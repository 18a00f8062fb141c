"""Fast checks: put window, sync probes, slashes, inactivity, own-vs-random evidence."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gauntlet_jax.config import ValidatorConfig
from gauntlet_jax.errors import ConfigError, InvalidPayload
from gauntlet_jax.protocol.probes import (
    gather_probes,
    probe_counts,
    probe_indices,
    validate_probe_values,
)
from gauntlet_jax.protocol.schedule import put_window_status
from gauntlet_jax.validator.checks import (
    active_uids,
    apply_inactivity,
    binary_indicator,
    graded_indicator,
    is_harmful,
    is_out_of_sync,
    record_evaluation,
    reference_margin,
    relative_improvement,
    slash,
    steps_behind,
    sync_score,
    update_bma,
    zero_on_invalid_eval,
)
from gauntlet_jax.validator.state import PeerRecord

CFG = ValidatorConfig()


def test_put_window_boundaries():
    t_min = 1000.0
    assert put_window_status(999.99, t_min, 10.0) == "too_early"
    assert put_window_status(1000.0, t_min, 10.0) == "ok"
    assert put_window_status(1010.0, t_min, 10.0) == "ok"
    assert put_window_status(1010.01, t_min, 10.0) == "too_late"
    with pytest.raises(ValueError):
        put_window_status(float("nan"), t_min, 10.0)


# ---------------------------------------------------------------------------------------------
# Probes

PARAMS = {
    "embed": jax.ShapeDtypeStruct((100, 16), jnp.float32),
    "blocks": [
        {
            "w": jax.ShapeDtypeStruct((16, 48), jnp.float32),
            "scale": jax.ShapeDtypeStruct((16,), jnp.float32),
        }
    ],
    "norm": jax.ShapeDtypeStruct((16,), jnp.float32),
}


def test_probe_counts_cover_every_leaf_and_follow_size():
    # Leaves in tree order: blocks[0].scale (16), blocks[0].w (768), embed (1600), norm (16).
    counts = probe_counts(PARAMS, 100)
    assert sum(counts) == 100
    assert min(counts) >= 1
    assert counts[2] > counts[1] > counts[0]
    # One each, then 96 extra split 16:768:1600:16 → 0.64, 30.72, 64, 0.64 → floors 0, 30, 64,
    # 0; the two left over go to the largest remainders: 0.72, then the first of the 0.64 ties.
    assert counts == [1 + 1, 1 + 31, 1 + 64, 1 + 0]
    assert probe_counts(PARAMS, 2) == [1, 1, 1, 1]  # fewer than leaves: one each


def test_probe_indices_deterministic_in_range_and_per_window():
    a = probe_indices(5, 0, PARAMS, 256)
    b = probe_indices(5, 0, PARAMS, 256)
    c = probe_indices(6, 0, PARAMS, 256)
    d = probe_indices(5, 1, PARAMS, 256)
    la, lb, lc, ld = (jax.tree.leaves(x) for x in (a, b, c, d))
    assert all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(la, lc, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(la, ld, strict=True))
    for idx, leaf, n in zip(la, jax.tree.leaves(PARAMS), probe_counts(PARAMS, 256), strict=True):
        assert idx.shape == (n,) and idx.dtype == np.int32
        assert idx.min() >= 0 and idx.max() < np.prod(leaf.shape)
    # Spread: the embedding's probes are not bunched in one region.
    emb = a["embed"]
    assert len(np.unique(emb)) > 0.8 * len(emb)
    assert np.histogram(emb, bins=4, range=(0, 1600))[0].min() > 0


def test_probe_positions_are_pinned():
    # Guards cross-version determinism: miners and validators must agree on these forever.
    idx = probe_indices(123, 7, {"w": jax.ShapeDtypeStruct((1000,), jnp.float32)}, 4)["w"]
    assert idx.tolist() == PINNED


PINNED = [247, 956, 938, 103]  # numpy PCG64 raw output; stable by numpy's contract


def test_gather_probes_matches_numpy_and_jits():
    key = jax.random.key(0)
    params = jax.tree.map(
        lambda s: jax.random.normal(key, s.shape, s.dtype),
        PARAMS,
        is_leaf=lambda x: isinstance(x, jax.ShapeDtypeStruct),
    )
    idx = probe_indices(1, 0, PARAMS, 64)
    want = np.concatenate(
        [
            np.asarray(p).reshape(-1)[i]
            for p, i in zip(jax.tree.leaves(params), jax.tree.leaves(idx), strict=True)
        ]
    )
    got = gather_probes(params, idx)
    assert got.dtype == jnp.float32 and got.shape == (64,)
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(np.asarray(jax.jit(gather_probes)(params, idx)), want)


def test_steps_behind_and_sync_score():
    lr = 1e-3
    v = np.zeros(4, np.float32)
    p = np.array([1e-3, 2e-3, 0.0, 5e-3], np.float32)
    mean_x, max_x = steps_behind(v, p, lr)
    assert mean_x == pytest.approx(2.0, rel=1e-6)
    assert max_x == pytest.approx(5.0, rel=1e-6)
    assert sync_score(0.0, CFG) == 1.0
    assert sync_score(2.5, CFG) == pytest.approx(0.5**2.5)
    assert sync_score(5.0, CFG) == 0.0
    assert sync_score(50.0, CFG) == 0.0
    assert sync_score(float("inf"), CFG) == 0.0
    assert sync_score(float("nan"), CFG) == 0.0
    assert not is_out_of_sync(3.0, CFG)
    assert is_out_of_sync(3.01, CFG)
    assert is_out_of_sync(float("nan"), CFG)
    with pytest.raises(ValueError):
        steps_behind(v, p, 0.0)


@pytest.mark.parametrize(
    ("values", "fault"),
    [
        (np.zeros(8, np.float64), "dtype float64"),
        (np.zeros(7, np.float32), "shape \\(7,\\)"),
        (np.zeros((2, 4), np.float32), "shape \\(2, 4\\)"),
        (np.array([0, 1, np.inf, 0, 0, 0, 0, 0], np.float32), "non-finite"),
        (np.array([0, 1, np.nan, 0, 0, 0, 0, 0], np.float32), "non-finite"),
        ([0.0] * 8, "expected a numpy array"),
    ],
)
def test_hostile_probe_values_are_rejected(values, fault):
    with pytest.raises(InvalidPayload, match=f"peer 4: bad probes \\(.*{fault}"):
        validate_probe_values(values, 8, uid=4)


def test_valid_probe_values_pass():
    v = np.ones(8, np.float32)
    assert validate_probe_values(v, 8, uid=1) is v


# ---------------------------------------------------------------------------------------------
# Slashes


def test_slash_positive_final_and_bma():
    rec = PeerRecord(uid=1, final=8.0, bma=0.4)
    for reason in ("missing", "late", "early", "invalid", "out_of_sync", "eval_missing"):
        rec = slash(rec, reason, CFG)
    assert rec.final == pytest.approx(8.0 * 0.75**6)
    assert rec.bma == pytest.approx(0.4 * 0.75**6)
    assert rec.slash_counts == dict.fromkeys(
        ("missing", "late", "early", "invalid", "out_of_sync", "eval_missing"), 1
    )


def test_slash_leaves_non_positive_final_alone_but_counts():
    rec = slash(PeerRecord(uid=1, final=-2.0, bma=0.4), "missing", CFG)
    assert (rec.final, rec.bma, rec.slash_counts) == (-2.0, 0.4, {"missing": 1})
    with pytest.raises(ValueError, match="unknown slash reason"):
        slash(rec, "rude", CFG)


def test_zero_on_invalid_eval():
    assert zero_on_invalid_eval(PeerRecord(uid=1, final=5.0)).final == 0.0
    assert zero_on_invalid_eval(PeerRecord(uid=1, final=-5.0)).final == -5.0
    assert zero_on_invalid_eval(PeerRecord(uid=1, final=5.0)).slash_counts == {"eval_invalid": 1}


def test_active_uids_window_range():
    last = {1: 100, 2: 95, 3: 94, 4: 101}
    assert active_uids(last, 100, CFG) == {1, 2}  # [95, 100]; 101 is in the future


def test_inactivity_decay_and_reset_sequence():
    cfg = dataclasses.replace(CFG, inactivity_reset_windows=3)
    peers = {
        1: PeerRecord(
            uid=1, mu=30.0, sigma=3.0, final=10.0, bma=0.5, sync=1.0, eval_count=4, staleness=3
        ),
        2: PeerRecord(uid=2, final=4.0),
    }
    finals, resets = [], []
    for w in range(10, 16):
        peers, reset = apply_inactivity(peers, active=[2], window=w, cfg=cfg)
        finals.append(peers[1].final)
        resets.append(reset)
    # Tracked from window 10; decays at windows 10..13 (w − 10 ≤ 3), reset at 14 (w − 10 > 3).
    assert finals[:4] == pytest.approx([7.5, 5.625, 4.21875, 3.1640625])
    assert resets == [[], [], [], [], [1], []]
    r = peers[1]
    assert (r.final, r.bma, r.mu, r.sigma, r.eval_count, r.staleness, r.sync) == (
        0.0,
        0.0,
        None,
        None,
        0,
        1,
        0.0,
    )
    assert r.inactive_since is not None  # window 15: inactive again, tracked afresh
    assert peers[2].final == 4.0  # active peer untouched


def test_reactivation_stops_tracking_without_restoring():
    peers = {1: PeerRecord(uid=1, final=10.0)}
    peers, _ = apply_inactivity(peers, active=[], window=5, cfg=CFG)
    peers, _ = apply_inactivity(peers, active=[], window=6, cfg=CFG)
    assert peers[1].inactive_since == 5
    peers, _ = apply_inactivity(peers, active=[1], window=7, cfg=CFG)
    assert peers[1].inactive_since is None
    assert peers[1].final == pytest.approx(10.0 * 0.75**2)
    peers, _ = apply_inactivity(peers, active=[], window=8, cfg=CFG)
    assert peers[1].inactive_since == 8  # a fresh inactivity period


def test_negative_final_not_decayed_by_inactivity():
    peers, _ = apply_inactivity({1: PeerRecord(uid=1, final=-3.0)}, active=[], window=1, cfg=CFG)
    assert peers[1].final == -3.0


# ---------------------------------------------------------------------------------------------
# Own-vs-random evidence


def test_binary_indicator_and_bma():
    # The reference's strict rule (no band): equal is not better.
    assert binary_indicator(0.02, 0.01) == 1.0
    assert binary_indicator(0.01, 0.01) == -1.0
    assert binary_indicator(-0.01, 0.01) == -1.0
    # With a band, improvements within rounding of each other are neither evidence: a few ulp
    # of a loss, the difference between one device layout's sums and another's, flip nothing.
    band = CFG.indicator_dead_band
    assert band == 1e-5
    own, rand = 0.0123, 0.0123 + 4e-7  # two validators' views of the same near-tie
    assert binary_indicator(own, rand, band) == binary_indicator(rand, own, band) == 0.0
    assert binary_indicator(0.01 + 2 * band, 0.01, band) == 1.0
    assert binary_indicator(0.01 - 2 * band, 0.01, band) == -1.0
    bma = 0.0
    for _ in range(3):
        bma = update_bma(bma, 1.0)
    assert bma == pytest.approx(1 - 0.95**3)
    assert update_bma(0.5, -1.0, alpha=0.1) == pytest.approx(0.35)


def test_record_evaluation():
    rec = PeerRecord(uid=3, bma=0.2, eval_count=2)
    losses = {
        "loss_before_own": 4.0,
        "loss_after_own": 3.96,  # 1 % better on own pages
        "loss_before_random": 4.0,
        "loss_after_random": 3.98,  # 0.5 % better on random pages
    }
    out = record_evaluation(rec, 12, losses, sync_x=2.5, cfg=CFG)
    assert out.binary == 1.0
    assert out.bma == pytest.approx(0.95 * 0.2 + 0.05)
    assert out.sync == pytest.approx(0.5**2.5)
    assert out.sync_x == 2.5
    assert (out.eval_count, out.last_eval_window) == (3, 12)
    assert out.last_losses["improvement_own"] == pytest.approx(0.01)
    assert out.last_losses["improvement_random"] == pytest.approx(0.005)
    with pytest.raises(ValueError, match="non-finite"):
        record_evaluation(rec, 12, {**losses, "loss_after_own": float("nan")}, 0.0, CFG)
    assert relative_improvement(0.0, 1.0) == 0.0


def _losses(own_gain: float, random_gain: float) -> dict[str, float]:
    """Losses whose own/random relative improvements are the given ones (before = 4)."""
    return {
        "loss_before_own": 4.0,
        "loss_after_own": 4.0 * (1 - own_gain),
        "loss_before_random": 4.0,
        "loss_after_random": 4.0 * (1 - random_gain),
    }


def test_graded_evidence_reads_the_own_data_margin_against_the_windows_median():
    # Margins as measured on CPU (tiny, 30 windows): honest ≈ 3.8e-4, half on random pages
    # ≈ 1.5e-4, all on random pages ≈ −1e-5.
    assert graded_indicator(3.8e-4, 3.8e-4) == 1.0
    assert graded_indicator(7.6e-4, 3.8e-4) == 1.0  # clipped: more own gain is not more b
    assert graded_indicator(1.9e-4, 3.8e-4) == pytest.approx(0.0, abs=1e-12)
    assert graded_indicator(1.5e-4, 3.8e-4) == pytest.approx(2 * 1.5 / 3.8 - 1)
    assert graded_indicator(-1e-5, 3.8e-4) == -1.0  # clipped below too
    assert graded_indicator(-1e-3, 3.8e-4) == -1.0
    with pytest.raises(ValueError, match="positive"):
        graded_indicator(1e-4, 0.0)
    # Continuous: a rounding-sized change of the losses moves b by a rounding-sized amount.
    assert abs(graded_indicator(2e-4 + 1e-9, 3.8e-4) - graded_indicator(2e-4, 3.8e-4)) < 1e-5
    # The yardstick: the median margin, none when the median peer shows no own-data gain.
    assert reference_margin([3e-4, 4e-4, 1.5e-4, -1e-5, 5e-4], 1e-5) == 3e-4
    assert reference_margin([5e-6, -2e-4, 8e-6], 1e-5) is None
    assert reference_margin([], 1e-5) is None


def test_graded_evidence_in_a_record_and_its_binary_fallback():
    graded = dataclasses.replace(CFG, own_data_evidence="graded")
    rec = PeerRecord(uid=4, bma=0.5)
    half = _losses(0.0020 + 1.5e-4, 0.0020)  # half the median margin of 3e-4, minus a bit
    out = record_evaluation(rec, 7, half, 0.0, graded, window_margin=3e-4)
    assert out.binary == pytest.approx(2 * 1.5e-4 / 3e-4 - 1, abs=1e-6)
    assert out.bma == pytest.approx(0.95 * 0.5 + 0.05 * out.binary)
    # The reference's binary b would have called the same peer fully honest (+1) …
    assert record_evaluation(rec, 7, half, 0.0, CFG, window_margin=3e-4).binary == 1.0
    # … and graded evidence without a yardstick falls back to it.
    assert record_evaluation(rec, 7, half, 0.0, graded, window_margin=None).binary == 1.0
    with pytest.raises(ConfigError, match="own_data_evidence must be one of"):
        ValidatorConfig(own_data_evidence="gradedd")


def test_harm_reset_needs_a_window_that_improved():
    band = CFG.indicator_dead_band
    assert is_harmful(-1e-3, 1e-3, band)
    assert not is_harmful(-1e-3, -5e-4, band)  # the whole window regressed: nobody's fault
    assert not is_harmful(-band / 2, 1e-3, band)  # within rounding of no change
    assert not is_harmful(2e-4, 1e-3, band)
    # At a tenth of the median, an update that does next to nothing is caught too (a noise
    # payload's LossScore measured +1e-5 to +2e-5, honest ones +2e-4 to +2.3e-3; 7e-4 stands
    # for a window's median here), a weak honest one is not.
    assert is_harmful(1e-5, 7e-4, band, fraction=0.1)
    assert not is_harmful(2e-4, 7e-4, band, fraction=0.1)
    assert not is_harmful(1e-5, -7e-4, band, fraction=0.1)


def test_harm_reset_can_make_the_peer_a_newcomer():
    from gauntlet_jax.validator.checks import harm_reset

    rec = PeerRecord(uid=8, mu=31.0, sigma=3.0, bma=0.7, final=9.0)
    kept = harm_reset(rec, 5, CFG)
    assert (kept.bma, kept.mu, kept.sigma, kept.slash_counts) == (0.0, 31.0, 3.0, {"harmful": 1})
    assert (kept.harm_debt, kept.harm_window) == (0.0, None)  # no memory: nothing remembered
    fresh = harm_reset(kept, 6, dataclasses.replace(CFG, harm_resets_rating=True))
    assert (fresh.bma, fresh.mu, fresh.sigma) == (0.0, None, None) and not fresh.rated
    assert fresh.slash_counts == {"harmful": 2}


def test_harm_memory_makes_a_repeat_catch_cost_more_and_fades():
    from gauntlet_jax.validator.checks import harm_debt, harm_reset, update_bma

    cfg = dataclasses.replace(CFG, harm_memory_windows=10.0)
    rec = PeerRecord(uid=8, mu=31.0, sigma=3.0, bma=0.7)
    first = harm_reset(rec, 20, cfg)  # nothing to remember yet: the plain reset
    assert (first.bma, first.harm_debt, first.harm_window) == (0.0, 1.0, 20)
    assert harm_debt(first, 30, 10.0) == pytest.approx(0.5)  # one half-life later
    again = harm_reset(dataclasses.replace(first, bma=0.6), 30, cfg)
    assert again.bma == pytest.approx(-0.5) and again.harm_debt == pytest.approx(1.5)
    assert again.slash_counts == {"harmful": 2} and again.mu == 31.0
    # Caught a third time at once: the debt keeps growing, and so does the climb back to 0
    # (ln(1 + D) / −ln(1 − α) windows of b = +1).
    third = harm_reset(again, 30, cfg)
    assert third.bma == pytest.approx(-1.5) and third.harm_debt == pytest.approx(2.5)
    bma, windows = third.bma, 0
    while bma < 0:
        bma, windows = update_bma(bma, 1.0, cfg.bma_alpha), windows + 1
    assert windows == math.ceil(math.log(2.5) / -math.log(1 - cfg.bma_alpha))  # 18
    # Long after, the debt has faded: a catch costs what the plain reset does, within 1e-3.
    late = harm_reset(dataclasses.replace(third, bma=0.9), 200, cfg)
    assert -1e-3 < late.bma <= 0.0 and late.harm_debt == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ConfigError, match="harm_memory_windows must be ≥ 0"):
        ValidatorConfig(harm_memory_windows=-1.0)


def test_harm_confirmation_spares_one_unlucky_evaluation_and_can_exclude():
    from gauntlet_jax.validator.checks import book_harm

    cfg = dataclasses.replace(CFG, harm_reset=True, harm_confirm=2, harm_confirm_of=3)
    rec = PeerRecord(uid=8, mu=31.0, sigma=3.0, bma=0.7)
    once, reset = book_harm(rec, 10, True, cfg)  # one catch: noted, nothing cut
    assert not reset and (once.bma, once.harm_history, once.slash_counts) == (0.7, (1,), {})
    clean, _ = book_harm(once, 11, False, cfg)
    clean, _ = book_harm(clean, 12, False, cfg)
    late, reset = book_harm(clean, 13, True, cfg)  # the first catch is 3 evaluations back
    assert not reset and late.harm_history == (0, 0, 1)
    twice, reset = book_harm(late, 14, True, cfg)  # 2 of the last 3: confirmed
    assert reset and twice.bma == 0.0 and twice.slash_counts == {"harmful": 1}
    assert twice.harm_history == () and twice.mu == 31.0
    assert book_harm(twice, 15, True, cfg) == (dataclasses.replace(twice, harm_history=(1,)), False)
    # A confirmed catch with an exclusion: a newcomer out for 50 windows, its debt kept.
    out = dataclasses.replace(cfg, harm_exclude_windows=50, harm_memory_windows=20.0)
    excluded, reset = book_harm(late, 14, True, out)
    assert reset and excluded == PeerRecord(
        uid=8, excluded_until=65, harm_debt=1.0, harm_window=14, slash_counts={"harmful": 1}
    )
    # The default, 1 of 1: every catch resets, as before confirmation existed.
    assert book_harm(rec, 10, True, dataclasses.replace(cfg, harm_confirm=1, harm_confirm_of=1))[1]
    with pytest.raises(ConfigError, match="harm_confirm must be ≥ 1 and ≤ harm_confirm_of"):
        ValidatorConfig(harm_confirm=3, harm_confirm_of=2)
    with pytest.raises(ConfigError, match="harm_exclude_windows must be ≥ 0"):
        ValidatorConfig(harm_exclude_windows=-1)


def test_book_evaluations_resets_a_harmful_peer_and_grades_by_the_window():
    from gauntlet_jax.validator.evaluation import book_evaluations
    from gauntlet_jax.validator.window_record import WindowLedger

    vcfg = dataclasses.replace(CFG, own_data_evidence="graded", harm_reset=True)
    saved = {u: PeerRecord(uid=u, bma=0.8, final=3.0) for u in (1, 2, 3, 4, 5)}
    ledger = WindowLedger.open(saved, saved)
    losses = {
        1: _losses(2.0e-3 + 4e-4, 2.0e-3),  # honest
        2: _losses(2.1e-3 + 3e-4, 2.1e-3),  # honest: the median margin, 3e-4
        3: _losses(1.9e-3 + 3.5e-4, 1.9e-3),  # honest
        4: _losses(2.0e-3, 2.0e-3),  # trained on random pages: no own-data margin
        5: _losses(-3.0e-3, -1.0e-3),  # sign-flipped: hurts its own pages most
    }
    scores = book_evaluations(9, losses, {}, ledger, vcfg)
    assert scores[5] == pytest.approx(-1.0e-3) and scores[2] == pytest.approx(2.1e-3)
    peers = ledger.peers
    assert peers[2].binary == pytest.approx(1.0) and peers[1].binary == 1.0
    assert peers[4].binary == pytest.approx(-1.0)
    assert peers[4].bma == pytest.approx(0.95 * 0.8 - 0.05)
    assert peers[5].bma == 0.0 and peers[5].slash_counts == {"harmful": 1}
    assert ledger.slashes[5] == ["harmful"] and ledger.slashes[4] == []
    assert all(ledger.checks[u]["evaluated"] == "ok" for u in losses)
    # With a harm memory, the same catch of a peer caught in this window before costs it a
    # BMA of −1 (its debt) and leaves a debt of 2 dated this window.
    remembered = {**saved, 5: PeerRecord(uid=5, bma=0.8, final=3.0, harm_debt=1.0, harm_window=9)}
    again = WindowLedger.open(remembered, remembered)
    book_evaluations(9, losses, {}, again, dataclasses.replace(vcfg, harm_memory_windows=30.0))
    assert again.peers[5].bma == -1.0 and again.peers[5].harm_debt == 2.0
    assert again.peers[5].harm_window == 9 and again.peers[2].harm_window is None
    # Needing 2 of the last 2, the first catch is noted, not cut.
    confirming = WindowLedger.open(saved, saved)
    two = dataclasses.replace(vcfg, harm_confirm=2, harm_confirm_of=2)
    book_evaluations(9, losses, {}, confirming, two)
    assert confirming.peers[5].harm_history == (1,) and confirming.slashes[5] == []
    assert confirming.checks[5]["harm"] == "unconfirmed" and confirming.peers[5].bma > 0.7
    # Off (the reference): the same window books b = −1 for the flipped peer and keeps its BMA.
    plain = WindowLedger.open(saved, saved)
    book_evaluations(9, losses, {}, plain, CFG)
    assert plain.peers[5].bma == pytest.approx(0.95 * 0.8 - 0.05)
    assert plain.peers[4].binary == 0.0 and plain.slashes[5] == []  # equal gains: the band


def test_probe_object_round_trip_and_hostile_inputs():
    from gauntlet_jax.protocol.probes import decode_probes, encode_probes

    values = np.arange(5, dtype=np.float32)
    data = encode_probes(3, 7, values, "0123456789abcdef")
    got = decode_probes(data, uid=3, window=7, expected_len=5)
    np.testing.assert_array_equal(got.values, values)
    assert got.fingerprint == "0123456789abcdef"
    with pytest.raises(InvalidPayload, match="bad fingerprint"):
        encode_probes(3, 7, values, "0123456789ABCDEF")
    forged = data.replace(b"0123456789abcdef", b"0123456789abcdeg")
    with pytest.raises(InvalidPayload, match="peer 3: bad fingerprint"):
        decode_probes(forged, uid=3, window=7, expected_len=5)
    old = data.replace(b'"format":"2"', b'"format":"1"')
    assert old != data
    with pytest.raises(InvalidPayload, match=r"unsupported format.*v'1'.*speaks v2"):
        decode_probes(old, uid=3, window=7, expected_len=5)
    with pytest.raises(InvalidPayload, match=r"peer 3: bad probes.*window 7"):
        decode_probes(data, uid=3, window=8, expected_len=5)
    with pytest.raises(InvalidPayload, match="peer 3: bad probes"):
        decode_probes(data, uid=3, window=7, expected_len=6)
    for junk in (b"", b"\x00" * 7, b"\xff" * 64, data[:-3], data + b"x" * 10_000):
        with pytest.raises(InvalidPayload):
            decode_probes(junk, uid=3, window=7, expected_len=5)
    nan = encode_probes(3, 7, np.array([0, np.nan, 0, 0, 0], np.float32), "0" * 16)
    with pytest.raises(InvalidPayload, match="non-finite"):
        decode_probes(nan, uid=3, window=7, expected_len=5)
