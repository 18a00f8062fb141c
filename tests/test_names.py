"""Object names: round trips, version namespaces, hostile listings, retention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gauntlet_jax.protocol import names
from gauntlet_jax.storage.base import is_valid_name
from gauntlet_jax.storage.local import LocalBucket

V = "0.1.0"


def test_names_are_namespaced_valid_and_parse_back() -> None:
    assert names.gradient_name(12, 3, V) == "v0.1.0/gradient-12-3.safetensors"
    assert names.debug_name(12, 3, V) == "v0.1.0/debug-12-3.safetensors"
    assert names.aggregate_name(7, V) == "v0.1.0/aggregate-7.safetensors"
    assert names.peers_name(9, V) == "v0.1.0/peers-9.json"
    assert names.start_window_name(V) == "v0.1.0/start_window.json"
    assert names.checkpoint_name(100, 0, V) == "v0.1.0/checkpoint-0/100"
    every = [
        names.gradient_name(12, 3, V),
        names.debug_name(12, 3, V),
        names.aggregate_name(7, V),
        names.peers_name(9, V),
        names.start_window_name(V),
        names.checkpoint_name(100, 0, V),
    ]
    assert all(is_valid_name(n) for n in every)
    assert names.parse_gradient_name(names.gradient_name(12, 3, V), V) == (12, 3)
    assert names.parse_debug_name(names.debug_name(12, 3, V), V) == (12, 3)
    assert names.parse_aggregate_name(names.aggregate_name(7, V), V) == 7
    assert names.parse_peers_name(names.peers_name(9, V), V) == 9
    assert names.parse_checkpoint_name(names.checkpoint_name(100, 4, V), V) == (100, 4)
    assert names.parse_checkpoint_name(names.checkpoint_name(100, 4, V) + "/state/x", V) == (100, 4)


def test_versions_do_not_mix() -> None:
    other = names.gradient_name(12, 3, "0.1.1")
    assert names.parse_gradient_name(other, V) is None
    assert names.parse_gradient_name(names.gradient_name(1, 1, "0.1"), "0.1.0") is None
    assert not other.startswith(names.gradient_prefix(V))


@pytest.mark.parametrize(
    "junk",
    [
        "v0.1.0/gradient-012-3.safetensors",  # leading zero: not canonical
        "v0.1.0/gradient--1-3.safetensors",
        "v0.1.0/gradient-1-3.safetensors.bak",
        "v0.1.0/gradient-1-3-4.safetensors",
        "v0.1.0/gradient-1e3-3.safetensors",
        "v0.1.0/gradient-9999999999999-3.safetensors",  # 13 digits
        "v0.1.0/gradient-1-3.pt",
        "x/v0.1.0/gradient-1-3.safetensors",
        "v0.1.0/gradient-1-\u0663.safetensors",  # a non-ASCII digit
        "",
    ],
)
def test_parsers_reject_junk(junk: str) -> None:
    assert names.parse_gradient_name(junk, V) is None
    assert names.parse_debug_name(junk, V) is None
    assert names.parse_aggregate_name(junk, V) is None


@given(st.text(max_size=80))
def test_parsers_never_crash_on_arbitrary_text(text: str) -> None:
    for parse in (names.parse_gradient_name, names.parse_debug_name, names.parse_checkpoint_name):
        parsed = parse(text, V)
        assert parsed is None or all(isinstance(x, int) and x >= 0 for x in parsed)
    first = names.parse_peers_name(text, V)
    assert first is None or first >= 0


@given(st.integers(0, 10**12 - 1), st.integers(0, 10**12 - 1))
def test_round_trip_any_window_uid(window: int, uid: int) -> None:
    assert names.parse_gradient_name(names.gradient_name(window, uid, V), V) == (window, uid)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        names.gradient_name(-1, 3, V)
    with pytest.raises(ValueError):
        names.gradient_name(1, True, V)
    with pytest.raises(ValueError):
        names.gradient_name(1, 3, "0.1-evil")
    with pytest.raises(ValueError):
        names.aggregate_name(1, "../x")


def test_cleanup_deletes_only_own_old_gradients_and_debug(tmp_path: Path) -> None:
    bucket = LocalBucket(tmp_path)
    for w in range(10):
        for uid in (1, 2):
            bucket.put(names.gradient_name(w, uid, V), b"g")
            bucket.put(names.debug_name(w, uid, V), b"d")
    bucket.put(names.gradient_name(0, 1, "0.0.9"), b"old version")
    bucket.put(names.aggregate_name(0, V), b"a")
    bucket.put("v0.1.0/gradient-junk", b"j")

    deleted = names.cleanup_own_objects(bucket, uid=1, current_window=9, keep_windows=3, version=V)
    assert deleted == 12  # windows 0..5 of uid 1, gradient and debug

    left = {i.name for i in bucket.list()}
    own = {names.parse_gradient_name(n, V) for n in left} | {
        names.parse_debug_name(n, V) for n in left
    }
    assert {w for (w, uid) in own - {None} if uid == 1} == {6, 7, 8, 9}
    assert {w for (w, uid) in own - {None} if uid == 2} == set(range(10))
    assert {names.gradient_name(0, 1, "0.0.9"), names.aggregate_name(0, V)} <= left
    assert "v0.1.0/gradient-junk" in left
    assert names.cleanup_own_objects(bucket, 1, 9, 3, V) == 0


def test_array_container_round_trip_and_garbage() -> None:
    arrays = {"a.pos": np.arange(10, dtype=np.uint8), "b": np.ones((2, 3), np.float32)}
    data = names.encode_arrays(arrays, {"window": "3"})
    back = names.load_arrays(data)
    assert set(back) == set(arrays)
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
        assert back[k].dtype == arrays[k].dtype
    for garbage in (b"", b"garbage", data[: len(data) // 2], b"\xff" * 8 + data[8:]):
        with pytest.raises(names.MalformedObject):
            names.load_arrays(garbage)
