"""Timelocked commit-reveal (subtensor's CRv3/CRv4) on the client side.

The weights go into a SCALE `WeightsTlockPayload` (hotkey, uids, values, version_key; runtimes
before commit-reveal version 4 read the legacy form without the hotkey), are encrypted with
`bittensor-drand` for one drand quicknet round, and are sent as `commit_timelocked_weights`.
The runtime decrypts the commit itself, at the start of the reveal epoch, with the pulse of that
round from its Drand pallet; nobody sends a reveal.

The round is chosen from the chain's own clock: the time of the reveal epoch's first block
(head timestamp + blocks to go × block time) mapped onto quicknet's round schedule, so the pulse
exists by the time the runtime looks for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import bittensor_drand

from gauntlet_jax.chain import weights as wmath
from gauntlet_jax.chain.base import WeightsResult
from gauntlet_jax.chain.errors import ChainDataError, InvalidWeights

# drand quicknet (the beacon subtensor's Drand pallet follows): genesis and period.
QUICKNET_GENESIS_TIME_S = 1692803367
QUICKNET_PERIOD_S = 3
# The first commit-reveal version whose payload carries the committing hotkey.
HOTKEY_PAYLOAD_VERSION = 4


def drand_round_at(unix_s: float) -> int:
    """The quicknet round current at `unix_s` (round 1 at genesis)."""
    if unix_s < QUICKNET_GENESIS_TIME_S:
        return 1
    return int((unix_s - QUICKNET_GENESIS_TIME_S) // QUICKNET_PERIOD_S) + 1


def reveal_target(
    netuid: int,
    commit_block: int,
    tempo: int,
    reveal_period: int,
    head: int,
    head_time_s: float,
    block_time_s: float,
) -> tuple[int, int]:
    """(first block of the reveal epoch, drand round to encrypt for) of a commit landing in
    `commit_block`, given the head block and its timestamp."""
    first, _ = wmath.reveal_blocks(netuid, commit_block, tempo, reveal_period)
    return first, drand_round_at(head_time_s + max(0, first - head) * block_time_s)


def tlock_payload(
    public_key: bytes,
    uids: Sequence[int],
    values: Sequence[int],
    version_key: int,
    commit_reveal_version: int = HOTKEY_PAYLOAD_VERSION,
) -> bytes:
    """SCALE of `WeightsTlockPayload { hotkey: Vec<u8>, uids, values: Vec<u16>, version_key }`
    (no hotkey before commit-reveal version 4)."""
    if len(public_key) != 32:
        raise InvalidWeights(f"account id must be 32 bytes, got {len(public_key)}")
    body = (
        wmath.encode_vec_u16(uids)
        + wmath.encode_vec_u16(values)
        + int(version_key).to_bytes(8, "little")
    )
    if commit_reveal_version < HOTKEY_PAYLOAD_VERSION:
        return body
    return wmath.encode_compact(32) + bytes(public_key) + body


def decode_tlock_payload(data: bytes) -> tuple[bytes, tuple[int, ...], tuple[int, ...], int]:
    """(hotkey public key, uids, values, version_key) of a version-4 payload."""
    offset = 0

    def compact() -> int:
        nonlocal offset
        mode = data[offset] & 0b11
        if mode == 3:
            raise ChainDataError("timelock payload: big compact lengths are not used here")
        size = 1 << mode
        value = int.from_bytes(data[offset : offset + size], "little") >> 2
        offset += size
        return value

    def u16s() -> tuple[int, ...]:
        nonlocal offset
        n = compact()
        out = tuple(
            int.from_bytes(data[offset + 2 * i : offset + 2 * i + 2], "little") for i in range(n)
        )
        offset += 2 * n
        return out

    try:
        key_len = compact()
        hotkey = data[offset : offset + key_len]
        offset += key_len
        uids, values = u16s(), u16s()
        version_key = int.from_bytes(data[offset : offset + 8], "little")
        offset += 8
    except IndexError:
        raise ChainDataError("timelock payload: truncated") from None
    if offset != len(data) or len(hotkey) != 32:
        raise ChainDataError("timelock payload: not a version-4 WeightsTlockPayload")
    return bytes(hotkey), uids, values, version_key


def encrypt_for_round(payload: bytes, reveal_round: int) -> bytes:
    """The payload encrypted (compressed TLECiphertext) so that the pulse of `reveal_round`
    decrypts it."""
    ciphertext, target = bittensor_drand.encrypt_at_round(payload, int(reveal_round))
    if target != reveal_round:
        raise ChainDataError(f"bittensor-drand encrypted for round {target}, not {reveal_round}")
    return bytes(ciphertext)


def decrypt_with_pulse(ciphertext: bytes, signature_hex: str) -> bytes:
    """What the runtime does on reveal: decrypts with the round's BLS signature."""
    try:
        return bytes(bittensor_drand.decrypt_with_signature(ciphertext, signature_hex))
    except ValueError as exc:
        raise ChainDataError(f"timelocked commit does not decrypt: {exc}") from None


@dataclass(frozen=True)
class PendingTimelocked:
    """A timelocked commit waiting for the runtime to reveal it."""

    netuid: int
    uids: tuple[int, ...]
    values: tuple[int, ...]
    version_key: int
    reveal_round: int
    commit_block: int
    reveal_first: int
    reveal_last: int

    def result(self, method: str, block: int | None, *, included: bool, **extra) -> WeightsResult:
        return WeightsResult(
            included=included,
            method=method,
            block=block,
            uids=self.uids,
            values=self.values,
            version_key=self.version_key,
            **extra,
        )

    def revealed_as(self, row: dict[int, int]) -> bool:
        """Whether a stored weights row is these weights as the runtime stores them."""
        expected = dict(zip(self.uids, wmath.max_upscale_u16(list(self.values)), strict=True))
        return {u: v for u, v in row.items() if v} == {u: v for u, v in expected.items() if v}
