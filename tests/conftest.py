"""Shared fixtures: tiny configs, locations of the shared chain fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gauntlet_jax.config import Config, load_config

os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def tiny_config() -> Config:
    return load_config("tiny")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared (GAUNTLET_SHARED_DIR); tests that need it skip with the reason when unset."""
    value = os.environ.get("GAUNTLET_SHARED_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("GAUNTLET_SHARED_DIR is unset (.ci/run sets it to ../shared)")
    return Path(value)


# The longest files of the 1-device phase (seconds measured by `--durations`, 2-core host),
# longest first. `.ci/run` hands whole files to its two xdist workers in collection order: these
# start first, so neither worker is left with one of them when the rest is done.
LONGEST_FILES = (
    "test_simulate.py",
    "test_localnet_killed.py",
    "test_localnet_two_hosts.py",
    "test_multihost.py",
    "test_protocol_trains.py",
    "test_validator_faults.py",
    "test_exact_across_layouts.py",
    "test_wheel.py",
    "test_learns.py",
    "test_bench_window.py",
    "test_loss_delta.py",
    "test_screen.py",
    "test_bench.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    # sort is stable: tests keep their order within a file, other files theirs after these.
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
