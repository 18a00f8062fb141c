"""`python -m gauntlet_jax.register` and `python -m gauntlet_jax.status` on the local chain (their
subtensor half runs on the real runtime in test_chain_contract)."""

from __future__ import annotations

import io
import json

import pytest

from gauntlet_jax import register, status
from gauntlet_jax.chain.base import NODE_VERSION_KEY
from gauntlet_jax.chain.keys import dev_hotkey
from gauntlet_jax.chain.local import LocalChain

NETUID = 2


@pytest.fixture
def chain_url(tmp_path):
    path = tmp_path / "chain.db"
    with LocalChain(path) as admin:
        admin.set_clock_mode("manual")
        admin.create_subnet(NETUID, weights_rate_limit=10)
        admin.register(NETUID, dev_hotkey(1).ss58_address, stake=5.0, validator_permit=True)
        admin.advance(3)
    return f"sqlite:///{path}"


def _args(url: str, *extra: str) -> list[str]:
    return [
        "--config",
        "tiny",
        "--set",
        f"chain.url={url}",
        "--set",
        f"chain.netuid={NETUID}",
        *extra,
    ]


def test_register_asks_then_registers_and_status_shows_it(chain_url, monkeypatch, capsys):
    monkeypatch.setenv("GAUNTLET_HOTKEY_SECRET", "//Charlie")
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert register.main(_args(chain_url)) == 2
    assert "burn cost: 0" in capsys.readouterr().out
    assert register.main(_args(chain_url, "--yes")) == 0
    assert "registered: uid 1" in capsys.readouterr().out
    assert status.main(_args(chain_url)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["registered"] and shown["uid"] == 1 and shown["blocks_until_weights"] == 0
    assert shown["node_version_key"] == NODE_VERSION_KEY


def test_status_of_a_validator_and_bad_input(chain_url, monkeypatch, capsys):
    alice = dev_hotkey(1).ss58_address
    with LocalChain(chain_url.removeprefix("sqlite:///"), alice) as chain:
        chain.set_weights(NETUID, [0], [1.0], 0)
        block = chain.current_block()
    assert status.main(_args(chain_url, "--address", alice)) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["uid"], shown["validator_permit"], shown["stake"]) == (0, True, 5.0)
    assert shown["last_weights_block"] == block
    assert shown["blocks_until_weights"] == 10 - (block + 1 - block)
    # A subnet that does not exist, and no hotkey at all: one line on stderr, exit 1.
    assert status.main(_args(chain_url, "--address", alice, "--set", "chain.netuid=9")) == 1
    err = capsys.readouterr().err.strip()
    assert "netuid 9 does not exist" in err and "\n" not in err
    monkeypatch.delenv("GAUNTLET_HOTKEY_SECRET", raising=False)
    assert register.main(_args(chain_url, "--yes")) == 1
    assert "no hotkey" in capsys.readouterr().err
