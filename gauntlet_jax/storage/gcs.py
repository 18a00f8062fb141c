"""Google Cloud Storage bucket through `google-cloud-storage`.

- Credentials: a service-account JSON file (`storage.credentials_file`), else application-default
  credentials; `storage.anonymous` reads public-read buckets without any. With
  `STORAGE_EMULATOR_HOST` set (tests, fake-gcs-server) the library talks to the emulator.
- Every request has a timeout (`get_timeout_s` for reads, `put_timeout_s` per upload request) and
  the library's retry policy (429, 408, 5xx, connection errors) with exponential backoff bounded by
  `retry_deadline_s`; then a typed StorageError.
- Write-once puts send `ifGenerationMatch=0`: the server lets exactly one writer create the name,
  the others get 412 → PreconditionFailed. (If the response to a successful create is lost and the
  retry then sees 412, the caller is told PreconditionFailed although its bytes are stored; the
  protocol only writes a name once, so it treats both the same.)
- Objects above `resumable_threshold_bytes` go up as a chunked resumable upload; the object only
  becomes visible when the last chunk is committed, so a failed upload leaves nothing behind.
  (The library sends anything up to 8 MiB as one multipart request whatever the chunk size;
  that is atomic too.)
- `get` reads the object's metadata first and refuses an object above `max_bytes` before any byte
  of it is downloaded; the download then streams into a buffer capped at the declared size, so a
  server that lies about the size cannot push more, and it is pinned to that generation.
- `last_modified` is the server's `updated` time (the put-window check must never trust the
  uploader's clock).

One `google.cloud.storage.Client` per thread (the library does not promise thread safety), so a
GcsBucket may be shared by a thread pool.
"""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable
from typing import TypeVar

import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from google.cloud.storage import exceptions as gcs_media_exceptions
from google.cloud.storage.retry import DEFAULT_RETRY

from gauntlet_jax.config import StorageConfig
from gauntlet_jax.errors import ObjectNotFound, ObjectTooLarge, PreconditionFailed, StorageError
from gauntlet_jax.storage.base import ObjectInfo, is_valid_name, validate_name, validate_prefix

_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9._\-]{1,61}[a-z0-9]")
_CHUNK_QUANTUM = 256 * 1024  # GCS resumable chunks must be multiples of 256 KiB
_SWAP_ATTEMPTS = 5  # metadata → download may race with an overwrite at most this often

# Everything the client stack raises for a failed request, once retries are spent.
_CLIENT_ERRORS = (
    api_exceptions.GoogleAPIError,
    auth_exceptions.GoogleAuthError,
    gcs_media_exceptions.InvalidResponse,
    gcs_media_exceptions.DataCorruption,
    requests.RequestException,
    OSError,
)

T = TypeVar("T")


class _ServerSentTooMuch(ObjectTooLarge):
    """The body was longer than the object's metadata said."""


class _CappedBuffer(io.RawIOBase):
    """A write-only buffer that refuses to grow beyond `cap` bytes (a lying server's extra bytes)."""

    def __init__(self, cap: int, what: str) -> None:
        super().__init__()
        self._cap = cap
        self._what = what
        self._buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if len(self._buf) + len(data) > self._cap:
            raise _ServerSentTooMuch(
                f"{self._what}: server sent more than the {self._cap} bytes its metadata declared"
            )
        self._buf += data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        # The library seeks back to rewind a failed partial read before a retry.
        if whence == io.SEEK_SET and offset <= len(self._buf):
            del self._buf[offset:]
            return offset
        if whence == io.SEEK_CUR and offset == 0:
            return len(self._buf)
        raise io.UnsupportedOperation("capped buffer only rewinds")

    def tell(self) -> int:
        return len(self._buf)

    def seekable(self) -> bool:
        return True

    def getvalue(self) -> bytes:
        return bytes(self._buf)


class GcsBucket:
    """`gs://bucket[/prefix]`: object `name` is stored as `prefix/name`."""

    def __init__(self, bucket: str, prefix: str, cfg: StorageConfig) -> None:
        if not _BUCKET_NAME.fullmatch(bucket):
            raise StorageError(f"invalid GCS bucket name {bucket!r}")
        if prefix:
            validate_name(prefix)
        if cfg.resumable_chunk_bytes <= 0 or cfg.resumable_chunk_bytes % _CHUNK_QUANTUM:
            raise StorageError(
                f"storage.resumable_chunk_bytes={cfg.resumable_chunk_bytes} must be a positive "
                f"multiple of {_CHUNK_QUANTUM}"
            )
        self.bucket_name = bucket
        self.prefix = prefix
        self.cfg = cfg
        self.url = f"gs://{bucket}" + (f"/{prefix}" if prefix else "")
        self._local = threading.local()
        self._retry = DEFAULT_RETRY.with_delay(
            initial=cfg.backoff_s, maximum=cfg.backoff_max_s, multiplier=2.0
        ).with_timeout(cfg.retry_deadline_s)

    @classmethod
    def from_url(cls, url: str, cfg: StorageConfig) -> GcsBucket:
        if not url.startswith("gs://"):
            raise StorageError(f"not a gs:// URL: {url!r}")
        bucket, _, prefix = url[len("gs://") :].partition("/")
        return cls(bucket, prefix.strip("/"), cfg)

    def __repr__(self) -> str:
        return f"GcsBucket({self.url!r})"

    # -- plumbing ---------------------------------------------------------------------------

    def _bucket(self) -> storage.Bucket:
        client = getattr(self._local, "client", None)
        if client is None:
            try:
                if self.cfg.anonymous:
                    client = storage.Client.create_anonymous_client()
                elif self.cfg.credentials_file:
                    client = storage.Client.from_service_account_json(
                        self.cfg.credentials_file, project=self.cfg.project or None
                    )
                else:
                    client = storage.Client(project=self.cfg.project or None)
            except (auth_exceptions.GoogleAuthError, OSError, ValueError) as e:
                raise StorageError(f"{self.url}: cannot create a GCS client: {e}") from e
            self._local.client = client
        return client.bucket(self.bucket_name)

    def _key(self, name: str) -> str:
        validate_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def _call(self, what: str, name: str, fn: Callable[[], T]) -> T:
        """Runs one client call, mapping the library's exceptions onto ours."""
        try:
            return fn()
        except StorageError:
            raise
        except api_exceptions.NotFound as e:
            raise ObjectNotFound(f"{self.url}: no object {name!r}") from e
        except api_exceptions.PreconditionFailed as e:
            raise PreconditionFailed(f"{self.url}: {name!r} already exists (write-once)") from e
        except api_exceptions.RetryError as e:
            raise StorageError(
                f"{self.url}: {what} {name!r} still failing after {self.cfg.retry_deadline_s}s "
                f"of retries: {e.cause}"
            ) from e
        except _CLIENT_ERRORS as e:
            raise StorageError(f"{self.url}: {what} {name!r} failed: {e}") from e

    def _info(self, name: str, blob: storage.Blob) -> ObjectInfo:
        if blob.size is None or blob.updated is None or blob.generation is None:
            raise StorageError(f"{self.url}: server returned incomplete metadata for {name!r}")
        return ObjectInfo(
            name=name,
            size=int(blob.size),
            last_modified=blob.updated.timestamp(),
            generation=int(blob.generation),
        )

    # -- the Bucket interface ---------------------------------------------------------------

    def put(self, name: str, data: bytes, *, if_absent: bool = False) -> ObjectInfo:
        key = self._key(name)
        chunked = len(data) > self.cfg.resumable_threshold_bytes
        blob = self._bucket().blob(
            key, chunk_size=self.cfg.resumable_chunk_bytes if chunked else None
        )

        def upload() -> None:
            blob.upload_from_file(
                io.BytesIO(data),
                size=len(data),
                content_type="application/octet-stream",
                if_generation_match=0 if if_absent else None,
                timeout=self.cfg.put_timeout_s,
                retry=self._retry,
            )

        self._call("put", name, upload)
        return self._info(name, blob)

    def _metadata(self, name: str) -> storage.Blob:
        key = self._key(name)
        blob = self._call(
            "head",
            name,
            lambda: self._bucket().get_blob(key, timeout=self.cfg.get_timeout_s, retry=self._retry),
        )
        if blob is None:
            raise ObjectNotFound(f"{self.url}: no object {name!r}")
        return blob

    def get(self, name: str, *, max_bytes: int | None) -> bytes:
        for _ in range(_SWAP_ATTEMPTS):
            blob = self._metadata(name)
            info = self._info(name, blob)
            if max_bytes is not None and info.size > max_bytes:
                raise ObjectTooLarge(f"{self.url}: {name!r} is {info.size} bytes > cap {max_bytes}")
            sink = _CappedBuffer(info.size, f"{self.url}/{name}")
            try:
                self._call(
                    "get",
                    name,
                    lambda blob=blob, sink=sink: blob.download_to_file(
                        sink,
                        if_generation_match=blob.generation,
                        timeout=self.cfg.get_timeout_s,
                        retry=self._retry,
                    ),
                )
            except PreconditionFailed:
                continue  # overwritten between metadata and download: read the new generation
            except _ServerSentTooMuch:
                if self._changed(name, info):
                    continue  # a server that ignores the precondition served a newer, larger one
                raise
            data = sink.getvalue()
            if len(data) == info.size:
                return data
            if not self._changed(name, info):
                raise StorageError(
                    f"{self.url}: {name!r} returned {len(data)} bytes, metadata said {info.size}"
                )
        raise StorageError(f"{self.url}: {name!r} kept changing while being read")

    def _changed(self, name: str, info: ObjectInfo) -> bool:
        try:
            return self.head(name).generation != info.generation
        except ObjectNotFound:
            return True

    def head(self, name: str) -> ObjectInfo:
        return self._info(name, self._metadata(name))

    def list(self, prefix: str = "", *, max_results: int = 100_000) -> list[ObjectInfo]:
        validate_prefix(prefix)
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0

        def fetch() -> list[ObjectInfo]:
            out = []
            blobs = self._bucket().client.list_blobs(
                self.bucket_name,
                prefix=full,
                max_results=max_results,
                timeout=self.cfg.get_timeout_s,
                retry=self._retry,
            )
            for blob in blobs:
                name = blob.name[strip:]
                if is_valid_name(name):  # someone else's junk in a shared bucket is not ours
                    out.append(self._info(name, blob))
            return out

        infos = self._call("list", prefix, fetch)
        infos.sort(key=lambda info: info.name)
        return infos

    def delete(self, name: str) -> None:
        key = self._key(name)
        self._call(
            "delete",
            name,
            lambda: (
                self._bucket().blob(key).delete(timeout=self.cfg.get_timeout_s, retry=self._retry)
            ),
        )
