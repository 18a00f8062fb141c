"""The one bucket interface every role talks to, and `open_bucket` that picks a backend by URL.

Two backends implement it (DESIGN.md principle 6): a local directory (`storage/local.py`, the
embedded default) and Google Cloud Storage (`storage/gcs.py`). The same contract tests run against
both (tests/test_storage_contract.py).

Object names are bucket-relative, '/'-separated and validated before any backend sees them, so a
hostile name read from a listing, the chain or a peer can never address anything outside the
bucket (no '..', no absolute paths, no dot-files, a restricted charset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gauntlet_jax.config import StorageConfig
from gauntlet_jax.errors import StorageError

# One path segment: starts with an alphanumeric (so no '.', '..' or hidden temp files), then a
# conservative charset that is safe in file systems, URLs and GCS object names alike.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+\-]{0,254}")
MAX_NAME_LENGTH = 1024


class InvalidObjectName(StorageError):
    """An object name is empty, too long, absolute, has '..' or characters outside the charset."""


@dataclass(frozen=True)
class ObjectInfo:
    """What the server says about one object.

    `last_modified` is Unix seconds from the server's clock (GCS `updated`, the local file's mtime
    when the write completed), never the uploader's claim: the put-window check (GAUNTLET.md §2.2)
    relies on it. `generation` changes on every write of the name.
    """

    name: str
    size: int
    last_modified: float
    generation: int


def validate_name(name: str) -> str:
    """Returns `name` if it is a safe bucket-relative object name, else raises InvalidObjectName."""
    if not isinstance(name, str) or not name:
        raise InvalidObjectName(f"object name must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidObjectName(f"object name longer than {MAX_NAME_LENGTH}: {name[:64]!r}…")
    for segment in name.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidObjectName(
                f"object name {name!r}: segment {segment!r} is empty, starts with a non-"
                "alphanumeric, or has characters outside [A-Za-z0-9._=+-]"
            )
    return name


def is_valid_name(name: str) -> bool:
    """True if `validate_name` would accept `name` (for filtering hostile listings)."""
    try:
        validate_name(name)
    except InvalidObjectName:
        return False
    return True


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a name prefix whose complete segments are valid."""
    if prefix == "":
        return prefix
    head, _, last = prefix.rpartition("/")
    if head:
        validate_name(head)
    if last and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._=+\-]*", last):
        raise InvalidObjectName(f"listing prefix {prefix!r} has an invalid last segment")
    return prefix


@runtime_checkable
class Bucket(Protocol):
    """A flat namespace of immutable-per-generation objects.

    All methods raise `StorageError` subclasses from gauntlet_jax/errors.py: `ObjectNotFound`,
    `ObjectTooLarge` (nothing beyond the cap was read), `PreconditionFailed` (a write-once put
    lost the race), or plain `StorageError` after retries.
    """

    url: str

    def put(self, name: str, data: bytes, *, if_absent: bool = False) -> ObjectInfo:
        """Writes `data` atomically; readers see the old object or the whole new one, never a part.

        With `if_absent=True` exactly one of several racing writers succeeds; the others get
        PreconditionFailed.
        """
        ...

    def get(self, name: str, *, max_bytes: int | None) -> bytes:
        """Reads a whole object. Refuses (ObjectTooLarge) before reading more than `max_bytes`."""
        ...

    def head(self, name: str) -> ObjectInfo:
        """Size, server-side last-modified time and generation of one object."""
        ...

    def list(self, prefix: str = "", *, max_results: int = 100_000) -> list[ObjectInfo]:
        """Objects whose names start with `prefix`, sorted by name, at most `max_results` (a
        hostile bucket cannot make us page forever). Names that fail validation (someone else's
        junk in a shared bucket) are skipped."""
        ...

    def delete(self, name: str) -> None:
        """Removes an object; ObjectNotFound if it does not exist."""
        ...


def open_bucket(url: str, cfg: StorageConfig) -> Bucket:
    """A bucket from a URL: `gs://bucket[/prefix]`, `file:///abs/path`, or a plain path."""
    if url.startswith("gs://"):
        from gauntlet_jax.storage.gcs import GcsBucket  # google-cloud-storage only when used

        return GcsBucket.from_url(url, cfg)
    if url.startswith("file://"):
        path = url[len("file://") :]
        if not path.startswith("/"):
            raise StorageError(f"file URL must be absolute (file:///path), got {url!r}")
        from gauntlet_jax.storage.local import LocalBucket

        return LocalBucket(path)
    if "://" in url:
        raise StorageError(
            f"unsupported bucket URL scheme in {url!r} (use gs://, file:// or a path)"
        )
    from gauntlet_jax.storage.local import LocalBucket

    return LocalBucket(url)
