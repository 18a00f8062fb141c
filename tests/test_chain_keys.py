"""Hotkeys from URI, mnemonic, seed and key files; secrets never appear in reprs or errors."""

from __future__ import annotations

import json
import pickle

import pytest
from substrateinterface import Keypair

from gauntlet_jax.chain.errors import HotkeyError
from gauntlet_jax.chain.keys import (
    address_of,
    dev_uri,
    hotkey_from_config,
    hotkey_from_file,
    hotkey_from_secret,
    public_key_of,
)
from gauntlet_jax.config import ChainConfig

ALICE = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"
MNEMONIC = Keypair.generate_mnemonic()


def test_uri_mnemonic_and_seed_give_the_expected_accounts():
    assert hotkey_from_secret("//Alice").ss58_address == ALICE
    from_mnemonic = hotkey_from_secret(MNEMONIC)
    assert from_mnemonic.ss58_address == Keypair.create_from_mnemonic(MNEMONIC).ss58_address
    seed = "0x" + "11" * 32
    assert hotkey_from_secret(seed).ss58_address == Keypair.create_from_seed(seed).ss58_address
    assert hotkey_from_secret("11" * 32).ss58_address == Keypair.create_from_seed(seed).ss58_address
    derived = hotkey_from_secret(MNEMONIC + "//hot//1")
    assert derived.ss58_address not in (from_mnemonic.ss58_address, ALICE)


def test_sign_and_verify():
    key = hotkey_from_secret("//Bob")
    signature = key.sign(b"payload")
    assert key.verify(b"payload", signature)
    assert not key.verify(b"other", signature)


def test_repr_and_errors_never_show_the_secret(tmp_path):
    secret_words = MNEMONIC.split()
    key = hotkey_from_secret(MNEMONIC)
    for text in (repr(key), str(key)):
        assert key.ss58_address in text
        assert not any(word in text for word in secret_words)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    bad = "correct horse battery staple not a real mnemonic phrase zzzq"
    with pytest.raises(HotkeyError) as info:
        hotkey_from_secret(bad, "environment variable X")
    assert "zzzq" not in str(info.value) and "horse" not in str(info.value)
    assert "environment variable X" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    with pytest.raises(HotkeyError) as info:
        address_of("//Alice-secret-uri")
    assert "secret" not in str(info.value).replace("secrets go", "")


def test_key_file_plain_and_bittensor_json(tmp_path):
    plain = tmp_path / "hotkey.txt"
    plain.write_text("//Charlie\n")
    assert hotkey_from_file(plain).ss58_address == Keypair.create_from_uri("//Charlie").ss58_address
    wallet = tmp_path / "default"
    pair = Keypair.create_from_mnemonic(MNEMONIC)
    wallet.write_text(
        json.dumps(
            {
                "accountId": "0x" + pair.public_key.hex(),
                "secretPhrase": MNEMONIC,
                "ss58Address": pair.ss58_address,
            }
        )
    )
    assert hotkey_from_file(wallet).ss58_address == pair.ss58_address
    wallet.write_text(json.dumps({"secretPhrase": MNEMONIC, "ss58Address": ALICE}))
    with pytest.raises(HotkeyError, match="does not match"):
        hotkey_from_file(wallet)
    with pytest.raises(HotkeyError, match="cannot read"):
        hotkey_from_file(tmp_path / "missing")
    huge = tmp_path / "huge"
    huge.write_bytes(b"a" * (65 * 1024))
    with pytest.raises(HotkeyError, match="limit"):
        hotkey_from_file(huge)


def test_from_config_prefers_file_then_env(tmp_path):
    cfg = ChainConfig(key_env="MY_KEY")
    assert hotkey_from_config(cfg, env={}) is None
    assert hotkey_from_config(cfg, env={"MY_KEY": "//Alice"}).ss58_address == ALICE
    key_file = tmp_path / "k"
    key_file.write_text("//Bob")
    cfg_file = ChainConfig(key_env="MY_KEY", key_file=str(key_file))
    got = hotkey_from_config(cfg_file, env={"MY_KEY": "//Alice"})
    assert got.ss58_address == Keypair.create_from_uri("//Bob").ss58_address


def test_dev_uris_and_public_keys():
    assert [dev_uri(i) for i in (0, 1, 5, 6, 9)] == [
        "//Alice",
        "//Bob",
        "//Ferdie",
        "//Neuron6",
        "//Neuron9",
    ]
    assert public_key_of(ALICE) == bytes(Keypair.create_from_uri("//Alice").public_key)
    with pytest.raises(HotkeyError):
        public_key_of("not-an-address")
