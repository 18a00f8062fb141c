"""Index-overlap check: overlap fractions, size weighting, blame and penalties."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from gauntlet_jax.config import ValidatorConfig
from gauntlet_jax.validator.evaluation import eval_candidates
from gauntlet_jax.validator.overlap import (
    OverlapFinding,
    apply_overlap_slashes,
    excluded_uids,
    find_overlaps,
    offender_overlaps,
    overlap_matrix,
)
from gauntlet_jax.validator.state import PeerRecord
from gauntlet_jax.validator.window_record import WindowLedger

K = 32
CFG = ValidatorConfig()  # threshold 0.4, ×0.5 below 0.5, reset at 0.5


def random_pair(rng, chunk_shape, chunk_elems=4096):
    """Two payloads whose index sets are disjoint in every chunk."""
    n = int(np.prod(chunk_shape))
    perms = np.stack([rng.permutation(chunk_elems)[: 2 * K] for _ in range(n)])
    a, b = perms[:, :K], perms[:, K:]
    return tuple(x.reshape(*chunk_shape, K).astype(np.int16) for x in (a, b))


def random_payload(rng, chunk_shape, chunk_elems=4096):
    return random_pair(rng, chunk_shape, chunk_elems)[0]


def half_overlapping(rng, base, chunk_elems=4096):
    """Same first half of every chunk's indices as `base`, fresh second half."""
    out = base.copy().reshape(-1, K)
    for row in out:
        fresh = np.setdiff1d(np.arange(chunk_elems), row)
        row[K // 2 :] = rng.choice(fresh, K // 2, replace=False)
    rng.shuffle(out, axis=1)  # order within a chunk must not matter
    return out.reshape(base.shape)


def test_identical_disjoint_half():
    rng = np.random.default_rng(0)
    a, disjoint = random_pair(rng, (3, 2))
    half = half_overlapping(rng, a)
    m = np.asarray(overlap_matrix({"w": np.stack([a, a, disjoint, half])}))
    assert m[0, 1] == 1.0 and m[1, 0] == 1.0
    assert m[0, 2] == 0.0
    assert m[0, 3] == 0.5 and m[3, 0] == 0.5
    assert np.all(np.diag(m) == 1.0)


def test_size_weighting_over_parameters():
    rng = np.random.default_rng(1)
    big_a = random_payload(rng, (6, 4))  # 24 chunks
    small_a, small_b = random_pair(rng, (8,), chunk_elems=64)  # 8 chunks: disjoint here
    big_b = big_a.copy()  # identical on the big parameter
    m = np.asarray(
        overlap_matrix({"big": np.stack([big_a, big_b]), "small": np.stack([small_a, small_b])})
    )
    assert m[0, 1] == pytest.approx(24 / (24 + 8))


def test_matches_a_plain_pairwise_loop():
    rng = np.random.default_rng(2)
    n_peers = 5
    base = random_payload(rng, (4, 3))
    peers = [base] + [random_payload(rng, (4, 3)) for _ in range(2)]
    peers += [half_overlapping(rng, base), half_overlapping(rng, peers[1])]
    stacked = np.stack(peers)
    m = np.asarray(overlap_matrix({"w": stacked}))
    for row_batch in (1, 2, 7):  # the row batching (incl. a ragged last batch) changes nothing
        assert np.array_equal(np.asarray(overlap_matrix({"w": stacked}, row_batch=row_batch)), m)
    for i, j in itertools.product(range(n_peers), repeat=2):
        a, b = stacked[i].reshape(-1, K), stacked[j].reshape(-1, K)
        want = np.mean([np.isin(x, y).sum() / K for x, y in zip(a, b, strict=True)])
        assert m[i, j] == pytest.approx(want, abs=1e-6)


def test_blame_goes_to_the_later_uploader():
    m = np.array([[1.0, 0.45, 0.1], [0.45, 1.0, 0.7], [0.1, 0.7, 1.0]])
    uids = [10, 20, 30]
    stamps = {10: 5.0, 20: 3.0, 30: 4.0}
    found = find_overlaps(uids, m, stamps, threshold=0.4)
    assert found == [OverlapFinding(10, 20, 0.45, 10), OverlapFinding(20, 30, 0.7, 30)]
    masked = find_overlaps(uids, m, stamps, threshold=0.4, valid=[True, True, False])
    assert masked == [OverlapFinding(10, 20, 0.45, 10)]  # 30 is a placeholder row: skipped
    tie = find_overlaps(uids, m, {10: 1.0, 20: 1.0, 30: 9.0}, threshold=0.4)
    assert tie[0].offender == 10  # exact tie: the pair's first, as the reference's >=
    assert offender_overlaps([OverlapFinding(1, 2, 0.45, 2), OverlapFinding(3, 2, 0.6, 2)]) == {
        2: 0.6
    }


def test_penalties():
    rated = {"mu": 30.0, "sigma": 2.0, "eval_count": 7, "sync": 1.0, "binary": 1.0}
    peers = {
        1: PeerRecord(uid=1, final=8.0, bma=0.4, **rated),
        2: PeerRecord(uid=2, final=8.0, bma=0.4, **rated),
        3: PeerRecord(uid=3, final=-1.0, bma=0.2, **rated),
    }
    findings = [
        OverlapFinding(9, 1, 0.45, 1),  # below 0.5: halved
        OverlapFinding(9, 2, 0.55, 2),  # at or above 0.5: reset
        OverlapFinding(9, 3, 0.45, 3),  # negative final: left, but counted
    ]
    out = apply_overlap_slashes(peers, findings, window=100, cfg=CFG)
    assert (out[1].final, out[1].bma, out[1].mu) == (4.0, 0.2, 30.0)
    assert (out[3].final, out[3].bma, out[3].mu) == (-1.0, 0.2, 30.0)
    # A caught copier starts over as a newcomer: no rating to come back to when it stops.
    assert out[2] == PeerRecord(uid=2, slash_counts={"overlap": 1})
    assert not out[2].rated
    assert all(r.slash_counts == {"overlap": 1} for r in out.values())
    assert all(r.excluded_until is None for r in out.values())  # all below overlap_exclude_at


def test_exclusion_above_exclude_at():
    assert CFG.overlap_exclude_windows == 200  # the later reference's naughty-peer timeout
    peers = {2: PeerRecord(uid=2, mu=30.0, sigma=2.0, final=8.0, bma=0.4)}
    out = apply_overlap_slashes(peers, [OverlapFinding(1, 2, 0.65, 2)], window=100, cfg=CFG)
    excluded_until_301 = dict(out)
    assert out[2].excluded_until == 301 and not out[2].rated and out[2].final == 0.0
    assert excluded_uids(out, 300) == {2}
    assert excluded_uids(out, 301) == set()
    out = apply_overlap_slashes({}, [OverlapFinding(1, 2, 0.55, 2)], window=100, cfg=CFG)
    assert out[2].excluded_until is None  # below overlap_exclude_at
    off = dataclasses.replace(CFG, overlap_exclude_windows=0)
    out = apply_overlap_slashes({}, [OverlapFinding(1, 2, 0.65, 2)], window=100, cfg=off)
    assert out[2].excluded_until is None

    # An excluded peer is neither screened nor evaluated, whichever way the window chooses.
    ledger = WindowLedger.open(excluded_until_301, [1, 2, 3])
    assert eval_candidates(300, [3, 2, 1], [1, 2, 3], ledger) == [3, 1]
    assert eval_candidates(301, [3, 2, 1], [1, 2, 3], ledger) == [3, 2, 1]


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="does not match 3 uids"):
        find_overlaps([1, 2, 3], np.eye(2), {}, 0.4)
