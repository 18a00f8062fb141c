"""The chain interface every backend implements, and the values it deals in.

A chain tells a node four things (GAUNTLET.md §6): the block clock (and each block's timestamp, for
the put window), the metagraph of a subnet (who is registered, with what stake and permits), each
neuron's commitment (where its bucket is and how to read it), and it takes a validator's weights.
Backends: `chain.local.LocalChain` (SQLite, embedded default) and `chain.subtensor.SubtensorChain`
(bittensor's subtensor over substrate-interface); both raise the typed errors of `chain.errors`.

Everything read from a chain is hostile: commitments in particular are written by any neuron, so
`validate_commitment` caps their length and charset before anyone parses them.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from gauntlet_jax import __version__
from gauntlet_jax.chain.errors import ChainDataError

# A commitment is one line of printable ASCII (no spaces at the ends, no control characters) of at
# most 128 characters: the reference packs bucket name + key id + secret into 128, and subtensor's
# Commitments pallet holds one `Raw128` field per neuron (MaxFields = 1 in the runtimes we test).
MAX_COMMITMENT_CHARS = 128
COMMITMENT_CHARSET = frozenset(string.ascii_letters + string.digits + string.punctuation + " ")
ROOT_NETUID = 0


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def _frozen_array(values, dtype) -> np.ndarray:
    array = np.array(values, dtype=dtype)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class Metagraph:
    """A subnet's neurons at one block, indexed by position (uids[i], hotkeys[i], stake[i] …).

    stake is in whole tokens (alpha on dynamic-TAO subtensor, 1e9 rao = 1); last_update is the
    block of each uid's last weights (or commit); arrays are read-only.
    """

    netuid: int
    block: int
    uids: np.ndarray
    hotkeys: tuple[str, ...]
    stake: np.ndarray
    validator_permit: np.ndarray
    last_update: np.ndarray
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.hotkeys)
        object.__setattr__(self, "uids", _frozen_array(self.uids, np.int64))
        object.__setattr__(self, "stake", _frozen_array(self.stake, np.float64))
        object.__setattr__(self, "validator_permit", _frozen_array(self.validator_permit, bool))
        object.__setattr__(self, "last_update", _frozen_array(self.last_update, np.int64))
        object.__setattr__(self, "hotkeys", tuple(self.hotkeys))
        for name in ("uids", "stake", "validator_permit", "last_update"):
            if getattr(self, name).shape != (n,):
                raise ChainDataError(
                    f"metagraph of netuid {self.netuid}: {name} has shape "
                    f"{getattr(self, name).shape}, expected ({n},)"
                )
        self._index.clear()
        self._index.update({hk: int(uid) for hk, uid in zip(self.hotkeys, self.uids, strict=True)})

    @property
    def n(self) -> int:
        return len(self.hotkeys)

    def uid_of(self, hotkey: str) -> int | None:
        """The uid of a hotkey, or None when it is not registered on this subnet."""
        return self._index.get(hotkey)

    def hotkey_of(self, uid: int) -> str | None:
        where = np.flatnonzero(self.uids == uid)
        return self.hotkeys[int(where[0])] if where.size else None


@dataclass(frozen=True)
class WeightsResult:
    """What a set_weights call did.

    method: "set_weights", "commit_weights", "reveal_weights" or "none" (all weights zero: nothing
    sent). uids/values are the u16 vectors actually sent. included: the extrinsic is in a block
    without error (for the local chain: applied). block: that block, when known.
    """

    included: bool
    method: str
    block: int | None = None
    uids: tuple[int, ...] = ()
    values: tuple[int, ...] = ()
    version_key: int = 0
    extrinsic_hash: str | None = None
    commit_hash: str | None = None
    message: str = ""


# ---------------------------------------------------------------------------------------------
# Helpers shared by backends
# ---------------------------------------------------------------------------------------------


def window_of(block: int, blocks_per_window: int) -> int:
    if blocks_per_window <= 0:
        raise ValueError(f"blocks_per_window must be positive, got {blocks_per_window}")
    return block // blocks_per_window


def validate_commitment(data: object, who: str = "commitment") -> str:
    """Returns `data` if it is an acceptable commitment string, else raises ChainDataError.

    Used on write (so we never publish what readers would refuse) and on read (hostile input).
    """
    if not isinstance(data, str):
        raise ChainDataError(f"{who}: expected a string, got {type(data).__name__}")
    if not data:
        raise ChainDataError(f"{who}: empty")
    if len(data) > MAX_COMMITMENT_CHARS:
        raise ChainDataError(f"{who}: {len(data)} characters, limit {MAX_COMMITMENT_CHARS}")
    bad = {c for c in data if c not in COMMITMENT_CHARSET}
    if bad:
        shown = ", ".join(sorted(repr(c) for c in bad)[:5])
        raise ChainDataError(f"{who}: forbidden characters ({shown})")
    if data != data.strip():
        raise ChainDataError(f"{who}: leading or trailing whitespace")
    return data


def version_key_of(version: str) -> int:
    """A `major.minor.patch` version as the integer weights version key:
    major·1_000_000 + minor·1_000 + patch (0.1.0 → 1000). Upgrades only ever raise it."""
    parts = version.split(".")[:3]
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"version {version!r} is not major.minor.patch")
    major, minor, patch = (int(p) for p in parts)
    if minor >= 1000 or patch >= 1000:
        raise ValueError(f"version {version!r}: minor and patch must stay below 1000")
    return major * 1_000_000 + minor * 1_000 + patch


# The version key this node sends with every weight call (from the package version).
NODE_VERSION_KEY = version_key_of(__version__)


def blocks_until_weights_allowed(block: int, last_update: int, rate_limit: int) -> int:
    """Blocks to wait before weights set at `block` pass subtensor's `check_rate_limit`.

    0 = allowed now. A LastUpdate of 0 means never set (always allowed), as on chain.
    """
    if last_update == 0:
        return 0
    return max(0, rate_limit - (block - last_update))


# ---------------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class Chain(Protocol):
    """One node's view of the chain; writes are signed by (or attributed to) `hotkey`."""

    @property
    def hotkey(self) -> str | None:
        """SS58 address of this node's hotkey (None: read-only)."""
        ...

    def current_block(self) -> int:
        """Number of the latest block."""
        ...

    def block_timestamp(self, block: int) -> float:
        """Unix seconds of `Timestamp.Now` at `block`."""
        ...

    def window(self, blocks_per_window: int) -> int:
        """current_block // blocks_per_window."""
        ...

    def metagraph(self, netuid: int) -> Metagraph:
        """Registered neurons of a subnet with stake, permits and last update."""
        ...

    def get_commitment(self, netuid: int, who: int | str) -> str | None:
        """A neuron's commitment (by uid or hotkey), validated; None when it has none."""
        ...

    def get_commitments(self, netuid: int) -> dict[int, str]:
        """Every valid commitment of the subnet by uid (invalid ones are left out)."""
        ...

    def commit(self, netuid: int, data: str) -> int:
        """Publishes this hotkey's commitment; returns the block it landed in."""
        ...

    def set_weights(
        self, netuid: int, uids: object, weights: object, version_key: int
    ) -> WeightsResult:
        """Converts weights to u16 as bittensor does and sets them (or commits them when the
        subnet has commit-reveal). Raises a PalletError subclass on a pallet error."""
        ...

    def reveal_pending(self, netuid: int) -> list[WeightsResult]:
        """Reveals this hotkey's commits whose reveal epoch has come (and reports timelocked
        commits the runtime revealed or missed)."""
        ...

    def weights_version_key(self, netuid: int) -> int:
        """The subnet's WeightsVersionKey: weight calls with a lower key are refused."""
        ...

    def get_weights(self, netuid: int, uid: int) -> dict[int, int]:
        """The weights row stored for `uid` (dest uid → u16 value)."""
        ...

    def close(self) -> None: ...
