"""A node that catches up ends by comparing its θ fingerprint with the one the lead validator
published in its last aggregate (issue 15, part 3): equal after an honest replay; a lead whose
fingerprint disagrees is reported as an error, never a crash; a malformed fingerprint makes the
aggregate unusable (the window is rebuilt from payloads); an aggregate without one cannot tell."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gauntlet_jax.chain.keys import dev_hotkey
from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.config import Config, with_overrides
from gauntlet_jax.localchain import create_network
from gauntlet_jax.node.startup import Node, new_replica
from gauntlet_jax.protocol import names, outer
from gauntlet_jax.protocol.catchup import AggregateUnavailable, encode_aggregate, fetch_aggregate
from gauntlet_jax.validator.publish import publish_aggregate

START, END = 3, 6


def random_signs(window: int, plan: Any) -> Any:
    rng = np.random.default_rng(window)
    return plan.unflatten(
        [rng.integers(-1, 2, size=lp.shape).astype(np.int8) for lp in plan.leaves]
    )


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory, tiny_config: Config) -> dict[str, Any]:
    """A lead validator (uid 0) that applied and published windows START … END − 1."""
    tmp = tmp_path_factory.mktemp("catchup")
    cfg = with_overrides(
        tiny_config,
        [f"chain.url=sqlite:///{tmp}/chain.db", f"storage.bucket={tmp}/buckets/{{hotkey}}"],
    )
    create_network(cfg, 2, force=True, manual_clock=True)
    lead_chain = LocalChain(tmp / "chain.db", dev_hotkey(0).ss58_address)
    lead = Node.connect(cfg, "lead", lead_chain)
    replica = new_replica(cfg, START)
    for w in range(START, END):
        signs = random_signs(w, replica.plan)
        replica.apply_signs(w, signs)
        publish_aggregate(lead, cfg, w, signs, replica)
    follower_chain = LocalChain(tmp / "chain.db", dev_hotkey(1).ss58_address)
    follower = Node.connect(cfg, "follower", follower_chain)
    yield {"cfg": cfg, "lead": lead, "follower": follower, "fingerprint": replica.fingerprint()}
    lead_chain.close()
    follower_chain.close()


def republish(network: dict[str, Any], window: int, data: bytes) -> None:
    cfg = network["cfg"]
    network["lead"].bucket.put(names.aggregate_name(window, cfg.protocol.version), data)


def caught_up(network: dict[str, Any]) -> tuple[bool | None, str]:
    replica = new_replica(network["cfg"], START)
    return network["follower"].catch_up(replica, END), replica.fingerprint()


def test_an_honest_replay_ends_equal_to_the_lead(network: dict[str, Any]) -> None:
    verdict, theta = caught_up(network)
    assert verdict is True
    assert theta == network["fingerprint"]


def test_a_disagreeing_lead_is_an_error_line_not_a_crash(
    network: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    cfg, plan = network["cfg"], new_replica(network["cfg"], START).plan
    last = END - 1
    republish(network, last, encode_aggregate(random_signs(last, plan), plan, "0" * 16))
    try:
        with caplog.at_level(logging.ERROR, logger="gauntlet_jax.node.startup"):
            verdict, theta = caught_up(network)
        assert verdict is False
        assert theta == network["fingerprint"]  # the signs were the lead's: θ is right
        assert any("differs from the lead validator's" in r.message for r in caplog.records)
        # An aggregate from a lead that publishes no fingerprint cannot tell.
        republish(
            network, last, names.encode_arrays(outer.pack_signs(random_signs(last, plan), plan))
        )
        assert fetch_aggregate(network["lead"].bucket, last, cfg, plan).fingerprint is None
        assert caught_up(network)[0] is None
        # A malformed fingerprint makes the aggregate unusable, with the typed error.
        republish(network, last, encode_aggregate(random_signs(last, plan), plan, "not hex!"))
        with pytest.raises(AggregateUnavailable, match="malformed"):
            fetch_aggregate(network["lead"].bucket, last, cfg, plan)
    finally:
        lead_replica = new_replica(cfg, START)
        for w in range(START, END):
            lead_replica.apply_signs(w, random_signs(w, plan))
        republish(
            network,
            last,
            encode_aggregate(random_signs(last, plan), plan, lead_replica.fingerprint()),
        )
    assert caught_up(network)[0] is True


def test_a_published_aggregate_round_trips(network: dict[str, Any], tmp_path: Path) -> None:
    cfg = network["cfg"]
    plan = new_replica(cfg, START).plan
    published = fetch_aggregate(network["lead"].bucket, START, cfg, plan)
    for got, want in zip(
        plan.flatten(published.signs), plan.flatten(random_signs(START, plan)), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(got), want)
    assert published.fingerprint is not None and len(published.fingerprint) == 16


def test_the_fingerprint_is_computed_once_per_theta(
    network: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gauntlet_jax.node import replica as replica_module

    passes: list[int] = []
    real = replica_module.fingerprint

    def counted(params: Any) -> str:
        passes.append(1)
        return real(params)

    monkeypatch.setattr(replica_module, "fingerprint", counted)
    replica = new_replica(network["cfg"], START)
    first = replica.fingerprint()
    assert replica.fingerprint() == first and len(passes) == 1
    replica.apply_signs(START, random_signs(START, replica.plan))
    moved = replica.fingerprint()
    assert moved != first and replica.fingerprint() == moved and len(passes) == 2
