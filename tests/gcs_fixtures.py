"""pytest fixtures around tests/gcs_emulator.py; test modules load them with
`pytest_plugins = ["gcs_fixtures"]`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gcs_emulator import FakeGcs, FaultProxy, tensorstore_env


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcs]:
    """One emulator for the whole session; each test makes its own bucket."""
    server = FakeGcs()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def _session_proxy(fake_gcs: FakeGcs) -> Iterator[FaultProxy]:
    proxy = FaultProxy(fake_gcs.url)
    yield proxy
    proxy.close()


@pytest.fixture
def gcs_proxy(_session_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> FaultProxy:
    """The fault proxy, reset, with every GCS client of this test pointed through it."""
    _session_proxy.inject("pass")
    _session_proxy.media_bytes_served = 0
    _session_proxy.requests.clear()
    for key, value in tensorstore_env(_session_proxy.url).items():
        monkeypatch.setenv(key, value)
    return _session_proxy
