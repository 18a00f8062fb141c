"""The embedded chain's SQLite file: its tables, the transactions every access runs in, the clock.

One file is shared by several processes (miners, validators, sim). Concurrency: WAL journal, a
busy timeout, and every write in a `BEGIN IMMEDIATE` transaction, so a check-then-write (like the
rate limit) cannot interleave with another process's write.

The block clock is either wall time (block = (now − genesis) / block_time_s; genesis and block
time are stored in the file so every process agrees) or manual (`advance(n)`, for simulation).
Block timestamps are genesis + block · block_time_s in both modes, so they are deterministic.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from gauntlet_jax.chain import weights as wmath
from gauntlet_jax.chain.base import window_of
from gauntlet_jax.chain.errors import ChainBusy, ChainStoreCorrupt, SubnetNotExists
from gauntlet_jax.errors import ChainError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS clock (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    schema_version INTEGER NOT NULL,
    genesis_time REAL NOT NULL,
    block_time_s REAL NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('wall', 'manual')),
    manual_block INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS params (
    netuid INTEGER PRIMARY KEY,
    tempo INTEGER NOT NULL,
    weights_rate_limit INTEGER NOT NULL,
    commit_reveal INTEGER NOT NULL,
    reveal_period INTEGER NOT NULL,
    version_key INTEGER NOT NULL,
    min_allowed_weights INTEGER NOT NULL,
    max_weight_limit INTEGER NOT NULL,
    weights_min_stake REAL NOT NULL,
    max_allowed_uids INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS neurons (
    netuid INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    stake REAL NOT NULL,
    validator_permit INTEGER NOT NULL,
    last_update INTEGER NOT NULL,
    registered_at INTEGER NOT NULL,
    PRIMARY KEY (netuid, uid),
    UNIQUE (netuid, hotkey)
);
CREATE TABLE IF NOT EXISTS commitments (
    netuid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    data TEXT NOT NULL,
    block INTEGER NOT NULL,
    PRIMARY KEY (netuid, hotkey)
);
CREATE TABLE IF NOT EXISTS weights (
    netuid INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    dest INTEGER NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (netuid, uid, dest)
);
CREATE TABLE IF NOT EXISTS weight_commits (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    netuid INTEGER NOT NULL,
    hotkey TEXT NOT NULL,
    commit_hash TEXT NOT NULL,
    commit_block INTEGER NOT NULL
);
"""

# Subnet parameters and their defaults (subtensor's defaults where it has one that fits a demo).
DEFAULT_PARAMS: dict[str, float | int] = {
    "tempo": 360,
    "weights_rate_limit": 100,
    "commit_reveal": 0,
    "reveal_period": 1,
    "version_key": 0,
    "min_allowed_weights": 0,
    "max_weight_limit": wmath.U16_MAX,
    "weights_min_stake": 0.0,
    "max_allowed_uids": 256,
}


def path_from_sqlite_url(url: str) -> Path:
    """`sqlite:///rel/path.db` → rel/path.db; `sqlite:////abs/path.db` → /abs/path.db."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ChainError(f"not a sqlite URL (sqlite:///path): {url!r}")
    return Path(url[len(prefix) :])


@dataclass(frozen=True)
class SubnetParams:
    tempo: int
    weights_rate_limit: int
    commit_reveal: bool
    reveal_period: int
    version_key: int
    min_allowed_weights: int
    max_weight_limit: int
    weights_min_stake: float
    max_allowed_uids: int


def subnet_params(db: sqlite3.Connection, netuid: int) -> SubnetParams:
    """The parameters of a subnet; SubnetNotExists when it has none."""
    row = db.execute(
        f"SELECT {', '.join(DEFAULT_PARAMS)} FROM params WHERE netuid = ?", (netuid,)
    ).fetchone()
    if row is None:
        raise SubnetNotExists(detail=f"netuid {netuid} does not exist")
    values = dict(zip(DEFAULT_PARAMS, row, strict=True))
    values["commit_reveal"] = bool(values["commit_reveal"])
    return SubnetParams(**values)  # type: ignore[arg-type]


def uid_of(db: sqlite3.Connection, netuid: int, hotkey: str) -> int | None:
    """The uid of a hotkey on a subnet, or None when it is not registered there."""
    row = db.execute(
        "SELECT uid FROM neurons WHERE netuid = ? AND hotkey = ?", (netuid, hotkey)
    ).fetchone()
    return None if row is None else int(row[0])


# SQLite result codes after which the same statement may succeed later (another writer, a full
# disk); every other sqlite3 error means the file itself is unusable.
_TRANSIENT_SQLITE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL")


@contextlib.contextmanager
def sqlite_errors_as_chain_errors(path: Path) -> Iterator[None]:
    """Turns any sqlite3 error inside into ChainBusy (transient) or ChainStoreCorrupt."""
    try:
        yield
    except sqlite3.Error as exc:
        code = str(getattr(exc, "sqlite_errorname", ""))
        if code.startswith(_TRANSIENT_SQLITE):
            raise ChainBusy(
                f"{path}: {exc} (another writer held it past the busy timeout)"
            ) from exc
        raise ChainStoreCorrupt(f"{path}: unusable chain file ({code or 'sqlite'}: {exc})") from exc


class LocalStore:
    """One handle on the SQLite file: opens (and if need be creates) it, runs transactions on
    it and reads its block clock."""

    def __init__(
        self,
        path: str | Path,
        *,
        block_time_s: float = 12.0,
        busy_timeout_s: float = 30.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._now = now
        self._lock = threading.RLock()
        try:
            with sqlite_errors_as_chain_errors(self.path):
                self._db = sqlite3.connect(
                    str(self.path),
                    timeout=busy_timeout_s,
                    isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                    check_same_thread=False,
                )
                self._setup(block_time_s, busy_timeout_s)
        except ChainError:
            if hasattr(self, "_db"):
                self._db.close()
            raise

    def _setup(self, block_time_s: float, busy_timeout_s: float) -> None:
        """Pragmas, tables and the clock row (a new file gets them, an existing one is checked)."""
        self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self._write() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            row = db.execute("SELECT schema_version, block_time_s FROM clock").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO clock VALUES (0, ?, ?, ?, 'wall', 0)",
                    (SCHEMA_VERSION, float(self._now()), float(block_time_s)),
                )
            elif row[0] != SCHEMA_VERSION:
                raise ChainError(
                    f"{self.path}: schema version {row[0]}, this code reads {SCHEMA_VERSION}"
                )
            elif row[1] != block_time_s:
                log.info(
                    "%s: block time %.3f s stored in the file wins over %.3f s",
                    self.path,
                    row[1],
                    block_time_s,
                )

    # ----------------------------------------------------------------------------- transactions

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front, so checks and writes inside
        see no interleaved writer. sqlite3 errors leave as ChainBusy / ChainStoreCorrupt."""
        with self._lock, sqlite_errors_as_chain_errors(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._rollback()
                raise
            else:
                self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several SELECTs (errors as in `_write`)."""
        with self._lock, sqlite_errors_as_chain_errors(self.path):
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._rollback()
                raise
            else:
                self._db.execute("COMMIT")

    def _rollback(self) -> None:
        # The error that got us here is the one to report; a damaged file may refuse this too.
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------------- clock

    def _block(self, db: sqlite3.Connection) -> int:
        genesis, block_time, mode, manual = db.execute(
            "SELECT genesis_time, block_time_s, mode, manual_block FROM clock"
        ).fetchone()
        if mode == "manual":
            return int(manual)
        return max(0, int((self._now() - genesis) // block_time))

    def current_block(self) -> int:
        with self._read() as db:
            return self._block(db)

    def block_timestamp(self, block: int) -> float:
        if block < 0:
            raise ChainError(f"block {block} is negative")
        with self._read() as db:
            genesis, block_time = db.execute(
                "SELECT genesis_time, block_time_s FROM clock"
            ).fetchone()
        return float(genesis + block * block_time)

    def window(self, blocks_per_window: int) -> int:
        return window_of(self.current_block(), blocks_per_window)

    @property
    def block_time_s(self) -> float:
        with self._read() as db:
            return float(db.execute("SELECT block_time_s FROM clock").fetchone()[0])

    @property
    def clock_mode(self) -> str:
        with self._read() as db:
            return str(db.execute("SELECT mode FROM clock").fetchone()[0])

    def set_clock_mode(self, mode: str) -> None:
        """'manual' freezes the clock at the current block (then `advance`); 'wall' moves genesis
        so the wall clock continues from the current block."""
        if mode not in ("wall", "manual"):
            raise ChainError(f"clock mode must be 'wall' or 'manual', got {mode!r}")
        with self._write() as db:
            block = self._block(db)
            if mode == "manual":
                db.execute("UPDATE clock SET mode = 'manual', manual_block = ?", (block,))
            else:
                block_time = db.execute("SELECT block_time_s FROM clock").fetchone()[0]
                db.execute(
                    "UPDATE clock SET mode = 'wall', genesis_time = ?",
                    (self._now() - block * block_time,),
                )

    def advance(self, n: int = 1) -> int:
        """Manual clock: moves n blocks forward and returns the new block."""
        if n < 0:
            raise ChainError(f"cannot advance by {n} blocks")
        with self._write() as db:
            mode = db.execute("SELECT mode FROM clock").fetchone()[0]
            if mode != "manual":
                raise ChainError("advance() needs the manual clock (set_clock_mode('manual'))")
            db.execute("UPDATE clock SET manual_block = manual_block + ?", (n,))
            return self._block(db)
