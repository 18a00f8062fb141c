"""Sync probes: parameter values at a few hundred public positions per window (GAUNTLET.md §2.4).

Instead of the reference's two fixed positions per tensor, positions are drawn per window from a
public seed, so a peer cannot keep only known positions in sync. Every node publishes its values
there after the window's update (the debug object); the validator compares them with its own.
With the values comes θ's fingerprint (`protocol.fingerprint`): equal fingerprints settle the
check without arithmetic. Shared by miners (who publish) and validators (who check), hence here
and not in a role.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from gauntlet_jax.errors import InvalidPayload
from gauntlet_jax.protocol import names
from gauntlet_jax.protocol.fingerprint import parse_fingerprint

# 2: θ's fingerprint in the header (the exact outer step of protocol version 2).
PROBE_FORMAT_VERSION = "2"
# A probe object holds n float32 values plus a small header; anything far bigger is hostile.
_MAX_HEADER_BYTES = 4096
# The optional "stack" header field (the publisher's jax/jaxlib/… versions, `node.stack`) is
# informational: absent in older objects and never part of the check, so the format is unchanged.
MAX_STACK_CHARS = 256


def _leaf_sizes(abstract_params: Any) -> list[int]:
    return [int(math.prod(leaf.shape)) for leaf in jax.tree.leaves(abstract_params)]


def probe_counts(abstract_params: Any, n_probes: int) -> list[int]:
    """How many probes each leaf gets: one each, the rest proportional to size.

    Every tensor is probed (so a peer cannot leave, say, a norm scale out of sync), and big
    tensors get most probes. The remainder is shared by largest remainder, ties to the earlier
    leaf. The total is max(n_probes, number of leaves). Depends only on shapes.
    """
    sizes = _leaf_sizes(abstract_params)
    if not sizes:
        return []
    if any(s == 0 for s in sizes):
        raise ValueError("cannot probe an empty parameter")
    extra = max(0, n_probes - len(sizes))
    total = sum(sizes)
    exact = [extra * s / total for s in sizes]
    counts = [math.floor(e) for e in exact]
    left = extra - sum(counts)
    by_remainder = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[:left]:
        counts[i] += 1
    return [c + 1 for c in counts]


def probe_indices(window: int, seed: int, abstract_params: Any, n_probes: int) -> Any:
    """Flat probe positions per leaf (a pytree like `abstract_params` of int32 arrays).

    Positions are uniform over each leaf (with replacement; a repeat only re-checks a position)
    and depend only on (seed, window, leaf order, shapes). They are drawn from numpy's PCG64
    raw output rather than `jax.random`, whose bits changed across JAX releases (the
    `jax_threefry_partitionable` default): miners and validators on different JAX versions
    must compute the same positions or every honest peer would look out of sync.
    """
    if seed < 0 or window < 0:
        raise ValueError(f"seed and window must be non-negative, got {seed}, {window}")
    leaves, treedef = jax.tree.flatten(abstract_params)
    counts = probe_counts(abstract_params, n_probes)
    out = []
    for leaf_index, (leaf, count) in enumerate(zip(leaves, counts, strict=True)):
        size = int(math.prod(leaf.shape))
        if size > np.iinfo(np.int32).max:
            raise ValueError(f"leaf {leaf_index} has {size} elements; probes index with int32")
        bits = np.random.PCG64(np.random.SeedSequence([seed, window, leaf_index]))
        raw = bits.random_raw(count)  # uint64; modulo bias < size / 2^64, negligible
        out.append((raw % np.uint64(size)).astype(np.int32))
    return jax.tree.unflatten(treedef, out)


def gather_probes(params: Any, probe_idx: Any) -> jax.Array:
    """Parameter values at the probe positions, concatenated in leaf order, as float32.

    Jit-friendly (close over `probe_idx` or pass it as an argument); positions are unravelled
    to per-axis indices so a sharded parameter is gathered without a flattening reshape.
    """
    leaves = jax.tree.leaves(params)
    idx_leaves = jax.tree.leaves(probe_idx)
    if len(leaves) != len(idx_leaves):
        raise ValueError(f"probe indices have {len(idx_leaves)} leaves, params {len(leaves)}")
    parts = []
    for p, idx in zip(leaves, idx_leaves, strict=True):
        coords = jnp.unravel_index(jnp.asarray(idx), p.shape)
        parts.append(p[coords].astype(jnp.float32))
    return jnp.concatenate(parts) if parts else jnp.zeros((0,), jnp.float32)


def validate_probe_values(values: Any, expected_len: int, uid: int | None) -> np.ndarray:
    """A peer's published probe values, checked: a 1-D float32 array of the expected length,
    all finite. Anything else raises InvalidPayload naming the peer."""
    if not isinstance(values, np.ndarray):
        raise InvalidPayload(
            uid, "bad probes", f"expected a numpy array, got {type(values).__name__}"
        )
    if values.dtype != np.float32:
        raise InvalidPayload(uid, "bad probes", f"dtype {values.dtype}, expected float32")
    if values.ndim != 1 or values.shape[0] != expected_len:
        raise InvalidPayload(uid, "bad probes", f"shape {values.shape}, expected ({expected_len},)")
    if not np.all(np.isfinite(values)):
        raise InvalidPayload(uid, "bad probes", "non-finite values")
    return values


def max_probe_bytes(n_values: int) -> int:
    return 8 + _MAX_HEADER_BYTES + 4 * n_values


class Probes(NamedTuple):
    """A peer's published state after a window: θ at the probe positions and θ's fingerprint."""

    values: np.ndarray
    fingerprint: str
    stack: str | None = None  # the publisher's software stack, when it says


def encode_probes(
    uid: int, window: int, values: np.ndarray, fingerprint: str, stack: str | None = None
) -> bytes:
    """The debug object: probe values as a safetensors file with (uid, window, fingerprint and,
    optionally, the publisher's software stack) in its header."""
    meta = {
        "format": PROBE_FORMAT_VERSION,
        "uid": str(uid),
        "window": str(window),
        "fingerprint": parse_fingerprint(fingerprint, uid),
    }
    if stack:
        meta["stack"] = stack[:MAX_STACK_CHARS]
    return st_save({"values": np.asarray(values, np.float32)}, metadata=meta)


def decode_probes(data: bytes, *, uid: int, window: int, expected_len: int) -> Probes:
    """Parses and checks a peer's debug object; every fault raises InvalidPayload (an object of
    another format version too: its values were computed by another outer step)."""
    if len(data) > max_probe_bytes(expected_len):
        raise InvalidPayload(
            uid, "bad probes", f"{len(data)} bytes, limit {max_probe_bytes(expected_len)}"
        )
    if len(data) < 8 or int.from_bytes(data[:8], "little") > _MAX_HEADER_BYTES:
        raise InvalidPayload(uid, "bad probes", "malformed header")
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, OverflowError) as e:
        raise InvalidPayload(uid, "bad probes", f"unreadable: {e}") from e
    if set(tensors) != {"values"}:
        raise InvalidPayload(uid, "bad probes", f"tensors {sorted(tensors)}, expected ['values']")
    meta = _metadata(data, uid)
    if meta.get("format") != PROBE_FORMAT_VERSION:
        raise InvalidPayload(
            uid,
            "unsupported format",
            f"probes v{str(meta.get('format'))[:10]!r}, this node speaks v{PROBE_FORMAT_VERSION}",
        )
    if meta.get("uid") != str(uid) or meta.get("window") != str(window):
        raise InvalidPayload(
            uid, "bad probes", f"header names uid {meta.get('uid')} window {meta.get('window')}"
        )
    values = validate_probe_values(tensors["values"], expected_len, uid)
    stack = meta.get("stack")
    stack = stack[:MAX_STACK_CHARS] if isinstance(stack, str) else None
    return Probes(values, parse_fingerprint(meta.get("fingerprint"), uid), stack)


def _metadata(data: bytes, uid: int) -> dict[str, str]:
    try:
        return names.load_metadata(data, _MAX_HEADER_BYTES)
    except names.MalformedObject as e:
        raise InvalidPayload(uid, "bad probes", str(e)) from e
