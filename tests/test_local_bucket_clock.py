"""LocalBucket with an injected server clock: writes carry the clock's time, readers see it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gauntlet_jax.config import StorageConfig
from gauntlet_jax.errors import PreconditionFailed
from gauntlet_jax.storage.base import open_bucket
from gauntlet_jax.storage.local import LocalBucket


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_writes_are_stamped_with_the_injected_clock(tmp_path: Path) -> None:
    clock = Clock(1_000_000.25)
    bucket = LocalBucket(tmp_path / "b", clock=clock)
    info = bucket.put("a/x", b"one")
    assert info.last_modified == pytest.approx(1_000_000.25, abs=1e-6)
    clock.now = 1_000_010.5
    bucket.put("a/y", b"two", if_absent=True)
    # Another process reading the same directory (no clock) sees the stamped server times.
    reader = open_bucket(f"file://{tmp_path / 'b'}", StorageConfig())
    assert reader.head("a/x").last_modified == pytest.approx(1_000_000.25, abs=1e-6)
    assert reader.head("a/y").last_modified == pytest.approx(1_000_010.5, abs=1e-6)
    assert {i.name: i.last_modified for i in reader.list("a/")} == pytest.approx(
        {"a/x": 1_000_000.25, "a/y": 1_000_010.5}, abs=1e-6
    )
    assert reader.get("a/y", max_bytes=None) == b"two"


def test_overwrite_takes_the_new_time_and_write_once_still_holds(tmp_path: Path) -> None:
    clock = Clock(500.0)
    bucket = LocalBucket(tmp_path, clock=clock)
    first = bucket.put("x", b"1")
    clock.now = 400.0  # a clock may go backwards; the stamp follows it exactly
    second = bucket.put("x", b"2")
    assert (first.last_modified, second.last_modified) == (500.0, 400.0)
    assert first.generation != second.generation
    with pytest.raises(PreconditionFailed):
        bucket.put("x", b"3", if_absent=True)
    assert bucket.head("x").last_modified == 400.0


def test_default_is_the_host_clock(tmp_path: Path) -> None:
    before = time.time()
    info = LocalBucket(tmp_path).put("x", b"1")
    assert before - 1.0 <= info.last_modified <= time.time() + 1.0
