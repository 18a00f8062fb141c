"""The embedded chain: the `Chain` a node sees on the local SQLite file, plus its admin calls.

It keeps what a node reads from subtensor (neurons, stake, permits, last update, commitments,
weights, subnet parameters) in the file of `chain.local_store`, and sends weights through
`chain.local_pallet`, which checks them as subtensor's pallet does; commit-reveal subnets get a
hash commit and a later `reveal_pending` (`chain.reveal`). The admin calls (`create_subnet`,
`register`, `set_stake` …) stand in for what sudo, registration and staking do on a real chain.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from gauntlet_jax.chain import local_pallet
from gauntlet_jax.chain import weights as wmath
from gauntlet_jax.chain.base import Metagraph, WeightsResult, validate_commitment
from gauntlet_jax.chain.errors import ChainDataError, UidVecContainInvalidOne, pallet_error
from gauntlet_jax.chain.keys import public_key_of
from gauntlet_jax.chain.local_store import DEFAULT_PARAMS, LocalStore, subnet_params, uid_of
from gauntlet_jax.chain.reveal import PendingReveal, reveal_due, seal
from gauntlet_jax.errors import ChainError

log = logging.getLogger(__name__)


class LocalChain(LocalStore):
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
        super().__init__(path, block_time_s=block_time_s, busy_timeout_s=busy_timeout_s, now=now)
        self._hotkey = hotkey
        self._pending: list[PendingReveal] = []

    @property
    def hotkey(self) -> str | None:
        return self._hotkey

    def _require_hotkey(self) -> str:
        if not self._hotkey:
            raise ChainError("this chain handle has no hotkey; writes need one")
        return self._hotkey

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
            subnet_params(db, netuid)
            db.execute(f"UPDATE params SET {name} = ? WHERE netuid = ?", (value, netuid))

    def params(self, netuid: int) -> dict[str, float | int | bool]:
        with self._read() as db:
            p = subnet_params(db, netuid)
        return dict(p.__dict__)

    def burn_cost(self, netuid: int) -> int:
        """Registration on the local chain burns nothing (it keeps no balances)."""
        self.weights_version_key(netuid)  # SubnetNotExists for a missing subnet
        return 0

    def burned_register(self, netuid: int, coldkey: object = None) -> int:
        """Registers this hotkey (free: the local chain keeps no balances); returns its uid."""
        return self.register(netuid, self._require_hotkey())

    def weights_rate_limit(self, netuid: int) -> int:
        with self._read() as db:
            return int(subnet_params(db, netuid).weights_rate_limit)

    def weights_version_key(self, netuid: int) -> int:
        with self._read() as db:
            return int(subnet_params(db, netuid).version_key)

    def register(
        self, netuid: int, hotkey: str, *, stake: float = 0.0, validator_permit: bool = False
    ) -> int:
        """Registers a hotkey on a subnet at the next free uid (or returns its uid)."""
        with self._write() as db:
            params = subnet_params(db, netuid)
            uid = uid_of(db, netuid, hotkey)
            if uid is not None:
                return uid
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

    def metagraph(self, netuid: int) -> Metagraph:
        with self._read() as db:
            subnet_params(db, netuid)
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
            subnet_params(db, netuid)
            if uid_of(db, netuid, hotkey) is None:
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
            commit_reveal = subnet_params(db, netuid).commit_reveal
        if commit_reveal:
            return self._commit(netuid, hotkey, send_uids, send_values, version_key)
        with self._write() as db:
            block = self._block(db)
            local_pallet.do_set_weights(
                db, netuid, hotkey, send_uids, send_values, version_key, block
            )
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
            block = self._block(db)
            local_pallet.refuse_under_commit_reveal(db, netuid)
            local_pallet.do_set_weights(
                db, netuid, hotkey, list(uids), list(values), version_key, block
            )
            return block

    # ----------------------------------------------------------------------------- commit-reveal

    def _commit(
        self, netuid: int, hotkey: str, uids: list[int], values: list[int], version_key: int
    ) -> WeightsResult:
        salt, commit_hash = seal(public_key_of(hotkey), netuid, uids, values, version_key)
        block = self.commit_weights(netuid, commit_hash)
        pending = PendingReveal(
            netuid, tuple(uids), tuple(values), salt, version_key, commit_hash, block
        )
        self._pending.append(pending)
        return pending.result("commit_weights", block, included=True)

    def commit_weights(self, netuid: int, commit_hash: str) -> int:
        """subtensor's `commit_weights`; returns the commit block."""
        hotkey = self._require_hotkey()
        with self._write() as db:
            block = self._block(db)
            local_pallet.commit_weights(db, netuid, hotkey, commit_hash, block)
            return block

    def reveal_weights(
        self,
        netuid: int,
        uids: list[int],
        values: list[int],
        salt: list[int] | tuple[int, ...],
        version_key: int,
    ) -> int:
        """subtensor's `reveal_weights`; returns the block the weights were set in."""
        hotkey = self._require_hotkey()
        with self._write() as db:
            block = self._block(db)
            local_pallet.reveal_weights(
                db, netuid, hotkey, list(uids), list(values), salt, version_key, block
            )
            return block

    def reveal_pending(self, netuid: int) -> list[WeightsResult]:
        """Reveals this handle's pending commits whose reveal epoch is now; drops expired ones."""
        with self._read() as db:
            params = subnet_params(db, netuid)
            block = self._block(db)

        def send(pending: PendingReveal) -> tuple[int, None]:
            at = self.reveal_weights(
                netuid, list(pending.uids), list(pending.values), pending.salt, pending.version_key
            )
            return at, None

        results, self._pending = reveal_due(
            self._pending, netuid, block, params.tempo, params.reveal_period, send, included=True
        )
        return results

    @property
    def pending_reveals(self) -> tuple[PendingReveal, ...]:
        return tuple(self._pending)
