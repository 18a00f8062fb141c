"""A loopback JSON-RPC websocket node that speaks enough Substrate for substrate-interface.

It serves the real subtensor metadata (`subtensor_metadata_v14.hex`, runtime of 2025-09; the
runtime version comes from that metadata's `System.Version` constant), keeps storage that the
test seeds (keys and values encoded with the metadata's own types), builds one block per
submitted extrinsic, and decodes every extrinsic against the metadata: call module, function and
arguments, signer, nonce, era, tip, and whether the sr25519 signature verifies over the signing
payload it rebuilds itself from the signed extensions listed in the metadata.

It is not a runtime: it applies no pallet logic. It increments the signer's nonce, stamps
`Timestamp.Now` into each block, and emits `System.ExtrinsicSuccess`, or `ExtrinsicFailed` with a
`Module` dispatch error when told to (`fail_next("SettingWeightsTooFast")`), or refuses in the
transaction pool with a custom validity code (`reject_next(6)`). It can also drop every open
connection (`drop_connections`) or stay silent on the next requests (`stall_next`), to exercise the
client's reconnect and timeout paths. It listens on 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalecodec.base import RuntimeConfigurationObject, ScaleBytes
from scalecodec.type_registry import load_type_registry_preset
from substrateinterface import Keypair, KeypairType
from substrateinterface.storage import StorageKey
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

GENESIS_TIMESTAMP_MS = 1_760_000_000_000
BLOCK_TIME_MS = 12_000


class RuntimeCodec:
    """The metadata's type registry: storage keys, value encoding, extrinsic decoding."""

    def __init__(self, metadata_hex: str) -> None:
        self.metadata_hex = metadata_hex.strip()
        rc = RuntimeConfigurationObject()
        rc.update_type_registry(load_type_registry_preset("legacy"))
        rc.update_type_registry(load_type_registry_preset("core"))
        metadata = rc.create_scale_object("MetadataVersioned", data=ScaleBytes(self.metadata_hex))
        metadata.decode()
        rc.add_portable_registry(metadata)
        self.rc = rc
        self.metadata = metadata
        version_type, version_hex = self._constant("System", "Version")
        version = rc.create_scale_object(version_type, data=ScaleBytes(version_hex))
        version.decode()
        self.runtime_version = version.value
        rc.set_active_spec_version_id(self.spec_version)
        self.signed_extensions = metadata.value[1]["V14"]["extrinsic"]["signed_extensions"]

    @property
    def spec_version(self) -> int:
        return int(self.runtime_version["spec_version"])

    @property
    def transaction_version(self) -> int:
        return int(self.runtime_version["transaction_version"])

    def _constant(self, pallet: str, name: str) -> tuple[str, str]:
        for constant in self.metadata.get_metadata_pallet(pallet).constants:
            if constant.name == name:
                return f"scale_info::{constant.value['type']}", constant.value["value"]
        raise KeyError(f"{pallet}.{name}")

    def storage_function(self, pallet: str, name: str):
        found = self.metadata.get_metadata_pallet(pallet).get_storage_function(name)
        if found is None:
            raise KeyError(f"no storage {pallet}.{name} in the metadata")
        return found

    def storage_key(self, pallet: str, name: str, params: list[Any] | None = None) -> str:
        key = StorageKey.create_from_storage_function(
            pallet, name, params or [], runtime_config=self.rc, metadata=self.metadata
        )
        return key.to_hex()

    def encode_value(self, pallet: str, name: str, value: Any) -> str:
        type_string = self.storage_function(pallet, name).get_value_type_string()
        return self.rc.create_scale_object(type_string).encode(value).to_hex()

    def encode(self, type_string: str, value: Any) -> bytes:
        return bytes(self.rc.create_scale_object(type_string).encode(value).data)

    def pallet_index(self, pallet: str) -> int:
        return int(self.metadata.get_metadata_pallet(pallet)["index"].value)

    def error_index(self, pallet: str, name: str) -> int:
        for index, error in enumerate(self.metadata.get_metadata_pallet(pallet).errors):
            if error.name == name:
                return index
        raise KeyError(f"no error {pallet}.{name} in the metadata")

    def error_names(self, pallet: str) -> list[str]:
        return [error.name for error in self.metadata.get_metadata_pallet(pallet).errors]


@dataclass
class Submitted:
    """One extrinsic as the node decoded it."""

    raw: bytes
    signer: str
    nonce: int
    tip: int
    era: Any
    call_module: str
    call_function: str
    call_args: dict[str, Any]
    signature_valid: bool
    block: int | None = None
    outcome: str = "pending"


@dataclass
class Block:
    number: int
    hash: str
    parent: str
    extrinsics: list[str] = field(default_factory=list)
    storage: dict[str, str] = field(default_factory=dict)


def _hash(data: bytes) -> str:
    return "0x" + hashlib.blake2b(data, digest_size=32).hexdigest()


class LoopbackNode:
    """A JSON-RPC node for tests. `start()` returns its ws:// URL; `stop()` ends it."""

    def __init__(self, codec: RuntimeCodec, *, v15_hex: str | None = None) -> None:
        self.codec = codec
        self.v15_hex = v15_hex
        self._lock = threading.RLock()
        self.storage: dict[str, str] = {}
        self.nonces: dict[str, int] = {}
        self.submitted: list[Submitted] = []
        self.methods_called: list[str] = []
        self._fail: list[tuple[str, str]] = []
        self._reject: list[int] = []
        self._stall = 0
        self._drop_after_submit = 0
        self._subscriptions = itertools.count(1)
        self._connections: set[Any] = set()
        genesis = Block(0, _hash(b"gauntlet-loopback-genesis"), "0x" + "00" * 32)
        self.blocks: list[Block] = [genesis]
        self._set_timestamp(genesis)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server = None
        self.port: int | None = None

    # ------------------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def main() -> None:
            self._server = await serve(
                self._handle, "127.0.0.1", 0, max_size=2**26, close_timeout=1, ping_interval=None
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            await self._server.wait_closed()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(main())

        self._thread = threading.Thread(target=run, name="loopback-node", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("loopback node did not start")
        return self.url

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return

        async def close() -> None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    def drop_connections(self) -> None:
        """Closes every open websocket, as a node restart or a network cut would."""

        async def close() -> None:
            for ws in list(self._connections):
                await ws.close(code=1011, reason="dropped by test")

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)

    def stall_next(self, n: int = 1) -> None:
        """Does not answer the next n requests (the client must time out)."""
        with self._lock:
            self._stall += n

    def drop_after_next_submit(self) -> None:
        """Includes the next submitted extrinsic, then closes the connection without answering."""
        with self._lock:
            self._drop_after_submit += 1

    def fail_next(self, error: str, pallet: str = "SubtensorModule") -> None:
        """The next extrinsic fails in its block with this pallet error (name from metadata)."""
        self.codec.error_index(pallet, error)  # unknown names fail here, in the test
        with self._lock:
            self._fail.append((pallet, error))

    def reject_next(self, custom_code: int) -> None:
        """The transaction pool refuses the next extrinsic with InvalidTransaction::Custom(code)."""
        with self._lock:
            self._reject.append(custom_code)

    # ---------------------------------------------------------------------------------- state

    @property
    def head(self) -> Block:
        return self.blocks[-1]

    def seed(self, pallet: str, name: str, params: list[Any] | None, value: Any) -> None:
        """Sets a storage value (in the pending state and the head block)."""
        key = self.codec.storage_key(pallet, name, params)
        encoded = self.codec.encode_value(pallet, name, value)
        with self._lock:
            self.storage[key] = encoded
            self.head.storage[key] = encoded

    def _set_timestamp(self, block: Block) -> None:
        key = self.codec.storage_key("Timestamp", "Now")
        block.storage[key] = self.codec.encode_value(
            "Timestamp", "Now", GENESIS_TIMESTAMP_MS + block.number * BLOCK_TIME_MS
        )

    def new_block(self, extrinsics: list[bytes] = (), events: list[dict] | None = None) -> Block:
        with self._lock:
            parent = self.head
            number = parent.number + 1
            block = Block(
                number,
                _hash(parent.hash.encode() + number.to_bytes(8, "little")),
                parent.hash,
                ["0x" + bytes(x).hex() for x in extrinsics],
                dict(self.storage),
            )
            self._set_timestamp(block)
            events_key = self.codec.storage_key("System", "Events")
            block.storage[events_key] = self.codec.encode_value("System", "Events", events or [])
            self.blocks.append(block)
            return block

    def advance(self, n: int) -> int:
        for _ in range(n):
            self.new_block()
        return self.head.number

    def _block(self, ref: Any) -> Block | None:
        if ref is None:
            return self.head
        if isinstance(ref, int):
            return self.blocks[ref] if 0 <= ref < len(self.blocks) else None
        for block in self.blocks:
            if block.hash == ref:
                return block
        return None

    # ------------------------------------------------------------------------------ extrinsics

    def decode_extrinsic(self, raw: bytes) -> Submitted:
        """Decodes a signed extrinsic and verifies its signature over the payload rebuilt here."""
        codec = self.codec
        extrinsic = codec.rc.create_scale_object(
            "Extrinsic", data=ScaleBytes(raw), metadata=codec.metadata
        )
        extrinsic.decode()
        value = extrinsic.value
        call = value["call"]
        args = {arg["name"]: arg["value"] for arg in call["call_args"]}
        # Rebuild the signing payload from the raw bytes: skip the length prefix, version byte,
        # MultiAddress::Id (1 + 32) and MultiSignature::Sr25519 (1 + 64).
        mode = raw[0] & 0b11
        prefix = 1 << mode if mode < 3 else 5 + (raw[0] >> 2)  # compact length prefix size
        body = raw[prefix:]
        if body[0] != 0x84 or body[1] != 0x00 or body[34] != 0x01:
            raise ValueError("not a signed v4 extrinsic with an sr25519 MultiSignature")
        public_key = body[2:34]
        signature = body[35:99]
        rest = ScaleBytes(body[99:])
        extra_start = rest.offset
        for extension in codec.signed_extensions:
            obj = codec.rc.create_scale_object(
                f"scale_info::{extension['ty']}", data=rest, metadata=codec.metadata
            )
            obj.decode(check_remaining=False)
        extra = body[99 + extra_start : 99 + rest.offset]
        call_bytes = body[99 + rest.offset :]
        genesis = bytes.fromhex(self.blocks[0].hash[2:])
        additional = b""
        for extension in codec.signed_extensions:
            name = extension["identifier"]
            if name == "CheckSpecVersion":
                additional += codec.spec_version.to_bytes(4, "little")
            elif name == "CheckTxVersion":
                additional += codec.transaction_version.to_bytes(4, "little")
            elif name in ("CheckGenesis", "CheckMortality"):
                additional += genesis  # immortal era: the mortality block is genesis
            elif name == "CheckMetadataHash":
                additional += b"\x00"  # Option::None: no metadata hash
        payload = call_bytes + extra + additional
        if len(payload) > 256:
            payload = hashlib.blake2b(payload, digest_size=32).digest()
        signer = Keypair(public_key=public_key, ss58_format=42, crypto_type=KeypairType.SR25519)
        return Submitted(
            raw=raw,
            signer=signer.ss58_address,
            nonce=int(value.get("nonce", -1)),
            tip=int(value.get("tip", 0)),
            era=value.get("era"),
            call_module=call["call_module"],
            call_function=call["call_function"],
            call_args=args,
            signature_valid=bool(signer.verify(payload, signature)),
        )

    def _apply(self, raw: bytes) -> tuple[Submitted | None, dict | None]:
        """Decodes, checks and includes one extrinsic; returns (decoded, rpc_error)."""
        try:
            xt = self.decode_extrinsic(raw)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            return None, {"code": 1002, "message": "Verification Error", "data": str(exc)}
        with self._lock:
            self.submitted.append(xt)
            account = "0x" + Keypair(ss58_address=xt.signer).public_key.hex()
            expected = self.nonces.get(account, 0)
            if not xt.signature_valid:
                xt.outcome = "bad signature"
                return xt, {
                    "code": 1010,
                    "message": "Invalid Transaction",
                    "data": "Transaction has a bad signature",
                }
            if xt.nonce < expected:
                xt.outcome = "stale"
                return xt, {
                    "code": 1010,
                    "message": "Invalid Transaction",
                    "data": "Transaction is outdated",
                }
            if self._reject:
                code = self._reject.pop(0)
                xt.outcome = f"rejected {code}"
                return xt, {
                    "code": 1010,
                    "message": "Invalid Transaction",
                    "data": f"Custom error: {code}",
                }
            self.nonces[account] = xt.nonce + 1
            info = {
                "weight": {"ref_time": 1_000_000, "proof_size": 0},
                "class": "Normal",
                "pays_fee": "Yes",
            }
            if self._fail:
                pallet, error = self._fail.pop(0)
                index = self.codec.error_index(pallet, error)
                event = {
                    "System": {
                        "ExtrinsicFailed": {
                            "dispatch_error": {
                                "Module": {
                                    "index": self.codec.pallet_index(pallet),
                                    "error": f"0x{index:02x}000000",
                                }
                            },
                            "dispatch_info": info,
                        }
                    }
                }
                xt.outcome = f"failed {error}"
            else:
                event = {"System": {"ExtrinsicSuccess": {"dispatch_info": info}}}
                xt.outcome = "success"
            block = self.new_block(
                [raw], [{"phase": {"ApplyExtrinsic": 0}, "event": event, "topics": []}]
            )
            xt.block = block.number
            return xt, None

    # ------------------------------------------------------------------------------- JSON-RPC

    async def _handle(self, ws) -> None:
        self._connections.add(ws)
        try:
            async for message in ws:
                request = json.loads(message)
                with self._lock:
                    self.methods_called.append(request.get("method", ""))
                    if self._stall > 0:
                        self._stall -= 1
                        continue
                replies = self._dispatch(request)
                with self._lock:
                    drop = self._drop_after_submit > 0 and request.get("method", "").startswith(
                        "author_submit"
                    )
                    if drop:
                        self._drop_after_submit -= 1
                if drop:
                    await ws.close(code=1011, reason="dropped by test")
                    return
                for reply in replies:
                    await ws.send(json.dumps(reply))
        except ConnectionClosed:
            pass
        finally:
            self._connections.discard(ws)

    def _dispatch(self, request: dict) -> list[dict]:
        method = request.get("method")
        params = request.get("params") or []
        rid = request.get("id")

        def ok(result: Any) -> list[dict]:
            return [{"jsonrpc": "2.0", "id": rid, "result": result}]

        def err(code: int, message: str, data: Any = None) -> list[dict]:
            error = {"code": code, "message": message}
            if data is not None:
                error["data"] = data
            return [{"jsonrpc": "2.0", "id": rid, "error": error}]

        codec = self.codec
        if method == "rpc_methods":
            return ok({"methods": sorted(self.METHODS)})
        if method in ("system_chain", "system_name"):
            return ok("Gauntlet loopback")
        if method == "system_version":
            return ok("0.0.0-loopback")
        if method == "system_properties":
            return ok({"ss58Format": 42, "tokenDecimals": 9, "tokenSymbol": "TAO"})
        if method == "chain_getBlockHash":
            ref = params[0] if params else None
            block = self._block(int(ref, 16) if isinstance(ref, str) else ref)
            return ok(None if block is None else block.hash)
        if method in ("chain_getHead", "chain_getFinalizedHead"):
            return ok(self.head.hash)
        if method == "chain_getHeader":
            block = self._block(params[0] if params else None)
            return ok(None if block is None else self._header(block))
        if method == "chain_getBlock":
            block = self._block(params[0] if params else None)
            if block is None:
                return ok(None)
            return ok(
                {
                    "block": {"header": self._header(block), "extrinsics": block.extrinsics},
                    "justifications": None,
                }
            )
        if method in ("state_getRuntimeVersion", "chain_getRuntimeVersion"):
            version = codec.runtime_version
            return ok(
                {
                    "specName": version["spec_name"],
                    "implName": version["impl_name"],
                    "authoringVersion": version["authoring_version"],
                    "specVersion": codec.spec_version,
                    "implVersion": version["impl_version"],
                    "transactionVersion": codec.transaction_version,
                    "stateVersion": version.get("state_version", 1),
                    "apis": [[api[0], api[1]] for api in version.get("apis", [])],
                }
            )
        if method == "state_getMetadata":
            return ok(codec.metadata_hex)
        if method == "state_call":
            name = params[0] if params else ""
            if name == "Metadata_metadata_versions":
                return ok("0x" + codec.encode("Vec<u32>", [14, 15] if self.v15_hex else [14]).hex())
            if name == "Metadata_metadata_at_version" and self.v15_hex:
                return ok(self.v15_hex)
            return err(-32601, f"runtime call {name} is not served by the loopback node")
        if method in ("state_getStorage", "state_getStorageAt"):
            block = self._block(params[1] if len(params) > 1 else None)
            if block is None:
                return err(-32602, "unknown block")
            return ok(block.storage.get(params[0]))
        if method == "state_queryStorageAt":
            block = self._block(params[1] if len(params) > 1 else None)
            if block is None:
                return err(-32602, "unknown block")
            changes = [[key, block.storage.get(key)] for key in params[0]]
            return ok([{"block": block.hash, "changes": changes}])
        if method == "state_getKeysPaged":
            prefix, count = params[0], int(params[1])
            start = params[2] if len(params) > 2 else None
            keys = sorted(
                k
                for k in self.head.storage
                if k.startswith(prefix) and (start is None or k > start)
            )
            return ok(keys[:count])
        if method == "system_accountNextIndex":
            account = "0x" + Keypair(ss58_address=params[0]).public_key.hex()
            with self._lock:
                return ok(self.nonces.get(account, 0))
        if method == "payment_queryInfo":
            return ok(
                {
                    "weight": {"ref_time": 1_000_000, "proof_size": 0},
                    "class": "normal",
                    "partialFee": "1000",
                }
            )
        if method == "author_submitExtrinsic":
            xt, error = self._apply(bytes.fromhex(params[0][2:]))
            if error:
                return err(**error)
            return ok("0x" + hashlib.blake2b(xt.raw, digest_size=32).hexdigest())
        if method == "author_submitAndWatchExtrinsic":
            xt, error = self._apply(bytes.fromhex(params[0][2:]))
            if error:
                return err(**error)
            sid = f"sub-{next(self._subscriptions)}"
            block_hash = self.blocks[xt.block].hash

            def note(result: Any) -> dict:
                return {
                    "jsonrpc": "2.0",
                    "method": "author_extrinsicUpdate",
                    "params": {"subscription": sid, "result": result},
                }

            return [
                {"jsonrpc": "2.0", "id": rid, "result": sid},
                note("ready"),
                note({"inBlock": block_hash}),
            ]
        if method == "author_unwatchExtrinsic":
            return ok(True)
        return err(-32601, f"Method not found: {method}")

    METHODS = (
        "rpc_methods",
        "system_chain",
        "system_name",
        "system_version",
        "system_properties",
        "system_accountNextIndex",
        "chain_getBlockHash",
        "chain_getHead",
        "chain_getFinalizedHead",
        "chain_getHeader",
        "chain_getBlock",
        "state_getRuntimeVersion",
        "state_getMetadata",
        "state_getStorage",
        "state_queryStorageAt",
        "state_getKeysPaged",
        "payment_queryInfo",
        "author_submitExtrinsic",
        "author_submitAndWatchExtrinsic",
        "author_unwatchExtrinsic",
    )

    @staticmethod
    def _header(block: Block) -> dict:
        return {
            "parentHash": block.parent,
            "number": hex(block.number),
            "stateRoot": _hash(b"state" + block.hash.encode()),
            "extrinsicsRoot": _hash(b"extrinsics" + block.hash.encode()),
            "digest": {"logs": []},
        }


def load_codec(shared_dir: Path) -> RuntimeCodec:
    return RuntimeCodec((shared_dir / "chain" / "subtensor_metadata_v14.hex").read_text())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ChopsticksNode:
    """The real subtensor runtime (wasm from the chain spec) run by Chopsticks on 127.0.0.1; no
    network access needed. It builds a block per extrinsic (`build_block_mode="Instant"`), or
    only when told to (`"Manual"`: `dev_newBlock`, extrinsics wait in the pool meanwhile)."""

    def __init__(
        self, binary: str, chain_spec: Path, log_path: Path, build_block_mode: str = "Instant"
    ) -> None:
        self.binary = binary
        self.chain_spec = chain_spec
        self.log_path = log_path
        self.build_block_mode = build_block_mode
        self.port = free_port()
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240.0) -> str:
        command = [
            self.binary,
            "--genesis",
            str(self.chain_spec),
            "--build-block-mode",
            self.build_block_mode,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        log = self.log_path.open("wb")
        self._proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if b"RPC listening" in self.log_path.read_bytes():
                return self.url
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"chopsticks exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"chopsticks did not listen within {timeout_s} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(15)
