"""Timelocked commit-reveal offline: the payload the runtime decodes, the drand round schedule, and
the encryption round trip with a real drand quicknet pulse.

The pulse is quicknet round 1000 as subtensor's own Drand pallet tests carry it
(`pallets/drand/src/tests.rs`). The Chopsticks runtime in ../shared (spec 218) has no Drand
pallet and no `commit_timelocked_weights`, so the runtime's own reveal cannot run there; this
test does what that reveal does (decrypt with the round's signature, decode the payload).
"""

from __future__ import annotations

import pytest

from gauntlet_jax.chain import timelock
from gauntlet_jax.chain.errors import ChainDataError
from gauntlet_jax.chain.keys import hotkey_from_secret

QUICKNET_ROUND = 1000
QUICKNET_SIGNATURE = (
    "b44679b9a59af2ec876b1a6b1ad52ea9b1615fc3982b19576350f93447cb1125"
    "e342b73a8dd2bacbe47e4b6b63ed5e39"
)
ALICE = hotkey_from_secret("//Alice")


def test_payload_is_the_runtimes_scale_layout():
    payload = timelock.tlock_payload(ALICE.public_key, [1, 300], [65535, 2], 1_002_003)
    assert payload[:33] == bytes([32 << 2]) + ALICE.public_key
    assert payload[33:] == bytes([8, 1, 0, 0x2C, 0x01, 8, 0xFF, 0xFF, 2, 0]) + (1_002_003).to_bytes(
        8, "little"
    )
    legacy = timelock.tlock_payload(ALICE.public_key, [1], [5], 0, commit_reveal_version=3)
    assert legacy == bytes([4, 1, 0, 4, 5, 0]) + bytes(8)


def test_round_schedule_and_reveal_target():
    genesis = timelock.QUICKNET_GENESIS_TIME_S
    assert timelock.drand_round_at(genesis) == 1
    assert timelock.drand_round_at(genesis + 2.9) == 1
    assert timelock.drand_round_at(genesis + 3) == 2
    # netuid 2, tempo 10: epoch of block 20 = (20 + 3) // 11 = 2, reveal epoch 3 starts at 30.
    first, round_ = timelock.reveal_target(2, 20, 10, 1, 19, genesis + 2997 - 11 * 12, 12.0)
    assert first == 30 and round_ == QUICKNET_ROUND


def test_encrypted_weights_decrypt_with_the_real_quicknet_pulse_of_that_round():
    payload = timelock.tlock_payload(ALICE.public_key, [1, 2], [32768, 65535], 7)
    commit = timelock.encrypt_for_round(payload, QUICKNET_ROUND)
    revealed = timelock.decrypt_with_pulse(commit, QUICKNET_SIGNATURE)
    assert timelock.decode_tlock_payload(revealed) == (ALICE.public_key, (1, 2), (32768, 65535), 7)
    # Encrypted for any other round, the pulse of round 1000 does not open it.
    other = timelock.encrypt_for_round(payload, QUICKNET_ROUND + 1)
    with pytest.raises(ChainDataError, match="does not decrypt"):
        timelock.decrypt_with_pulse(other, QUICKNET_SIGNATURE)


def test_malformed_payloads_are_typed_errors():
    with pytest.raises(ChainDataError):
        timelock.decode_tlock_payload(b"\x80\x01")
    with pytest.raises(ChainDataError):
        timelock.decode_tlock_payload(timelock.tlock_payload(ALICE.public_key, [1], [1], 0) + b"x")
