"""These tests need 8 simulated CPU devices: XLA_FLAGS must be set before JAX starts, so they run
in their own pytest process (see .ci/run)."""

from __future__ import annotations

import jax
import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if jax.device_count() >= 8:
        return
    skip = pytest.mark.skip(
        reason="needs 8 devices: run with XLA_FLAGS=--xla_force_host_platform_device_count=8"
    )
    for item in items:
        item.add_marker(skip)
