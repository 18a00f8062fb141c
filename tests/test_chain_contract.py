"""One contract, two chains: the embedded SQLite chain and the real subtensor runtime.

The real runtime is subtensor spec 218 executed by Chopsticks (`--build-block-mode Instant`,
127.0.0.1, no network), its subnet set up as `chopsticks_subnet` describes: the subnet owner's
hotkey is the validator (uid 0), two burn-registered miners follow. Every test then runs the same
assertions on both backends.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from chopsticks_subnet import (
    MINER,
    OTHER,
    OUTSIDER,
    VALIDATOR,
    chopsticks_node,
    set_subnet_params,
    setup_real_subnet,
)

from gauntlet_jax.chain import Chain, base
from gauntlet_jax.chain import errors as chain_errors
from gauntlet_jax.chain import weights as wm
from gauntlet_jax.chain.keys import dev_hotkey
from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.chain.subtensor import SubtensorChain

RATE_LIMIT = 3


@dataclass
class Net:
    """A subnet with a validator (uid 0, permit), two miners and an unregistered outsider."""

    kind: str
    netuid: int
    validator: Any
    miner: Any
    outsider: Any
    advance: Callable[[int], None]
    set_params: Callable[..., None]
    set_u16: Callable[[Any, list[int], list[int], int], int | None]
    unchecked: Callable[[Any, list[int], list[float], int], base.WeightsResult]
    timings: dict[str, list[float]]
    # Spec 218 (raonet) reruns the epoch every block and grants every neuron of this small subnet
    # a validator permit, overwriting what dev_setStorage writes; only the local chain keeps
    # permits as set, so the no-permit case runs there (and on the loopback node).
    controls_permits: bool = True

    def reset(self) -> None:
        self.set_params(
            rate_limit=RATE_LIMIT,
            version_key=0,
            commit_reveal=False,
            tempo=1000,
            permits=[True, False, False],
        )
        self.advance(RATE_LIMIT)


# ------------------------------------------------------------------------------------- local


@pytest.fixture(scope="module")
def local_net(tmp_path_factory):
    path = tmp_path_factory.mktemp("localchain") / "chain.db"
    admin = LocalChain(path)
    admin.set_clock_mode("manual")
    netuid = 2
    admin.create_subnet(netuid, weights_rate_limit=RATE_LIMIT, tempo=1000)
    for key in (VALIDATOR, MINER, OTHER):
        admin.register(netuid, key.ss58_address)
    admin.advance(10)

    def set_params(**params: Any) -> None:
        names = {
            "rate_limit": "weights_rate_limit",
            "version_key": "version_key",
            "commit_reveal": "commit_reveal",
            "tempo": "tempo",
        }
        for name, value in params.items():
            if name == "permits":
                for uid, permit in enumerate(value):
                    admin.set_validator_permit(netuid, uid, permit)
            else:
                admin.set_param(netuid, names[name], value)

    net = Net(
        kind="local",
        netuid=netuid,
        validator=LocalChain(path, VALIDATOR.ss58_address),
        miner=LocalChain(path, MINER.ss58_address),
        outsider=LocalChain(path, OUTSIDER.ss58_address),
        advance=lambda n: admin.advance(n),
        set_params=set_params,
        set_u16=lambda chain, uids, values, version: chain.set_weights_u16(
            netuid, uids, values, version
        ),
        unchecked=lambda chain, uids, weights, version: chain.set_weights(
            netuid, uids, weights, version
        ),
        timings={},
    )
    yield net
    for chain in (net.validator, net.miner, net.outsider, admin):
        chain.close()


# -------------------------------------------------------------------------------- chopsticks


@pytest.fixture(scope="module")
def chopsticks_net(shared_dir, tmp_path_factory):
    started = time.monotonic()
    node = chopsticks_node(
        shared_dir, tmp_path_factory.mktemp("chopsticks") / "log.txt", build_block_mode="Instant"
    )
    try:
        root = SubtensorChain(node.url, None, timeout_s=120)
        netuid = setup_real_subnet(root)
        print(
            f"\nchopsticks: up and subnet {netuid} registered in {time.monotonic() - started:.1f} s"
        )
        si = root.substrate

        def advance(n: int) -> None:
            if n > 0:
                si.rpc_request("dev_newBlock", [{"count": n}])

        def set_u16(
            chain: SubtensorChain, uids: list[int], values: list[int], version: int
        ) -> int | None:
            block, _ = chain.submit(
                "SubtensorModule",
                "set_weights",
                {"netuid": netuid, "dests": uids, "weights": values, "version_key": version},
            )
            return block

        net = Net(
            kind="chopsticks",
            netuid=netuid,
            validator=root.with_hotkey(VALIDATOR),
            miner=root.with_hotkey(MINER),
            outsider=root.with_hotkey(OUTSIDER),
            advance=advance,
            set_params=lambda **params: set_subnet_params(root, netuid, **params),
            set_u16=set_u16,
            unchecked=lambda chain, uids, weights, version: chain.set_weights(
                netuid, uids, weights, version, precheck=False
            ),
            timings={},
            controls_permits=False,
        )
        yield net
        root.close()
    finally:
        node.stop()


@pytest.fixture(params=["local", pytest.param("chopsticks", marks=pytest.mark.slow)])
def net(request) -> Net:
    net = request.getfixturevalue(f"{request.param}_net")
    net.reset()
    return net


# --------------------------------------------------------------------------------- contract


def test_metagraph_has_the_registered_neurons(net):
    assert isinstance(net.validator, Chain)
    graph = net.validator.metagraph(net.netuid)
    assert graph.uid_of(VALIDATOR.ss58_address) == 0
    assert graph.uid_of(MINER.ss58_address) == 1 and graph.uid_of(OTHER.ss58_address) == 2
    assert graph.uid_of(OUTSIDER.ss58_address) is None
    assert graph.validator_permit[0]
    if net.controls_permits:
        assert graph.validator_permit.tolist() == [True, False, False]
    assert graph.block == net.validator.current_block()
    with pytest.raises(chain_errors.SubnetNotExists):
        net.validator.metagraph(net.netuid + 40)


def test_block_clock_and_timestamps(net):
    start = net.validator.current_block()
    net.advance(2)
    now = net.validator.current_block()
    assert now == start + 2
    assert net.validator.window(2) == now // 2
    t0, t1, t2 = (net.validator.block_timestamp(b) for b in (now - 2, now - 1, now))
    assert t0 < t1 < t2  # deterministic per block; both chains step by a fixed slot
    assert t2 - t1 == t1 - t0


def test_set_weights_round_trip_and_rate_limit(net):
    v = net.validator
    started = time.perf_counter()
    result = v.set_weights(net.netuid, [0, 1, 2], [0.1, 1.0, 0.5], version_key=0)
    net.timings.setdefault("set_weights", []).append(time.perf_counter() - started)
    assert result.included and result.method == "set_weights"
    assert v.get_weights(net.netuid, 0) == {0: 6554, 1: 65535, 2: 32768}
    assert v.metagraph(net.netuid).last_update[0] == result.block
    with pytest.raises(chain_errors.SettingWeightsTooFast):  # checked before sending on subtensor
        v.set_weights(net.netuid, [1], [1.0], 0)
    with pytest.raises(chain_errors.SettingWeightsTooFast) as info:  # the chain's own check
        net.unchecked(v, [1], [1.0], 0)
    assert info.value.name == "SettingWeightsTooFast"
    net.advance(RATE_LIMIT)
    started = time.perf_counter()
    again = v.set_weights(net.netuid, [2], [3.0], 0)
    net.timings["set_weights"].append(time.perf_counter() - started)
    assert again.included and v.get_weights(net.netuid, 0) == {2: 65535}
    print(
        f"\n{net.kind}: set_weights round trip {statistics.median(net.timings['set_weights']) * 1000:.0f} ms"
    )


def test_chain_max_upscale_matches_our_fixed_point_emulation(net):
    values = [40000, 20000, 1, 0]
    net.set_u16(net.validator, [0, 1, 2, 3][: len(values) - 1], values[:-1], 0)
    stored = net.validator.get_weights(net.netuid, 0)
    assert list(stored.values()) == wm.max_upscale_u16(values[:-1]) == [65535, 32767, 2]


def test_checks_that_come_back_typed(net):
    v, miner = net.validator, net.miner
    with pytest.raises(chain_errors.NotRegistered):
        net.unchecked(net.outsider, [0], [1.0], 0)
    if net.controls_permits:
        with pytest.raises(chain_errors.NeuronNoValidatorPermit):
            net.unchecked(miner, [0, 2], [1.0, 1.0], 0)
    assert net.unchecked(miner, [1], [1.0], 0).included  # a self-weight needs no permit
    with pytest.raises(chain_errors.DuplicateUids):
        net.set_u16(v, [1, 1], [5, 5], 0)
    with pytest.raises(chain_errors.UidVecContainInvalidOne):
        net.set_u16(v, [1, 77], [5, 5], 0)
    with pytest.raises(chain_errors.WeightVecNotEqualSize):
        net.set_u16(v, [1, 2], [5], 0)
    net.set_params(version_key=9)
    with pytest.raises(chain_errors.IncorrectWeightVersionKey):
        v.set_weights(net.netuid, [1], [1.0], 8)
    assert v.set_weights(net.netuid, [1], [1.0], 9).included


def test_commitment_round_trip(net):
    data = f"gs://{net.kind}-bucket/peers key=GOOG1234"
    block = net.miner.commit(net.netuid, data)
    assert block >= 0
    assert net.validator.get_commitment(net.netuid, 1) == data
    assert net.validator.get_commitment(net.netuid, MINER.ss58_address) == data
    assert net.validator.get_commitments(net.netuid)[1] == data
    with pytest.raises(chain_errors.ChainDataError):
        net.miner.commit(net.netuid, "bad\ncommitment")


def test_hash_commit_reveal_round_trip(net):
    """The commit hash we compute is accepted by the runtime's reveal (it recomputes it)."""
    v = net.validator
    net.set_params(commit_reveal=True, tempo=3)
    committed = v.set_weights(net.netuid, [1, 2], [0.25, 1.0], 0)
    assert committed.method == "commit_weights" and committed.included
    with pytest.raises(chain_errors.CommitRevealEnabled):
        net.set_u16(v, [1], [1], 0)
    revealed: list[base.WeightsResult] = []
    for _ in range(12):
        revealed = v.reveal_pending(net.netuid)
        if revealed:
            break
        net.advance(1)
    assert [r.included for r in revealed] == [True], [r.message for r in revealed]
    assert v.get_weights(net.netuid, 0) == {1: 16384, 2: 65535}
    assert v.pending_reveals == ()


@pytest.mark.slow
def test_burned_registration_and_status_on_the_real_runtime(chopsticks_net):
    """`register`'s chain calls on spec 218: the burn is read, a coldkey without the balance is
    refused before sending, a funded one registers, and `status` reads the new neuron."""
    from gauntlet_jax.chain.status import neuron_status

    net = chopsticks_net
    newcomer, broke = dev_hotkey(5), dev_hotkey(6)
    chain = net.validator.with_hotkey(newcomer)
    cost = chain.burn_cost(net.netuid)
    assert cost > 0
    with pytest.raises(chain_errors.InsufficientBalance, match="nothing was sent"):
        chain.burned_register(net.netuid, broke)
    with pytest.raises(chain_errors.SubnetNotExists):
        chain.burn_cost(999)
    before = chain.free_balance(OUTSIDER.ss58_address)
    uid = chain.burned_register(net.netuid, OUTSIDER)
    assert chain.metagraph(net.netuid).uid_of(newcomer.ss58_address) == uid
    assert before - chain.free_balance(OUTSIDER.ss58_address) >= cost
    assert chain.burned_register(net.netuid, OUTSIDER) == uid  # already registered: no-op
    # The runtime recorded OUTSIDER as the hotkey's owner: another coldkey cannot register it on
    # another subnet, and is told so before anything is sent (its balance is untouched).
    si = chain.substrate
    other_netuid = next(
        n for n in range(1, net.netuid) if si.query("SubtensorModule", "NetworksAdded", [n]).value
    )
    assert si.query("SubtensorModule", "Owner", [newcomer.ss58_address]).value == (
        OUTSIDER.ss58_address
    )
    miner_balance = chain.free_balance(MINER.ss58_address)
    with pytest.raises(chain_errors.ColdkeyMismatch, match=OUTSIDER.ss58_address):
        chain.burned_register(other_netuid, MINER)
    assert chain.free_balance(MINER.ss58_address) == miner_balance
    assert chain.metagraph(other_netuid).uid_of(newcomer.ss58_address) is None
    status = neuron_status(chain, net.netuid, newcomer.ss58_address)
    # The runtime stamps LastUpdate with the registration block.
    assert status.registered and status.uid == uid
    assert 0 < status.last_weights_block <= status.block and status.commitment is None
    limit = chain.weights_rate_limit(net.netuid)
    assert status.blocks_until_weights == max(
        0, limit - (status.block + 1 - status.last_weights_block)
    )
    assert not neuron_status(chain, net.netuid, broke.ss58_address).registered
