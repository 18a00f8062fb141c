"""A thin subtensor client over substrate-interface (no bittensor SDK): the signed calls.

Reads come from `chain.subtensor_read.SubtensorReader`. Writes: signed extrinsics
`SubtensorModule.set_weights`, `commit_weights`, `reveal_weights` and
`Commitments.set_commitment`, included in a block before we return, with every `ExtrinsicFailed`
module error mapped to its typed `PalletError` and every pool rejection (`Invalid Transaction`) to
`TransactionRejected` (`chain.subtensor_decode`).

Before sending weights we do bittensor's u16 conversion and check the rate limit ourselves
(the extrinsic executes in the next block: block + 1 − LastUpdate ≥ WeightsSetRateLimit), so a
doomed extrinsic never costs a fee. Subnets with commit-reveal get a hash commit
(`commit_weights`, hash as subtensor recomputes it) and a later `reveal_pending` (`chain.reveal`);
on runtimes that have `commit_timelocked_weights` (drand timelock, `chain.timelock`) the weights
are encrypted for the reveal epoch's drand round and the runtime reveals them itself;
`reveal_pending` then reads back what landed. A runtime with neither call raises
`RuntimeCallMissing`.

A retried submission resends the same signed bytes (same nonce, so it can never apply twice).
Nonces come from `system_accountNextIndex` and never go backwards within this process, so two
quick extrinsics get n and n + 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from substrateinterface import SubstrateInterface
from substrateinterface.exceptions import SubstrateRequestException

from gauntlet_jax.chain import weights as wmath
from gauntlet_jax.chain.base import WeightsResult, blocks_until_weights_allowed, validate_commitment
from gauntlet_jax.chain.errors import (
    ChainConnectionError,
    ColdkeyMismatch,
    CommittingWeightsTooFast,
    HotKeyNotRegisteredInSubNet,
    InsufficientBalance,
    RuntimeCallMissing,
    SettingWeightsTooFast,
    TimelockedRevealMissed,
)
from gauntlet_jax.chain.keys import Hotkey
from gauntlet_jax.chain.reveal import PendingReveal, reveal_due, seal
from gauntlet_jax.chain.subtensor_decode import as_int, as_vector, dispatch_error, pool_rejection
from gauntlet_jax.chain.subtensor_read import SubtensorReader
from gauntlet_jax.chain.timelock import (
    HOTKEY_PAYLOAD_VERSION,
    PendingTimelocked,
    encrypt_for_round,
    reveal_target,
    tlock_payload,
)
from gauntlet_jax.errors import ChainError

# The AccountId a storage map returns for "no owner" (all zero bytes, SS58 format 42).
_ZERO_ACCOUNT = "5C4hrfjw9DjXZTzV3MwzrrAr9P1MJhSrvWGWqi1eSuyUpnhM"


@dataclass(frozen=True)
class _WeightsContext:
    head: int
    uid: int
    last_update: int
    commit_reveal: bool
    rate_limit: int
    timelocked: bool
    hash_commits: bool


class SubtensorChain(SubtensorReader):
    """A `Chain` on a subtensor node (`ws://` / `wss://`). Writes are signed by `hotkey`."""

    def __init__(
        self,
        url: str,
        hotkey: Hotkey | None = None,
        *,
        timeout_s: float = 30.0,
        wait_for_inclusion: bool = True,
    ) -> None:
        super().__init__(url, timeout_s=timeout_s)
        self._hotkey = hotkey
        self.wait_for_inclusion = wait_for_inclusion
        self._last_nonce: int | None = None
        self._pending: list[PendingReveal] = []
        self._timelocked: list[PendingTimelocked] = []

    def with_hotkey(self, hotkey: Hotkey | None) -> SubtensorChain:
        """Another handle on the same connection, signing with `hotkey` (its own nonces and
        pending reveals). Saves a metadata download per key, e.g. in simulations and tests."""
        other = object.__new__(SubtensorChain)
        other._conn = self._conn
        other._hotkey = hotkey
        other.wait_for_inclusion = self.wait_for_inclusion
        other._last_nonce = None
        other._pending = []
        other._timelocked = []
        return other

    def __repr__(self) -> str:
        return f"SubtensorChain({self.url!r}, hotkey={self.hotkey!r})"

    @property
    def hotkey(self) -> str | None:
        return None if self._hotkey is None else self._hotkey.ss58_address

    def _require_hotkey(self) -> Hotkey:
        if self._hotkey is None:
            raise ChainError("this chain handle has no hotkey; writes need one")
        return self._hotkey

    # ---------------------------------------------------------------------------------- signing

    def _next_nonce(self, si: SubstrateInterface, address: str) -> int:
        chain_nonce = int(si.rpc_request("system_accountNextIndex", [address])["result"])
        if self._last_nonce is not None and self._last_nonce + 1 > chain_nonce:
            return self._last_nonce + 1
        return chain_nonce

    def submit(self, module: str, function: str, params: dict[str, Any]) -> tuple[int | None, str]:
        """Signs and submits one call; returns (block it was included in, extrinsic hash).

        Raises the typed PalletError of an `ExtrinsicFailed`, TransactionRejected when the pool
        refuses it, ChainConnectionError / ChainTimeout when the node cannot be reached."""
        hotkey = self._require_hotkey()
        what = f"{module}.{function}"
        with self._conn.lock:

            def build(si: SubstrateInterface):
                call = si.compose_call(
                    call_module=module, call_function=function, call_params=params
                )
                nonce = self._next_nonce(si, hotkey.ss58_address)
                return si.create_signed_extrinsic(
                    call=call, keypair=hotkey.keypair, nonce=nonce
                ), nonce

            extrinsic, nonce = self._call(f"sign {what}", build)
            resent = False

            def send(si: SubstrateInterface):
                nonlocal resent
                try:
                    return si.submit_extrinsic(
                        extrinsic, wait_for_inclusion=self.wait_for_inclusion
                    )
                except SubstrateRequestException as exc:
                    error = exc.args[0] if exc.args else {}
                    rejected = pool_rejection(error, what)
                    if resent and rejected.reason in ("AlreadyImported", "Stale"):
                        raise ChainConnectionError(
                            f"{self.url}: {what}: the connection dropped after sending and the node "
                            f"now reports the extrinsic as {rejected.reason}; its inclusion is "
                            "unconfirmed"
                        ) from None
                    self._last_nonce = None  # re-read the nonce next time
                    raise rejected from None
                finally:
                    resent = True

            receipt = self._call(f"submit {what}", send)
            self._last_nonce = nonce
            extrinsic_hash = f"0x{extrinsic.extrinsic_hash.hex()}"
            if not self.wait_for_inclusion:
                return None, extrinsic_hash

            def check(si: SubstrateInterface) -> int:
                for event in receipt.triggered_events:
                    value = event.value
                    if (
                        value.get("module_id") == "System"
                        and value.get("event_id") == "ExtrinsicFailed"
                    ):
                        raise dispatch_error(si, value.get("attributes"), what)
                return int(si.get_block_number(receipt.block_hash))

            return self._call(f"events of {what}", check), extrinsic_hash

    def commit(self, netuid: int, data: str) -> int:
        validate_commitment(data, f"commitment of {self.hotkey}")
        raw = data.encode("ascii")
        block, _ = self.submit(
            "Commitments",
            "set_commitment",
            {"netuid": netuid, "info": {"fields": [[{f"Raw{len(raw)}": raw}]]}},
        )
        return -1 if block is None else block

    # ----------------------------------------------------------------------------- registration

    def burn_cost(self, netuid: int) -> int:
        """The subnet's current burned-registration cost in rao."""

        def read(si: SubstrateInterface) -> int:
            block_hash, _ = self._head(si)
            self._subnet_n(si, netuid, block_hash)
            value = si.query("SubtensorModule", "Burn", [netuid], block_hash=block_hash).value
            return as_int(value, f"Burn of netuid {netuid}")

        return self._call(f"burn cost of netuid {netuid}", read)

    def free_balance(self, address: str) -> int:
        """Free balance of an account in rao."""

        def read(si: SubstrateInterface) -> int:
            account = si.query("System", "Account", [address]).value or {}
            return as_int((account.get("data") or {}).get("free"), f"balance of {address}")

        return self._call(f"balance of {address}", read)

    def burned_register(self, netuid: int, coldkey: Hotkey) -> int:
        """Registers this hotkey on `netuid`, the burn paid by `coldkey`; returns the uid (at
        once when already registered). Checks the subnet, the hotkey's owner and the balance
        before sending."""
        hotkey = self._require_hotkey().ss58_address
        cost = self.burn_cost(netuid)

        def read(si: SubstrateInterface) -> tuple[int | None, str | None]:
            block_hash, _ = self._head(si)
            uid = self._uid_of(si, netuid, hotkey, block_hash)
            owner = si.query("SubtensorModule", "Owner", [hotkey], block_hash=block_hash).value
            return uid, owner if isinstance(owner, str) else None

        uid, owner = self._call(f"registration of {hotkey}", read)
        if uid is not None:
            return uid
        if owner and owner != coldkey.ss58_address and owner != _ZERO_ACCOUNT:
            raise ColdkeyMismatch(
                f"hotkey {hotkey} belongs to coldkey {owner}, not {coldkey.ss58_address}; "
                "nothing was sent"
            )
        balance = self.free_balance(coldkey.ss58_address)
        if balance < cost:
            raise InsufficientBalance(
                f"coldkey {coldkey.ss58_address} has {balance / 1e9:.9f} TAO free, the burn on "
                f"netuid {netuid} is {cost / 1e9:.9f} TAO; nothing was sent"
            )
        self.with_hotkey(coldkey).submit(
            "SubtensorModule", "burned_register", {"netuid": netuid, "hotkey": hotkey}
        )
        found = self.metagraph(netuid).uid_of(hotkey)
        if found is None:
            raise ChainError(f"burned_register was included but {hotkey} has no uid on {netuid}")
        return found

    def weights_rate_limit(self, netuid: int) -> int:
        return as_int(self.subnet_value("WeightsSetRateLimit", netuid), "WeightsSetRateLimit")

    def _weights_context(self, netuid: int) -> _WeightsContext:
        """What the weights checks need, read at one head block."""
        hotkey = self._require_hotkey().ss58_address

        def read(si: SubstrateInterface):
            block_hash, block = self._head(si)
            self._subnet_n(si, netuid, block_hash)
            uid = self._uid_of(si, netuid, hotkey, block_hash)
            if uid is None:
                raise HotKeyNotRegisteredInSubNet(
                    detail=f"{hotkey} on netuid {netuid} (checked before sending)"
                )
            last = as_vector(
                si.query("SubtensorModule", "LastUpdate", [netuid], block_hash=block_hash).value,
                uid + 1,
                0,
            )[uid]
            commit_reveal = bool(
                si.query(
                    "SubtensorModule", "CommitRevealWeightsEnabled", [netuid], block_hash=block_hash
                ).value
            )
            rate_limit = int(
                si.query(
                    "SubtensorModule", "WeightsSetRateLimit", [netuid], block_hash=block_hash
                ).value
            )
            timelocked = self._has_call(si, "SubtensorModule", "commit_timelocked_weights")
            hash_commits = self._has_call(si, "SubtensorModule", "commit_weights")
            return _WeightsContext(
                block, uid, int(last), commit_reveal, rate_limit, timelocked, hash_commits
            )

        return self._call(f"weights context on netuid {netuid}", read)

    def set_weights(
        self,
        netuid: int,
        uids: object,
        weights: object,
        version_key: int,
        *,
        precheck: bool = True,
    ) -> WeightsResult:
        """bittensor's u16 conversion, a local rate-limit check (skip with precheck=False), then
        `set_weights` (or `commit_weights` on a commit-reveal subnet)."""
        send_uids, send_values = wmath.convert_weights_for_emit(uids, weights)
        if not send_uids:
            return WeightsResult(included=False, method="none", message="all weights are zero")
        ctx = self._weights_context(netuid)
        uid, last, rate_limit = ctx.uid, ctx.last_update, ctx.rate_limit
        # The extrinsic executes in the next block at the earliest.
        next_block = ctx.head + 1
        if ctx.commit_reveal:
            if not (ctx.timelocked or ctx.hash_commits):
                raise RuntimeCallMissing(
                    f"netuid {netuid} has commit-reveal on and the runtime has neither "
                    "commit_timelocked_weights nor commit_weights; nothing was sent"
                )
            wait = blocks_until_weights_allowed(next_block, last, rate_limit)
            if precheck and wait:
                raise CommittingWeightsTooFast(
                    detail=f"uid {uid}: last commit at block {last}, next block {next_block}, "
                    f"rate limit {rate_limit} ({wait} blocks to go; checked locally, nothing sent)"
                )
            if ctx.timelocked:
                return self._commit_timelocked(netuid, send_uids, send_values, version_key, ctx)
            return self._commit_weights(netuid, send_uids, send_values, version_key, next_block)
        wait = blocks_until_weights_allowed(next_block, last, rate_limit)
        if precheck and wait:
            raise SettingWeightsTooFast(
                detail=f"uid {uid}: last update at block {last}, next block {next_block}, rate "
                f"limit {rate_limit} ({wait} blocks to go; checked locally, nothing sent)"
            )
        block, extrinsic_hash = self.submit(
            "SubtensorModule",
            "set_weights",
            {
                "netuid": netuid,
                "dests": send_uids,
                "weights": send_values,
                "version_key": version_key,
            },
        )
        return WeightsResult(
            included=self.wait_for_inclusion,
            method="set_weights",
            block=block,
            uids=tuple(send_uids),
            values=tuple(send_values),
            version_key=version_key,
            extrinsic_hash=extrinsic_hash,
        )

    def _commit_timelocked(
        self,
        netuid: int,
        uids: list[int],
        values: list[int],
        version_key: int,
        ctx: _WeightsContext,
    ) -> WeightsResult:
        """Encrypts for the drand round of the reveal epoch's first block, read off the chain's
        clock, and sends `commit_timelocked_weights`."""
        hotkey = self._require_hotkey()

        def read(si: SubstrateInterface) -> tuple[int, int, int, float, float]:
            block_hash = si.get_block_hash(ctx.head)
            tempo = int(si.query("SubtensorModule", "Tempo", [netuid], block_hash=block_hash).value)
            period = int(
                si.query(
                    "SubtensorModule", "RevealPeriodEpochs", [netuid], block_hash=block_hash
                ).value
            )
            version = HOTKEY_PAYLOAD_VERSION
            if self._has_storage(si, "SubtensorModule", "CommitRevealWeightsVersion"):
                version = int(
                    si.query(
                        "SubtensorModule", "CommitRevealWeightsVersion", block_hash=block_hash
                    ).value
                )
            now_ms = si.query("Timestamp", "Now", block_hash=block_hash).value
            slot_ms = si.get_constant("Aura", "SlotDuration")
            return tempo, period, version, now_ms / 1000.0, (slot_ms.value if slot_ms else 12000)

        tempo, period, version, head_time, slot_ms = self._call(
            f"timelock parameters of netuid {netuid}", read
        )
        commit_block = ctx.head + 1
        first, reveal_round = reveal_target(
            netuid, commit_block, tempo, period, ctx.head, head_time, slot_ms / 1000.0
        )
        payload = tlock_payload(hotkey.public_key, uids, values, version_key, version)
        commit = encrypt_for_round(payload, reveal_round)
        block, extrinsic_hash = self.submit(
            "SubtensorModule",
            "commit_timelocked_weights",
            {
                "netuid": netuid,
                "commit": "0x" + commit.hex(),
                "reveal_round": reveal_round,
                "commit_reveal_version": version,
            },
        )
        landed = block if block is not None else commit_block
        first, _ = reveal_target(netuid, landed, tempo, period, ctx.head, head_time, 0.0)
        pending = PendingTimelocked(
            netuid,
            tuple(uids),
            tuple(values),
            version_key,
            reveal_round,
            landed,
            first,
            first + tempo,
        )
        self._timelocked.append(pending)
        return pending.result(
            "commit_timelocked_weights",
            block,
            included=self.wait_for_inclusion,
            extrinsic_hash=extrinsic_hash,
            message=f"drand round {reveal_round}, revealed by the runtime from block {first}",
        )

    def _check_timelocked(self, netuid: int) -> list[WeightsResult]:
        """Reads back the timelocked commits whose reveal epoch has begun: revealed (the weights
        row holds them), still waiting, or missed (the epoch is over; TimelockedRevealMissed's
        message in the result)."""
        mine = [p for p in self._timelocked if p.netuid == netuid]
        if not mine:
            return []
        uid_block = self._weights_context(netuid)
        block, uid = uid_block.head, uid_block.uid
        results: list[WeightsResult] = []
        keep = [p for p in self._timelocked if p.netuid != netuid]
        for pending in mine:
            if block < pending.reveal_first:
                keep.append(pending)
                continue
            if pending.revealed_as(self.get_weights(netuid, uid)):
                results.append(pending.result("timelocked_reveal", block, included=True))
            elif block > pending.reveal_last:
                missed = TimelockedRevealMissed(
                    f"netuid {netuid}: the commit for drand round {pending.reveal_round} was not "
                    f"revealed in blocks {pending.reveal_first}..{pending.reveal_last}"
                )
                results.append(
                    pending.result("timelocked_reveal", None, included=False, message=str(missed))
                )
            else:
                keep.append(pending)
        self._timelocked = keep
        return results

    def _commit_weights(
        self, netuid: int, uids: list[int], values: list[int], version_key: int, next_block: int
    ) -> WeightsResult:
        hotkey = self._require_hotkey()
        salt, commit_hash = seal(hotkey.public_key, netuid, uids, values, version_key)
        block, extrinsic_hash = self.submit(
            "SubtensorModule", "commit_weights", {"netuid": netuid, "commit_hash": commit_hash}
        )
        commit_block = block if block is not None else next_block
        pending = PendingReveal(
            netuid, tuple(uids), tuple(values), salt, version_key, commit_hash, commit_block
        )
        self._pending.append(pending)
        return pending.result(
            "commit_weights", block, included=self.wait_for_inclusion, extrinsic_hash=extrinsic_hash
        )

    def reveal_weights(
        self,
        netuid: int,
        uids: list[int],
        values: list[int],
        salt: list[int] | tuple[int, ...],
        version_key: int,
    ) -> tuple[int | None, str]:
        return self.submit(
            "SubtensorModule",
            "reveal_weights",
            {
                "netuid": netuid,
                "uids": list(uids),
                "values": list(values),
                "salt": list(salt),
                "version_key": version_key,
            },
        )

    def reveal_pending(self, netuid: int) -> list[WeightsResult]:
        """Reveals pending hash commits whose reveal window holds the next block (drops expired
        ones) and reports the timelocked commits the runtime revealed or missed."""
        timelocked = self._check_timelocked(netuid)
        if not any(p.netuid == netuid for p in self._pending):
            return timelocked

        def read(si: SubstrateInterface) -> tuple[int, int, int]:
            block_hash, block = self._head(si)
            tempo = int(si.query("SubtensorModule", "Tempo", [netuid], block_hash=block_hash).value)
            period = int(
                si.query(
                    "SubtensorModule", "RevealPeriodEpochs", [netuid], block_hash=block_hash
                ).value
            )
            return block, tempo, period

        block, tempo, period = self._call(f"reveal window of netuid {netuid}", read)

        def send(pending: PendingReveal) -> tuple[int | None, str]:
            return self.reveal_weights(
                netuid, list(pending.uids), list(pending.values), pending.salt, pending.version_key
            )

        # The extrinsic executes in the next block at the earliest.
        results, self._pending = reveal_due(
            self._pending, netuid, block + 1, tempo, period, send, included=self.wait_for_inclusion
        )
        return timelocked + results

    @property
    def pending_reveals(self) -> tuple[PendingReveal | PendingTimelocked, ...]:
        return (*self._pending, *self._timelocked)
