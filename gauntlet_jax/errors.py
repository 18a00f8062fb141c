"""Typed errors. Every fault that input from outside (a peer, the chain, a bucket, a config) can
cause has a class here, so callers catch exactly what they can handle and nothing else."""

from __future__ import annotations


class GauntletError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(GauntletError):
    """A config file or override is malformed, mistyped or names an unknown key."""


class DistributedError(ConfigError):
    """The multi-host settings are contradictory or incomplete (names the setting)."""


class DataError(GauntletError):
    """Tokenizer or token shards are missing or malformed."""


class MissingExtra(GauntletError):
    """A command needs an optional dependency group that is not installed (names the extra)."""

    def __init__(self, what: str, extra: str, module: str) -> None:
        self.extra = extra
        super().__init__(
            f"{what} needs {module}: pip install 'gauntlet-jax[{extra}]' (or pip install {module})"
        )


class RegistrationError(GauntletError):
    """This node's hotkey is missing, malformed or not registered (or not permitted) on the
    subnet: the operator must act."""


class VersionMismatch(GauntletError):
    """This node runs another version than the network accepts (e.g. the weights version key)."""


class PeerFault(GauntletError):
    """A peer did something the protocol penalises. `uid` names the peer, `fault` the reason."""

    def __init__(self, uid: int | None, fault: str, detail: str = "") -> None:
        self.uid = uid
        self.fault = fault
        self.detail = detail
        who = f"peer {uid}" if uid is not None else "peer"
        super().__init__(f"{who}: {fault}" + (f" ({detail})" if detail else ""))


class InvalidPayload(PeerFault):
    """A pseudo-gradient or probe file failed validation (size, shape, dtype, range, NaN …)."""


class MissingPayload(PeerFault):
    """A peer's object for a window does not exist."""


class LatePayload(PeerFault):
    """A peer's object arrived outside the put window (too early or too late)."""


class OutOfSync(PeerFault):
    """A peer's parameters are too many outer steps away from the validator's."""


class StorageError(GauntletError):
    """A bucket operation failed after retries (network, server, permissions)."""


class ObjectNotFound(StorageError):
    """The object does not exist."""


class UnsafePath(StorageError):
    """A local bucket path leads through a symbolic link or something that is not a directory;
    nothing was read or written through it."""


class NotAnObject(UnsafePath, ObjectNotFound):
    """The name exists but is no regular file inside the bucket (a symbolic link, a FIFO, a
    device, a directory): never read or listed, and readers treat it as missing."""


class ObjectTooLarge(StorageError):
    """The object exceeds the caller's byte cap; nothing beyond the cap was downloaded."""


class PreconditionFailed(StorageError):
    """A write-once put lost the race: the object already exists."""


class ChainError(GauntletError):
    """A chain query or extrinsic failed (connection, decoding, or a pallet error)."""


class CheckpointError(GauntletError):
    """A checkpoint could not be saved, found or restored."""


class StateError(GauntletError):
    """The validator's saved state is corrupt, incomplete or was written under another seed."""


class MalformedJson(GauntletError):
    """A JSON document from outside is too large, too deeply nested, not UTF-8 JSON, repeats a
    key, or has a field of the wrong type (`true` is not an integer). Each boundary re-raises it
    as its own error (a peer's InvalidPayload, a corpus's DataError …)."""


# Faults no retry can fix: the operator must act (the chain's own kinds subclass these: a bad
# hotkey secret and "not registered" are RegistrationErrors, a rejected weights version key a
# VersionMismatch, a corrupt local chain file a StateError). Every other GauntletError (storage,
# a chain connection or a busy chain file, a missing aggregate …) is transient.
PERMANENT_ERRORS: tuple[type[GauntletError], ...] = (
    ConfigError,
    DataError,
    StateError,
    RegistrationError,
    VersionMismatch,
    MissingExtra,
)


def is_permanent(error: GauntletError) -> bool:
    """Whether retrying cannot help (`cli.exit_code`: 78, else 75; the validator's loop survives
    every other fault and retries)."""
    return isinstance(error, PERMANENT_ERRORS)
