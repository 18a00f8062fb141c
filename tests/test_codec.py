"""Wire format: round trips, every validation fault, and a fuzz property (only InvalidPayload)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
import safetensors.numpy
from _pytrees import plan_for, random_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gauntlet_jax.compress import codec
from gauntlet_jax.config import load_config
from gauntlet_jax.errors import InvalidPayload
from gauntlet_jax.protocol.momentum import init_momentum, momentum_step

PLAN = plan_for()
UID, WINDOW = 7, 123
CAP = codec.max_payload_bytes(PLAN)


def _sent(quantize: bool):
    cfg = load_config("tiny", [f"compress.quantize={str(quantize).lower()}"])
    grads = random_tree(0)
    return momentum_step(init_momentum(grads), grads, 0.01, 0, cfg, PLAN)


SENT = _sent(False)
SENT_Q = _sent(True)
GOOD = codec.encode_payload(UID, WINDOW, SENT.idx, SENT.vals, PLAN)
GOOD_Q = codec.encode_payload(UID, WINDOW, SENT_Q.idx, SENT_Q.vals, PLAN, quant=SENT_Q.quant)


def _decode(data: bytes, **kw):
    args = {"expected_uid": UID, "expected_window": WINDOW, "max_bytes": CAP} | kw
    return codec.decode_payload(data, PLAN, **args)


def _same_tree(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(x), np.asarray(y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_round_trip_float() -> None:
    got = _decode(GOOD)
    assert (got.uid, got.window, got.quantized) == (UID, WINDOW, False)
    assert _same_tree(got.idx, SENT.idx) and _same_tree(got.vals, SENT.vals)
    for lp, i in zip(PLAN.leaves, PLAN.flatten(got.idx), strict=True):
        assert i.dtype == np.int16 and i.shape == lp.payload_shape
    assert len(GOOD) <= CAP


def test_round_trip_quantised_decodes_to_what_the_sender_subtracted() -> None:
    got = _decode(GOOD_Q, require_quant=True)
    assert got.quantized
    assert _same_tree(got.idx, SENT_Q.idx)
    assert _same_tree(got.vals, SENT_Q.vals)  # bit-identical dequantisation
    assert len(GOOD_Q) < len(GOOD) or len(GOOD) < 20_000  # tiny: lookups dominate


def _tensors(data: bytes) -> dict[str, np.ndarray]:
    return dict(safetensors.numpy.load(data))


def _meta(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + n])["__metadata__"]


def _rebuild(data: bytes, *, tensors=None, meta=None) -> bytes:
    t = _tensors(data) if tensors is None else tensors
    m = _meta(data) | (meta or {})
    return safetensors.numpy.save(t, metadata=m)


def _with(data: bytes, name: str, fn) -> bytes:
    t = _tensors(data)
    t[name] = fn(t[name].copy())
    return _rebuild(data, tensors=t)


def _set(a: np.ndarray, pos, value) -> np.ndarray:
    a.reshape(-1)[pos] = value
    return a


FAULTS = {
    "too large": lambda: (GOOD, {"max_bytes": len(GOOD) - 1}),
    "truncated": lambda: (GOOD[:5], {}),
    "bad header length": lambda: ((10**9).to_bytes(8, "little") + GOOD[8:], {}),
    "malformed header": lambda: (
        len(b"{not json").to_bytes(8, "little") + b"{not json" + GOOD[8:],
        {},
    ),
    "uid mismatch": lambda: (GOOD, {"expected_uid": UID + 1}),
    "window mismatch": lambda: (GOOD, {"expected_window": WINDOW - 1}),
    "model signature mismatch": lambda: (_rebuild(GOOD, meta={"signature": "0" * 32}), {}),
    "chunk mismatch": lambda: (_rebuild(GOOD, meta={"chunk": "32"}), {}),
    "k mismatch": lambda: (_rebuild(GOOD, meta={"k": "064"}), {}),
    # A v1 payload (the float outer step) is refused with the format named, not misread.
    "unsupported format": lambda: (_rebuild(GOOD, meta={"version": "1"}), {}),
    "unknown quantisation": lambda: (_rebuild(GOOD, meta={"quant": "int4"}), {}),
    "bad metadata keys": lambda: (_rebuild(GOOD, meta={"extra": "1"}), {}),
    "wrong quantisation": lambda: (GOOD, {"require_quant": True}),
    "missing tensor": lambda: (
        _rebuild(GOOD, tensors={k: v for k, v in _tensors(GOOD).items() if k != "embed.vals"}),
        {},
    ),
    "unexpected tensor": lambda: (
        _rebuild(GOOD, tensors=_tensors(GOOD) | {"evil": np.zeros(3, np.float32)}),
        {},
    ),
    "wrong dtype": lambda: (_with(GOOD, "embed.idx", lambda a: a.astype(np.int32)), {}),
    "wrong shape": lambda: (_with(GOOD, "embed.vals", lambda a: a[:1]), {}),
    "index out of range": lambda: (_with(GOOD, "layers.w.idx", lambda a: _set(a, 5, 4096)), {}),
    "duplicate index": lambda: (
        _with(GOOD, "layers.w.idx", lambda a: _set(a, 1, a.reshape(-1)[0])),
        {},
    ),
    "non-finite value": lambda: (_with(GOOD, "final_norm.vals", lambda a: _set(a, 3, np.nan)), {}),
    "bad quantisation parameters": lambda: (
        _with(GOOD_Q, "layers.norm.scale", lambda a: _set(a, 1, 0.0)),
        {},
    ),
    "malformed tensor data": lambda: (
        GOOD[:8] + GOOD[8 : 8 + int.from_bytes(GOOD[:8], "little")] + GOOD[-10:],
        {},
    ),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_each_fault_is_named(fault: str) -> None:
    data, kw = FAULTS[fault]()
    with pytest.raises(InvalidPayload) as info:
        _decode(data, **kw)
    assert info.value.fault == fault
    assert info.value.uid == kw.get("expected_uid", UID)
    assert f"peer {info.value.uid}" in str(info.value)


def test_more_quantisation_faults() -> None:
    for name, value in (("layers.norm.shift", np.inf), ("embed.lookup", np.nan)):
        bad = _with(GOOD_Q, name, lambda a, v=value: _set(a, 0, v))
        with pytest.raises(InvalidPayload, match="quantisation parameters"):
            _decode(bad)
    # Finite tables whose sum overflows to inf are caught as non-finite values.
    huge = _with(GOOD_Q, "final_norm.shift", lambda a: np.full_like(a, 3e38))
    huge = _rebuild(
        huge, tensors=_tensors(huge) | {"final_norm.lookup": np.full(256, 3e38, np.float32)}
    )
    with pytest.raises(InvalidPayload, match="non-finite value"):
        _decode(huge)


def test_negative_and_1d_index_range() -> None:
    bad = _with(GOOD, "final_norm.idx", lambda a: _set(a, 0, -1))
    with pytest.raises(InvalidPayload, match="index out of range"):
        _decode(bad)
    bad = _with(GOOD, "final_norm.idx", lambda a: _set(a, 0, 64))
    with pytest.raises(InvalidPayload, match="index out of range"):
        _decode(bad)


def test_stack_payloads_masks_missing_peers() -> None:
    good = _decode(GOOD)
    idx, vals, mask = codec.stack_payloads([None, good, None], PLAN)
    assert mask.tolist() == [False, True, False]
    for lp, i, v, gi, gv in zip(
        PLAN.leaves,
        PLAN.flatten(idx),
        PLAN.flatten(vals),
        PLAN.flatten(good.idx),
        PLAN.flatten(good.vals),
        strict=True,
    ):
        assert i.shape == (3, *lp.payload_shape) and v.shape == i.shape
        np.testing.assert_array_equal(i[1], gi)
        np.testing.assert_array_equal(v[1], gv)
        assert np.all(v[0] == 0) and np.all(v[2] == 0)
        # Placeholder rows still have distinct indices per chunk.
        assert len(set(i[0].reshape(-1, lp.k)[0].tolist())) == lp.k


def _swap_entries(data: bytes, a: int, b: int) -> bytes:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    names = sorted(k for k in header if k != "__metadata__")
    x, y = names[a % len(names)], names[b % len(names)]
    header[x]["data_offsets"], header[y]["data_offsets"] = (
        header[y]["data_offsets"],
        header[x]["data_offsets"],
    )
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


mutation = st.one_of(
    st.tuples(
        st.just("flip"),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
    ),
    st.tuples(st.just("truncate"), st.integers(0, 10**6)),
    st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("header"), st.binary(max_size=300)),
)


def _mutate(data: bytes, m) -> bytes:
    kind, arg = m
    if not data:
        return arg if kind == "extend" else data
    if kind == "flip":
        buf = bytearray(data)
        for pos, byte in arg:
            buf[pos % len(buf)] = byte
        return bytes(buf)
    if kind == "truncate":
        return data[: arg % len(data)]
    if kind == "extend":
        return data + arg
    return len(arg).to_bytes(8, "little") + arg + data[8:]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.booleans(),
    st.none() | st.tuples(st.integers(0, 100), st.integers(0, 100)),
    st.lists(mutation, max_size=3),
)
def test_fuzz_only_invalid_payload_escapes(quantised: bool, swap, mutations) -> None:
    data = GOOD_Q if quantised else GOOD
    if swap is not None:  # point two tensor names at each other's bytes
        data = _swap_entries(data, *swap)
    for m in mutations:
        data = _mutate(data, m)
    try:
        got = _decode(data)
    except InvalidPayload as err:
        assert err.uid == UID and err.fault
        return
    # Whatever survives is well-formed.
    for lp, i, v in zip(PLAN.leaves, PLAN.flatten(got.idx), PLAN.flatten(got.vals), strict=True):
        assert i.shape == lp.payload_shape and v.shape == lp.payload_shape
        assert v.dtype == np.float32 and np.all(np.isfinite(v))
        assert i.min() >= 0 and i.max() < lp.chunk_elems
