"""LocalBucket against a peer that controls files in the directory tree (issue 17, fault 1).

Whatever a peer puts into the bucket's directory, the bucket reads, lists and writes only regular
files inside its root: a symbolic link (to a file or a directory, inside or outside the root) is
not an object, a FIFO or device never blocks a reader, and nothing is written through a link.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from gauntlet_jax.errors import NotAnObject, ObjectNotFound, StorageError
from gauntlet_jax.storage.local import LocalBucket


@pytest.fixture
def setup(tmp_path: Path) -> tuple[LocalBucket, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not yours")
    return LocalBucket(tmp_path / "bucket"), outside


def test_a_symlinked_object_is_neither_read_nor_listed(setup: tuple[LocalBucket, Path]) -> None:
    bucket, outside = setup
    bucket.put("v1/real", b"ok")
    (bucket.root / "v1" / "link").symlink_to(outside / "secret")
    (bucket.root / "v1" / "inner").symlink_to(bucket.root / "v1" / "real")
    for name in ("v1/link", "v1/inner"):
        with pytest.raises(NotAnObject):
            bucket.get(name, max_bytes=None)
        with pytest.raises(NotAnObject):
            bucket.head(name)
    assert [i.name for i in bucket.list("v1/")] == ["v1/real"]
    assert [i.name for i in bucket.list()] == ["v1/real"]


def test_a_symlinked_directory_is_not_followed(setup: tuple[LocalBucket, Path]) -> None:
    bucket, outside = setup
    (bucket.root / "v1").symlink_to(outside, target_is_directory=True)
    with pytest.raises(NotAnObject):
        bucket.get("v1/secret", max_bytes=None)
    with pytest.raises(NotAnObject):
        bucket.head("v1/secret")
    assert bucket.list("v1/") == []
    assert bucket.list() == []
    with pytest.raises(StorageError):
        bucket.put("v1/planted", b"x")
    with pytest.raises(StorageError):
        bucket.put("v1/planted", b"x", if_absent=True)
    assert not (outside / "planted").exists()
    with pytest.raises(ObjectNotFound):
        bucket.delete("v1/secret")
    assert (outside / "secret").read_bytes() == b"not yours"


def test_a_fifo_never_blocks_a_reader(setup: tuple[LocalBucket, Path]) -> None:
    bucket, _ = setup
    bucket.put("v1/real", b"ok")
    os.mkfifo(bucket.root / "v1" / "pipe")
    result: list[BaseException | bytes] = []

    def read() -> None:
        try:
            result.append(bucket.get("v1/pipe", max_bytes=None))
        except StorageError as e:
            result.append(e)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=30.0)
    if reader.is_alive():  # unblock the thread so the test process can exit
        with open(bucket.root / "v1" / "pipe", "wb"):
            pass
        pytest.fail("get() of a FIFO blocked")
    assert len(result) == 1 and isinstance(result[0], NotAnObject)
    with pytest.raises(NotAnObject):
        bucket.head("v1/pipe")
    assert [i.name for i in bucket.list("v1/")] == ["v1/real"]


def test_an_object_swapped_for_a_link_after_head_is_refused(
    setup: tuple[LocalBucket, Path],
) -> None:
    bucket, outside = setup
    bucket.put("v1/obj", b"ok")
    assert bucket.head("v1/obj").size == 2
    path = bucket.root / "v1" / "obj"
    path.unlink()
    path.symlink_to(outside / "secret")
    with pytest.raises(NotAnObject):
        bucket.get("v1/obj", max_bytes=None)


def test_a_directory_is_not_an_object(setup: tuple[LocalBucket, Path]) -> None:
    bucket, _ = setup
    bucket.put("v1/a/b", b"ok")
    with pytest.raises(NotAnObject):
        bucket.get("v1/a", max_bytes=None)
    with pytest.raises(NotAnObject):
        bucket.head("v1/a")
    with pytest.raises(ObjectNotFound):
        bucket.delete("v1/a")
    assert bucket.get("v1/a/b", max_bytes=None) == b"ok"
