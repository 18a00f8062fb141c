"""Attackers who adapt (sim.adaptive): each uploads what it claims to."""

from __future__ import annotations

import jax
import numpy as np
from _pytrees import abstract_params, plan_for, random_tree

from gauntlet_jax.compress import codec
from gauntlet_jax.config import Config
from gauntlet_jax.protocol.momentum import init_momentum, momentum_step
from gauntlet_jax.sim import peers as sp
from gauntlet_jax.sim.adaptive import alie_values, honest_spread
from gauntlet_jax.sim.kinds import build_peers, parse_peers

PLAN = plan_for()
CAP = codec.max_payload_bytes(PLAN)
WINDOW = 7


def _payload(uid: int, seed: int) -> bytes:
    grads = random_tree(seed)
    sent = momentum_step(init_momentum(grads), grads, 0.01, 0, Config(), PLAN)
    return codec.encode_payload(uid, WINDOW, sent.idx, sent.vals, PLAN)


def _decode(data: bytes, uid: int) -> codec.DecodedPayload:
    return codec.decode_payload(data, PLAN, expected_uid=uid, expected_window=WINDOW, max_bytes=CAP)


def _ctx(cfg: Config, seed: int = 0, **kw) -> sp.UploadContext:
    args = dict(
        window=WINDOW,
        cfg=cfg,
        plan=PLAN,
        abstract=abstract_params(),
        cap=CAP,
        honest_uids=[1, 2, 3],
        rng=np.random.default_rng(seed),
    )
    return sp.UploadContext(**(args | kw))


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_kinds_are_registered_with_their_defaults() -> None:
    peers = build_peers(parse_peers("alie:3,echo,sleeper,sleeper_noise@0.2,data_skipper@0.5"))
    assert [(p.kind, p.param) for p in peers] == [
        ("alie", 1.0),
        ("alie", 1.0),
        ("alie", 1.0),
        ("echo", 0.5),
        ("sleeper", 0.05),
        ("sleeper_noise", 0.2),
        ("data_skipper", 0.5),
    ]
    alie, echo = peers[0], peers[3]
    assert alie.trains and alie.copies  # trains, then uploads after the honest peers
    assert not echo.trains


def test_echo_uploads_the_last_aggregate_plus_noise(tiny_config: Config) -> None:
    echo, rider = build_peers(parse_peers("echo@0.5,free_rider"), first_uid=4)
    signs = jax.tree.map(lambda x: np.sign(x).astype(np.int8), random_tree(3))
    assert echo.payload(None, _ctx(tiny_config)) is None  # no aggregate before the first step
    got = echo.payload(None, _ctx(tiny_config, seed=5, last_signs=signs))
    rng = np.random.default_rng(5)
    noisy = jax.tree.map(
        lambda s: (s.astype(np.float32) + 0.5 * rng.standard_normal(s.shape)).astype(np.float32),
        signs,
    )
    want = _decode(echo.encode_dense(noisy, _ctx(tiny_config)), 4)
    for a, b in zip(_leaves(_decode(got, 4)), _leaves(want), strict=True):
        assert np.array_equal(a, b)
    plain = _decode(rider.payload(None, _ctx(tiny_config, last_signs=signs)), 5)
    mine = _decode(got, 4)
    assert any(
        not np.array_equal(a, b) for a, b in zip(_leaves(mine.idx), _leaves(plain.idx), strict=True)
    )


def test_sleeper_turns_only_when_rated_high_and_gathered(tiny_config: Config) -> None:
    sleeper, loud = build_peers(parse_peers("sleeper@0.1,sleeper_noise@0.1"), first_uid=2)
    own = _payload(2, seed=1)
    low = _ctx(tiny_config, weights={2: 0.05, 3: 0.05}, gather=[1, 2, 3])
    assert sleeper.payload(own, low) == own  # rated low: honest
    unseen = _ctx(tiny_config, weights={2: 0.5}, gather=[1, 3])
    assert sleeper.payload(own, unseen) == own  # not gathered: nothing to gain
    high = _ctx(tiny_config, weights={2: 0.5, 3: 0.5}, gather=[1, 2, 3])
    honest, flipped = _decode(own, 2), _decode(sleeper.payload(own, high), 2)
    for a, b in zip(_leaves(flipped.idx), _leaves(honest.idx), strict=True):
        assert np.array_equal(a, b)
    for a, b in zip(_leaves(flipped.vals), _leaves(honest.vals), strict=True):
        assert np.array_equal(a, -b)
    noise = _decode(loud.payload(_payload(3, seed=2), high), 3)
    assert not any(
        np.array_equal(a, b) for a, b in zip(_leaves(noise.idx), _leaves(honest.idx), strict=True)
    )


def test_alie_shifts_by_z_sigma_against_the_mean_on_its_own_indices(tiny_config: Config) -> None:
    honest = {u: _payload(u, seed=10 + u) for u in (1, 2, 3)}
    a1, a2 = build_peers(parse_peers("alie@1.5:2"), first_uid=4)
    ctx = _ctx(tiny_config, uploaded=dict(honest))
    own = _payload(4, seed=20)
    out = _decode(a1.payload(own, ctx), 4)
    mine = _decode(own, 4)
    group = [_decode(d, u) for u, d in honest.items()] + [mine]
    spread = honest_spread(group, PLAN)
    assert a2.payload(_payload(5, seed=21), ctx) is not None
    assert ctx.cache["alie_spread"] is not None  # computed once per window for the group
    for lp, idx, got, base, (mu, sd) in zip(
        PLAN.leaves,
        _leaves(out.idx),
        _leaves(out.vals),
        _leaves(mine.vals),
        spread,
        strict=True,
    ):
        assert np.array_equal(idx, np.asarray(PLAN.flatten(mine.idx)[PLAN.leaves.index(lp)]))
        flat = idx.reshape(-1, lp.k).astype(np.int64)
        mu_at = np.take_along_axis(mu, flat, -1).reshape(idx.shape)
        sd_at = np.take_along_axis(sd, flat, -1).reshape(idx.shape)
        norm = np.sqrt(np.sum(base.astype(np.float64) ** 2, -1, keepdims=True))
        shift = (got - base) / norm
        np.testing.assert_allclose(shift, -1.5 * sd_at * np.sign(mu_at), atol=1e-6)
        # Inside the spread: no coefficient moves more than z σ from the peer's own value, and
        # the shift lowers the inner product with the honest mean (the bias it aims for).
        assert np.all(np.abs(shift) <= 1.5 * sd_at + 1e-6)
        assert np.sum(got / norm * mu_at) < np.sum(base / norm * mu_at)
    zero = alie_values(mine, spread, 0.0, PLAN)
    for a, b in zip(_leaves(zero), _leaves(mine.vals), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_data_skipper_trains_on_random_pages_for_its_fraction(tiny_config: Config) -> None:
    from gauntlet_jax.data.corpus import open_corpus
    from gauntlet_jax.data.pages import batches_for

    corpus = open_corpus(tiny_config.data, progress=False)
    half = build_peers(parse_peers("data_skipper@0.5"), 3)[0]
    whole = build_peers(parse_peers("data_skipper"), 3)[0]
    n = tiny_config.train.max_micro_batches
    own = batches_for(corpus, 3, 5, tiny_config)
    skipped = sp.Lazy(3, None, 0, 1).training_batches(corpus, tiny_config, 5)
    got = half.training_batches(corpus, tiny_config, 5)
    assert np.array_equal(got, np.concatenate([skipped[: n // 2], own[n // 2 : n]]))
    all_random = whole.training_batches(corpus, tiny_config, 5)
    assert np.array_equal(all_random, skipped[:n])
