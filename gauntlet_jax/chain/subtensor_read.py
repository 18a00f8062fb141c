"""The reading half of the subtensor client: everything a node reads, over one connection.

The block clock (`chain_getHeader`), `Timestamp.Now` at a block, the metagraph (SubtensorModule
`SubnetworkN`, `Keys`, `TotalHotkeyAlpha`, `LastUpdate`, `ValidatorPermit`, all at one block hash
so they agree), `Commitments.CommitmentOf` (raw `RawN` fields, validated as hostile), `Weights`
and single subnet values (hyperparameters). Every read goes through `SubstrateConnection.call`
(one reconnect and retry, typed errors); `chain.subtensor.SubtensorChain` adds the signed calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Self, TypeVar

from substrateinterface import SubstrateInterface

from gauntlet_jax.chain.base import Metagraph, window_of
from gauntlet_jax.chain.errors import ChainDataError, SubnetNotExists
from gauntlet_jax.chain.substrate import SubstrateConnection
from gauntlet_jax.chain.subtensor_decode import as_int, as_vector, decode_commitment
from gauntlet_jax.errors import ChainError

log = logging.getLogger(__name__)

T = TypeVar("T")
RAO_PER_TOKEN = 1e9


class SubtensorReader:
    """Reads a subtensor node (`ws://` / `wss://`)."""

    def __init__(self, url: str, *, timeout_s: float = 30.0) -> None:
        if not url.startswith(("ws://", "wss://")):
            raise ChainError(f"subtensor url must start with ws:// or wss://, got {url!r}")
        self._conn = SubstrateConnection(url, timeout_s)

    @property
    def url(self) -> str:
        return self._conn.url

    @property
    def timeout_s(self) -> float:
        return self._conn.timeout_s

    @property
    def substrate(self) -> SubstrateInterface:
        """The underlying interface (tests and admin tools; it is not thread-safe)."""
        return self._conn.substrate

    def _call(self, what: str, fn: Callable[[SubstrateInterface], T]) -> T:
        return self._conn.call(what, fn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _head(si: SubstrateInterface) -> tuple[str, int]:
        header = si.rpc_request("chain_getHeader", [])["result"]
        number = header["number"]
        number = int(number, 16) if isinstance(number, str) else int(number)
        block_hash = si.rpc_request("chain_getBlockHash", [number])["result"]
        if not isinstance(block_hash, str):
            raise ChainDataError(f"no hash for head block {number}")
        return block_hash, number

    def current_block(self) -> int:
        def read(si: SubstrateInterface) -> int:
            number = si.rpc_request("chain_getHeader", [])["result"]["number"]
            return int(number, 16) if isinstance(number, str) else int(number)

        return self._call("current block", read)

    def window(self, blocks_per_window: int) -> int:
        return window_of(self.current_block(), blocks_per_window)

    def block_hash(self, block: int) -> str:
        def read(si: SubstrateInterface) -> str:
            result = si.rpc_request("chain_getBlockHash", [int(block)])["result"]
            if not isinstance(result, str):
                raise ChainError(f"{self.url}: block {block} not found (not produced yet?)")
            return result

        return self._call(f"hash of block {block}", read)

    def block_timestamp(self, block: int) -> float:
        block_hash = self.block_hash(block)

        def read(si: SubstrateInterface) -> float:
            millis = si.query("Timestamp", "Now", block_hash=block_hash).value
            if not isinstance(millis, int) or millis <= 0:
                raise ChainDataError(f"Timestamp.Now at block {block} is {millis!r}")
            return millis / 1000.0

        return self._call(f"timestamp of block {block}", read)

    def _has_storage(self, si: SubstrateInterface, pallet: str, name: str) -> bool:
        si.init_runtime()
        return si.get_metadata_storage_function(pallet, name) is not None

    def _has_call(self, si: SubstrateInterface, pallet: str, name: str) -> bool:
        si.init_runtime()
        module = si.metadata.get_metadata_pallet(pallet)
        return module is not None and any(call.name == name for call in (module.calls or []))

    def _subnet_n(self, si: SubstrateInterface, netuid: int, block_hash: str) -> int:
        if not si.query("SubtensorModule", "NetworksAdded", [netuid], block_hash=block_hash).value:
            raise SubnetNotExists(detail=f"netuid {netuid} does not exist")
        return int(
            si.query("SubtensorModule", "SubnetworkN", [netuid], block_hash=block_hash).value
        )

    def metagraph(self, netuid: int) -> Metagraph:
        def read(si: SubstrateInterface) -> Metagraph:
            block_hash, block = self._head(si)
            n = self._subnet_n(si, netuid, block_hash)
            uids: list[int] = []
            hotkeys: list[str] = []
            if n:
                keys = [
                    si.create_storage_key("SubtensorModule", "Keys", [netuid, uid])
                    for uid in range(n)
                ]
                for uid, (_, value) in enumerate(si.query_multi(keys, block_hash=block_hash)):
                    if isinstance(value.value, str):
                        uids.append(uid)
                        hotkeys.append(value.value)
            stake = [0.0] * len(hotkeys)
            if hotkeys:
                stake_keys = [
                    si.create_storage_key("SubtensorModule", "TotalHotkeyAlpha", [hk, netuid])
                    for hk in hotkeys
                ]
                by_key = {
                    k.to_hex(): v.value
                    for k, v in si.query_multi(stake_keys, block_hash=block_hash)
                }
                stake = [
                    as_int(by_key.get(k.to_hex()), "stake") / RAO_PER_TOKEN for k in stake_keys
                ]
            last = as_vector(
                si.query("SubtensorModule", "LastUpdate", [netuid], block_hash=block_hash).value,
                n,
                0,
            )
            permits = as_vector(
                si.query(
                    "SubtensorModule", "ValidatorPermit", [netuid], block_hash=block_hash
                ).value,
                n,
                False,
            )
            return Metagraph(
                netuid=netuid,
                block=block,
                uids=uids,
                hotkeys=tuple(hotkeys),
                stake=stake,
                validator_permit=[bool(permits[u]) for u in uids],
                last_update=[int(last[u]) for u in uids],
            )

        return self._call(f"metagraph of netuid {netuid}", read)

    def _uid_of(
        self, si: SubstrateInterface, netuid: int, hotkey: str, block_hash: str
    ) -> int | None:
        found = si.query("SubtensorModule", "Uids", [netuid, hotkey], block_hash=block_hash)
        return None if found.value is None else int(found.value)

    def _hotkey_of(
        self, si: SubstrateInterface, netuid: int, uid: int, block_hash: str
    ) -> str | None:
        obj = si.query("SubtensorModule", "Keys", [netuid, uid], block_hash=block_hash)
        if not obj.meta_info.get("result_found", True):
            return None
        return obj.value if isinstance(obj.value, str) else None

    def get_commitment(self, netuid: int, who: int | str) -> str | None:
        def read(si: SubstrateInterface) -> str | None:
            block_hash, _ = self._head(si)
            hotkey = (
                who if isinstance(who, str) else self._hotkey_of(si, netuid, int(who), block_hash)
            )
            if hotkey is None:
                return None
            value = si.query(
                "Commitments", "CommitmentOf", [netuid, hotkey], block_hash=block_hash
            ).value
            return decode_commitment(value, f"commitment of {hotkey} on netuid {netuid}")

        return self._call(f"commitment of {who} on netuid {netuid}", read)

    def get_commitments(self, netuid: int) -> dict[int, str]:
        graph = self.metagraph(netuid)

        def read(si: SubstrateInterface) -> dict[int, str]:
            keys = [
                si.create_storage_key("Commitments", "CommitmentOf", [netuid, hk])
                for hk in graph.hotkeys
            ]
            out: dict[int, str] = {}
            if not keys:
                return out
            values = {k.to_hex(): v.value for k, v in si.query_multi(keys)}
            for uid, hotkey, key in zip(graph.uids, graph.hotkeys, keys, strict=True):
                try:
                    data = decode_commitment(
                        values.get(key.to_hex()), f"commitment of uid {uid} ({hotkey})"
                    )
                except ChainDataError as exc:
                    log.warning("skipping %s", exc)
                    continue
                if data is not None:
                    out[int(uid)] = data
            return out

        return self._call(f"commitments of netuid {netuid}", read)

    def get_weights(self, netuid: int, uid: int) -> dict[int, int]:
        def read(si: SubstrateInterface) -> dict[int, int]:
            rows = si.query("SubtensorModule", "Weights", [netuid, uid]).value or []
            out: dict[int, int] = {}
            for row in rows:
                dest, value = (row[0], row[1]) if isinstance(row, (list, tuple)) else (None, None)
                if not isinstance(dest, int) or not isinstance(value, int):
                    raise ChainDataError(f"Weights({netuid}, {uid}) row {row!r} is not (u16, u16)")
                out[dest] = value
            return out

        return self._call(f"weights of uid {uid} on netuid {netuid}", read)

    def weights_version_key(self, netuid: int) -> int:
        return as_int(self.subnet_value("WeightsVersionKey", netuid), "WeightsVersionKey")

    def subnet_value(self, name: str, netuid: int) -> Any:
        """One SubtensorModule storage value keyed by netuid (e.g. WeightsSetRateLimit)."""
        return self._call(
            f"{name} of netuid {netuid}",
            lambda si: si.query("SubtensorModule", name, [netuid]).value,
        )
