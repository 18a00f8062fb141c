"""Weight conversion (bittensor 9.1.0 semantics), commit hashes, and subtensor's u16 math."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scalecodec.base import RuntimeConfigurationObject
from scalecodec.type_registry import load_type_registry_preset

from gauntlet_jax.chain import weights as wm
from gauntlet_jax.chain.base import blocks_until_weights_allowed
from gauntlet_jax.chain.errors import InvalidWeights


def reference_emit(uids: list[int], weights: list[float]) -> tuple[list[int], list[int]]:
    """bittensor's convert_weights_and_uids_for_emit as specified: Python floats (of the float32
    tensor), divide by max, round(w * 65535), drop zeros, ([], []) when the sum is zero."""
    ws = [float(np.float32(w)) for w in weights]
    if sum(ws) == 0:
        return [], []
    top = float(max(ws))
    out_uids, out_vals = [], []
    for uid, w in zip(uids, ws, strict=True):
        value = round(float(w / top) * 65535)
        if value != 0:
            out_uids.append(uid)
            out_vals.append(value)
    return out_uids, out_vals


def test_known_values_max_upscale_round_half_even_and_zero_drop():
    uids, values = wm.convert_weights_for_emit([3, 1, 4, 5], [0.5, 1.0, 0.0, 1e-6])
    # 0.5 * 65535 = 32767.5 rounds half to even → 32768; 1e-6 * 65535 ≈ 0.066 → 0, dropped.
    assert uids == [3, 1]
    assert values == [32768, 65535]


def test_all_zero_sends_nothing():
    assert wm.convert_weights_for_emit([0, 1, 2], [0.0, 0.0, 0.0]) == ([], [])
    assert wm.convert_weights_for_emit([], []) == ([], [])


@pytest.mark.parametrize(
    ("uids", "weights", "fault"),
    [
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([0, 1], [0.1, float("inf")], "NaN or infinity"),
        ([0, 1], [0.1, -0.2], "non-negative"),
        ([0, 1, 2], [0.1, 0.2], "same length"),
        ([0, -1], [0.1, 0.2], "uids must lie"),
        ([0, 70000], [0.1, 0.2], "uids must lie"),
        ([0.5, 1], [0.1, 0.2], "integers"),
        ([[0, 1]], [[0.1, 0.2]], "1-D"),
    ],
)
def test_rejects_unsendable_input(uids, weights, fault):
    with pytest.raises(InvalidWeights, match=fault):
        wm.convert_weights_for_emit(uids, weights)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.floats(min_value=0.0, max_value=1e6, allow_nan=False, width=32), min_size=1, max_size=40
    )
)
def test_matches_the_reference_loop(weights):
    uids = list(range(len(weights)))
    assert wm.convert_weights_for_emit(np.array(uids), np.array(weights)) == reference_emit(
        uids, weights
    )


def test_float64_input_is_taken_as_float32_like_the_reference_tensor():
    w64 = np.array([1.0, 1.0 / 3.0 + 1e-12])
    assert wm.convert_weights_for_emit([0, 1], w64) == reference_emit([0, 1], list(w64))


def _scale_encoded_commit_payload(account: bytes, netuid, uids, values, salt, version_key):
    """The SCALE encoding of (AccountId, u16, Vec<u16>, Vec<u16>, Vec<u16>, u64) by scalecodec."""
    rc = RuntimeConfigurationObject()
    rc.update_type_registry(load_type_registry_preset("core"))
    data = account
    for type_string, value in (
        ("u16", netuid),
        ("Vec<u16>", uids),
        ("Vec<u16>", values),
        ("Vec<u16>", salt),
        ("u64", version_key),
    ):
        data += bytes(rc.create_scale_object(type_string).encode(value).data)
    return data


@pytest.mark.parametrize("n", [0, 3, 70])  # 70 entries: a 2-byte compact length
def test_commit_hash_is_blake2b_of_the_scale_tuple(n):
    account = bytes(range(32))
    uids = list(range(n))
    values = [(7 * i + 1) % 65536 for i in range(n)]
    salt = [1, 2, 3, 4, 5, 6, 7, 65535]
    expected = hashlib.blake2b(
        _scale_encoded_commit_payload(account, 3, uids, values, salt, 2**40 + 5), digest_size=32
    ).digest()
    assert wm.weight_commit_hash(account, 3, uids, values, salt, 2**40 + 5) == expected


def test_commit_hash_depends_on_every_field():
    base = (bytes(32), 1, [0, 1], [65535, 3], [9] * 8, 7)
    reference = wm.weight_commit_hash(*base)
    for i, changed in enumerate([bytes([1]) + bytes(31), 2, [1, 0], [65535, 4], [9] * 7 + [8], 8]):
        args = list(base)
        args[i] = changed
        assert wm.weight_commit_hash(*args) != reference, f"field {i} does not enter the hash"


def test_salt_is_eight_u16():
    salt = wm.new_salt()
    assert len(salt) == 8 and all(0 <= s <= 65535 for s in salt)


def test_chain_max_upscale():
    assert wm.max_upscale_u16([65535, 32768, 1]) == [65535, 32768, 1]  # already upscaled: identity
    assert wm.max_upscale_u16([1, 2]) == [32768, 65535]  # 32767.5 rounds half away from zero
    # The > 32768 branch multiplies by a truncated I32F32 factor 65535/40000, so 20000 lands at
    # 32767.4999… and rounds down (the Chopsticks test checks this against the real runtime).
    assert wm.max_upscale_u16([40000, 20000]) == [65535, 32767]
    assert wm.max_upscale_u16([0, 0]) == [0, 0]
    assert wm.max_upscale_u16([]) == []


def test_max_weight_limited():
    assert wm.max_weight_limited([65535, 65535], wm.U16_MAX)
    assert wm.max_weight_limited([65535, 65535], 32768)  # each is half
    assert not wm.max_weight_limited([65535, 1], 32768)


def test_epochs_and_reveal_window_match_subtensor():
    # tempo 9, netuid 1: epochs are 10 blocks long, offset by netuid + 1 = 2.
    assert wm.epoch_index(1, 7, 9) == 0
    assert wm.epoch_index(1, 8, 9) == 1
    assert wm.reveal_blocks(1, 5, 9, 1) == (8, 17)
    assert wm.reveal_blocks(1, 8, 9, 2) == (28, 37)


def test_rate_limit_rule():
    assert blocks_until_weights_allowed(100, 0, 50) == 0  # never set
    assert blocks_until_weights_allowed(149, 100, 50) == 1
    assert blocks_until_weights_allowed(150, 100, 50) == 0  # ≥, as check_rate_limit


def test_weights_from_u16_normalises():
    row = wm.weights_from_u16(4, [0, 2, 9], [65535, 65535, 5])
    np.testing.assert_allclose(row, [0.5, 0.0, 0.5, 0.0])
