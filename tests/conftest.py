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
