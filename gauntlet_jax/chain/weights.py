"""Weights on the wire: float scores → u16 vectors, commit hashes, and the chain's own u16 math.

`convert_weights_for_emit` reproduces bittensor 9.1.0's `convert_weights_and_uids_for_emit`
(the call Templar's validator makes through `subtensor.set_weights`, GAUNTLET.md §6):
max-upscale to u16 (w / max · 65535, rounded half to even as Python's `round`), drop zeros,
nothing to send when every weight is zero. Weights are taken as float32, as the reference passes
a float32 torch tensor. Unlike bittensor we also reject NaN/inf and uids outside u16.

`weight_commit_hash` is the hash subtensor's `reveal_weights` recomputes
(`BlakeTwo256::hash_of(&(who, netuid, uids, values, salt, version_key))`), which is what
bittensor's `generate_weight_hash` builds by hand.

`max_upscale_u16` and `max_weight_limited` mirror subtensor's fixed-point (I32F32) helpers so the
local chain stores exactly what the runtime would.
"""

from __future__ import annotations

import hashlib
import numbers
import secrets
from collections.abc import Sequence

import numpy as np

from gauntlet_jax.chain.errors import InvalidWeights

U16_MAX = 65535
_FRAC = 32  # I32F32: 32 fractional bits
_HALF = 1 << (_FRAC - 1)


def _all_of(values: np.ndarray, kind: type) -> bool:
    """Every element is a `kind` number and none a bool (True is not uid 1, nor weight 1.0)."""
    return all(
        isinstance(v, kind) and not isinstance(v, (bool, np.bool_))
        for v in values.astype(object).ravel()
    )


def convert_weights_for_emit(uids: object, weights: object) -> tuple[list[int], list[int]]:
    """Float weights for `uids` → (uids, u16 values) to send; ([], []) when all are zero."""
    if not (_all_of(np.asarray(uids, dtype=object), numbers.Integral)):
        raise InvalidWeights(f"uids must be integers (not bools), got {_preview(uids)}")
    if not (_all_of(np.asarray(weights, dtype=object), numbers.Real)):
        raise InvalidWeights(f"weights must be real numbers (not bools), got {_preview(weights)}")
    uid_array = np.asarray(uids)
    weight_array = np.asarray(weights)
    if uid_array.ndim != 1 or weight_array.ndim != 1:
        raise InvalidWeights(
            f"uids and weights must be 1-D, got shapes {uid_array.shape} and {weight_array.shape}"
        )
    if uid_array.shape != weight_array.shape:
        raise InvalidWeights(
            f"uids and weights must have the same length, got {uid_array.size} and "
            f"{weight_array.size}"
        )
    if uid_array.size == 0:
        return [], []
    uid_ints = uid_array.astype(np.int64)
    if np.any(uid_ints < 0) or np.any(uid_ints > U16_MAX):
        raise InvalidWeights(f"uids must lie in [0, {U16_MAX}], got {uid_ints.tolist()}")
    # float32 first, as the reference's tensor; the arithmetic below is float64 like Python's.
    w = weight_array.astype(np.float32).astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise InvalidWeights("weights contain NaN or infinity")
    if np.any(w < 0):
        raise InvalidWeights(f"weights must be non-negative, got minimum {w.min()}")
    if w.sum() == 0:
        return [], []
    # np.round rounds half to even like Python's round() on floats.
    values = np.round(w / w.max() * U16_MAX).astype(np.int64)
    keep = values != 0
    return uid_ints[keep].tolist(), values[keep].tolist()


def _preview(values: object) -> str:
    return repr(values)[:80]


def weights_from_u16(n: int, uids: Sequence[int], values: Sequence[int]) -> np.ndarray:
    """A row of u16 weights back to a float vector of length n summing to 1 (or all zero)."""
    row = np.zeros(n, dtype=np.float64)
    for uid, value in zip(uids, values, strict=True):
        if 0 <= uid < n:
            row[uid] = float(value)
    total = row.sum()
    return row / total if total > 0 else row


def encode_compact(n: int) -> bytes:
    if n < 0:
        raise ValueError("compact integers are unsigned")
    if n < 1 << 6:
        return bytes([n << 2])
    if n < 1 << 14:
        return ((n << 2) | 1).to_bytes(2, "little")
    if n < 1 << 30:
        return ((n << 2) | 2).to_bytes(4, "little")
    raw = n.to_bytes((n.bit_length() + 7) // 8, "little")
    return bytes([((len(raw) - 4) << 2) | 3]) + raw


def encode_vec_u16(values: Sequence[int]) -> bytes:
    out = bytearray(encode_compact(len(values)))
    for value in values:
        if not 0 <= int(value) <= U16_MAX:
            raise InvalidWeights(f"value {value} is not a u16")
        out += int(value).to_bytes(2, "little")
    return bytes(out)


def weight_commit_hash(
    public_key: bytes,
    netuid: int,
    uids: Sequence[int],
    values: Sequence[int],
    salt: Sequence[int],
    version_key: int,
) -> bytes:
    """blake2b-256 of SCALE(account_id, netuid: u16, uids: Vec<u16>, values: Vec<u16>,
    salt: Vec<u16>, version_key: u64): the commit hash subtensor checks on reveal."""
    if len(public_key) != 32:
        raise InvalidWeights(f"account id must be 32 bytes, got {len(public_key)}")
    data = (
        bytes(public_key)
        + int(netuid).to_bytes(2, "little")
        + encode_vec_u16(uids)
        + encode_vec_u16(values)
        + encode_vec_u16(salt)
        + int(version_key).to_bytes(8, "little")
    )
    return hashlib.blake2b(data, digest_size=32).digest()


def new_salt(length: int = 8) -> tuple[int, ...]:
    """A random u16 salt (bittensor uses 8 u16 values)."""
    return tuple(secrets.randbelow(U16_MAX + 1) for _ in range(length))


def max_upscale_u16(values: Sequence[int]) -> list[int]:
    """subtensor's `vec_u16_max_upscale_to_u16` in exact I32F32 arithmetic (floor on mul/div,
    round half away from zero), so the max becomes 65535."""
    if not values:
        return []
    vmax = max(values)
    if vmax == 0:
        return [0 for _ in values]
    if vmax > 32768:
        factor = (U16_MAX << (2 * _FRAC)) // (vmax << _FRAC)  # u16_max / max, I32F32 bits
        return [min(U16_MAX, (v * factor + _HALF) >> _FRAC) for v in values]
    return [
        min(U16_MAX, ((((v * U16_MAX) << (2 * _FRAC)) // (vmax << _FRAC)) + _HALF) >> _FRAC)
        for v in values
    ]


def max_weight_limited(values: Sequence[int], max_weight_limit: int) -> bool:
    """subtensor's `check_vec_max_limited`: the largest normalised weight ≤ limit / 65535."""
    if max_weight_limit == U16_MAX or not values:
        return True
    total = sum(values)
    if total == 0:
        return True
    limit_bits = (max_weight_limit << (2 * _FRAC)) // (U16_MAX << _FRAC)
    largest_bits = (max(values) << (2 * _FRAC)) // (total << _FRAC)
    return largest_bits <= limit_bits


def is_self_weight(uid: int, uids: Sequence[int], values: Sequence[int]) -> bool:
    """subtensor: exactly one weight, on the caller's own uid."""
    return len(values) == 1 and len(uids) >= 1 and uids[0] == uid


def epoch_index(netuid: int, block: int, tempo: int) -> int:
    """subtensor's `get_epoch_index`: (block + netuid + 1) // (tempo + 1)."""
    return (block + netuid + 1) // (tempo + 1)


def reveal_blocks(
    netuid: int, commit_block: int, tempo: int, reveal_period: int
) -> tuple[int, int]:
    """subtensor's `get_reveal_blocks`: first and last block in which a commit may be revealed."""
    reveal_epoch = epoch_index(netuid, commit_block, tempo) + reveal_period
    first = max(0, reveal_epoch * (tempo + 1) - (netuid + 1))
    return first, first + tempo
