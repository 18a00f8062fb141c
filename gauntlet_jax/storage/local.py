"""The embedded bucket: a local directory, safe for several processes reading and writing at once.

Writes go to a hidden temporary file in the object's own directory, are fsynced, then made
visible in one atomic step: `os.replace` for an overwrite, `os.link` for write-once (`link`
fails with EEXIST if the name exists, so exactly one racing writer wins). Readers therefore see
either nothing, the old object or the whole new one. The directory is fsynced after the rename so
a crash cannot lose a write that returned.

Times: `last_modified` is the file's mtime, set by the kernel at the last data write, i.e. when
the write completed (the rename does not change it). It is this host's clock (the kernel's coarse
clock, a few ms behind `time.time()` at worst), which is the "server" of a local bucket. A bucket
made with `clock=` stamps its writes with that clock's time instead (set on the temporary file
before it becomes visible): the simulator runs the chain on a manual clock and its buckets on the
same simulated time, so the put-window check compares like with like.
`generation` is the mtime in microseconds times 1000 plus the inode mod 1000: every write makes a
new inode while the old file still exists, so two writes of a name do not share a generation.

One difference from GCS: a name cannot be both an object and a "directory" ('a' and 'a/b'); the
protocol's names never need that.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from gauntlet_jax.errors import ObjectNotFound, ObjectTooLarge, PreconditionFailed, StorageError
from gauntlet_jax.storage.base import ObjectInfo, validate_name, validate_prefix

_TMP_PREFIX = ".tmp-"  # validate_name rejects leading dots, so temp files never look like objects
_READ_CHUNK = 1 << 20


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBucket:
    """A bucket backed by a directory tree; object 'a/b' is the file root/a/b."""

    def __init__(
        self, root: str | os.PathLike[str], *, clock: Callable[[], float] | None = None
    ) -> None:
        """`clock`: Unix seconds to stamp each write with (default: the kernel's, at write time)."""
        self.root = Path(root).expanduser().resolve()
        self.url = f"file://{self.root}"
        self.clock = clock
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create bucket directory {self.root}: {e}") from e

    def __repr__(self) -> str:
        return f"LocalBucket({str(self.root)!r})"

    def _path(self, name: str) -> Path:
        return self.root / validate_name(name)

    def _info(self, name: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            name=name,
            size=st.st_size,
            last_modified=st.st_mtime_ns / 1e9,
            generation=(st.st_mtime_ns // 1000) * 1000 + st.st_ino % 1000,
        )

    def put(self, name: str, data: bytes, *, if_absent: bool = False) -> ObjectInfo:
        path = self._path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.parent / f"{_TMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(6)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as e:
            raise StorageError(f"{self.url}: cannot write {name!r}: {e}") from e
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.clock is not None:
                    stamp_ns = round(self.clock() * 1e9)
                    os.utime(fd, ns=(stamp_ns, stamp_ns))
                os.fsync(fd)
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError as e:
                    raise PreconditionFailed(
                        f"{self.url}: {name!r} already exists (write-once)"
                    ) from e
            else:
                os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as e:
            raise StorageError(f"{self.url}: cannot write {name!r}: {e}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return self._info(name, st)

    def get(self, name: str, *, max_bytes: int | None) -> bytes:
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError as e:
            raise ObjectNotFound(f"{self.url}: no object {name!r}") from e
        except OSError as e:
            raise StorageError(f"{self.url}: cannot read {name!r}: {e}") from e
        try:
            # The open fd pins this generation: a concurrent replace swaps the name, not our file.
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ObjectNotFound(f"{self.url}: {name!r} is not an object")
            size = st.st_size
            if max_bytes is not None and size > max_bytes:
                raise ObjectTooLarge(f"{self.url}: {name!r} is {size} bytes > cap {max_bytes}")
            limit = size if max_bytes is None else min(size, max_bytes)
            parts: list[bytes] = []
            got = 0
            while got < limit:
                chunk = os.read(fd, min(_READ_CHUNK, limit - got))
                if not chunk:
                    break
                parts.append(chunk)
                got += len(chunk)
            return b"".join(parts)
        except OSError as e:
            raise StorageError(f"{self.url}: cannot read {name!r}: {e}") from e
        finally:
            os.close(fd)

    def head(self, name: str) -> ObjectInfo:
        path = self._path(name)
        try:
            st = path.stat()
        except FileNotFoundError as e:
            raise ObjectNotFound(f"{self.url}: no object {name!r}") from e
        except OSError as e:
            raise StorageError(f"{self.url}: cannot stat {name!r}: {e}") from e
        if not path.is_file():
            raise ObjectNotFound(f"{self.url}: {name!r} is not an object")
        return self._info(name, st)

    def list(self, prefix: str = "", *, max_results: int = 100_000) -> list[ObjectInfo]:
        validate_prefix(prefix)
        # Walk only the directory the prefix pins down, not the whole bucket.
        start = self.root / prefix.rpartition("/")[0]
        out: list[ObjectInfo] = []
        if not start.is_dir():
            return out
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel_dir = os.path.relpath(dirpath, self.root)
            for fname in filenames:
                name = fname if rel_dir == "." else f"{rel_dir}/{fname}"
                if not name.startswith(prefix) or fname.startswith("."):
                    continue
                try:
                    validate_name(name)
                    st = os.stat(os.path.join(dirpath, fname))
                except (OSError, StorageError):
                    continue  # deleted meanwhile, or junk that is not ours to serve
                out.append(self._info(name, st))
        out.sort(key=lambda info: info.name)
        return out[:max_results]

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            os.unlink(path)
        except FileNotFoundError as e:
            raise ObjectNotFound(f"{self.url}: no object {name!r}") from e
        except OSError as e:
            if e.errno == errno.EISDIR:
                raise ObjectNotFound(f"{self.url}: {name!r} is not an object") from e
            raise StorageError(f"{self.url}: cannot delete {name!r}: {e}") from e
