"""A subnet on the real subtensor runtime (spec 218, `../shared/chain/raonet.json`) run by
Chopsticks, for the tests that need a real runtime: the chain contract and the whole network.

The setup goes through real extrinsics where the runtime allows: sudo lifts the network rate
limit, Alice registers a new subnet with Bob's hotkey as owner (uid 0), Charlie and Dave
burn-register (uids 1, 2). Balances, the sudo key and subnet hyper-parameters that have no quick
extrinsic are set with Chopsticks' `dev_setStorage`.

`BlockProducer` builds blocks on a wall-clock beat for a node started with `build_block_mode=
"Manual"`: extrinsics then wait in the pool for the next block, as on a live chain, and each
block is stamped with the wall-clock time it was built at (Chopsticks would otherwise step the
timestamp by one Aura slot per block, whatever the time), so bucket timestamps and block
timestamps can be compared, as the put window does.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from chain_node import ChopsticksNode

from gauntlet_jax.chain.keys import dev_hotkey
from gauntlet_jax.chain.subtensor import SubtensorChain

VALIDATOR, MINER, OTHER, OUTSIDER, SUDO = (dev_hotkey(i) for i in (1, 2, 3, 4, 0))

# SubtensorModule storage of the hyper-parameters tests set per subnet.
SUBNET_STORAGE = {
    "rate_limit": "WeightsSetRateLimit",
    "version_key": "WeightsVersionKey",
    "commit_reveal": "CommitRevealWeightsEnabled",
    "tempo": "Tempo",
    "permits": "ValidatorPermit",
}


def chopsticks_node(shared_dir: Path, log_path: Path, build_block_mode: str) -> ChopsticksNode:
    """A started node on spec 218; skips the test when Chopsticks is not installed."""
    binary = os.environ.get("GAUNTLET_CHOPSTICKS")
    if not binary or not Path(binary).exists():
        pytest.skip(
            "GAUNTLET_CHOPSTICKS is unset (.ci/run installs @acala-network/chopsticks@1.5.1)"
        )
    node = ChopsticksNode(
        binary, shared_dir / "chain" / "raonet.json", log_path, build_block_mode=build_block_mode
    )
    node.start()
    return node


def setup_real_subnet(chain: SubtensorChain) -> int:
    """Funds dev accounts, makes Alice sudo, registers a subnet owned by Bob's hotkey and
    burn-registers Charlie and Dave. Returns the new netuid."""
    si = chain.substrate
    account = {"providers": 1, "data": {"free": "1000000000000000000"}}
    keys = (SUDO, VALIDATOR, MINER, OTHER, OUTSIDER)
    si.rpc_request(
        "dev_setStorage",
        [
            {
                "System": {"Account": [[[k.ss58_address], account] for k in keys]},
                "Sudo": {"Key": SUDO.ss58_address},
            }
        ],
    )
    sudo = chain.with_hotkey(SUDO)
    inner = si.compose_call("AdminUtils", "sudo_set_network_rate_limit", {"rate_limit": 0})
    sudo.submit("Sudo", "sudo", {"call": inner})
    netuid = int(si.query("SubtensorModule", "TotalNetworks").value)
    sudo.submit(
        "SubtensorModule", "register_network", {"hotkey": VALIDATOR.ss58_address, "mechid": 1}
    )
    assert si.query("SubtensorModule", "NetworksAdded", [netuid]).value, (
        "register_network made no subnet"
    )
    for key in (MINER, OTHER):
        chain.with_hotkey(key).submit(
            "SubtensorModule", "burned_register", {"netuid": netuid, "hotkey": key.ss58_address}
        )
    return netuid


def set_subnet_params(chain: SubtensorChain, netuid: int, **params: Any) -> None:
    """Writes subnet hyper-parameters (keys of SUBNET_STORAGE) straight into the runtime's
    storage; they take effect from the next block."""
    values = {SUBNET_STORAGE[k]: [[[netuid], v]] for k, v in params.items()}
    chain.substrate.rpc_request("dev_setStorage", [{"SubtensorModule": values}])


class BlockProducer:
    """Builds a block every `block_time_s` seconds on its own connection, stamped with the
    wall-clock time; `stop()` ends it. A failed build is kept and raised by `stop()`."""

    def __init__(self, url: str, block_time_s: float) -> None:
        self.chain = SubtensorChain(url, None, timeout_s=60)
        self.block_time_s = block_time_s
        # The runtime's timestamp inherent sets parent + one slot: travel to one slot ago.
        self.slot_ms = int(self.chain.substrate.get_constant("Aura", "SlotDuration").value)
        self.blocks = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="block-producer", daemon=True)

    def start(self) -> BlockProducer:
        self._thread.start()
        return self

    def _run(self) -> None:
        si = self.chain.substrate
        next_at = time.monotonic()
        try:
            while not self._stop.is_set():
                si.rpc_request("dev_timeTravel", [int(time.time() * 1000) - self.slot_ms])
                si.rpc_request("dev_newBlock", [{"count": 1}])
                self.blocks += 1
                next_at += self.block_time_s
                self._stop.wait(max(0.0, next_at - time.monotonic()))
        except Exception as e:  # noqa: BLE001 (any failure ends the beat; stop() reports it)
            self.error = e

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.chain.close()
        if self.error is not None:
            raise RuntimeError(f"the block producer failed after {self.blocks} blocks") from (
                self.error
            )
