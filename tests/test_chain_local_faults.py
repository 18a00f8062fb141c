"""The embedded chain's file under faults (issue 17, fault 3): a writer holding the lock past the
busy timeout, a corrupt, truncated or replaced file, and weights that are not numbers. Each is a
typed ChainError (transient: ChainBusy; permanent: ChainStoreCorrupt; InvalidWeights), never a
raw sqlite3 exception."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from gauntlet_jax.chain.errors import ChainBusy, ChainStoreCorrupt, InvalidWeights
from gauntlet_jax.chain.keys import dev_hotkey
from gauntlet_jax.chain.local import LocalChain

NETUID = 2
VALIDATOR, MINER = (dev_hotkey(i).ss58_address for i in range(2))


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "chain.db"
    with LocalChain(path) as admin:
        admin.set_clock_mode("manual")
        admin.create_subnet(NETUID, weights_rate_limit=0, tempo=9)
        admin.register(NETUID, VALIDATOR, stake=1e6, validator_permit=True)
        admin.register(NETUID, MINER)
        admin.advance(100)
    return path


def test_a_writer_past_the_busy_timeout_is_a_transient_typed_error(db: Path) -> None:
    chain = LocalChain(db, VALIDATOR, busy_timeout_s=0.05)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(ChainBusy):
            chain.set_weights(NETUID, [0, 1], [0.5, 0.5], version_key=0)
        assert chain.current_block() == 100  # reads go on (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    result = chain.set_weights(NETUID, [0, 1], [0.5, 0.5], version_key=0)
    assert result.included
    chain.close()


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database" * 200)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:100])


def _wrong_schema(path: Path) -> None:
    path.unlink()
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE clock (x)")
    db.execute("CREATE TABLE neurons (y)")
    db.commit()
    db.close()


@pytest.mark.parametrize("damage", [_garbage, _truncate, _wrong_schema])
def test_a_damaged_file_is_a_permanent_typed_error(db: Path, damage) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    damage(db)
    with pytest.raises(ChainStoreCorrupt):
        chain = LocalChain(db, VALIDATOR)
        chain.metagraph(NETUID)


def test_a_file_damaged_under_an_open_handle_is_a_typed_error(db: Path) -> None:
    chain = LocalChain(db, VALIDATOR)
    assert chain.metagraph(NETUID).n == 2
    with open(db, "r+b") as f:  # overwritten in place, pages and header alike
        f.write(b"\xff" * db.stat().st_size)
    Path(f"{db}-wal").unlink(missing_ok=True)
    with pytest.raises((ChainStoreCorrupt, ChainBusy)):
        chain.metagraph(NETUID)
        chain.set_weights(NETUID, [0, 1], [0.5, 0.5], version_key=0)


@pytest.mark.parametrize(
    "uids, weights",
    [
        ([True, False], [0.5, 0.5]),
        ([0, True], [0.5, 0.5]),
        (np.array([True, False]), [0.5, 0.5]),
        ([0, 1], [True, 0.5]),
        ([0, 1], np.array([True, False])),
        ([0.0, 1.0], [0.5, 0.5]),
        ([0, 1.5], [0.5, 0.5]),
        (["0", "1"], [0.5, 0.5]),
        ([0, 1], ["0.5", "0.5"]),
        ([0, None], [0.5, 0.5]),
    ],
)
def test_set_weights_refuses_bools_and_non_integers(db: Path, uids, weights) -> None:
    chain = LocalChain(db, VALIDATOR)
    with pytest.raises(InvalidWeights):
        chain.set_weights(NETUID, uids, weights, version_key=0)
    assert chain.get_weights(NETUID, 0) == {}
    chain.close()
