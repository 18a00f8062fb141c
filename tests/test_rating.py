"""Selection (bins, staleness sampling) and the OpenSkill update against a hand-written one."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from gauntlet_jax.config import ValidatorConfig
from gauntlet_jax.validator.rating import (
    Rating,
    bin_peers,
    default_rating,
    ordinal,
    ranks_from_scores,
    rate_window,
    select_eval_uids,
    update_staleness,
    window_rng,
)

CFG = ValidatorConfig()  # P85: 5 bins, 4 uids per window, β 7, τ 0.1


# ---------------------------------------------------------------------------------------------
# GAUNTLET.md §5.2 written out in numpy, independently of the library.


def plackett_luce_by_hand(mu, sigma, scores, beta, tau, kappa=1e-4):
    mu = np.asarray(mu, np.float64)
    sigma = np.sqrt(np.asarray(sigma, np.float64) ** 2 + tau**2)  # 1. dynamics
    k = len(mu)
    rank = np.empty(k, int)  # 2. strict ranks by descending score, ties by input order
    rank[np.argsort(-np.asarray(scores), kind="stable")] = np.arange(k)
    c = math.sqrt(np.sum(sigma**2 + beta**2))  # 3.
    e = np.exp(mu / c)
    s_q = np.array([e[rank >= rank[q]].sum() for q in range(k)])
    omega = np.zeros(k)
    delta = np.zeros(k)
    for i in range(k):  # 4.
        for q in range(k):
            if rank[q] <= rank[i]:
                p = e[i] / s_q[q]
                omega[i] += (1 - p) if q == i else -p
                delta[i] += p * (1 - p)
    omega *= sigma**2 / c
    delta *= (sigma**2 / c**2) * (sigma / c)
    return mu + omega, sigma * np.sqrt(np.maximum(1 - delta, kappa))  # 5.


def test_library_matches_hand_written_update_on_random_matches():
    rng = np.random.default_rng(1234)
    worst = 0.0
    for _ in range(200):
        k = int(rng.integers(2, 9))
        uids = [int(u) for u in rng.choice(1000, size=k, replace=False)]
        mu = rng.uniform(-20, 60, size=k)
        sigma = rng.uniform(0.5, 9.0, size=k)
        scores = rng.normal(0, 0.01, size=k)
        ratings = {u: Rating(float(m), float(s)) for u, m, s in zip(uids, mu, sigma, strict=True)}
        got = rate_window(ratings, dict(zip(uids, scores.tolist(), strict=True)), CFG)
        want_mu, want_sigma = plackett_luce_by_hand(mu, sigma, scores, 7.0, 0.1)
        for i, u in enumerate(uids):
            worst = max(worst, abs(got[u].mu - want_mu[i]), abs(got[u].sigma - want_sigma[i]))
    assert worst < 1e-9, worst


def test_library_matches_hand_written_update_with_tied_scores():
    # Ties are ranked strictly (the reference), not averaged, by uid (ours; the reference used
    # evaluation order, which validators do not share).
    uids = [3, 7, 9]
    scores = [0.02, 0.02, -0.01]
    got = rate_window({}, dict(zip(uids, scores, strict=True)), CFG)
    want_mu, want_sigma = plackett_luce_by_hand([25.0] * 3, [25 / 3] * 3, scores, 7.0, 0.1)
    assert [got[u].mu for u in uids] == pytest.approx(want_mu.tolist(), abs=1e-12)
    assert [got[u].sigma for u in uids] == pytest.approx(want_sigma.tolist(), abs=1e-12)
    assert got[3].mu > got[7].mu > got[9].mu  # equal scores, yet 3 (the lower uid) ranks higher
    assert rate_window({}, {7: 0.02, 3: 0.02, 9: -0.01}, CFG) == got  # evaluation order: no matter


def test_golden_values():
    # Computed once (openskill 6.2.0, PlackettLuce(beta=7, tau=0.1)) and cross-checked against
    # plackett_luce_by_hand above, which agreed to 1e-14. Three newcomers scored 0.3 > 0.2 > 0.1;
    # then a rated pair where the weaker-rated peer wins.
    got = rate_window({}, {1: 0.3, 2: 0.1, 3: 0.2}, CFG)
    assert got[1].mu == pytest.approx(27.456249477209283, abs=1e-12)
    assert got[1].sigma == pytest.approx(8.253534696231965, abs=1e-12)
    assert got[3].mu == pytest.approx(25.61406236930232, abs=1e-12)
    assert got[3].sigma == pytest.approx(8.162139691070465, abs=1e-12)
    assert got[2].mu == pytest.approx(21.929688153488396, abs=1e-12)
    assert got[2].sigma == pytest.approx(8.162139691070465, abs=1e-12)
    got = rate_window({10: Rating(30.0, 3.0), 11: Rating(20.0, 5.0)}, {10: -0.5, 11: 0.5}, CFG)
    assert got[11].mu == pytest.approx(GOLDEN_PAIR[0], abs=1e-12)
    assert got[11].sigma == pytest.approx(GOLDEN_PAIR[1], abs=1e-12)
    assert got[10].mu == pytest.approx(GOLDEN_PAIR[2], abs=1e-12)
    assert got[10].sigma == pytest.approx(GOLDEN_PAIR[3], abs=1e-12)


# uid 11 (μ 20, σ 5) beats uid 10 (μ 30, σ 3): μ/σ of 11, then of 10 (computed as above).
GOLDEN_PAIR = (21.534149172740605, 4.957919099121993, 29.447313712659223, 2.9960939022200455)


def test_new_peer_gets_library_default_and_ordinal_is_mu_minus_3_sigma():
    r = default_rating(CFG)
    assert (r.mu, r.sigma) == (25.0, 25.0 / 3.0)
    assert ordinal(Rating(30.0, 2.0)) == 24.0
    assert abs(ordinal(r)) < 1e-12


def test_rate_window_needs_two_scores_and_keeps_unscored_peers():
    ratings = {1: Rating(30.0, 4.0), 2: Rating(10.0, 2.0)}
    assert rate_window(ratings, {1: 0.5}, CFG) == ratings
    assert rate_window(ratings, {}, CFG) == ratings
    got = rate_window(ratings, {1: 0.5, 5: 0.1}, CFG)
    assert got[2] == ratings[2]  # not in this match: untouched
    assert set(got) == {1, 2, 5}


def test_rate_window_rejects_non_finite_scores():
    with pytest.raises(ValueError, match="uids \\[2\\]"):
        rate_window({}, {1: 0.1, 2: float("nan")}, CFG)


def test_ranks_from_scores():
    assert ranks_from_scores([0.1, 0.3, 0.2]) == [2, 0, 1]
    assert ranks_from_scores([0.2, 0.2, 0.5, 0.2]) == [1, 2, 0, 3]


def test_equal_scores_rank_by_uid_whatever_the_evaluation_order():
    ratings = {1: Rating(27.0, 6.0), 5: Rating(24.0, 7.0), 9: Rating(25.0, 8.0)}
    one = rate_window(ratings, {9: 0.1, 5: 0.1, 1: 0.3}, CFG)
    other = rate_window(ratings, {1: 0.3, 5: 0.1, 9: 0.1}, CFG)
    assert one == other
    # The lower uid of the tie ranks first: it gains more than the other would in its place.
    swapped = rate_window(
        {1: ratings[1], 5: ratings[9], 9: ratings[5]}, {5: 0.1, 9: 0.1, 1: 0.3}, CFG
    )
    assert one[5].mu - ratings[5].mu > swapped[9].mu - ratings[5].mu


def test_beta_and_tau_come_from_config():
    other = dataclasses.replace(CFG, openskill_beta=20.0, openskill_tau=1.0)
    got = rate_window({}, {1: 1.0, 2: 0.0}, other)
    want_mu, want_sigma = plackett_luce_by_hand([25, 25], [25 / 3, 25 / 3], [1.0, 0.0], 20.0, 1.0)
    assert got[1].mu == pytest.approx(want_mu[0], abs=1e-12)
    assert got[2].sigma == pytest.approx(want_sigma[1], abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Selection


def test_binning_threshold_and_sizes():
    ordinals = {u: float(-u) for u in range(100)}  # uid 0 has the best ordinal
    assert bin_peers(range(19), ordinals, CFG) == [list(range(19))]  # 19 < 5·4: one bin
    bins = bin_peers(range(20), ordinals, CFG)
    assert bins == [list(range(i, i + 4)) for i in range(0, 20, 4)]
    bins = bin_peers(range(23), ordinals, CFG)  # 23 = 5·4 + 3: first three bins get 5
    assert [len(b) for b in bins] == [5, 5, 5, 4, 4]
    assert [u for b in bins for u in b] == list(range(23))


def test_binning_sorts_by_ordinal_descending_and_ties_by_uid():
    ordinals = {5: 10.0, 3: 10.0, 9: 50.0, 1: -2.0}
    assert bin_peers([1, 3, 5, 9, 12], ordinals, CFG) == [[9, 3, 5, 12, 1]]  # 12 unrated → 0


def test_selection_is_deterministic_and_order_independent():
    peers = list(range(40))
    ordinals = {u: float(u % 7) for u in peers}
    staleness = {u: 1 + u % 5 for u in peers}
    a = select_eval_uids(peers, ordinals, staleness, CFG, window_rng(3, 100, "select"))
    b = select_eval_uids(peers[::-1], ordinals, staleness, CFG, window_rng(3, 100, "select"))
    c = select_eval_uids(peers, ordinals, staleness, CFG, window_rng(3, 101, "select"))
    assert a == b
    assert a != c
    assert len(a) == 4 and len(set(a)) == 4
    assert any(set(a) <= set(bn) for bn in bin_peers(peers, ordinals, CFG))  # from one bin


def test_selection_small_sets():
    assert select_eval_uids([], {}, {}, CFG, window_rng(0, 0, "s")) == []
    assert sorted(select_eval_uids([4, 2], {}, {}, CFG, window_rng(0, 0, "s"))) == [2, 4]


def test_bins_are_picked_uniformly():
    peers = list(range(20))
    ordinals = {u: float(-u) for u in peers}
    counts = np.zeros(5)
    n = 4000
    for w in range(n):
        chosen = select_eval_uids(peers, ordinals, {}, CFG, window_rng(0, w, "select"))
        counts[chosen[0] // 4] += 1
    expected = n / 5
    assert np.all(np.abs(counts - expected) < 4 * math.sqrt(expected * 0.8)), counts


def test_within_bin_sampling_follows_staleness():
    # One bin of 3 with staleness 1, 2, 5 and k = 2 (uids_per_window): inclusion probability of
    # each peer under successive weighted sampling without replacement, computed exactly.
    cfg = dataclasses.replace(CFG, uids_per_window=2)
    w = {0: 1.0, 1: 2.0, 2: 5.0}
    total = sum(w.values())
    incl = {}
    for i in w:
        p = w[i] / total
        for j in w:
            if j != i:
                p += w[j] / total * w[i] / (total - w[j])
        incl[i] = p
    n = 6000
    hits = dict.fromkeys(w, 0)
    for t in range(n):
        for u in select_eval_uids(
            list(w), {}, {u: int(v) for u, v in w.items()}, cfg, window_rng(7, t, "select")
        ):
            hits[u] += 1
    for u in w:
        freq = hits[u] / n
        sd = math.sqrt(incl[u] * (1 - incl[u]) / n)
        assert abs(freq - incl[u]) < 4 * sd, (u, freq, incl[u])
    assert incl[2] > incl[1] > incl[0]


def test_update_staleness():
    got = update_staleness({1: 3, 2: 1, 9: 4}, eval_peers=[1, 2, 3], chosen=[2])
    assert got == {1: 4, 2: 1, 3: 2, 9: 4}


def test_rejects_non_positive_staleness():
    with pytest.raises(ValueError, match="positive"):
        select_eval_uids([1, 2], {}, {1: 0, 2: 1}, CFG, window_rng(0, 0, "s"))


def test_window_rng_streams():
    a = window_rng(1, 5, "select").integers(1 << 30, size=4)
    assert np.array_equal(a, window_rng(1, 5, "select").integers(1 << 30, size=4))
    assert not np.array_equal(a, window_rng(1, 5, "pages").integers(1 << 30, size=4))
    assert not np.array_equal(a, window_rng(2, 5, "select").integers(1 << 30, size=4))
