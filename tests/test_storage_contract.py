"""One contract, two backends: every test here runs against the local directory bucket and against
the GCS bucket talking to a real fake-gcs-server (through a loopback proxy that injects faults).

Faults are backend-specific in how they are caused (the GCS server answers 503, drops connections
or cuts a body; the local disk fails with EIO) but the contract is the same: a typed StorageError,
no crash, and no partial object ever visible.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from gcs_emulator import FakeGcs, FaultProxy

import gauntlet_jax.storage.local as local_mod
from gauntlet_jax.config import StorageConfig
from gauntlet_jax.errors import ObjectNotFound, ObjectTooLarge, PreconditionFailed, StorageError
from gauntlet_jax.storage.base import Bucket, InvalidObjectName, open_bucket

pytest_plugins = ["gcs_fixtures"]  # the emulator and proxy fixtures

# Short deadlines so that "retries, then StorageError" takes about a second.
TEST_CFG = StorageConfig(
    get_timeout_s=5.0,
    put_timeout_s=5.0,
    retry_deadline_s=1.0,
    backoff_s=0.05,
    backoff_max_s=0.2,
    resumable_threshold_bytes=512 * 1024,
    resumable_chunk_bytes=1024 * 1024,
)


@dataclass
class Backend:
    name: str
    url: str
    bytes_read: Callable[[], int]  # object bytes delivered to the client so far
    failing_reads: Callable[[], Iterator[None]]  # context: every read fails (server gone / EIO)
    failing_writes: Callable[[], Iterator[None]]  # context: writes fail part-way
    proxy: FaultProxy | None = None

    def open(self, cfg: StorageConfig = TEST_CFG) -> Bucket:
        return open_bucket(self.url, cfg)


def _local_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    counted = {"n": 0}
    real_read, real_fsync = os.read, os.fsync

    def counting_read(fd: int, n: int) -> bytes:
        data = real_read(fd, n)
        counted["n"] += len(data)
        return data

    monkeypatch.setattr(local_mod.os, "read", counting_read)

    def eio(*_args: object) -> None:
        raise OSError(errno.EIO, "injected I/O error")

    @contextmanager
    def failing_reads() -> Iterator[None]:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(local_mod.os, "read", eio)
            yield

    @contextmanager
    def failing_writes() -> Iterator[None]:
        # The data is written, then the disk fails before it is durable and visible.
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(local_mod.os, "fsync", eio)
            yield
        assert os.fsync is real_fsync

    return Backend(
        "local",
        f"file://{tmp_path / 'bucket'}",
        lambda: counted["n"],
        failing_reads,
        failing_writes,
    )


def _gcs_backend(fake: FakeGcs, proxy: FaultProxy) -> Backend:
    @contextmanager
    def failing_reads() -> Iterator[None]:
        with proxy.fault("drop", match="GET"):  # the server went away
            yield

    @contextmanager
    def failing_writes() -> Iterator[None]:
        # The first chunk of a resumable upload lands; then the server stops answering.
        with proxy.fault("drop", match="PUT /upload", after=1):
            yield

    bucket = fake.new_bucket()
    return Backend(
        "gcs",
        f"gs://{bucket}/run-prefix",
        lambda: proxy.media_bytes_served,
        failing_reads,
        failing_writes,
        proxy,
    )


@pytest.fixture(params=["local", "gcs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    monkeypatch = request.getfixturevalue("monkeypatch")
    if request.param == "local":
        return _local_backend(tmp_path, monkeypatch)
    return _gcs_backend(request.getfixturevalue("fake_gcs"), request.getfixturevalue("gcs_proxy"))


# -- the contract ---------------------------------------------------------------------------------


def test_round_trip_head_overwrite_delete(backend: Backend) -> None:
    bucket = backend.open()
    data = os.urandom(3000)
    info = bucket.put("v0/gradient-5-7.st", data)
    assert (info.name, info.size) == ("v0/gradient-5-7.st", 3000)
    assert bucket.get("v0/gradient-5-7.st", max_bytes=None) == data
    assert bucket.head("v0/gradient-5-7.st") == info

    info2 = bucket.put("v0/gradient-5-7.st", b"second")
    assert bucket.get("v0/gradient-5-7.st", max_bytes=6) == b"second"
    assert info2.generation != info.generation
    assert info2.last_modified >= info.last_modified
    assert bucket.put("empty", b"").size == 0
    assert bucket.get("empty", max_bytes=0) == b""

    bucket.delete("v0/gradient-5-7.st")
    with pytest.raises(ObjectNotFound):
        bucket.head("v0/gradient-5-7.st")


def test_missing_object_is_object_not_found(backend: Backend) -> None:
    bucket = backend.open()
    with pytest.raises(ObjectNotFound, match="nope"):
        bucket.get("nope", max_bytes=None)
    with pytest.raises(ObjectNotFound):
        bucket.head("nope")
    with pytest.raises(ObjectNotFound):
        bucket.delete("nope")
    assert bucket.list("nope") == []


def test_max_bytes_refuses_before_downloading(backend: Backend) -> None:
    bucket = backend.open()
    data = os.urandom(4 * 1024 * 1024)
    bucket.put("big", data)
    before = backend.bytes_read()
    with pytest.raises(ObjectTooLarge, match="big"):
        bucket.get("big", max_bytes=len(data) - 1)
    assert backend.bytes_read() == before  # not one byte of the object was transferred
    assert bucket.get("big", max_bytes=len(data)) == data  # the cap is inclusive
    assert backend.bytes_read() - before == len(data)


def test_list_by_prefix(backend: Backend) -> None:
    bucket = backend.open()
    for name, size in [("a/1", 1), ("a/2", 2), ("ab", 3), ("b/1", 4), ("a/sub/3", 5)]:
        bucket.put(name, b"x" * size)
    listed = bucket.list("a/")
    assert [(i.name, i.size) for i in listed] == [("a/1", 1), ("a/2", 2), ("a/sub/3", 5)]
    assert [i.name for i in bucket.list("a")] == ["a/1", "a/2", "a/sub/3", "ab"]
    assert [i.name for i in bucket.list()] == ["a/1", "a/2", "a/sub/3", "ab", "b/1"]
    assert bucket.list("zz") == []
    assert [i.name for i in bucket.list("", max_results=2)] == ["a/1", "a/2"]
    assert all(i.last_modified > 1.6e9 and i.generation > 0 for i in listed)


@pytest.mark.parametrize(
    "name", ["../escape", "/abs", "a/../../b", ".hidden", "a//b", "a b", "a/", "", "a\\b", "é"]
)
def test_hostile_names_are_refused(backend: Backend, name: str) -> None:
    bucket = backend.open()
    with pytest.raises(InvalidObjectName):
        bucket.put(name, b"x")
    with pytest.raises(InvalidObjectName):
        bucket.get(name, max_bytes=10)
    assert bucket.list() == []


def test_write_once_race_has_exactly_one_winner(backend: Backend) -> None:
    n = 6
    barrier = threading.Barrier(n)
    outcomes: list[object] = [None] * n

    def writer(i: int) -> None:
        bucket = backend.open()  # each writer its own client, as separate nodes would have
        payload = bytes([i]) * (100_000 + i)
        barrier.wait()
        try:
            bucket.put("race/gradient", payload, if_absent=True)
            outcomes[i] = "won"
        except PreconditionFailed:
            outcomes[i] = "lost"

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(map(str, outcomes)) == ["lost"] * (n - 1) + ["won"]
    winner = outcomes.index("won")
    assert backend.open().get("race/gradient", max_bytes=None) == bytes([winner]) * (
        100_000 + winner
    )
    with pytest.raises(PreconditionFailed):
        backend.open().put("race/gradient", b"late", if_absent=True)


def test_last_modified_comes_from_the_server_not_the_uploader(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = backend.open()
    real_now = time.time()
    with monkeypatch.context() as mp:
        mp.setattr(time, "time", lambda: 1_000_000_000.0)  # the uploader's clock says 2001
        info = bucket.put("timed", b"payload")
    assert abs(info.last_modified - real_now) < 30
    assert bucket.head("timed").last_modified == info.last_modified
    time.sleep(0.05)
    later = bucket.put("timed", b"again")
    assert later.last_modified > info.last_modified


def test_failed_reads_raise_storage_error(backend: Backend) -> None:
    bucket = backend.open()
    bucket.put("obj", b"data" * 1000)
    start = time.monotonic()
    with backend.failing_reads(), pytest.raises(StorageError) as err:
        bucket.get("obj", max_bytes=None)
    assert not isinstance(err.value, ObjectNotFound)
    assert time.monotonic() - start < TEST_CFG.retry_deadline_s + 10
    assert bucket.get("obj", max_bytes=None) == b"data" * 1000  # recovers once the fault clears


def test_failed_write_leaves_nothing_visible(backend: Backend) -> None:
    bucket = backend.open()
    # Above 8 MiB (the client library's multipart limit) and the threshold: GCS gets a chunked
    # resumable upload, and the connection dies after its first chunk.
    data = os.urandom(9 * 1024 * 1024)
    with backend.failing_writes(), pytest.raises(StorageError):
        bucket.put("partial", data)
    with pytest.raises(ObjectNotFound):
        bucket.head("partial")
    assert bucket.list() == []
    if backend.name == "local":  # and no temporary file left behind either
        assert os.listdir(backend.url.removeprefix("file://")) == []
    bucket.put("partial", data, if_absent=True)  # the name is still free
    assert bucket.get("partial", max_bytes=None) == data


def test_concurrent_readers_never_see_partial_objects(backend: Backend) -> None:
    writer = backend.open()
    payloads = [bytes([i]) * (50_000 + 7919 * i) for i in range(12)]
    writer.put("hot", payloads[0])
    seen: set[int] = set()
    errors: list[str] = []
    reads = {"whole": 0, "gave_up": 0}
    stop = threading.Event()

    def reader() -> None:
        bucket = backend.open()
        while not stop.is_set():
            try:
                data = bucket.get("hot", max_bytes=None)
            except StorageError as e:
                # The contract allows a typed give-up when the object never holds still (a busy
                # host can be outpaced by the writer); anything else is a failure.
                if "kept changing while being read" not in str(e):
                    errors.append(repr(e))
                    return
                reads["gave_up"] += 1
                continue
            i = data[0]
            if data != payloads[i]:
                errors.append(f"torn read: {len(data)} bytes starting with {i}")
            seen.add(i)
            reads["whole"] += 1

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for p in payloads[1:]:
        writer.put("hot", p)
        # Overwrites are rare in the protocol; leave readers time to finish reads. (fake-gcs-server
        # ignores ifGenerationMatch on downloads and makes a read wait for a running write, so a
        # reader racing a back-to-back writer always lands on the next generation; GcsBucket then
        # re-reads, but gives up with StorageError if the object never holds still.)
        time.sleep(0.1)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(seen) >= 3
    assert reads["whole"] > reads["gave_up"], reads


# -- GCS only: the server itself misbehaves -------------------------------------------------------


@pytest.fixture
def gcs(fake_gcs: FakeGcs, gcs_proxy: FaultProxy) -> tuple[Bucket, FaultProxy]:
    return open_bucket(f"gs://{fake_gcs.new_bucket()}", TEST_CFG), gcs_proxy


def test_gcs_transient_503_and_drops_are_retried(gcs: tuple[Bucket, FaultProxy]) -> None:
    bucket, proxy = gcs
    with proxy.fault("503", times=2):
        bucket.put("a", b"hello")
    with proxy.fault("drop", times=2):
        assert bucket.get("a", max_bytes=None) == b"hello"
    with proxy.fault("503", times=3, match="GET"):
        assert [i.name for i in bucket.list()] == ["a"]


def test_gcs_persistent_503_gives_storage_error_after_the_deadline(
    gcs: tuple[Bucket, FaultProxy],
) -> None:
    bucket, proxy = gcs
    bucket.put("a", b"hello")
    for op in (
        lambda: bucket.get("a", max_bytes=None),
        lambda: bucket.put("b", b"x"),
        lambda: bucket.head("a"),
        lambda: bucket.list(),
    ):
        start = time.monotonic()
        with proxy.fault("503"), pytest.raises(StorageError, match=r"after 1\.0s of retries"):
            op()
        elapsed = time.monotonic() - start
        assert TEST_CFG.retry_deadline_s * 0.5 < elapsed < TEST_CFG.retry_deadline_s + 5
    with pytest.raises(ObjectNotFound):
        bucket.head("b")


def test_gcs_body_cut_mid_download_resumes_or_fails_cleanly(
    gcs: tuple[Bucket, FaultProxy],
) -> None:
    bucket, proxy = gcs
    data = os.urandom(2 * 1024 * 1024)
    bucket.put("big", data)
    with proxy.fault("cut", times=1, match="alt=media"):
        assert bucket.get("big", max_bytes=None) == data  # resumed with a Range request
    with proxy.fault("cut", match="alt=media"), pytest.raises(StorageError):
        bucket.get("big", max_bytes=None)


def test_gcs_emulator_going_away_mid_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Kill the server process itself between operations: StorageError, then normal service
    once a server is back (a fresh, empty one: the in-memory emulator loses its data)."""
    server = FakeGcs()
    server.start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)
        server.create_bucket("gone")
        bucket = open_bucket("gs://gone", TEST_CFG)
        bucket.put("x", b"1")
        server.stop()
        with pytest.raises(StorageError):
            bucket.get("x", max_bytes=None)
        with pytest.raises(StorageError):
            bucket.put("y", b"2")
        server.start()
        server.create_bucket("gone")
        bucket.put("y", b"2")
        assert [i.name for i in bucket.list()] == ["y"]
    finally:
        server.close()


# -- local only: several processes ----------------------------------------------------------------


def test_local_bucket_across_processes(tmp_path: Path) -> None:
    """Processes race on a write-once name and overwrite a shared name while others read it."""
    root = tmp_path / "shared"
    script = textwrap.dedent(
        """
        import sys
        from gauntlet_jax.config import StorageConfig
        from gauntlet_jax.errors import PreconditionFailed
        from gauntlet_jax.storage.base import open_bucket
        i = int(sys.argv[2])
        b = open_bucket(sys.argv[1], StorageConfig())
        try:
            b.put("once", bytes([i]) * 200_000, if_absent=True)
            won = 1
        except PreconditionFailed:
            won = 0
        torn = 0
        for k in range(40):
            b.put("shared", bytes([i]) * (10_000 + 1000 * i + k))
            d = b.get("shared", max_bytes=None)
            torn += d != bytes([d[0]]) * len(d) or (len(d) - 10_000) // 1000 != d[0]
        print(won, torn)
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(root), str(i)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    results = [tuple(map(int, p.communicate(timeout=120)[0].split())) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(won for won, _ in results) == 1
    assert sum(torn for _, torn in results) == 0
    winner = next(i for i, (won, _) in enumerate(results) if won)
    assert (
        open_bucket(str(root), StorageConfig()).get("once", max_bytes=None)
        == bytes([winner]) * 200_000
    )
    assert [n for n in os.listdir(root) if n.startswith(".")] == []


def test_open_bucket_urls(tmp_path: Path) -> None:
    assert open_bucket(f"file://{tmp_path}/x", StorageConfig()).url == f"file://{tmp_path}/x"
    assert open_bucket(str(tmp_path / "y"), StorageConfig()).url == f"file://{tmp_path}/y"
    gcs_bucket = open_bucket("gs://my-bucket/runs/a", StorageConfig())
    assert gcs_bucket.url == "gs://my-bucket/runs/a"
    with pytest.raises(StorageError):
        open_bucket("s3://nope", StorageConfig())
    with pytest.raises(StorageError):
        open_bucket("gs://Bad_Bucket!", StorageConfig())
    with pytest.raises(StorageError):
        open_bucket("gs://ok-bucket/../x", StorageConfig())
    with pytest.raises(StorageError):
        open_bucket("file://relative/path", StorageConfig())


def test_storage_config_is_wired(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="multiple of"):
        open_bucket("gs://ok-bucket", replace(TEST_CFG, resumable_chunk_bytes=1000))
