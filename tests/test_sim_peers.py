"""Simulated peer behaviours: spec parsing, compute shares, timing, and what each one uploads."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from _pytrees import abstract_params, plan_for, random_tree

from gauntlet_jax.compress import codec
from gauntlet_jax.config import Config
from gauntlet_jax.errors import ConfigError, InvalidPayload
from gauntlet_jax.protocol.momentum import init_momentum, momentum_step
from gauntlet_jax.sim import peers as sp
from gauntlet_jax.sim.forged import MALFORMED_FAULTS, corrupt_payload
from gauntlet_jax.sim.kinds import PeerGroup, build_peers, parse_peers

PLAN = plan_for()
CAP = codec.max_payload_bytes(PLAN)
WINDOW = 12


def _payload(uid: int, seed: int = 0) -> bytes:
    grads = random_tree(seed)
    sent = momentum_step(init_momentum(grads), grads, 0.01, 0, Config(), PLAN)
    return codec.encode_payload(uid, WINDOW, sent.idx, sent.vals, PLAN)


def _ctx(cfg: Config, **kw) -> sp.UploadContext:
    args = dict(
        window=WINDOW,
        cfg=cfg,
        plan=PLAN,
        abstract=abstract_params(),
        cap=CAP,
        honest_uids=[1, 2],
        rng=np.random.default_rng(0),
    )
    return sp.UploadContext(**(args | kw))


def _decode(data: bytes, uid: int) -> codec.DecodedPayload:
    return codec.decode_payload(data, PLAN, expected_uid=uid, expected_window=WINDOW, max_bytes=CAP)


def _same(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_parse_and_build_peers() -> None:
    groups = parse_peers("honest:2, stale@2:1,noise,sybil:3")
    assert groups == [
        PeerGroup("honest", 2),
        PeerGroup("stale", 1, 2.0),
        PeerGroup("noise", 1),
        PeerGroup("sybil", 3),
    ]
    peers = build_peers(groups)
    assert [(p.uid, p.kind) for p in peers] == [
        (1, "honest"),
        (2, "honest"),
        (3, "stale"),
        (4, "noise"),
        (5, "sybil"),
        (6, "sybil"),
        (7, "sybil"),
    ]
    assert peers[2].lag == 2 and peers[0].lag == 0
    assert build_peers(parse_peers("stale"))[0].lag == 4  # default beyond the threshold
    for bad in ("", "honest:0", "wizard:1", "honest::2", "honest:x"):
        with pytest.raises(ConfigError):
            parse_peers(bad)
    with pytest.raises(ConfigError, match="takes no"):
        build_peers(parse_peers("honest@2:1"))


def test_compute_shares(tiny_config: Config) -> None:
    m = tiny_config.train.max_micro_batches
    sybils = build_peers(parse_peers("sybil:3"))
    shares = [p.micro_batches(tiny_config) for p in sybils]
    assert sum(shares) == m and max(shares) - min(shares) <= 1  # one honest peer's compute
    heavy = build_peers(parse_peers("heavy@2"))[0]
    assert heavy.micro_batches(tiny_config) == 2 * m
    assert build_peers(parse_peers("honest"))[0].micro_batches(tiny_config) == m


def test_upload_timing(tiny_config: Config) -> None:
    put = tiny_config.protocol.put_window_s
    rng = np.random.default_rng(1)
    honest, late, copycat = build_peers(parse_peers("honest,late,copycat"))
    for _ in range(50):
        h, lt, c = (p.upload_delay(tiny_config, rng) for p in (honest, late, copycat))
        assert 0 < h <= 0.4 * put < c <= put < lt
    assert copycat.copies and not honest.copies


def test_copycat_re_encodes_the_victims_payload_under_its_own_uid(tiny_config: Config) -> None:
    victim = _payload(1)
    copycat, noisy = build_peers(parse_peers("copycat,copycat_noisy"), first_uid=5)
    ctx = _ctx(tiny_config, uploaded={1: victim})
    original = _decode(victim, 1)
    copy = _decode(copycat.payload(None, ctx), 5)
    assert _same(copy.idx, original.idx) and _same(copy.vals, original.vals)
    blurred = _decode(noisy.payload(None, ctx), 6)
    assert _same(blurred.idx, original.idx) and not _same(blurred.vals, original.vals)
    for a, b in zip(jax.tree.leaves(blurred.vals), jax.tree.leaves(original.vals), strict=True):
        rms = np.sqrt(np.mean(b * b))
        assert 0 < np.sqrt(np.mean((a - b) ** 2)) < 0.2 * rms
    assert copycat.payload(None, _ctx(tiny_config)) is None  # nothing to copy yet
    pinned = build_peers(parse_peers("copycat@2"))[0]
    assert pinned.victim(ctx) == 2


def test_free_rider_and_noise_upload_valid_payloads(tiny_config: Config) -> None:
    rider, noise = build_peers(parse_peers("free_rider,noise"), first_uid=3)
    assert not rider.trains and not noise.trains
    assert rider.payload(None, _ctx(tiny_config)) is None  # no aggregate before the first step
    signs = jax.tree.map(lambda x: np.sign(x).astype(np.int8), random_tree(3))
    got = _decode(rider.payload(None, _ctx(tiny_config, last_signs=signs)), 3)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(got.vals))
    a = _decode(noise.payload(None, _ctx(tiny_config)), 4)
    b = _decode(noise.payload(None, _ctx(tiny_config)), 4)
    assert _same(a.idx, b.idx) and _same(a.vals, b.vals)  # deterministic in (uid, window)


@pytest.mark.parametrize("fault", MALFORMED_FAULTS)
def test_every_malformation_is_rejected(fault: str) -> None:
    good = _payload(9)
    bad = corrupt_payload(good, fault, PLAN, CAP, np.random.default_rng(0))
    assert bad != good
    with pytest.raises(InvalidPayload) as info:
        _decode(bad, 9)
    assert info.value.uid == 9


def test_malformed_rotates_through_every_fault(tiny_config: Config) -> None:
    peer = build_peers(parse_peers("malformed"), first_uid=9)[0]
    good = _payload(9)
    faults = set()
    for w in range(len(MALFORMED_FAULTS)):
        data = peer.payload(good, _ctx(tiny_config, window=w))
        assert data is not None
        faults.add(MALFORMED_FAULTS[w % len(MALFORMED_FAULTS)])
    assert faults == set(MALFORMED_FAULTS)


def test_lazy_trains_on_other_pages(tiny_config: Config) -> None:
    from gauntlet_jax.data.corpus import open_corpus
    from gauntlet_jax.data.pages import batches_for

    corpus = open_corpus(tiny_config.data, progress=False)
    lazy = build_peers(parse_peers("lazy"), first_uid=3)[0]
    honest = build_peers(parse_peers("honest"), first_uid=3)[0]
    own = batches_for(corpus, 3, 5, tiny_config)
    assert np.array_equal(honest.training_batches(corpus, tiny_config, 5), own)
    other = lazy.training_batches(corpus, tiny_config, 5)
    assert other.shape[1:] == own.shape[1:] and not np.array_equal(other[:1], own[:1])
