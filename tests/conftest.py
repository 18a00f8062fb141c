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


# The longest files of the 1-device phase, longest first (seconds per file, 2-core host, both
# workers busy, 2026-12-07: a per-test timeline and a `--durations=0` run, a range where the two
# differ). `.ci/run` hands whole files to its two xdist workers in this order
# (`--no-loadscope-reorder`: xdist would otherwise order files by their number of tests), so the
# long ones start first and neither worker is left with one of them when the rest is done.
LONGEST_FILES = (
    "test_localnet_two_hosts.py",  # 110
    "test_localnet_killed.py",  # 98
    "test_multihost.py",  # 92
    "test_simulate.py",  # 90
    "test_tpu_compile.py",  # 63-82
    "test_exact_across_layouts.py",  # 40
    "test_validator_faults.py",  # 40
    "test_grad.py",  # 19-53
    "test_protocol_trains.py",  # 39
    "test_outer.py",  # 38
    "test_model.py",  # 35
    "test_learns.py",  # 31
    "test_wheel.py",  # 29
    "test_tpu_scripts.py",  # 28
    "test_score_payloads.py",  # 26
    "test_bench_window.py",  # 24
    "test_bench.py",  # 24
    "test_screen.py",  # 24
    "test_chain_contract.py",  # 24
    "test_loss_delta.py",  # 22
    "test_storage_contract.py",  # 15
    "test_catchup.py",  # 15
    "test_checkpoint.py",  # 12
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    # sort is stable: tests keep their order within a file, other files theirs after these.
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
