"""Hostile JSON in a lead validator's bucket and in peers' documents (issue 17, fault 2): one
strict reader, typed errors, no RecursionError, no bool for an int."""

from __future__ import annotations

from pathlib import Path

import pytest

from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.config import Config, with_overrides
from gauntlet_jax.errors import InvalidPayload, MalformedJson
from gauntlet_jax.localchain import create_network
from gauntlet_jax.node.network import Network
from gauntlet_jax.protocol import announcements, names
from gauntlet_jax.storage.local import LocalBucket
from gauntlet_jax.strict_json import load_json, nesting_depth

DEEP = b"[" * 50_000 + b"]" * 50_000
DEEP_SMALL = b'{"start_window": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"


@pytest.mark.parametrize(
    "data",
    [
        DEEP,
        DEEP_SMALL,
        b'{"a": 1, "a": 2}',
        b"[NaN]",
        b"[Infinity]",
        b"[" + b"9" * 5000 + b"]",
        b"\xff\xfe",
        b'{"a": ',
    ],
)
def test_load_json_refuses_with_a_typed_error(data: bytes) -> None:
    with pytest.raises(MalformedJson):
        load_json(data, max_bytes=1 << 20, max_depth=16)


def test_nesting_depth_skips_strings() -> None:
    assert nesting_depth('{"a": ["[[[[", {"b": "}}}"}]}') == 3
    assert nesting_depth('"[\\"["') == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"start_window": true}',
        b'{"start_window": 12.0}',
        b'{"start_window": -1}',
        b'{"start_window": "12"}',
        b"[12]",
        DEEP_SMALL,
    ],
)
def test_a_hostile_start_window_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidPayload):
        announcements.parse_start_window(body, uid=0)


@pytest.mark.parametrize(
    "body",
    [
        b'{"peers": [1, true], "chosen_at": 3}',
        b'{"peers": [1, 2], "chosen_at": false}',
        b'{"peers": [1, 2.0], "chosen_at": 3}',
        b'{"peers": [[1]], "chosen_at": 3}',
        b'{"peers": [70000], "chosen_at": 3}',
        b'{"peers": ' + b"[" * 40_000 + b"]" * 40_000 + b', "chosen_at": 3}',
    ],
)
def test_a_hostile_peer_list_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidPayload):
        announcements.parse_peer_list(body, uid=0)


def test_round_trip() -> None:
    assert announcements.parse_start_window(announcements.encode_start_window(7), 0) == 7
    assert announcements.parse_peer_list(announcements.encode_peer_list([3, 1], 9), 0) == [3, 1]


def test_network_reads_a_hostile_lead_bucket_as_nothing_announced(
    tiny_config: Config, tmp_path: Path
) -> None:
    cfg = with_overrides(tiny_config, [f"chain.url=sqlite:///{tmp_path}/chain.db"])
    create_network(cfg, 3, force=True, manual_clock=True)
    chain = LocalChain(tmp_path / "chain.db")
    net = Network(cfg, chain, f"file://{tmp_path}/own")
    lead = LocalBucket(tmp_path / "lead")
    net.metagraph = chain.metagraph(cfg.chain.netuid)
    net.bucket_urls = {0: lead.url, 1: "file:///m1", 2: "file:///m2"}
    assert net.lead_validator() == 0
    version = cfg.protocol.version
    for body in (b'{"start_window": true}', DEEP_SMALL):
        lead.put(names.start_window_name(version), body)
        assert net.start_window() is None
    lead.put(names.start_window_name(version), announcements.encode_start_window(5))
    assert net.start_window() == 5
    # A malformed gather set: every node falls back to the same set computed from the chain.
    fallback = net.gather_set(10)
    lead.put(names.peers_name(8, version), b'{"peers": [true, 2], "chosen_at": 7}')
    assert net.gather_set(10) == fallback
    lead.put(names.peers_name(9, version), b'{"peers": ' + b"[" * 30_000 + b"]" * 30_000 + b"}")
    assert net.gather_set(10) == fallback
    chain.close()
