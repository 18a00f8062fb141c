"""The version key (package version → integer, sent with every weight call), the validator's
refusal to start on a subnet that demands a newer node, and the per-window reveal of commits."""

from __future__ import annotations

import dataclasses
import urllib.request

import pytest

import gauntlet_jax
from gauntlet_jax.chain.base import NODE_VERSION_KEY, version_key_of
from gauntlet_jax.chain.errors import NodeVersionTooOld
from gauntlet_jax.chain.keys import dev_hotkey
from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.node.metrics import PrometheusExporter
from gauntlet_jax.node.startup import Node
from gauntlet_jax.validator.publish import check_version_key, post_weights

NETUID = 2
VALIDATOR = dev_hotkey(1).ss58_address


def test_version_key_of_the_package_version():
    assert version_key_of("0.1.0") == 1_000
    assert version_key_of("1.2.3") == 1_002_003
    assert version_key_of(gauntlet_jax.__version__) == NODE_VERSION_KEY
    for bad in ("1.2", "1.x.0", "0.1000.0"):
        with pytest.raises(ValueError):
            version_key_of(bad)


@pytest.fixture
def net(tmp_path, tiny_config):
    path = tmp_path / "chain.db"
    admin = LocalChain(path)
    admin.set_clock_mode("manual")
    admin.create_subnet(NETUID, weights_rate_limit=0, tempo=3)
    admin.register(NETUID, VALIDATOR, stake=1e6, validator_permit=True)
    admin.register(NETUID, dev_hotkey(2).ss58_address)
    admin.advance(5)
    cfg = dataclasses.replace(
        tiny_config,
        chain=dataclasses.replace(tiny_config.chain, netuid=NETUID),
        storage=dataclasses.replace(tiny_config.storage, bucket=str(tmp_path / "{hotkey}")),
    )
    node = Node.connect(cfg, "validator", LocalChain(path, VALIDATOR), commit=False)
    yield admin, node, cfg
    node.chain.close()
    admin.close()


def test_validator_refuses_a_subnet_demanding_a_newer_node(net):
    admin, node, cfg = net
    admin.set_param(NETUID, "version_key", NODE_VERSION_KEY)
    check_version_key(node, cfg)  # equal: fine
    admin.set_param(NETUID, "version_key", NODE_VERSION_KEY + 1)
    with pytest.raises(NodeVersionTooOld) as info:
        check_version_key(node, cfg)
    message = str(info.value)
    assert "\n" not in message
    assert str(NODE_VERSION_KEY + 1) in message and str(NODE_VERSION_KEY) in message


def test_weights_carry_the_version_key_and_commits_are_revealed_next_windows(net):
    admin, node, cfg = net
    admin.set_param(NETUID, "version_key", NODE_VERSION_KEY)
    admin.set_param(NETUID, "commit_reveal", True)
    due = 0  # window 0 is a weights window (should_post_weights)
    assert post_weights(node, cfg, due, {1: 1.0}, None)
    (pending,) = node.chain.pending_reveals
    assert pending.version_key == NODE_VERSION_KEY
    assert node.chain.get_weights(NETUID, 0) == {}
    for _ in range(12):  # later windows: nothing due, but the commit is revealed when it may be
        admin.advance(1)
        post_weights(node, cfg, due + 1, {1: 1.0}, due)
        if not node.chain.pending_reveals:
            break
    assert node.chain.get_weights(NETUID, 0) == {1: 65535}


def test_a_refused_post_is_counted_on_the_metrics_endpoint(net):
    admin, node, cfg = net
    admin.set_param(NETUID, "weights_rate_limit", 100)
    node.exporter = PrometheusExporter("validator", 0)  # port 0: any free port
    try:
        assert post_weights(node, cfg, 0, {1: 1.0}, None)
        admin.advance(1)
        # Due again at once (last_posted far behind), but the rate limit refuses it: logged,
        # counted, and the validator goes on (False: retried the next window).
        assert not post_weights(node, cfg, 10, {1: 1.0}, 0)
        assert not post_weights(node, cfg, 11, {1: 1.0}, 0)
        url = f"http://127.0.0.1:{node.exporter.port}/metrics"
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
    finally:
        node.exporter.close()
    counted = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gauntlet_validator_errors_total")
    }
    assert counted == {
        'gauntlet_validator_errors_total{during="post_weights",error="SettingWeightsTooFast"}': 2.0
    }
