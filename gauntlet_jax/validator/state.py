"""The validator's scoring state: one record per peer plus window bookkeeping, saved atomically.

Everything the validator needs to post the same weights after a restart lives here: ratings,
binary moving averages, sync scores, final scores, staleness counters, inactivity tracking,
the last finished window and the gather-set schedule. All scoring randomness derives from
(seed, window) (see `rating.window_rng`), so the state holds the seed and no generator state.

The file is one JSON document, replaced atomically after every window (temp file in the same
directory, fsync, rename, fsync of the directory): a validator killed at any instant leaves
either the previous complete state or the new complete state, never a mixture. Loading checks
the schema and every type; a damaged file raises `StateError` naming the file and the fault
rather than silently starting from scratch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gauntlet_jax.errors import StateError

# 2 added the escalating slash's and the negative evaluations' history (validator/ladder.py);
# 3 the harm memory and confirmation (checks.harm_reset, checks.book_harm). An older file is
# read with what it lacks empty.
SCHEMA_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

# Every reason a peer's score can be cut; counts per reason are kept on its record.
SLASH_REASONS: tuple[str, ...] = (
    "missing",  # gather peer's payload absent
    "late",  # uploaded after the put window
    "early",  # uploaded before the put window opened
    "invalid",  # gather peer's payload failed validation
    "out_of_sync",  # probes more than sync_max_steps behind, or probes missing/invalid
    "eval_missing",  # selected for evaluation but no usable payload or data
    "eval_invalid",  # selected for evaluation and the payload failed validation (final := 0)
    "overlap",  # top-k indices overlap another gather peer's (later uploader)
    "inactive",  # no upload in the last active_windows windows
    "repeated_faults",  # payload faults in most of the recent gather windows (escalating slash)
    "negative",  # most recent evaluations negative (negative-evaluation tracking)
    "harmful",  # evaluated with a negative LossScore while the window's median was positive
)

LOSS_KEYS: tuple[str, ...] = (
    "loss_before_own",
    "loss_after_own",
    "loss_before_random",
    "loss_after_random",
    "improvement_own",
    "improvement_random",
)


@dataclass(frozen=True)
class PeerRecord:
    """Everything the validator knows about one uid. `mu`/`sigma` are None until first rated."""

    uid: int
    mu: float | None = None
    sigma: float | None = None
    bma: float = 0.0
    binary: float = 0.0  # the last b (+1 / -1), 0 before the first evaluation
    sync: float = 0.0  # sync score from the latest evaluation (0 if never evaluated)
    sync_x: float | None = None  # steps behind measured at the latest evaluation
    final: float = 0.0
    weight: float = 0.0
    staleness: int = 1
    inactive_since: int | None = None
    eval_count: int = 0
    last_eval_window: int | None = None
    excluded_until: int | None = None  # gather and evaluation exclusion, exclusive bound
    # Escalating slash and negative evaluations (ladder.py; stay empty while those are off):
    # consecutive gather windows with a payload fault and the last ones (1 = fault), the
    # consecutive negative evaluations and the last ones (1 = negative LossScore).
    fault_streak: int = 0
    fault_history: tuple[int, ...] = ()
    negative_streak: int = 0
    eval_history: tuple[int, ...] = ()
    # Harm memory (checks.harm_debt): the debt as of harm_window, the window of the last reset;
    # harm confirmation (checks.book_harm): the last evaluations, 1 = caught harming.
    harm_debt: float = 0.0
    harm_window: int | None = None
    harm_history: tuple[int, ...] = ()
    slash_counts: Mapping[str, int] = field(default_factory=dict)
    last_losses: Mapping[str, float] = field(default_factory=dict)

    @property
    def rated(self) -> bool:
        return self.mu is not None and self.sigma is not None


@dataclass(frozen=True)
class ValidatorState:
    """The whole persistent state. Treat as immutable: functions return updated copies."""

    seed: int
    last_window: int | None = None  # last window whose scoring finished and was saved
    peers: Mapping[int, PeerRecord] = field(default_factory=dict)
    evaluated_uids: tuple[int, ...] = ()  # every uid ever evaluated (weight candidates)
    gather_schedule: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    last_weights_window: int | None = None  # window whose weights were last posted

    def peer(self, uid: int) -> PeerRecord:
        """The uid's record, or a fresh one if it has none yet."""
        return self.peers.get(uid) or PeerRecord(uid=uid)

    def with_peer(self, record: PeerRecord) -> ValidatorState:
        peers = dict(self.peers)
        peers[record.uid] = record
        return dataclasses.replace(self, peers=peers)

    def with_peers(self, records: Mapping[int, PeerRecord]) -> ValidatorState:
        peers = dict(self.peers)
        peers.update(records)
        return dataclasses.replace(self, peers=peers)


def fresh_state(seed: int) -> ValidatorState:
    return ValidatorState(seed=seed)


# ---------------------------------------------------------------------------------------------
# JSON encoding


def _record_to_json(r: PeerRecord) -> dict[str, Any]:
    return {
        "uid": r.uid,
        "mu": r.mu,
        "sigma": r.sigma,
        "bma": r.bma,
        "binary": r.binary,
        "sync": r.sync,
        "sync_x": r.sync_x,
        "final": r.final,
        "weight": r.weight,
        "staleness": r.staleness,
        "inactive_since": r.inactive_since,
        "eval_count": r.eval_count,
        "last_eval_window": r.last_eval_window,
        "excluded_until": r.excluded_until,
        "fault_streak": r.fault_streak,
        "fault_history": list(r.fault_history),
        "negative_streak": r.negative_streak,
        "eval_history": list(r.eval_history),
        "harm_debt": r.harm_debt,
        "harm_window": r.harm_window,
        "harm_history": list(r.harm_history),
        "slash_counts": dict(sorted(r.slash_counts.items())),
        "last_losses": dict(sorted(r.last_losses.items())),
    }


def state_to_json(state: ValidatorState) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "seed": state.seed,
        "last_window": state.last_window,
        "last_weights_window": state.last_weights_window,
        "evaluated_uids": sorted(state.evaluated_uids),
        "gather_schedule": {
            str(w): list(uids) for w, uids in sorted(state.gather_schedule.items())
        },
        "peers": {str(uid): _record_to_json(r) for uid, r in sorted(state.peers.items())},
    }


class _Reader:
    """Strict typed field access; every fault names the file and the JSON path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, msg: str) -> StateError:
        return StateError(f"validator state {self.source}: {where}: {msg}")

    def obj(self, value: Any, where: str, keys: tuple[str, ...] | None = None) -> dict:
        if not isinstance(value, dict):
            raise self.fail(where, f"expected an object, got {type(value).__name__}")
        if keys is not None and set(value) != set(keys):
            missing = sorted(set(keys) - set(value))
            extra = sorted(set(value) - set(keys))
            raise self.fail(
                where, f"fields differ from the schema (missing {missing}, unknown {extra})"
            )
        return value

    def int_(self, value: Any, where: str, *, minimum: int | None = None) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(where, f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(where, f"{value} is below {minimum}")
        return value

    def opt_int(self, value: Any, where: str) -> int | None:
        return None if value is None else self.int_(value, where)

    def float_(self, value: Any, where: str) -> float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise self.fail(where, f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise self.fail(where, f"non-finite number {value!r}")
        return float(value)

    def opt_float(self, value: Any, where: str) -> float | None:
        return None if value is None else self.float_(value, where)

    def uid_key(self, key: str, where: str) -> int:
        if not key.isdigit():
            raise self.fail(where, f"key {key!r} is not a non-negative integer")
        return int(key)


_RECORD_KEYS = tuple(_record_to_json(PeerRecord(uid=0)))
_LADDER_KEYS = ("fault_streak", "fault_history", "negative_streak", "eval_history")
_HARM_KEYS = ("harm_debt", "harm_window", "harm_history")
_RECORD_KEYS_BY_VERSION = {
    1: tuple(k for k in _RECORD_KEYS if k not in (*_LADDER_KEYS, *_HARM_KEYS)),
    2: tuple(k for k in _RECORD_KEYS if k not in _HARM_KEYS),
    3: _RECORD_KEYS,
}
_STATE_KEYS = tuple(state_to_json(fresh_state(0)))


def _flags(rd: _Reader, value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise rd.fail(where, "expected a list of 0/1 flags")
    out = tuple(rd.int_(v, f"{where}[{i}]", minimum=0) for i, v in enumerate(value))
    if any(v > 1 for v in out):
        raise rd.fail(where, "flags must be 0 or 1")
    return out


def _harm_debt(rd: _Reader, value: Any, where: str) -> float:
    debt = rd.float_(value, where)
    if debt < 0:
        raise rd.fail(where, f"must be ≥ 0, got {debt}")
    return debt


def _record_from_json(rd: _Reader, value: Any, where: str, version: int) -> PeerRecord:
    d = rd.obj(value, where, _RECORD_KEYS_BY_VERSION[version])
    mu = rd.opt_float(d["mu"], f"{where}.mu")
    sigma = rd.opt_float(d["sigma"], f"{where}.sigma")
    if (mu is None) != (sigma is None):
        raise rd.fail(where, "mu and sigma must both be set or both be null")
    if sigma is not None and sigma <= 0:
        raise rd.fail(f"{where}.sigma", f"must be positive, got {sigma}")
    counts = rd.obj(d["slash_counts"], f"{where}.slash_counts")
    for reason, n in counts.items():
        if reason not in SLASH_REASONS:
            raise rd.fail(f"{where}.slash_counts", f"unknown slash reason {reason!r}")
        rd.int_(n, f"{where}.slash_counts.{reason}", minimum=0)
    losses = rd.obj(d["last_losses"], f"{where}.last_losses")
    for key, v in losses.items():
        if key not in LOSS_KEYS:
            raise rd.fail(f"{where}.last_losses", f"unknown loss key {key!r}")
        rd.float_(v, f"{where}.last_losses.{key}")
    return PeerRecord(
        uid=rd.int_(d["uid"], f"{where}.uid", minimum=0),
        mu=mu,
        sigma=sigma,
        bma=rd.float_(d["bma"], f"{where}.bma"),
        binary=rd.float_(d["binary"], f"{where}.binary"),
        sync=rd.float_(d["sync"], f"{where}.sync"),
        sync_x=rd.opt_float(d["sync_x"], f"{where}.sync_x"),
        final=rd.float_(d["final"], f"{where}.final"),
        weight=rd.float_(d["weight"], f"{where}.weight"),
        staleness=rd.int_(d["staleness"], f"{where}.staleness", minimum=1),
        inactive_since=rd.opt_int(d["inactive_since"], f"{where}.inactive_since"),
        eval_count=rd.int_(d["eval_count"], f"{where}.eval_count", minimum=0),
        last_eval_window=rd.opt_int(d["last_eval_window"], f"{where}.last_eval_window"),
        excluded_until=rd.opt_int(d["excluded_until"], f"{where}.excluded_until"),
        fault_streak=rd.int_(d.get("fault_streak", 0), f"{where}.fault_streak", minimum=0),
        fault_history=_flags(rd, d.get("fault_history", []), f"{where}.fault_history"),
        negative_streak=rd.int_(d.get("negative_streak", 0), f"{where}.negative_streak", minimum=0),
        eval_history=_flags(rd, d.get("eval_history", []), f"{where}.eval_history"),
        harm_debt=_harm_debt(rd, d.get("harm_debt", 0.0), f"{where}.harm_debt"),
        harm_window=rd.opt_int(d.get("harm_window"), f"{where}.harm_window"),
        harm_history=_flags(rd, d.get("harm_history", []), f"{where}.harm_history"),
        slash_counts={k: int(v) for k, v in counts.items()},
        last_losses={k: float(v) for k, v in losses.items()},
    )


def state_from_json(value: Any, source: str = "<memory>") -> ValidatorState:
    """Builds a state from decoded JSON, checking the schema and every type."""
    rd = _Reader(source)
    d = rd.obj(value, "top level")
    version = d.get("schema")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise rd.fail(
            "schema",
            f"expected version {SCHEMA_VERSION} (or an older {READABLE_VERSIONS[:-1]}), "
            f"got {version!r}",
        )
    d = rd.obj(value, "top level", _STATE_KEYS)
    peers_raw = rd.obj(d["peers"], "peers")
    peers: dict[int, PeerRecord] = {}
    for key, rec in peers_raw.items():
        uid = rd.uid_key(key, "peers")
        record = _record_from_json(rd, rec, f"peers.{key}", version)
        if record.uid != uid:
            raise rd.fail(f"peers.{key}.uid", f"record uid {record.uid} under key {key}")
        peers[uid] = record
    evaluated = d["evaluated_uids"]
    if not isinstance(evaluated, list):
        raise rd.fail("evaluated_uids", "expected a list")
    sched_raw = rd.obj(d["gather_schedule"], "gather_schedule")
    schedule: dict[int, tuple[int, ...]] = {}
    for key, uids in sched_raw.items():
        w = rd.uid_key(key, "gather_schedule")
        if not isinstance(uids, list):
            raise rd.fail(f"gather_schedule.{key}", "expected a list of uids")
        schedule[w] = tuple(
            rd.int_(u, f"gather_schedule.{key}[{i}]", minimum=0) for i, u in enumerate(uids)
        )
    return ValidatorState(
        seed=rd.int_(d["seed"], "seed"),
        last_window=rd.opt_int(d["last_window"], "last_window"),
        last_weights_window=rd.opt_int(d["last_weights_window"], "last_weights_window"),
        evaluated_uids=tuple(
            sorted({rd.int_(u, f"evaluated_uids[{i}]", minimum=0) for i, u in enumerate(evaluated)})
        ),
        gather_schedule=schedule,
        peers=peers,
    )


# ---------------------------------------------------------------------------------------------
# Files


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replaces `path` with `data` so that readers only ever see the old or the new content."""
    path = Path(path)
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(directory)


def _remove_stale_temps(path: Path) -> None:
    # Temp files left by a process killed between mkstemp and rename; never read, only removed.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def save_state(state: ValidatorState, path: str | Path) -> None:
    """Writes the state atomically (one validator process owns a state file)."""
    path = Path(path)
    if path.parent.exists():
        _remove_stale_temps(path)
    data = json.dumps(state_to_json(state), allow_nan=False, indent=1).encode()
    atomic_write_bytes(path, data + b"\n")


def load_state(path: str | Path, seed: int) -> ValidatorState:
    """The saved state, or a fresh one when the file does not exist.

    Raises StateError when the file exists but is not a complete, well-typed state, or when it
    was written under a different scoring seed (its scores would not be reproducible).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return fresh_state(seed)
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StateError(f"validator state {path}: corrupt file, not valid JSON ({e})") from e
    state = state_from_json(value, str(path))
    if state.seed != seed:
        raise StateError(
            f"validator state {path}: written with seed {state.seed}, configured seed is {seed};"
            " move the file away to start over with the new seed"
        )
    return state
