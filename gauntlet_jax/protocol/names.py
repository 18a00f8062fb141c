"""Object names in the buckets (GAUNTLET.md §7), each namespaced by the protocol version.

Every name lives under `v{version}/`, so a version bump starts a fresh namespace and a listing of
one kind is one prefix query:

| object                      | writer              | name                                       |
|-----------------------------|---------------------|--------------------------------------------|
| pseudo-gradient             | miner               | v{v}/gradient-{window}-{uid}.safetensors   |
| debug (sync probes)         | miner, validator    | v{v}/debug-{window}-{uid}.safetensors      |
| checkpoint (Orbax dir)      | lead validator/miner| v{v}/checkpoint-{uid}/{window}/…           |
| aggregate (1-bit signs)     | lead validator      | v{v}/aggregate-{window}.safetensors        |
| gather-peer list            | lead validator      | v{v}/peers-{first_effective_window}.json   |
| run start                   | lead validator      | v{v}/start_window.json                     |

Listings come from buckets other people write to, so the parsers are strict: a full-match regex
with canonical integers (no signs, no leading zeros, at most 12 digits); anything else is None.

`encode_arrays` / `load_arrays` are the pickle-free container (safetensors) for the non-payload
array objects (aggregates).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from gauntlet_jax.errors import MalformedJson, ObjectNotFound, StorageError
from gauntlet_jax.storage.base import Bucket
from gauntlet_jax.strict_json import load_json

# No '-' or '/' in a version, so names split unambiguously; '.' and '+' allow "0.2.88", "1.0+x".
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+]{0,31}")
_INT = r"(0|[1-9][0-9]{0,11})"
PAYLOAD_SUFFIX = ".safetensors"


class MalformedObject(StorageError):
    """An object's bytes do not decode (garbled, truncated, or not the expected format)."""


def _ns(version: str) -> str:
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ValueError(f"protocol version {version!r} must match {_VERSION.pattern}")
    return f"v{version}/"


def _nonneg(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


# -- names ----------------------------------------------------------------------------------------


def gradient_prefix(version: str) -> str:
    return f"{_ns(version)}gradient-"


def gradient_name(window: int, uid: int, version: str) -> str:
    """A miner's pseudo-gradient for `window`."""
    return f"{gradient_prefix(version)}{_nonneg(window, 'window')}-{_nonneg(uid, 'uid')}{PAYLOAD_SUFFIX}"


def debug_prefix(version: str) -> str:
    return f"{_ns(version)}debug-"


def debug_name(window: int, uid: int, version: str) -> str:
    """A node's sync probes (debug dict) after `window`."""
    return (
        f"{debug_prefix(version)}{_nonneg(window, 'window')}-{_nonneg(uid, 'uid')}{PAYLOAD_SUFFIX}"
    )


def checkpoint_prefix(uid: int, version: str) -> str:
    """The directory Orbax manages for `uid`'s checkpoints (one sub-directory per window)."""
    return f"{_ns(version)}checkpoint-{_nonneg(uid, 'uid')}"


def checkpoint_name(window: int, uid: int, version: str) -> str:
    """The directory of `uid`'s checkpoint taken at `window`."""
    return f"{checkpoint_prefix(uid, version)}/{_nonneg(window, 'window')}"


def aggregate_prefix(version: str) -> str:
    return f"{_ns(version)}aggregate-"


def aggregate_name(window: int, version: str) -> str:
    """The lead validator's bit-packed sign(A) of `window` (for catch-up)."""
    return f"{aggregate_prefix(version)}{_nonneg(window, 'window')}{PAYLOAD_SUFFIX}"


def peers_prefix(version: str) -> str:
    return f"{_ns(version)}peers-"


def peers_name(first_effective_window: int, version: str) -> str:
    """The gather-peer list that takes effect at `first_effective_window`."""
    return f"{peers_prefix(version)}{_nonneg(first_effective_window, 'window')}.json"


def start_window_name(version: str) -> str:
    """The run's start window, published once by the lead validator."""
    return f"{_ns(version)}start_window.json"


# -- parsers (hostile listings) -------------------------------------------------------------------


def _match(pattern: str, name: str) -> re.Match[str] | None:
    return re.fullmatch(pattern, name) if isinstance(name, str) else None


def parse_gradient_name(name: str, version: str) -> tuple[int, int] | None:
    """(window, uid) of a gradient name of this version, else None."""
    m = _match(
        rf"{re.escape(gradient_prefix(version))}{_INT}-{_INT}{re.escape(PAYLOAD_SUFFIX)}", name
    )
    return (int(m[1]), int(m[2])) if m else None


def parse_debug_name(name: str, version: str) -> tuple[int, int] | None:
    """(window, uid) of a debug name of this version, else None."""
    m = _match(rf"{re.escape(debug_prefix(version))}{_INT}-{_INT}{re.escape(PAYLOAD_SUFFIX)}", name)
    return (int(m[1]), int(m[2])) if m else None


def parse_checkpoint_name(name: str, version: str) -> tuple[int, int] | None:
    """(window, uid) of a checkpoint directory or any object inside one, else None."""
    m = _match(rf"{re.escape(_ns(version))}checkpoint-{_INT}/{_INT}(/.*)?", name)
    return (int(m[2]), int(m[1])) if m else None


def parse_aggregate_name(name: str, version: str) -> int | None:
    """The window of an aggregate name of this version, else None."""
    m = _match(rf"{re.escape(aggregate_prefix(version))}{_INT}{re.escape(PAYLOAD_SUFFIX)}", name)
    return int(m[1]) if m else None


def parse_peers_name(name: str, version: str) -> int | None:
    """The first effective window of a peer-list name of this version, else None."""
    m = _match(rf"{re.escape(peers_prefix(version))}{_INT}\.json", name)
    return int(m[1]) if m else None


# -- retention -----------------------------------------------------------------------------------


def cleanup_own_objects(
    bucket: Bucket, uid: int, current_window: int, keep_windows: int, version: str
) -> int:
    """Deletes this node's own gradient and debug objects older than `keep_windows` windows
    (window < current_window − keep_windows); returns how many were deleted.

    Checkpoints are pruned by Orbax itself (`max_to_keep = protocol.checkpoint_keep`, see
    gauntlet_jax/storage/checkpoint.py). Other uids' objects and unparseable names are never touched.
    """
    oldest_kept = current_window - keep_windows
    deleted = 0
    for prefix, parse in (
        (gradient_prefix(version), parse_gradient_name),
        (debug_prefix(version), parse_debug_name),
    ):
        for info in bucket.list(prefix):
            parsed = parse(info.name, version)
            if parsed is None or parsed[1] != uid or parsed[0] >= oldest_kept:
                continue
            try:
                bucket.delete(info.name)
                deleted += 1
            except ObjectNotFound:
                pass  # a concurrent clean-up got there first
    return deleted


# -- array container -----------------------------------------------------------------------------


def encode_arrays(
    arrays: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
) -> bytes:
    """Arrays → safetensors bytes (no pickle), with an optional string→string header."""
    return st_save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, dict(metadata or {}))


def load_metadata(data: bytes, max_header_bytes: int) -> dict[str, str]:
    """The string→string header of safetensors bytes ({} when there is none); a header that is
    not strict JSON within `max_header_bytes` raises MalformedObject."""
    n = int.from_bytes(bytes(data[:8]), "little") if len(data) >= 8 else -1
    if not 0 <= n <= min(max_header_bytes, len(data) - 8):
        raise MalformedObject(f"safetensors header of {n} bytes (at most {max_header_bytes})")
    try:
        header = load_json(bytes(data[8 : 8 + n]), max_bytes=max_header_bytes, max_depth=3)
    except MalformedJson as e:
        raise MalformedObject(f"safetensors header is not JSON: {e}") from e
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise MalformedObject("safetensors metadata is not a string→string map")
    return meta


def load_arrays(data: bytes) -> dict[str, np.ndarray]:
    """safetensors bytes → arrays; garbled or truncated bytes raise MalformedObject. The caller
    has already capped the size (Bucket.get(max_bytes=…)) and checks names, dtypes and shapes."""
    try:
        return dict(st_load(bytes(data)))
    except (SafetensorError, ValueError, TypeError) as e:
        raise MalformedObject(f"not a safetensors object ({len(data)} bytes): {e}") from e
