"""The shared outer step: bit-equal to an independent int64 reference, close to the float
algorithm it stands for, masks, modes, packing, determinism."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
from pathlib import Path

import _exact_reference
import jax
import numpy as np
import pytest
import scipy.fft
from _pytrees import plan_for, random_tree

from gauntlet_jax.config import load_config
from gauntlet_jax.errors import InvalidPayload
from gauntlet_jax.protocol import outer

PLAN = plan_for()
CFG = load_config("tiny")
CFG_TENSOR = load_config("tiny", ["protocol.normalise=tensor"])


def random_payloads(n_peers: int, seed: int, overlap: bool = True):
    """Stacked payloads with distinct indices per chunk; with `overlap`, peers share positions."""
    rng = np.random.default_rng(seed)
    idx_leaves, val_leaves = [], []
    for lp in PLAN.leaves:
        pool = min(lp.chunk_elems, 2 * lp.k) if overlap else lp.chunk_elems
        idx = np.stack(
            [rng.permutation(pool)[: lp.k] for _ in range(n_peers * lp.n_chunks)]
        ).astype(np.int16)
        idx_leaves.append(idx.reshape(n_peers, *lp.payload_shape))
        vals = rng.standard_normal((n_peers, *lp.payload_shape)) * rng.uniform(
            0.1, 10, n_peers
        ).reshape(-1, *[1] * len(lp.payload_shape))
        val_leaves.append(vals.astype(np.float32))
    return PLAN.unflatten(idx_leaves), PLAN.unflatten(val_leaves)


def reference_update(idx, vals, mask, mode: str) -> dict[str, np.ndarray]:
    """GAUNTLET.md §1.6 in float64 numpy: per-peer L2 normalisation, concatenate all peers along
    the top-k axis, scatter-mean, then scipy's orthonormal inverse DCT per block."""
    out = {}
    for lp, i, v in zip(PLAN.leaves, PLAN.flatten(idx), PLAN.flatten(vals), strict=True):
        v = v.astype(np.float64)
        if mode == "chunk":
            v = v / (np.linalg.norm(v, axis=-1, keepdims=True) + 1e-8)
        else:
            axes = tuple(range(1 + lp.n_batch, v.ndim))
            v = v / (np.sqrt(np.sum(v * v, axis=axes, keepdims=True)) + 1e-8)
        keep = np.flatnonzero(mask)
        cat_i = (
            np.concatenate([i[p].reshape(lp.n_chunks, lp.k) for p in keep], axis=1)
            if len(keep)
            else np.zeros((lp.n_chunks, 0), int)
        )
        cat_v = (
            np.concatenate([v[p].reshape(lp.n_chunks, lp.k) for p in keep], axis=1)
            if len(keep)
            else np.zeros((lp.n_chunks, 0))
        )
        sums = np.zeros((lp.n_chunks, lp.chunk_elems))
        counts = np.zeros((lp.n_chunks, lp.chunk_elems))
        rows = np.repeat(np.arange(lp.n_chunks)[:, None], cat_i.shape[1], axis=1)
        np.add.at(sums, (rows, cat_i.astype(int)), cat_v)
        np.add.at(counts, (rows, cat_i.astype(int)), 1.0)
        coeffs = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        coeffs = coeffs.reshape(-1, *lp.chunks)
        blocks = scipy.fft.idctn(coeffs, axes=tuple(range(1, 1 + len(lp.chunks))), norm="ortho")
        blocks = blocks.reshape(lp.coeff_shape)
        out[lp.name] = _unblock(blocks, lp)
    return out


def _unblock(blocks: np.ndarray, lp) -> np.ndarray:
    """(…, g1, g2, c1, c2) → (…, g1·c1, g2·c2) (and the 1-D analogue)."""
    b = lp.n_batch
    if len(lp.chunks) == 1:
        return blocks.reshape(lp.shape)
    perm = (*range(b), b, b + 2, b + 1, b + 3)
    return blocks.transpose(perm).reshape(lp.shape)


def _named(tree) -> dict[str, np.ndarray]:
    return {n: np.array(x) for n, x in zip(PLAN.names, PLAN.flatten(tree), strict=True)}


@pytest.mark.parametrize("cfg", [CFG, CFG_TENSOR], ids=["chunk", "tensor"])
def test_merged_update_equals_the_int64_reference_bit_for_bit(cfg) -> None:
    idx, vals = random_payloads(4, seed=0)
    mask = np.array([True, True, False, True])
    mode = cfg.protocol.normalise
    got = _named(outer.merged_update(idx, vals, mask, cfg, PLAN))
    want = _exact_reference.merged_update(PLAN, idx, vals, mask, mode)
    signs = _named(outer.aggregate_sign(idx, vals, mask, cfg, PLAN))
    for name in want:
        np.testing.assert_array_equal(got[name].astype(np.int64), want[name], err_msg=name)
        assert signs[name].dtype == np.int8
        np.testing.assert_array_equal(signs[name], np.sign(want[name]), err_msg=name)


@pytest.mark.parametrize("cfg", [CFG, CFG_TENSOR], ids=["chunk", "tensor"])
def test_exact_signs_are_those_of_the_float_algorithm_except_near_zero(cfg) -> None:
    """GAUNTLET.md §1.6 in float64 (normalise, scatter-mean, orthonormal IDCT): the integer path
    keeps every sign that is not within rounding of zero."""
    idx, vals = random_payloads(4, seed=0)
    mask = np.array([True, True, False, True])
    ideal = reference_update(idx, vals, mask, cfg.protocol.normalise)
    signs = _named(outer.aggregate_sign(idx, vals, mask, cfg, PLAN))
    flipped = total = 0
    for name, a in ideal.items():
        clear = np.abs(a) > 0.02 * np.abs(a).max()
        flipped += int(np.sum(signs[name][clear] != np.sign(a[clear])))
        total += int(clear.sum())
        assert np.mean(signs[name] == np.sign(a)) > 0.98, name  # measured ≥ 0.984
    assert flipped == 0, f"{flipped} of {total} clear signs flipped"


def test_modes_differ_and_masked_peers_do_not_count() -> None:
    idx, vals = random_payloads(3, seed=1)
    a = _named(outer.merged_update(idx, vals, [True, True, True], CFG, PLAN))
    b = _named(outer.merged_update(idx, vals, [True, True, True], CFG_TENSOR, PLAN))
    assert any(not np.allclose(a[n], b[n]) for n in a)
    # A masked peer's values (even NaN) change nothing.
    poisoned = jax.tree.map(lambda v: np.concatenate([v[:2], np.full_like(v[2:], np.nan)]), vals)
    masked = outer.aggregate_sign(idx, poisoned, [True, True, False], CFG, PLAN)
    only_two = outer.aggregate_sign(
        jax.tree.map(lambda i: i[:2], idx),
        jax.tree.map(lambda v: v[:2], vals),
        [True, True],
        CFG,
        PLAN,
    )
    for x, y in zip(jax.tree.leaves(masked), jax.tree.leaves(only_two), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_shared_position_gets_the_mean_of_normalised_values() -> None:
    lp = PLAN.leaves[PLAN.names.index("final_norm")]
    idx, vals = random_payloads(2, seed=2, overlap=False)
    i, v = [
        np.asarray(x).copy()
        for x in (
            PLAN.flatten(idx)[PLAN.names.index("final_norm")],
            PLAN.flatten(vals)[PLAN.names.index("final_norm")],
        )
    ]
    i[:] = np.arange(lp.k)  # both peers send positions 0..31
    v[0], v[1] = 1.0, -3.0  # normalised: +1/√32 and −1/√32 → mean 0 ...
    v[1, ..., 0] = 3.0  # ... except position 0, where both are +1/√32
    new_idx = PLAN.unflatten(
        [i if n == "final_norm" else x for n, x in zip(PLAN.names, PLAN.flatten(idx), strict=True)]
    )
    new_vals = PLAN.unflatten(
        [v if n == "final_norm" else x for n, x in zip(PLAN.names, PLAN.flatten(vals), strict=True)]
    )
    a = _named(outer.merged_update(new_idx, new_vals, [True, True], CFG, PLAN))["final_norm"]
    want = _exact_reference.merged_update(PLAN, new_idx, new_vals, np.array([True, True]), "chunk")
    np.testing.assert_array_equal(a, want["final_norm"])
    # Only position 0 survives the mean (+x and −x average to exactly zero): A is the DC basis
    # function of each chunk, a positive constant.
    blocks = a.reshape(-1, lp.chunks[0])
    assert np.all(blocks > 0) and np.all(blocks == blocks[:, :1])


def test_outer_step_applies_sign_with_weight_decay() -> None:
    params = random_tree(3)
    idx, vals = random_payloads(3, seed=3)
    mask = [True, False, True]
    signs = outer.aggregate_sign(idx, vals, mask, CFG, PLAN)
    lr = 0.01
    new = outer.outer_step(params, idx, vals, mask, lr, CFG, PLAN)
    for p, s, n in zip(
        jax.tree.leaves(params), jax.tree.leaves(signs), jax.tree.leaves(new), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(n), p - np.float32(lr) * np.asarray(s, np.float32))
    cfg_wd = load_config("tiny", ["protocol.weight_decay=0.1"])
    new = outer.outer_step(params, idx, vals, mask, lr, cfg_wd, PLAN)
    for p, s, n in zip(
        jax.tree.leaves(params), jax.tree.leaves(signs), jax.tree.leaves(new), strict=True
    ):
        # float32 numpy, one subtraction at a time, equals the jitted step (fused on CPU).
        want = p.copy()
        for term in outer.decay_terms(lr, 0.1):
            want = want - p * term
        want = want - np.float32(lr) * np.asarray(s, np.float32)
        np.testing.assert_array_equal(np.asarray(n), want)
        np.testing.assert_allclose(n, p * (1 - lr * 0.1) - lr * np.asarray(s), rtol=1e-5, atol=1e-7)
    # Nobody valid: A = 0, sign 0, parameters unchanged.
    same = outer.outer_step(params, idx, vals, [False] * 3, lr, CFG, PLAN)
    for p, n in zip(jax.tree.leaves(params), jax.tree.leaves(same), strict=True):
        np.testing.assert_array_equal(np.asarray(n), p)


@pytest.mark.parametrize("lr", [1e-5, 3e-4, 2e-3, 0.01, 0.1])
def test_decay_terms_are_powers_of_two_close_to_the_decay(lr) -> None:
    terms = outer.decay_terms(lr, 0.1)
    nonzero = terms[terms != 0]
    assert np.all(np.exp2(np.round(np.log2(np.abs(nonzero)))) == np.abs(nonzero))
    assert abs(float(np.sum(terms.astype(np.float64))) / (lr * 0.1) - 1) < 0.02
    assert not np.any(outer.decay_terms(lr, 0.0))


def test_single_peer_sign_matches_a_gather_of_one_and_vmaps() -> None:
    idx, vals = random_payloads(3, seed=4)
    batched = jax.vmap(outer.single_peer_sign, in_axes=(0, 0, None))(idx, vals, PLAN)
    for p in range(3):
        one_i = jax.tree.map(lambda x, p=p: x[p : p + 1], idx)
        one_v = jax.tree.map(lambda x, p=p: x[p : p + 1], vals)
        agg = outer.aggregate_sign(one_i, one_v, [True], CFG, PLAN)
        single = outer.single_peer_sign(
            jax.tree.map(lambda x, p=p: x[p], idx), jax.tree.map(lambda x, p=p: x[p], vals), PLAN
        )
        for a, s, b in zip(
            jax.tree.leaves(agg), jax.tree.leaves(single), jax.tree.leaves(batched), strict=True
        ):
            np.testing.assert_array_equal(np.asarray(s), np.asarray(a))
            np.testing.assert_array_equal(np.asarray(s), np.asarray(b)[p])


def test_pack_unpack_signs_round_trip_with_zeros() -> None:
    idx, vals = random_payloads(2, seed=5)
    signs = _named(outer.aggregate_sign(idx, vals, [True, True], CFG, PLAN))
    signs["final_norm"][:5] = 0
    tree = PLAN.unflatten([signs[n] for n in PLAN.names])
    packed = outer.pack_signs(tree, PLAN)
    # A zero plane exactly for the leaves with an exact zero (integer A can be 0 anywhere).
    with_zeros = {f"{n}.zero" for n in PLAN.names if np.any(signs[n] == 0)}
    assert "final_norm.zero" in with_zeros
    assert set(packed) == {f"{n}.pos" for n in PLAN.names} | with_zeros
    assert packed["layers.w.pos"].nbytes == 3 * 128 * 64 // 8
    back = _named(outer.unpack_signs(packed, PLAN))
    for n in PLAN.names:
        np.testing.assert_array_equal(back[n], signs[n])
    with pytest.raises(InvalidPayload, match="malformed aggregate"):
        outer.unpack_signs({k: v for k, v in packed.items() if k != "embed.pos"}, PLAN)
    with pytest.raises(InvalidPayload, match="malformed aggregate"):
        outer.unpack_signs(packed | {"embed.pos": packed["embed.pos"][:-1]}, PLAN)
    # Replaying the unpacked aggregate is bit-identical to the live outer step.
    params = random_tree(6)
    live = outer.outer_step(params, idx, vals, [True, True], 0.01, CFG, PLAN)
    plain = _named(outer.aggregate_sign(idx, vals, [True, True], CFG, PLAN))
    replay = outer.apply_sign(
        params,
        outer.unpack_signs(
            outer.pack_signs(PLAN.unflatten([plain[n] for n in PLAN.names]), PLAN), PLAN
        ),
        0.01,
        CFG,
    )
    for a, b in zip(jax.tree.leaves(live), jax.tree.leaves(replay), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


_DETERMINISM_SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    sys.path.insert(0, sys.argv[1])
    import jax, numpy as np
    from test_outer import CFG, PLAN, random_payloads
    from _pytrees import random_tree
    from gauntlet_jax.protocol import outer
    idx, vals = random_payloads(5, seed=7)
    new = outer.outer_step(random_tree(8), idx, vals, [True, True, False, True, True], 3e-3, CFG, PLAN)
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(new):
        h.update(np.asarray(leaf).tobytes())
    print(h.hexdigest())
    """
)


def test_outer_step_is_bit_identical_across_processes() -> None:
    tests_dir = str(Path(__file__).parent)
    root = str(Path(__file__).parent.parent)
    env = {"JAX_PLATFORMS": "cpu", "PYTHONPATH": root, "PATH": "/usr/bin:/bin"}
    digests = [
        subprocess.run(
            [sys.executable, "-c", _DETERMINISM_SCRIPT, tests_dir],
            capture_output=True,
            text=True,
            check=True,
            env=env,
            timeout=300,
        ).stdout.strip()
        for _ in range(2)
    ]
    idx, vals = random_payloads(5, seed=7)
    new = outer.outer_step(
        random_tree(8), idx, vals, [True, True, False, True, True], 3e-3, CFG, PLAN
    )
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(new):
        h.update(np.asarray(leaf).tobytes())
    assert digests[0] == digests[1] == h.hexdigest()


@pytest.mark.parametrize("cfg", [CFG, CFG_TENSOR], ids=["chunk", "tensor"])
def test_peer_norms_do_not_matter_so_clipping_to_the_median_adds_nothing(cfg) -> None:
    """Issue 17: Templar's last release clips each peer to the median norm before the merge.
    Here every peer is L2-normalised in fixed point first, so a peer that inflates its norm
    gains nothing: ×2^12 leaves the merge bit-identical, ×1000 moves it only by the fixed
    point's rounding (≤ 1 % of the leaf's largest |A|). Clipping would be a no-op."""
    idx, vals = random_payloads(4, seed=3)
    mask = np.array([True, True, True, True])
    base = _named(outer.merged_update(idx, vals, mask, cfg, PLAN))
    for factor, tolerance in ((2.0**12, 0.0), (1000.0, 0.01)):
        loud = jax.tree.map(lambda v: v.copy(), vals)
        for leaf in jax.tree.leaves(loud):
            leaf[1] *= np.float32(factor)
        got = _named(outer.merged_update(idx, loud, mask, cfg, PLAN))
        for name in base:
            worst = np.max(np.abs(got[name] - base[name]))
            assert worst <= tolerance * np.max(np.abs(base[name])), f"{name} ×{factor}"


def test_trimmed_merge_is_exact_order_free_and_drops_the_extremes() -> None:
    """The robust merge (`protocol.merge_trim`): per coefficient, the int32 sums and counts are
    those of a numpy sort-and-trim of the peers that sent it; peer order changes no bit; trim 0
    is the plain merge."""
    from gauntlet_jax.compress import topk

    idx, vals = random_payloads(5, seed=4)
    mask = np.array([True, True, True, False, True])
    lp = PLAN.leaves[0]
    i_P, v_P = np.asarray(PLAN.flatten(idx)[0]), np.asarray(PLAN.flatten(vals)[0])
    units = np.asarray(fixedpoint_units(v_P, lp)) * mask.reshape(-1, *[1] * (v_P.ndim - 1))
    sums, counts = outer._trimmed_sums(i_P, units, mask.astype(np.int32), lp, 1)
    dense = np.full((5, lp.n_chunks, lp.chunk_elems), np.nan)
    for p in np.flatnonzero(mask):
        rows = np.arange(lp.n_chunks)[:, None]
        dense[p, rows, i_P[p].reshape(lp.n_chunks, lp.k)] = units[p].reshape(lp.n_chunks, lp.k)
    want_sums = np.zeros(dense.shape[1:], np.int64)
    want_counts = np.zeros(dense.shape[1:], np.int64)
    for c, e in zip(*np.nonzero(~np.all(np.isnan(dense), axis=0)), strict=True):
        sent = np.sort(dense[:, c, e][~np.isnan(dense[:, c, e])])
        cut = min(1, (len(sent) - 1) // 2)
        kept = sent[cut : len(sent) - cut]
        want_sums[c, e], want_counts[c, e] = kept.sum(), len(kept)
    shape = topk.chunk_zeros(lp).shape
    np.testing.assert_array_equal(np.asarray(sums), want_sums.reshape(shape))
    np.testing.assert_array_equal(np.asarray(counts), want_counts.reshape(shape))

    trimmed = load_config("tiny", ["protocol.merge_trim=1"])
    got = _named(outer.merged_update(idx, vals, mask, trimmed, PLAN))
    order = [4, 2, 0, 3, 1]
    shuffled = (jax.tree.map(lambda x: x[order], idx), jax.tree.map(lambda x: x[order], vals))
    again = _named(outer.merged_update(*shuffled, mask[order], trimmed, PLAN))
    plain = _named(outer.merged_update(idx, vals, mask, CFG, PLAN))
    assert any(not np.array_equal(got[n], plain[n]) for n in got)
    for name in got:
        np.testing.assert_array_equal(got[name], again[name], err_msg=name)


def fixedpoint_units(vals_P: np.ndarray, lp) -> jax.Array:
    from gauntlet_jax.compress import fixedpoint

    return fixedpoint.normalise_fixed(vals_P, "chunk", lp.n_batch, lp.k, int(np.prod(lp.grid)))
