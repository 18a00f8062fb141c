"""A 64-bit fingerprint of θ, computed on the device, exact on every backend and device layout.

Every node publishes it after each window (with its sync probes, and the lead validator with its
aggregate); equal fingerprints mean equal θ, bit for bit, so the validator's sync check needs no
probe arithmetic for a peer in sync and a node that caught up can prove it did.

Each parameter's float32 bit pattern is mixed with its position (leaf and flat index) by the
murmur3 finaliser and the results are summed modulo 2^32, in two lanes with different seeds.
Integer addition modulo 2^32 is associative and commutative, so the sum is the same whatever
order or sharding a backend reduces in; the mixing makes a changed bit, or two swapped values,
change the sum. It detects accidental divergence; it is no cryptographic commitment (a peer can
copy another's fingerprint as it could copy probe values; the loss evaluation is what pays).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.errors import InvalidPayload
from gauntlet_jax.model.sharding import to_host

_LANE_SEEDS = (0x9E3779B9, 0x7F4A7C15)
_MIX_1 = 0x85EBCA6B
_MIX_2 = 0xC2B2AE35
HEX_DIGITS = 16


def _mix32(x: jax.Array) -> jax.Array:
    """The murmur3 finaliser on uint32 (multiplications wrap modulo 2^32)."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(_MIX_1)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(_MIX_2)
    return x ^ (x >> 16)


def _leaf_lanes(leaf: jax.Array, leaf_number: int) -> list[jax.Array]:
    bits = jax.lax.bitcast_convert_type(leaf.astype(jnp.float32), jnp.uint32)
    position = jnp.arange(bits.size, dtype=jnp.uint32).reshape(bits.shape)
    lanes = []
    for seed in _LANE_SEEDS:
        salt = _mix32(jnp.uint32((seed + 0x632BE5AB * (leaf_number + 1)) & 0xFFFFFFFF))
        mixed = _mix32(bits ^ _mix32(position ^ salt))
        lanes.append(jnp.sum(mixed, dtype=jnp.uint32))
    return lanes


@jax.jit
def _fingerprint_lanes(params: Any) -> jax.Array:
    total = [jnp.uint32(0), jnp.uint32(0)]
    for number, leaf in enumerate(jax.tree.leaves(params)):
        total = [t + lane for t, lane in zip(total, _leaf_lanes(leaf, number), strict=True)]
    return jnp.stack(total)


def fingerprint(params: Any) -> str:
    """θ's fingerprint as 16 lowercase hex digits (every process of a multi-host job gets it)."""
    lanes = np.asarray(to_host(_fingerprint_lanes(params)), dtype=np.uint32)
    return f"{int(lanes[0]):08x}{int(lanes[1]):08x}"


def parse_fingerprint(text: Any, uid: int | None) -> str:
    """A published fingerprint, checked: exactly 16 lowercase hex digits, else InvalidPayload."""
    if (
        not isinstance(text, str)
        or len(text) != HEX_DIGITS
        or any(c not in "0123456789abcdef" for c in text)
    ):
        raise InvalidPayload(uid, "bad fingerprint", repr(text)[:40])
    return text
