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

Only regular files inside the root are objects. A peer may control files in the tree (its own
bucket directory, say), so every access walks from the root one segment at a time with
`O_NOFOLLOW` relative to the directory before (openat-style): a symbolic link anywhere on the path
is never followed, `put` never writes through a linked directory, and links are neither read nor
listed. Objects are opened with `O_NONBLOCK` and checked with `fstat` on the open descriptor, so a
FIFO or device (even one swapped in between `head` and `get`) never blocks a reader; both are
`NotAnObject`, which readers treat as a missing object.

One difference from GCS: a name cannot be both an object and a "directory" ('a' and 'a/b'); the
protocol's names never need that.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from gauntlet_jax.errors import (
    NotAnObject,
    ObjectNotFound,
    ObjectTooLarge,
    PreconditionFailed,
    StorageError,
    UnsafePath,
)
from gauntlet_jax.storage.base import ObjectInfo, validate_name, validate_prefix

_TMP_PREFIX = ".tmp-"  # validate_name rejects leading dots, so temp files never look like objects
_READ_CHUNK = 1 << 20
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# A directory on an object's path: never a link.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# An object: never a link, never waiting for a FIFO's writer, never a controlling terminal.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC
_TMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | _CLOEXEC


class LocalBucket:
    """A bucket backed by a directory tree; object 'a/b' is the regular file root/a/b."""

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

    def _info(self, name: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(
            name=name,
            size=st.st_size,
            last_modified=st.st_mtime_ns / 1e9,
            generation=(st.st_mtime_ns // 1000) * 1000 + st.st_ino % 1000,
        )

    @contextlib.contextmanager
    def _directory(self, segments: list[str], name: str, *, create: bool) -> Iterator[int]:
        """An fd of root/segments…, reached one segment at a time without following links
        (made as needed with `create`). A link or a non-directory on the way is UnsafePath
        (NotAnObject for a reader, who sees a missing object)."""
        unsafe = UnsafePath if create else NotAnObject
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
        try:
            for segment in segments:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(segment, 0o755, dir_fd=fd)
                try:
                    inner = os.open(segment, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError as e:
                    raise ObjectNotFound(f"{self.url}: no object {name!r}") from e
                except OSError as e:
                    if e.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise unsafe(
                            f"{self.url}: {name!r} leads through {segment!r}, which is not a "
                            "directory inside the bucket"
                        ) from e
                    raise
                os.close(fd)
                fd = inner
            yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _parent(self, name: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
        """(fd of the directory holding the object, the object's last segment)."""
        *dirs, leaf = validate_name(name).split("/")
        with self._directory(dirs, name, create=create) as fd:
            yield fd, leaf

    def _regular(self, name: str, st: os.stat_result) -> os.stat_result:
        if not stat.S_ISREG(st.st_mode):
            raise NotAnObject(f"{self.url}: {name!r} is not an object (not a regular file)")
        return st

    def put(self, name: str, data: bytes, *, if_absent: bool = False) -> ObjectInfo:
        try:
            with self._parent(name, create=True) as (dirfd, leaf):
                tmp = f"{_TMP_PREFIX}{leaf}.{os.getpid()}.{secrets.token_hex(6)}"
                fd = os.open(tmp, _TMP_FLAGS, 0o644, dir_fd=dirfd)
                try:
                    st = self._write_tmp(fd, data)
                    if if_absent:
                        try:
                            os.link(tmp, leaf, src_dir_fd=dirfd, dst_dir_fd=dirfd)
                        except FileExistsError as e:
                            raise PreconditionFailed(
                                f"{self.url}: {name!r} already exists (write-once)"
                            ) from e
                    else:
                        os.replace(tmp, leaf, src_dir_fd=dirfd, dst_dir_fd=dirfd)
                    os.fsync(dirfd)
                finally:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(tmp, dir_fd=dirfd)
        except ObjectNotFound as e:  # a directory vanished while we walked it
            raise StorageError(f"{self.url}: cannot write {name!r}: {e}") from e
        except OSError as e:
            raise StorageError(f"{self.url}: cannot write {name!r}: {e}") from e
        return self._info(name, st)

    def _write_tmp(self, fd: int, data: bytes) -> os.stat_result:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.clock is not None:
                stamp_ns = round(self.clock() * 1e9)
                os.utime(fd, ns=(stamp_ns, stamp_ns))
            os.fsync(fd)
            return os.fstat(fd)
        finally:
            os.close(fd)

    def get(self, name: str, *, max_bytes: int | None) -> bytes:
        try:
            with self._parent(name) as (dirfd, leaf):
                self._regular(name, os.stat(leaf, dir_fd=dirfd, follow_symlinks=False))
                fd = os.open(leaf, _READ_FLAGS, dir_fd=dirfd)
        except FileNotFoundError as e:
            raise ObjectNotFound(f"{self.url}: no object {name!r}") from e
        except OSError as e:
            if e.errno == errno.ELOOP:  # swapped for a link after the stat
                raise NotAnObject(f"{self.url}: {name!r} is a symbolic link") from e
            raise StorageError(f"{self.url}: cannot read {name!r}: {e}") from e
        try:
            # The open fd pins this generation: a concurrent replace swaps the name, not our
            # file; and it is what we read, so a FIFO swapped in after the stat is caught here.
            size = self._regular(name, os.fstat(fd)).st_size
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
        try:
            with self._parent(name) as (dirfd, leaf):
                st = os.stat(leaf, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError as e:
            raise ObjectNotFound(f"{self.url}: no object {name!r}") from e
        except OSError as e:
            raise StorageError(f"{self.url}: cannot stat {name!r}: {e}") from e
        return self._info(name, self._regular(name, st))

    def list(self, prefix: str = "", *, max_results: int = 100_000) -> list[ObjectInfo]:
        validate_prefix(prefix)
        # Walk only the directory the prefix pins down, not the whole bucket.
        base = prefix.rpartition("/")[0]
        out: list[ObjectInfo] = []
        try:
            with self._directory(base.split("/") if base else [], prefix, create=False) as top:
                # fwalk(follow_symlinks=False) never descends into a linked directory.
                for dirpath, dirnames, filenames, dirfd in os.fwalk(
                    ".", dir_fd=top, follow_symlinks=False
                ):
                    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                    rel = dirpath[2:] if dirpath.startswith("./") else ""
                    rel_dir = "/".join(p for p in (base, rel) if p)
                    for fname in filenames:
                        name = f"{rel_dir}/{fname}" if rel_dir else fname
                        if not name.startswith(prefix) or fname.startswith("."):
                            continue
                        try:
                            validate_name(name)
                            st = os.stat(fname, dir_fd=dirfd, follow_symlinks=False)
                        except (OSError, StorageError):
                            continue  # deleted meanwhile, or junk that is not ours to serve
                        if stat.S_ISREG(st.st_mode):
                            out.append(self._info(name, st))
        except ObjectNotFound:
            return out  # the prefix's directory does not exist, or is a link
        except OSError as e:
            raise StorageError(f"{self.url}: cannot list {prefix!r}: {e}") from e
        out.sort(key=lambda info: info.name)
        return out[:max_results]

    def delete(self, name: str) -> None:
        try:
            with self._parent(name) as (dirfd, leaf):
                self._regular(name, os.stat(leaf, dir_fd=dirfd, follow_symlinks=False))
                os.unlink(leaf, dir_fd=dirfd)
        except FileNotFoundError as e:
            raise ObjectNotFound(f"{self.url}: no object {name!r}") from e
        except OSError as e:
            raise StorageError(f"{self.url}: cannot delete {name!r}: {e}") from e
