"""The pseudo-gradient wire format and its validation (GAUNTLET.md §1.5, §2.3).

A payload is safetensors bytes: per parameter leaf `<name>.idx` (int16 chunk offsets) and either
`<name>.vals` (float32) or, 8-bit quantised, `<name>.codes` (uint8) with `<name>.shift`,
`<name>.scale` and `<name>.lookup` (float32). The safetensors metadata header carries the format
version, uid, window, model signature, chunk, k and quantisation. No pickle anywhere.

Decoding treats the bytes as hostile: size cap before parsing, a bounded header, our own check of the
tensor table (every expected tensor, nothing else, exact dtypes and shapes) before safetensors reads
data, then index range, distinct indices per chunk, finite values and sane quantisation parameters.
Every fault raises `InvalidPayload(uid, fault, detail)`.

Deliberate difference from the reference: a chunk with a repeated index is rejected (the reference
averages duplicates). Honest top-k never repeats an index, and distinct indices keep the merge's
scatter free of write races, hence bit-deterministic on accelerators.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import safetensors
import safetensors.numpy

from gauntlet_jax.compress.plan import CompressionPlan, LeafPlan
from gauntlet_jax.compress.topk import QUANT_BINS, Quantized
from gauntlet_jax.errors import InvalidPayload, MalformedJson
from gauntlet_jax.strict_json import load_json

FORMAT_NAME = "gauntlet-pseudograd"
# 2: the exact integer outer step (docs/protocol.md §2); a v1 payload is refused, not misread.
FORMAT_VERSION = "2"
QUANT_NONE = "none"
QUANT_UINT8 = "uint8-lookup256"

_HEADER_BASE_BYTES = 4096
_HEADER_BYTES_PER_TENSOR = 256
# {"__metadata__": {…}, "name": {"shape": […], …}}: an honest header nests 3 deep.
_HEADER_DEPTH = 3
_ST_DTYPES = {"I16": np.int16, "I32": np.int32, "F32": np.float32, "U8": np.uint8}
_MAX_DECIMAL_DIGITS = 19


class DecodedPayload(NamedTuple):
    """A validated payload: idx (int16/int32) and vals (float32, dequantised) pytrees."""

    uid: int
    window: int
    idx: Any
    vals: Any
    quantized: bool


def _tensor_specs(plan: CompressionPlan, quantized: bool) -> dict[str, tuple[np.dtype, tuple]]:
    specs: dict[str, tuple[np.dtype, tuple]] = {}
    for lp in plan.leaves:
        specs[f"{lp.name}.idx"] = (lp.index_dtype, lp.payload_shape)
        if quantized:
            specs[f"{lp.name}.codes"] = (np.dtype(np.uint8), lp.payload_shape)
            specs[f"{lp.name}.shift"] = (np.dtype(np.float32), lp.batch_shape)
            specs[f"{lp.name}.scale"] = (np.dtype(np.float32), lp.batch_shape)
            specs[f"{lp.name}.lookup"] = (np.dtype(np.float32), (*lp.batch_shape, QUANT_BINS))
        else:
            specs[f"{lp.name}.vals"] = (np.dtype(np.float32), lp.payload_shape)
    return specs


def max_header_bytes(plan: CompressionPlan) -> int:
    """Cap on the JSON header: a generous constant plus a fixed budget per expected tensor."""
    return _HEADER_BASE_BYTES + _HEADER_BYTES_PER_TENSOR * 5 * len(plan.leaves)


def max_payload_bytes(plan: CompressionPlan) -> int:
    """Exact upper bound of an honest payload's size (float32 values, the larger variant)."""
    data = sum(lp.n_values * (lp.index_dtype.itemsize + 4) for lp in plan.leaves)
    return 8 + max_header_bytes(plan) + data


def payload_cap(plan: CompressionPlan, configured_max: int) -> int:
    """The most bytes a reader accepts for one payload: the configured cap
    (`compress.max_payload_bytes`), never above what an honest payload can need."""
    return min(configured_max, max_payload_bytes(plan))


def encode_payload(
    uid: int,
    window: int,
    idx_tree: Any,
    vals_tree: Any,
    plan: CompressionPlan,
    quant: Any = None,
) -> bytes:
    """Serialises one peer's compressed momentum for `window`.

    `quant` (a tree of `Quantized`, from `momentum_step` with quantisation on) replaces the float
    values by their 8-bit codes and decode tables; `vals_tree` is then ignored.
    """
    tensors: dict[str, np.ndarray] = {}
    idx_leaves = plan.flatten(idx_tree)
    val_leaves = plan.flatten(vals_tree) if quant is None else [None] * len(plan.leaves)
    q_leaves = plan.flatten(quant) if quant is not None else [None] * len(plan.leaves)
    for lp, idx, vals, q in zip(plan.leaves, idx_leaves, val_leaves, q_leaves, strict=True):
        tensors[f"{lp.name}.idx"] = np.asarray(idx, dtype=lp.index_dtype)
        if q is None:
            tensors[f"{lp.name}.vals"] = np.asarray(vals, dtype=np.float32)
        else:
            q = Quantized(*q)
            tensors[f"{lp.name}.codes"] = np.asarray(q.codes, dtype=np.uint8)
            tensors[f"{lp.name}.shift"] = np.asarray(q.shift, dtype=np.float32)
            tensors[f"{lp.name}.scale"] = np.asarray(q.scale, dtype=np.float32)
            tensors[f"{lp.name}.lookup"] = np.asarray(q.lookup, dtype=np.float32)
    specs = _tensor_specs(plan, quant is not None)
    for name, (_, shape) in specs.items():
        if tensors[name].shape != shape:
            raise ValueError(f"encode: {name} has shape {tensors[name].shape}, plan says {shape}")
    metadata = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "uid": str(int(uid)),
        "window": str(int(window)),
        "signature": plan.signature,
        "chunk": str(plan.chunk),
        "k": str(plan.topk),
        "quant": QUANT_UINT8 if quant is not None else QUANT_NONE,
    }
    return safetensors.numpy.save(tensors, metadata=metadata)


def _parse_uint(text: Any) -> int | None:
    if not isinstance(text, str) or not text.isascii() or not text.isdigit():
        return None
    if len(text) > _MAX_DECIMAL_DIGITS or (len(text) > 1 and text[0] == "0"):
        return None
    return int(text)


class _Reader:
    """Validation state for one payload; `fail` raises InvalidPayload naming the peer."""

    def __init__(self, uid: int | None) -> None:
        self.uid = uid

    def fail(self, fault: str, detail: str = "") -> InvalidPayload:
        return InvalidPayload(self.uid, fault, detail)

    def header(self, data: bytes, plan: CompressionPlan, max_bytes: int) -> dict[str, Any]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise self.fail("not bytes", type(data).__name__)
        size = len(data)
        if size > max_bytes:
            raise self.fail("too large", f"{size} bytes > cap {max_bytes}")
        if size < 8:
            raise self.fail("truncated", f"{size} bytes")
        n = int.from_bytes(bytes(data[:8]), "little")
        cap = max_header_bytes(plan)
        if n < 2 or n > cap or n > size - 8:
            raise self.fail("bad header length", f"{n} (cap {cap}, payload {size} bytes)")
        try:
            header = load_json(bytes(data[8 : 8 + n]), max_bytes=cap, max_depth=_HEADER_DEPTH)
        except MalformedJson as err:
            raise self.fail("malformed header", str(err)[:200]) from None
        if not isinstance(header, dict):
            raise self.fail("malformed header", "not a JSON object")
        return header

    def metadata(
        self,
        header: dict[str, Any],
        plan: CompressionPlan,
        expected_uid: int,
        expected_window: int,
    ) -> bool:
        meta = header.pop("__metadata__", None)
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise self.fail("missing metadata")
        expected_keys = {"format", "version", "uid", "window", "signature", "chunk", "k", "quant"}
        if set(meta) != expected_keys:
            raise self.fail("bad metadata keys", ", ".join(sorted(map(str, meta)))[:200])
        if meta["format"] != FORMAT_NAME or meta["version"] != FORMAT_VERSION:
            raise self.fail(
                "unsupported format",
                f"{meta['format'][:40]!r} v{meta['version'][:10]!r}; this node speaks "
                f"{FORMAT_NAME!r} v{FORMAT_VERSION!r}",
            )
        checks = (
            ("uid", expected_uid),
            ("window", expected_window),
            ("chunk", plan.chunk),
            ("k", plan.topk),
        )
        for key, want in checks:
            got = _parse_uint(meta[key])
            if got != want:
                raise self.fail(
                    f"{key} mismatch", f"payload says {meta[key][:24]!r}, expected {want}"
                )
        if meta["signature"] != plan.signature:
            raise self.fail("model signature mismatch", f"{meta['signature'][:40]!r}")
        if meta["quant"] not in (QUANT_NONE, QUANT_UINT8):
            raise self.fail("unknown quantisation", meta["quant"][:40])
        return meta["quant"] == QUANT_UINT8

    def tensor_table(
        self, header: dict[str, Any], plan: CompressionPlan, quantized: bool
    ) -> dict[str, tuple[np.dtype, tuple]]:
        specs = _tensor_specs(plan, quantized)
        missing = sorted(set(specs) - set(header))
        extra = sorted(set(header) - set(specs))
        if missing:
            raise self.fail("missing tensor", ", ".join(missing[:3]))
        if extra:
            raise self.fail("unexpected tensor", ", ".join(str(e)[:60] for e in extra[:3]))
        for name, (dtype, shape) in specs.items():
            entry = header[name]
            if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
                raise self.fail("malformed tensor entry", name)
            if _ST_DTYPES.get(entry["dtype"]) != dtype:
                raise self.fail("wrong dtype", f"{name}: {str(entry['dtype'])[:10]}, want {dtype}")
            got_shape = entry["shape"]
            if not isinstance(got_shape, list) or [type(s) for s in got_shape] != [int] * len(
                got_shape
            ):
                raise self.fail("malformed shape", name)
            if tuple(got_shape) != shape:
                raise self.fail("wrong shape", f"{name}: {got_shape[:8]}, want {list(shape)}")
        return specs

    def arrays(
        self, data: bytes, specs: dict[str, tuple[np.dtype, tuple]]
    ) -> dict[str, np.ndarray]:
        try:
            arrays = safetensors.numpy.load(bytes(data))
        except (safetensors.SafetensorError, ValueError, TypeError) as err:
            raise self.fail("malformed tensor data", str(err)[:200]) from None
        # Belt and braces: what safetensors read must be exactly the table checked above.
        for name, (dtype, shape) in specs.items():
            got = arrays.get(name)
            if got is None or got.dtype != dtype or got.shape != shape:
                raise self.fail("malformed tensor data", f"{name} differs from the header")
        if len(arrays) != len(specs):
            raise self.fail("malformed tensor data", "tensor count differs from the header")
        return arrays

    def leaf(
        self, lp: LeafPlan, arrays: dict[str, np.ndarray], quantized: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        idx = arrays[f"{lp.name}.idx"]
        flat = idx.reshape(-1, lp.k)
        if flat.size and (flat.min() < 0 or flat.max() >= lp.chunk_elems):
            raise self.fail("index out of range", f"{lp.name}: not in [0, {lp.chunk_elems})")
        if lp.k > 1 and flat.size:
            ordered = np.sort(flat, axis=1)
            if np.any(ordered[:, 1:] == ordered[:, :-1]):
                raise self.fail("duplicate index", f"{lp.name}: an index repeats within a chunk")
        vals = self.dequantize(lp, arrays) if quantized else arrays[f"{lp.name}.vals"]
        if not np.all(np.isfinite(vals)):
            raise self.fail("non-finite value", lp.name)
        return idx, vals

    def dequantize(self, lp: LeafPlan, arrays: dict[str, np.ndarray]) -> np.ndarray:
        shift = arrays[f"{lp.name}.shift"]
        scale = arrays[f"{lp.name}.scale"]
        lookup = arrays[f"{lp.name}.lookup"]
        if not (np.all(np.isfinite(shift)) and np.all(np.isfinite(lookup))):
            raise self.fail("bad quantisation parameters", f"{lp.name}: non-finite shift/lookup")
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            raise self.fail("bad quantisation parameters", f"{lp.name}: scale must be finite > 0")
        n_slices = math.prod(lp.batch_shape)
        table = lookup.reshape(n_slices, QUANT_BINS)
        codes = arrays[f"{lp.name}.codes"].reshape(n_slices, -1).astype(np.intp)
        with np.errstate(over="ignore", invalid="ignore"):
            values = np.take_along_axis(table, codes, axis=1) + shift.reshape(n_slices, 1)
        return values.astype(np.float32, copy=False).reshape(lp.payload_shape)


def decode_payload(
    data: bytes,
    plan: CompressionPlan,
    *,
    expected_uid: int,
    expected_window: int,
    max_bytes: int,
    require_quant: bool | None = None,
) -> DecodedPayload:
    """Validates untrusted payload bytes and returns its (idx, dequantised vals) trees.

    `require_quant`: True/False demands 8-bit/float values; None accepts either. Raises
    `InvalidPayload(expected_uid, fault, detail)` on any fault; nothing else escapes.
    """
    reader = _Reader(expected_uid)
    header = reader.header(data, plan, max_bytes)
    quantized = reader.metadata(header, plan, expected_uid, expected_window)
    if require_quant is not None and quantized != require_quant:
        raise reader.fail("wrong quantisation", f"quantised={quantized}, want {require_quant}")
    specs = reader.tensor_table(header, plan, quantized)
    arrays = reader.arrays(data, specs)
    idx_leaves, val_leaves = [], []
    for lp in plan.leaves:
        idx, vals = reader.leaf(lp, arrays, quantized)
        idx_leaves.append(idx)
        val_leaves.append(vals)
    return DecodedPayload(
        uid=expected_uid,
        window=expected_window,
        idx=plan.unflatten(idx_leaves),
        vals=plan.unflatten(val_leaves),
        quantized=quantized,
    )


class PayloadStack:
    """Preallocated stacked buffers of P peers' payloads for the outer step: idx [P,…] (distinct
    placeholder indices), vals [P,…] (zeros), mask [P] (False) until a row is written.

    Rows are independent: worker threads may `put` different rows at once (the decode pool of
    `compress.streaming` writes each payload into its row as it arrives), so the stacking copy
    overlaps the arrivals instead of following the last one.
    """

    def __init__(self, plan: CompressionPlan, n_peers: int) -> None:
        self.plan = plan
        self.n_peers = n_peers
        self.mask = np.zeros(n_peers, dtype=bool)
        # Distinct placeholder indices keep even masked-out rows free of repeated writes.
        self.idx = [
            np.broadcast_to(
                np.arange(lp.k, dtype=lp.index_dtype), (n_peers, *lp.payload_shape)
            ).copy()
            for lp in plan.leaves
        ]
        self.vals = [np.zeros((n_peers, *lp.payload_shape), np.float32) for lp in plan.leaves]
        self._held: list[DecodedPayload | None] = [None] * n_peers

    def put(self, row: int, payload: DecodedPayload | None) -> None:
        """Writes `payload` into `row` (None: back to the placeholder, mask False)."""
        if payload is None:
            for lp, idx, vals in zip(self.plan.leaves, self.idx, self.vals, strict=True):
                idx[row] = np.arange(lp.k, dtype=lp.index_dtype)
                vals[row] = 0.0
        else:
            leaves = zip(
                self.plan.flatten(payload.idx), self.plan.flatten(payload.vals), strict=True
            )
            for (i, v), idx, vals in zip(leaves, self.idx, self.vals, strict=True):
                idx[row] = i
                vals[row] = v
        self.mask[row] = payload is not None
        self._held[row] = payload

    def stacked(self, payloads: Sequence[DecodedPayload | None]) -> tuple[Any, Any, np.ndarray]:
        """(idx [P,…], vals [P,…], mask [P]) holding exactly `payloads` in order: rows already
        written with the same payload object are kept, any other row is (re)written. The arrays
        are this stack's own buffers: a later `put` changes them."""
        if len(payloads) != self.n_peers:
            raise ValueError(f"{len(payloads)} payloads for a stack of {self.n_peers} rows")
        for row, payload in enumerate(payloads):
            if payload is not self._held[row]:
                self.put(row, payload)
        return self.plan.unflatten(self.idx), self.plan.unflatten(self.vals), self.mask.copy()


def stack_payloads(
    payloads: Sequence[DecodedPayload | None], plan: CompressionPlan
) -> tuple[Any, Any, np.ndarray]:
    """Stacks payloads on a leading peer axis for the outer step: (idx [P,…], vals [P,…], mask [P]).

    A missing or rejected peer (None) gets distinct placeholder indices, zero values and mask
    False, so shapes stay static whatever the gather set's health.
    """
    return PayloadStack(plan, len(payloads)).stacked(payloads)
