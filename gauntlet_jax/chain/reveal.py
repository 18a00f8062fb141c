"""Hash commit-reveal on the client side, the same for every backend.

`seal` puts weights under a fresh salt and gives the hash subtensor's `commit_weights` stores;
a `PendingReveal` keeps what the reveal needs; `reveal_due` reveals the pending commits whose
reveal window holds the block the reveal lands in, and turns each outcome into a `WeightsResult`:
revealed, window passed (dropped), refused by the pallet (dropped) or too early (kept for later).
The backends differ only in how they send a reveal and which block it lands in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gauntlet_jax.chain import weights as wmath
from gauntlet_jax.chain.base import WeightsResult
from gauntlet_jax.chain.errors import PalletError, RevealTooEarly


@dataclass(frozen=True)
class PendingReveal:
    """A hash commit waiting for its reveal: everything needed to reveal it later."""

    netuid: int
    uids: tuple[int, ...]
    values: tuple[int, ...]
    salt: tuple[int, ...]
    version_key: int
    commit_hash: str
    commit_block: int

    def result(
        self,
        method: str,
        block: int | None,
        *,
        included: bool,
        extrinsic_hash: str | None = None,
    ) -> WeightsResult:
        """The result of sending this commit's weights (`commit_weights` or `reveal_weights`)."""
        return WeightsResult(
            included=included,
            method=method,
            block=block,
            uids=self.uids,
            values=self.values,
            version_key=self.version_key,
            extrinsic_hash=extrinsic_hash,
            commit_hash=self.commit_hash,
        )

    def dropped(self, message: str) -> WeightsResult:
        """The result of a reveal that did not and will not happen."""
        return WeightsResult(
            included=False,
            method="reveal_weights",
            commit_hash=self.commit_hash,
            message=message,
        )


def commit_hash_of(
    public_key: bytes,
    netuid: int,
    uids: Sequence[int],
    values: Sequence[int],
    salt: Sequence[int],
    version_key: int,
) -> str:
    """The commit hash of these weights as subtensor stores and checks it, `0x…` hex."""
    return (
        "0x" + wmath.weight_commit_hash(public_key, netuid, uids, values, salt, version_key).hex()
    )


def seal(
    public_key: bytes, netuid: int, uids: list[int], values: list[int], version_key: int
) -> tuple[tuple[int, ...], str]:
    """A fresh salt and the commit hash of these weights under it."""
    salt = wmath.new_salt()
    return salt, commit_hash_of(public_key, netuid, uids, values, salt, version_key)


# Sends one reveal; returns (block it landed in when known, extrinsic hash when there is one).
SendReveal = Callable[[PendingReveal], tuple[int | None, str | None]]


def reveal_due(
    pending: Sequence[PendingReveal],
    netuid: int,
    block: int,
    tempo: int,
    reveal_period: int,
    send: SendReveal,
    *,
    included: bool,
) -> tuple[list[WeightsResult], list[PendingReveal]]:
    """Reveals the commits of `netuid` whose reveal window holds `block` (the block a reveal sent
    now lands in); returns the results and the commits still pending, in order.

    included: what a sent reveal's result says (a backend that does not wait for the block
    cannot say it was included).
    """
    results: list[WeightsResult] = []
    keep: list[PendingReveal] = []
    for commit in pending:
        if commit.netuid != netuid:
            keep.append(commit)
            continue
        first, last = wmath.reveal_blocks(netuid, commit.commit_block, tempo, reveal_period)
        if block < first:
            keep.append(commit)
            continue
        if block > last:
            results.append(commit.dropped(f"reveal window {first}..{last} passed (block {block})"))
            continue
        try:
            at, extrinsic_hash = send(commit)
        except RevealTooEarly:
            keep.append(commit)
            continue
        except PalletError as exc:
            results.append(commit.dropped(str(exc)))
            continue
        results.append(
            commit.result("reveal_weights", at, included=included, extrinsic_hash=extrinsic_hash)
        )
    return results, keep
