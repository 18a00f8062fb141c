"""The embedded chain: one SQLite file that several processes share (miners, validators, sim).

It keeps what a node reads from subtensor (neurons, stake, permits, last update, commitments,
weights, subnet parameters) and runs `set_weights` with the same checks, in the same order and
with the same typed errors as subtensor's `do_set_weights` (pallets/subtensor/src/subnets/
weights.rs, read 2025): root netuid, lengths equal, subnet exists, not more uids than neurons,
hotkey registered, minimum stake, version key, rate limit (only without commit-reveal), validator
permit unless a self-weight, duplicates, unknown uids, minimum length, max-upscale, max weight
limit; then store and set LastUpdate. The dispatchable `set_weights` refuses with
CommitRevealEnabled first when the subnet has commit-reveal on; `commit_weights` /
`reveal_weights` follow `do_commit_weights` / `do_reveal_weights` (epochs of tempo+1 blocks
offset by netuid+1, reveal only in epoch commit+reveal_period, at most 10 unrevealed commits).

The block clock is either wall time (block = (now − genesis) / block_time_s; genesis and block
time are stored in the file so every process agrees) or manual (`advance(n)`, for simulation).
Block timestamps are genesis + block · block_time_s in both modes, so they are deterministic.

Concurrency: WAL journal, a busy timeout, and every write in a `BEGIN IMMEDIATE` transaction, so
a check-then-write (like the rate limit) cannot interleave with another process's write.
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

from gauntlet_jax.chain import weights as wmath
from gauntlet_jax.chain.base import (
    ROOT_NETUID,
    CanNotSetRootNetworkWeights,
    ChainDataError,
    CommitRevealDisabled,
    CommitRevealEnabled,
    CommittingWeightsTooFast,
    DuplicateUids,
    ExpiredWeightCommit,
    HotKeyNotRegisteredInSubNet,
    IncorrectWeightVersionKey,
    InvalidRevealCommitHashNotMatch,
    MaxWeightExceeded,
    Metagraph,
    NeuronNoValidatorPermit,
    NotEnoughStakeToSetWeights,
    NoWeightsCommitFound,
    PalletError,
    PendingReveal,
    RevealTooEarly,
    SettingWeightsTooFast,
    SubnetNotExists,
    TooManyUnrevealedCommits,
    UidsLengthExceedUidsInSubNet,
    UidVecContainInvalidOne,
    WeightsResult,
    WeightVecLengthIsLow,
    WeightVecNotEqualSize,
    blocks_until_weights_allowed,
    pallet_error,
    validate_commitment,
    window_of,
)
from gauntlet_jax.chain.keys import public_key_of
from gauntlet_jax.errors import ChainError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_UNREVEALED_COMMITS = 10

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
class _Params:
    tempo: int
    weights_rate_limit: int
    commit_reveal: bool
    reveal_period: int
    version_key: int
    min_allowed_weights: int
    max_weight_limit: int
    weights_min_stake: float
    max_allowed_uids: int


class LocalChain:
    """A `Chain` backed by one SQLite file. `hotkey` (SS58) signs nothing but is the caller
    identity for writes; None = read-only."""

    def __init__(
        self,
        path: str | Path,
        hotkey: str | None = None,
        *,
        block_time_s: float = 12.0,
        busy_timeout_s: float = 30.0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._hotkey = hotkey
        self._now = now
        self._lock = threading.RLock()
        self._pending: list[PendingReveal] = []
        self._db = sqlite3.connect(
            str(self.path),
            timeout=busy_timeout_s,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,
        )
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

    # ----------------------------------------------------------------------------------- plumbing

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction: takes the write lock up front, so checks and writes inside
        see no interleaved writer."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One consistent snapshot for several SELECTs."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> LocalChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def hotkey(self) -> str | None:
        return self._hotkey

    def _require_hotkey(self) -> str:
        if not self._hotkey:
            raise ChainError("this chain handle has no hotkey; writes need one")
        return self._hotkey

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

    # ------------------------------------------------------------------------------ admin (local)

    def create_subnet(self, netuid: int, **params: float | int | bool) -> None:
        """Creates (or re-parameterises) a subnet. Unknown parameter names are errors."""
        unknown = sorted(set(params) - set(DEFAULT_PARAMS))
        if unknown:
            raise ChainError(
                f"unknown subnet parameter {unknown[0]!r}; valid: {sorted(DEFAULT_PARAMS)}"
            )
        if not 0 <= netuid <= wmath.U16_MAX:
            raise ChainError(f"netuid {netuid} is not a u16")
        values = {
            **DEFAULT_PARAMS,
            **{k: (int(v) if isinstance(v, bool) else v) for k, v in params.items()},
        }
        columns = list(DEFAULT_PARAMS)
        with self._write() as db:
            db.execute(
                f"INSERT OR REPLACE INTO params (netuid, {', '.join(columns)}) "
                f"VALUES (?, {', '.join('?' for _ in columns)})",
                (netuid, *(values[c] for c in columns)),
            )

    def set_param(self, netuid: int, name: str, value: float | int | bool) -> None:
        if name not in DEFAULT_PARAMS:
            raise ChainError(f"unknown subnet parameter {name!r}; valid: {sorted(DEFAULT_PARAMS)}")
        with self._write() as db:
            self._params(db, netuid)
            db.execute(f"UPDATE params SET {name} = ? WHERE netuid = ?", (value, netuid))

    def params(self, netuid: int) -> dict[str, float | int | bool]:
        with self._read() as db:
            p = self._params(db, netuid)
        return dict(p.__dict__)

    def register(
        self, netuid: int, hotkey: str, *, stake: float = 0.0, validator_permit: bool = False
    ) -> int:
        """Registers a hotkey on a subnet at the next free uid (or returns its uid)."""
        with self._write() as db:
            params = self._params(db, netuid)
            row = db.execute(
                "SELECT uid FROM neurons WHERE netuid = ? AND hotkey = ?", (netuid, hotkey)
            ).fetchone()
            if row is not None:
                return int(row[0])
            n = db.execute("SELECT COUNT(*) FROM neurons WHERE netuid = ?", (netuid,)).fetchone()[0]
            if n >= params.max_allowed_uids:
                raise pallet_error("NoNeuronIdAvailable", f"netuid {netuid} is full ({n} uids)")
            db.execute(
                "INSERT INTO neurons VALUES (?, ?, ?, ?, ?, 0, ?)",
                (netuid, n, hotkey, float(stake), int(validator_permit), self._block(db)),
            )
            return int(n)

    def set_stake(self, netuid: int, uid: int, stake: float) -> None:
        self._update_neuron(netuid, uid, "stake", float(stake))

    def set_validator_permit(self, netuid: int, uid: int, permit: bool) -> None:
        self._update_neuron(netuid, uid, "validator_permit", int(permit))

    def _update_neuron(self, netuid: int, uid: int, column: str, value: float | int) -> None:
        with self._write() as db:
            cur = db.execute(
                f"UPDATE neurons SET {column} = ? WHERE netuid = ? AND uid = ?",
                (value, netuid, uid),
            )
            if cur.rowcount == 0:
                raise UidVecContainInvalidOne(
                    detail=f"uid {uid} is not registered on netuid {netuid}"
                )

    # ------------------------------------------------------------------------------------- reads

    def _params(self, db: sqlite3.Connection, netuid: int) -> _Params:
        row = db.execute(
            f"SELECT {', '.join(DEFAULT_PARAMS)} FROM params WHERE netuid = ?", (netuid,)
        ).fetchone()
        if row is None:
            raise SubnetNotExists(detail=f"netuid {netuid} does not exist")
        values = dict(zip(DEFAULT_PARAMS, row, strict=True))
        values["commit_reveal"] = bool(values["commit_reveal"])
        return _Params(**values)  # type: ignore[arg-type]

    def metagraph(self, netuid: int) -> Metagraph:
        with self._read() as db:
            self._params(db, netuid)
            block = self._block(db)
            rows = db.execute(
                "SELECT uid, hotkey, stake, validator_permit, last_update FROM neurons "
                "WHERE netuid = ? ORDER BY uid",
                (netuid,),
            ).fetchall()
        return Metagraph(
            netuid=netuid,
            block=block,
            uids=[r[0] for r in rows],
            hotkeys=tuple(r[1] for r in rows),
            stake=[r[2] for r in rows],
            validator_permit=[bool(r[3]) for r in rows],
            last_update=[r[4] for r in rows],
        )

    def _hotkey_for(self, db: sqlite3.Connection, netuid: int, who: int | str) -> str | None:
        if isinstance(who, str):
            return who
        row = db.execute(
            "SELECT hotkey FROM neurons WHERE netuid = ? AND uid = ?", (netuid, int(who))
        ).fetchone()
        return None if row is None else str(row[0])

    def get_commitment(self, netuid: int, who: int | str) -> str | None:
        with self._read() as db:
            hotkey = self._hotkey_for(db, netuid, who)
            if hotkey is None:
                return None
            row = db.execute(
                "SELECT data FROM commitments WHERE netuid = ? AND hotkey = ?", (netuid, hotkey)
            ).fetchone()
        if row is None:
            return None
        return validate_commitment(row[0], f"commitment of {hotkey} on netuid {netuid}")

    def get_commitments(self, netuid: int) -> dict[int, str]:
        with self._read() as db:
            rows = db.execute(
                "SELECT n.uid, c.hotkey, c.data FROM commitments c JOIN neurons n "
                "ON n.netuid = c.netuid AND n.hotkey = c.hotkey WHERE c.netuid = ? ORDER BY n.uid",
                (netuid,),
            ).fetchall()
        out: dict[int, str] = {}
        for uid, hotkey, data in rows:
            try:
                out[int(uid)] = validate_commitment(data, f"commitment of uid {uid} ({hotkey})")
            except ChainDataError as exc:
                log.warning("skipping %s", exc)
        return out

    def get_weights(self, netuid: int, uid: int) -> dict[int, int]:
        with self._read() as db:
            rows = db.execute(
                "SELECT dest, value FROM weights WHERE netuid = ? AND uid = ? ORDER BY dest",
                (netuid, uid),
            ).fetchall()
        return {int(d): int(v) for d, v in rows}

    # ------------------------------------------------------------------------------------ writes

    def commit(self, netuid: int, data: str) -> int:
        hotkey = self._require_hotkey()
        validate_commitment(data, f"commitment of {hotkey}")
        with self._write() as db:
            self._params(db, netuid)
            if self._uid(db, netuid, hotkey) is None:
                raise pallet_error(
                    "AccountNotAllowedCommit",
                    f"{hotkey} is not registered on netuid {netuid}",
                    pallet="Commitments",
                )
            block = self._block(db)
            db.execute(
                "INSERT OR REPLACE INTO commitments VALUES (?, ?, ?, ?)",
                (netuid, hotkey, data, block),
            )
            return block

    def _uid(self, db: sqlite3.Connection, netuid: int, hotkey: str) -> int | None:
        row = db.execute(
            "SELECT uid FROM neurons WHERE netuid = ? AND hotkey = ?", (netuid, hotkey)
        ).fetchone()
        return None if row is None else int(row[0])

    def set_weights(
        self, netuid: int, uids: object, weights: object, version_key: int
    ) -> WeightsResult:
        """bittensor's conversion, then the subnet's `set_weights` (or `commit_weights` when it
        has commit-reveal; reveal later with `reveal_pending`)."""
        hotkey = self._require_hotkey()
        send_uids, send_values = wmath.convert_weights_for_emit(uids, weights)
        if not send_uids:
            return WeightsResult(included=False, method="none", message="all weights are zero")
        with self._read() as db:
            commit_reveal = self._params(db, netuid).commit_reveal
        if commit_reveal:
            return self._commit(netuid, hotkey, send_uids, send_values, version_key)
        with self._write() as db:
            block = self._do_set_weights(db, netuid, hotkey, send_uids, send_values, version_key)
        return WeightsResult(
            included=True,
            method="set_weights",
            block=block,
            uids=tuple(send_uids),
            values=tuple(send_values),
            version_key=version_key,
        )

    def set_weights_u16(
        self, netuid: int, uids: list[int], values: list[int], version_key: int
    ) -> int:
        """The raw dispatchable: u16 vectors straight to the checks (CommitRevealEnabled first)."""
        hotkey = self._require_hotkey()
        with self._write() as db:
            # The dispatchable reads the flag before anything else (storage default: off).
            row = db.execute(
                "SELECT commit_reveal FROM params WHERE netuid = ?", (netuid,)
            ).fetchone()
            if row is not None and row[0]:
                raise CommitRevealEnabled(detail=f"netuid {netuid} uses commit-reveal")
            return self._do_set_weights(db, netuid, hotkey, list(uids), list(values), version_key)

    def _do_set_weights(
        self,
        db: sqlite3.Connection,
        netuid: int,
        hotkey: str,
        uids: list[int],
        values: list[int],
        version_key: int,
    ) -> int:
        """subtensor's `do_set_weights`, check for check."""
        if netuid == ROOT_NETUID:
            raise CanNotSetRootNetworkWeights(detail="netuid 0 is the root network")
        if len(uids) != len(values):
            raise WeightVecNotEqualSize(detail=f"{len(uids)} uids, {len(values)} values")
        params = self._params(db, netuid)  # SubnetNotExists
        n = db.execute("SELECT COUNT(*) FROM neurons WHERE netuid = ?", (netuid,)).fetchone()[0]
        if len(uids) > n:
            raise UidsLengthExceedUidsInSubNet(detail=f"{len(uids)} uids, subnet has {n}")
        row = db.execute(
            "SELECT uid, stake, validator_permit, last_update FROM neurons "
            "WHERE netuid = ? AND hotkey = ?",
            (netuid, hotkey),
        ).fetchone()
        if row is None:
            raise HotKeyNotRegisteredInSubNet(detail=f"{hotkey} on netuid {netuid}")
        uid, stake, permit, last_update = int(row[0]), float(row[1]), bool(row[2]), int(row[3])
        if stake < params.weights_min_stake:
            raise NotEnoughStakeToSetWeights(
                detail=f"uid {uid} has stake {stake}, minimum {params.weights_min_stake}"
            )
        if not (params.version_key == 0 or version_key >= params.version_key):
            raise IncorrectWeightVersionKey(
                detail=f"version_key {version_key} < subnet's {params.version_key}"
            )
        block = self._block(db)
        if not params.commit_reveal:
            wait = blocks_until_weights_allowed(block, last_update, params.weights_rate_limit)
            if wait:
                raise SettingWeightsTooFast(
                    detail=f"uid {uid} set weights at block {last_update}, now {block}; "
                    f"rate limit {params.weights_rate_limit} blocks ({wait} to go)"
                )
        if not (wmath.is_self_weight(uid, uids, values) or permit):
            raise NeuronNoValidatorPermit(detail=f"uid {uid} has no validator permit")
        if len(set(uids)) != len(uids):
            raise DuplicateUids(detail=f"uids {uids}")
        existing = {
            int(r[0]) for r in db.execute("SELECT uid FROM neurons WHERE netuid = ?", (netuid,))
        }
        invalid = [u for u in uids if u not in existing]
        if invalid:
            raise UidVecContainInvalidOne(detail=f"uids {invalid} are not registered")
        min_allowed = min(n, params.min_allowed_weights)
        if not (wmath.is_self_weight(uid, uids, values) or len(values) >= min_allowed):
            raise WeightVecLengthIsLow(detail=f"{len(values)} weights, minimum {min_allowed}")
        upscaled = wmath.max_upscale_u16(values)
        if not (
            wmath.is_self_weight(uid, uids, upscaled)
            or wmath.max_weight_limited(upscaled, params.max_weight_limit)
        ):
            raise MaxWeightExceeded(detail=f"max weight limit {params.max_weight_limit}")
        db.execute("DELETE FROM weights WHERE netuid = ? AND uid = ?", (netuid, uid))
        db.executemany(
            "INSERT INTO weights VALUES (?, ?, ?, ?)",
            [(netuid, uid, int(d), int(v)) for d, v in zip(uids, upscaled, strict=True)],
        )
        if not params.commit_reveal:
            db.execute(
                "UPDATE neurons SET last_update = ? WHERE netuid = ? AND uid = ?",
                (block, netuid, uid),
            )
        return block

    # ----------------------------------------------------------------------------- commit-reveal

    def _commit(
        self, netuid: int, hotkey: str, uids: list[int], values: list[int], version_key: int
    ) -> WeightsResult:
        salt = wmath.new_salt()
        commit_hash = (
            "0x"
            + wmath.weight_commit_hash(
                public_key_of(hotkey), netuid, uids, values, salt, version_key
            ).hex()
        )
        block = self.commit_weights(netuid, commit_hash)
        self._pending.append(
            PendingReveal(netuid, tuple(uids), tuple(values), salt, version_key, commit_hash, block)
        )
        return WeightsResult(
            included=True,
            method="commit_weights",
            block=block,
            uids=tuple(uids),
            values=tuple(values),
            version_key=version_key,
            commit_hash=commit_hash,
        )

    def commit_weights(self, netuid: int, commit_hash: str) -> int:
        """subtensor's `do_commit_weights`; returns the commit block."""
        hotkey = self._require_hotkey()
        with self._write() as db:
            params = self._params(db, netuid)
            if not params.commit_reveal:
                raise CommitRevealDisabled(detail=f"netuid {netuid} has commit-reveal off")
            uid = self._uid(db, netuid, hotkey)
            if uid is None:
                raise HotKeyNotRegisteredInSubNet(detail=f"{hotkey} on netuid {netuid}")
            block = self._block(db)
            last = db.execute(
                "SELECT last_update FROM neurons WHERE netuid = ? AND uid = ?", (netuid, uid)
            ).fetchone()[0]
            wait = blocks_until_weights_allowed(block, int(last), params.weights_rate_limit)
            if wait:
                raise CommittingWeightsTooFast(
                    detail=f"uid {uid} committed at block {last}, now {block} ({wait} to go)"
                )
            self._drop_expired(db, netuid, hotkey, params, block)
            count = db.execute(
                "SELECT COUNT(*) FROM weight_commits WHERE netuid = ? AND hotkey = ?",
                (netuid, hotkey),
            ).fetchone()[0]
            if count >= MAX_UNREVEALED_COMMITS:
                raise TooManyUnrevealedCommits(detail=f"{count} unrevealed commits")
            db.execute(
                "INSERT INTO weight_commits (netuid, hotkey, commit_hash, commit_block) "
                "VALUES (?, ?, ?, ?)",
                (netuid, hotkey, commit_hash, block),
            )
            db.execute(
                "UPDATE neurons SET last_update = ? WHERE netuid = ? AND uid = ?",
                (block, netuid, uid),
            )
            return block

    def _drop_expired(
        self, db: sqlite3.Connection, netuid: int, hotkey: str, params: _Params, block: int
    ) -> list[str]:
        now_epoch = wmath.epoch_index(netuid, block, params.tempo)
        expired: list[str] = []
        rows = db.execute(
            "SELECT seq, commit_hash, commit_block FROM weight_commits "
            "WHERE netuid = ? AND hotkey = ? ORDER BY seq",
            (netuid, hotkey),
        ).fetchall()
        for seq, commit_hash, commit_block in rows:
            commit_epoch = wmath.epoch_index(netuid, int(commit_block), params.tempo)
            if now_epoch <= commit_epoch + params.reveal_period:
                break  # queue order: later commits are not older
            expired.append(str(commit_hash))
            db.execute("DELETE FROM weight_commits WHERE seq = ?", (seq,))
        return expired

    def reveal_weights(
        self,
        netuid: int,
        uids: list[int],
        values: list[int],
        salt: list[int] | tuple[int, ...],
        version_key: int,
    ) -> int:
        """subtensor's `do_reveal_weights`; returns the block the weights were set in."""
        hotkey = self._require_hotkey()
        with self._write() as db:
            params = self._params(db, netuid)
            if not params.commit_reveal:
                raise CommitRevealDisabled(detail=f"netuid {netuid} has commit-reveal off")
            has_any = db.execute(
                "SELECT 1 FROM weight_commits WHERE netuid = ? AND hotkey = ? LIMIT 1",
                (netuid, hotkey),
            ).fetchone()
            if has_any is None:
                raise NoWeightsCommitFound(detail=f"{hotkey} on netuid {netuid}")
            block = self._block(db)
            expired = self._drop_expired(db, netuid, hotkey, params, block)
            provided = (
                "0x"
                + wmath.weight_commit_hash(
                    public_key_of(hotkey), netuid, uids, values, salt, version_key
                ).hex()
            )
            rows = db.execute(
                "SELECT seq, commit_hash, commit_block FROM weight_commits "
                "WHERE netuid = ? AND hotkey = ? ORDER BY seq",
                (netuid, hotkey),
            ).fetchall()
            if not rows:
                if provided in expired:
                    raise ExpiredWeightCommit(detail=f"commit {provided} expired")
                raise NoWeightsCommitFound(detail=f"{hotkey} on netuid {netuid}")
            position = next((i for i, r in enumerate(rows) if r[1] == provided), None)
            if position is None:
                if provided in expired:
                    raise ExpiredWeightCommit(detail=f"commit {provided} expired")
                raise InvalidRevealCommitHashNotMatch(detail=f"no commit with hash {provided}")
            commit_block = int(rows[position][2])
            commit_epoch = wmath.epoch_index(netuid, commit_block, params.tempo)
            if (
                wmath.epoch_index(netuid, block, params.tempo)
                != commit_epoch + params.reveal_period
            ):
                first, _ = wmath.reveal_blocks(
                    netuid, commit_block, params.tempo, params.reveal_period
                )
                raise RevealTooEarly(
                    detail=f"commit of block {commit_block} reveals from block {first}"
                )
            for seq, _, _ in rows[: position + 1]:
                db.execute("DELETE FROM weight_commits WHERE seq = ?", (seq,))
            return self._do_set_weights(db, netuid, hotkey, list(uids), list(values), version_key)

    def reveal_pending(self, netuid: int) -> list[WeightsResult]:
        """Reveals this handle's pending commits whose reveal epoch is now; drops expired ones."""
        with self._read() as db:
            params = self._params(db, netuid)
            block = self._block(db)
        results: list[WeightsResult] = []
        keep: list[PendingReveal] = []
        for pending in self._pending:
            if pending.netuid != netuid:
                keep.append(pending)
                continue
            first, last = wmath.reveal_blocks(
                netuid, pending.commit_block, params.tempo, params.reveal_period
            )
            if block < first:
                keep.append(pending)
                continue
            if block > last:
                results.append(
                    WeightsResult(
                        included=False,
                        method="reveal_weights",
                        commit_hash=pending.commit_hash,
                        message=f"reveal window {first}..{last} passed (now {block})",
                    )
                )
                continue
            try:
                at = self.reveal_weights(
                    netuid,
                    list(pending.uids),
                    list(pending.values),
                    pending.salt,
                    pending.version_key,
                )
            except RevealTooEarly:
                keep.append(pending)
                continue
            except PalletError as exc:
                results.append(
                    WeightsResult(
                        included=False,
                        method="reveal_weights",
                        commit_hash=pending.commit_hash,
                        message=str(exc),
                    )
                )
                continue
            results.append(
                WeightsResult(
                    included=True,
                    method="reveal_weights",
                    block=at,
                    uids=pending.uids,
                    values=pending.values,
                    version_key=pending.version_key,
                    commit_hash=pending.commit_hash,
                )
            )
        self._pending = keep
        return results

    @property
    def pending_reveals(self) -> tuple[PendingReveal, ...]:
        return tuple(self._pending)
