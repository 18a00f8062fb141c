"""What an operator asks of the chain about one hotkey: uid, stake, permit, last weights, the
bucket commitment and how long until the next weight call is allowed. Works on any `Chain` that
also reports its rate limit and version key (LocalChain, SubtensorChain)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from gauntlet_jax.chain.base import NODE_VERSION_KEY, blocks_until_weights_allowed


@dataclass(frozen=True)
class NeuronStatus:
    netuid: int
    hotkey: str
    block: int
    registered: bool
    uid: int | None = None
    stake: float = 0.0
    validator_permit: bool = False
    last_weights_block: int = 0
    commitment: str | None = None
    blocks_until_weights: int | None = None
    subnet_version_key: int = 0
    node_version_key: int = NODE_VERSION_KEY

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def neuron_status(chain: Any, netuid: int, hotkey: str) -> NeuronStatus:
    """The status of `hotkey` on `netuid` (SubnetNotExists for a missing subnet)."""
    graph = chain.metagraph(netuid)
    version_key = chain.weights_version_key(netuid)
    uid = graph.uid_of(hotkey)
    if uid is None:
        return NeuronStatus(netuid, hotkey, graph.block, False, subnet_version_key=version_key)
    i = int(list(graph.uids).index(uid))
    last = int(graph.last_update[i])
    # A weight call sent now executes in the next block.
    wait = blocks_until_weights_allowed(graph.block + 1, last, chain.weights_rate_limit(netuid))
    return NeuronStatus(
        netuid=netuid,
        hotkey=hotkey,
        block=graph.block,
        registered=True,
        uid=uid,
        stake=float(graph.stake[i]),
        validator_permit=bool(graph.validator_permit[i]),
        last_weights_block=last,
        commitment=chain.get_commitment(netuid, uid),
        blocks_until_weights=wait,
        subnet_version_key=version_key,
    )
