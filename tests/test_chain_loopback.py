"""The subtensor client against our loopback node serving the real subtensor metadata (2025-09).

The node decodes every extrinsic against that metadata and checks its sr25519 signature over a
signing payload it rebuilds itself, so these tests pin down what goes on the wire: pallet, call,
arguments, signer, nonce, and how every pallet error and pool rejection comes back.
"""

from __future__ import annotations

import hashlib
import statistics
import time

import pytest
from chain_node import BLOCK_TIME_MS, GENESIS_TIMESTAMP_MS, LoopbackNode, load_codec

from gauntlet_jax.chain import Chain, open_chain, timelock
from gauntlet_jax.chain import errors as chain_errors
from gauntlet_jax.chain import weights as wm
from gauntlet_jax.chain.keys import hotkey_from_secret
from gauntlet_jax.chain.subtensor import SubtensorChain
from gauntlet_jax.config import ChainConfig
from gauntlet_jax.errors import ChainError

NETUID = 3
ALICE, BOB, CHARLIE, EVE = (
    hotkey_from_secret(u) for u in ("//Alice", "//Bob", "//Charlie", "//Eve")
)


@pytest.fixture(scope="module")
def codec(shared_dir):
    return load_codec(shared_dir)


@pytest.fixture(scope="module")
def node(codec, shared_dir):
    v15 = (shared_dir / "chain" / "subtensor_metadata_v15.hex").read_text().strip()
    node = LoopbackNode(codec, v15_hex=v15)
    node.start()
    seed_subnet(node)
    node.advance(5)
    yield node
    node.stop()


def seed_subnet(node: LoopbackNode) -> None:
    neurons = (ALICE, BOB, CHARLIE)
    node.seed("SubtensorModule", "NetworksAdded", [NETUID], True)
    node.seed("SubtensorModule", "SubnetworkN", [NETUID], len(neurons))
    for uid, key in enumerate(neurons):
        node.seed("SubtensorModule", "Keys", [NETUID, uid], key.ss58_address)
        node.seed("SubtensorModule", "Uids", [NETUID, key.ss58_address], uid)
        node.seed(
            "SubtensorModule",
            "TotalHotkeyAlpha",
            [key.ss58_address, NETUID],
            (uid + 1) * 2_500_000_000,
        )
    node.seed("SubtensorModule", "LastUpdate", [NETUID], [0, 0, 0])
    node.seed("SubtensorModule", "ValidatorPermit", [NETUID], [True, False, False])
    node.seed("SubtensorModule", "WeightsSetRateLimit", [NETUID], 0)
    # The runtime's storage default is on; this subnet runs plain set_weights.
    node.seed("SubtensorModule", "CommitRevealWeightsEnabled", [NETUID], False)


@pytest.fixture(scope="module")
def alice(node):
    chain = SubtensorChain(node.url, ALICE, timeout_s=10)
    yield chain
    chain.close()


def last(node: LoopbackNode):
    return node.submitted[-1]


def test_metagraph_reads_seeded_storage(alice, node):
    graph = alice.metagraph(NETUID)
    assert graph.block == node.head.number
    assert graph.uids.tolist() == [0, 1, 2]
    assert graph.hotkeys == (ALICE.ss58_address, BOB.ss58_address, CHARLIE.ss58_address)
    assert graph.stake.tolist() == [2.5, 5.0, 7.5]  # TotalHotkeyAlpha in rao / 1e9
    assert graph.validator_permit.tolist() == [True, False, False]
    assert graph.last_update.tolist() == [0, 0, 0]
    with pytest.raises(chain_errors.SubnetNotExists):
        alice.metagraph(NETUID + 1)


def test_block_clock_and_timestamps(alice, node):
    head = node.head.number
    assert alice.current_block() == head
    assert alice.window(2) == head // 2
    assert alice.block_timestamp(2) == (GENESIS_TIMESTAMP_MS + 2 * BLOCK_TIME_MS) / 1000
    with pytest.raises(ChainError, match="not found"):
        alice.block_timestamp(head + 100)


def test_set_weights_goes_on_the_wire_signed_and_decodable(alice, node):
    before = len(node.submitted)
    result = alice.set_weights(NETUID, [0, 1, 2], [0.2, 1.0, 0.5], version_key=42)
    assert len(node.submitted) == before + 1
    sent = last(node)
    assert (sent.call_module, sent.call_function) == ("SubtensorModule", "set_weights")
    assert sent.call_args == {
        "netuid": NETUID,
        "dests": [0, 1, 2],
        "weights": [13107, 65535, 32768],
        "version_key": 42,
    }
    assert sent.signer == ALICE.ss58_address
    assert sent.signature_valid and sent.era == "00" and sent.tip == 0
    assert result.included and result.method == "set_weights" and result.block == sent.block
    assert result.extrinsic_hash == "0x" + hashlib.blake2b(sent.raw, digest_size=32).hexdigest()
    assert (result.uids, result.values) == ((0, 1, 2), (13107, 65535, 32768))


def test_node_rejects_tampered_signatures(alice, node):
    alice.set_weights(NETUID, [1], [1.0], 1)
    raw = bytearray(last(node).raw)
    assert node.decode_extrinsic(bytes(raw)).signature_valid
    signature_at = len(raw) - len(raw[raw.index(0x84) :]) + 35  # after version + address
    tampered = bytearray(raw)
    tampered[signature_at + 5] ^= 0x01
    assert not node.decode_extrinsic(bytes(tampered)).signature_valid
    tampered = bytearray(raw)
    tampered[-1] ^= 0x01  # the version_key: the call no longer matches what was signed
    assert not node.decode_extrinsic(bytes(tampered)).signature_valid


def test_nonces_follow_the_chain_and_increment(alice, node):
    account = "0x" + ALICE.public_key.hex()
    node.nonces[account] = max(node.nonces.get(account, 0), 40)
    alice.set_weights(NETUID, [1], [1.0], 0)
    alice.commit(NETUID, "gs://bucket-a/prefix")
    assert [x.nonce for x in node.submitted[-2:]] == [40, 41]
    bob = alice.with_hotkey(BOB)
    bob.commit(NETUID, "gs://bucket-b/prefix")
    assert (last(node).signer, last(node).nonce) == (
        BOB.ss58_address,
        node.nonces["0x" + BOB.public_key.hex()] - 1,
    )


def test_commit_call_and_commitment_reads(alice, node):
    alice.commit(NETUID, "gs://bucket-a/p key=K1")
    sent = last(node)
    assert (sent.call_module, sent.call_function) == ("Commitments", "set_commitment")
    assert sent.call_args["netuid"] == NETUID
    (field,) = sent.call_args["info"]["fields"]
    assert list(field) == ["Raw22"]
    assert bytes.fromhex(field["Raw22"][2:]) == b"gs://bucket-a/p key=K1"

    def seed(key, fields):
        node.seed(
            "Commitments",
            "CommitmentOf",
            [NETUID, key.ss58_address],
            {"deposit": 0, "block": 1, "info": {"fields": [fields]}},
        )

    seed(ALICE, [{"Raw22": "0x" + b"gs://bucket-a/p key=K1".hex()}])
    seed(BOB, [{"Raw5": "0x" + b"ev\x1bl!".hex()}])  # an escape sequence: hostile
    assert alice.get_commitment(NETUID, 0) == "gs://bucket-a/p key=K1"
    assert alice.get_commitment(NETUID, ALICE.ss58_address) == "gs://bucket-a/p key=K1"
    with pytest.raises(chain_errors.ChainDataError, match="forbidden"):
        alice.get_commitment(NETUID, 1)
    assert alice.get_commitment(NETUID, 2) is None
    seed(CHARLIE, [{"Sha256": "0x" + "ab" * 32}])
    with pytest.raises(chain_errors.ChainDataError, match="not raw data"):
        alice.get_commitment(NETUID, 2)
    assert alice.get_commitments(NETUID) == {0: "gs://bucket-a/p key=K1"}
    before = len(node.submitted)
    with pytest.raises(chain_errors.ChainDataError):
        alice.commit(NETUID, "x" * 129)
    assert len(node.submitted) == before


TYPED = [
    ("SettingWeightsTooFast", chain_errors.SettingWeightsTooFast),
    ("IncorrectWeightVersionKey", chain_errors.IncorrectWeightVersionKey),
    ("CommitRevealEnabled", chain_errors.CommitRevealEnabled),
    ("WeightVecNotEqualSize", chain_errors.WeightVecNotEqualSize),
    ("UidVecContainInvalidOne", chain_errors.UidVecContainInvalidOne),
    ("UidsLengthExceedUidsInSubNet", chain_errors.UidsLengthExceedUidsInSubNet),
    ("HotKeyNotRegisteredInSubNet", chain_errors.NotRegistered),
    ("DuplicateUids", chain_errors.DuplicateUids),
    ("NeuronNoValidatorPermit", chain_errors.NeuronNoValidatorPermit),
    ("WeightVecLengthIsLow", chain_errors.WeightVecLengthIsLow),
    ("MaxWeightExceeded", chain_errors.MaxWeightExceeded),
    ("NotEnoughStakeToSetWeights", chain_errors.NotEnoughStakeToSetWeights),
    ("SubnetNotExists", chain_errors.SubnetNotExists),
    ("CanNotSetRootNetworkWeights", chain_errors.CanNotSetRootNetworkWeights),
    ("TxRateLimitExceeded", chain_errors.PalletError),  # no class of its own: a PalletError by name
]


@pytest.mark.parametrize(("name", "cls"), TYPED, ids=[t[0] for t in TYPED])
def test_pallet_errors_come_back_typed(alice, node, name, cls):
    node.fail_next(name)
    with pytest.raises(cls) as info:
        alice.set_weights(NETUID, [0, 1], [0.5, 1.0], 0)
    assert info.value.name == name and info.value.pallet == "SubtensorModule"
    assert last(node).outcome == f"failed {name}"


def test_error_of_another_pallet(alice, node):
    node.fail_next("TooManyFieldsInCommitmentInfo", pallet="Commitments")
    with pytest.raises(chain_errors.PalletError) as info:
        alice.commit(NETUID, "gs://x")
    assert (info.value.pallet, info.value.name) == ("Commitments", "TooManyFieldsInCommitmentInfo")


def test_every_typed_error_name_exists_in_the_runtime(codec):
    names = set(codec.error_names("SubtensorModule"))
    older = {"SubNetworkDoesNotExist"}  # spec 218 (raonet); renamed SubnetNotExists since
    for name, cls in chain_errors.PALLET_ERRORS.items():
        if cls.pallet_default == "SubtensorModule" and name not in older:
            assert name in names, f"{name} is not a SubtensorModule error of the 2025-09 runtime"


def test_pool_rejection_is_typed_and_the_nonce_recovers(alice, node):
    node.reject_next(1)
    with pytest.raises(chain_errors.TransactionRejected) as info:
        alice.set_weights(NETUID, [1], [1.0], 0)
    assert (info.value.code, info.value.reason) == (1, "StakeAmountTooLow")
    result = alice.set_weights(NETUID, [1], [1.0], 0)
    assert result.included and last(node).outcome == "success"


def test_rate_limit_and_registration_are_checked_before_sending(alice, node):
    head = node.head.number
    node.seed("SubtensorModule", "LastUpdate", [NETUID], [head, 0, 0])
    node.seed("SubtensorModule", "WeightsSetRateLimit", [NETUID], 10)
    before = len(node.submitted)
    try:
        with pytest.raises(
            chain_errors.SettingWeightsTooFast, match="9 blocks to go; checked locally"
        ):
            alice.set_weights(NETUID, [1], [1.0], 0)
        with pytest.raises(chain_errors.NotRegistered):
            alice.with_hotkey(EVE).set_weights(NETUID, [1], [1.0], 0)
        assert len(node.submitted) == before
        node.advance(9)  # the extrinsic would run at head + 10: allowed
        assert alice.set_weights(NETUID, [1], [1.0], 0).included
    finally:
        node.seed("SubtensorModule", "WeightsSetRateLimit", [NETUID], 0)


def test_all_zero_weights_send_nothing(alice, node):
    before = len(node.submitted)
    result = alice.set_weights(NETUID, [0, 1], [0.0, 0.0], 0)
    assert not result.included and result.method == "none"
    assert len(node.submitted) == before


def test_timelocked_commit_goes_on_the_wire_for_the_reveal_epochs_round(alice, node):
    """Commit-reveal on a runtime with `commit_timelocked_weights`: the weights are encrypted
    for the drand round of the reveal epoch's first block, by the chain's own clock."""
    node.seed("SubtensorModule", "CommitRevealWeightsEnabled", [NETUID], True)
    node.seed("SubtensorModule", "Tempo", [NETUID], 10)
    node.seed("SubtensorModule", "RevealPeriodEpochs", [NETUID], 1)
    try:
        head = node.head.number
        result = alice.set_weights(NETUID, [1, 2], [0.5, 1.0], 7)
        xt = last(node)
        assert xt.signature_valid and xt.outcome == "success"
        assert (xt.call_module, xt.call_function) == (
            "SubtensorModule",
            "commit_timelocked_weights",
        )
        assert result.method == "commit_timelocked_weights" and result.included
        first, _ = wm.reveal_blocks(NETUID, head + 1, 10, 1)
        reveal_time_s = (GENESIS_TIMESTAMP_MS + head * BLOCK_TIME_MS) / 1000 + (first - head) * 12
        assert xt.call_args["reveal_round"] == timelock.drand_round_at(reveal_time_s)
        assert xt.call_args["commit_reveal_version"] == 4
        assert len(bytes.fromhex(xt.call_args["commit"][2:])) > 200
        (pending,) = alice.pending_reveals
        assert (pending.uids, pending.values, pending.version_key) == ((1, 2), (32768, 65535), 7)
        # The runtime never revealed it (the loopback node has no pallets): once the reveal
        # epoch is over the result says so, typed by its message, and the commit is dropped.
        node.advance(first + 10 - node.head.number + 1)
        (missed,) = alice.reveal_pending(NETUID)
        assert not missed.included and "was not revealed" in missed.message
        assert alice.pending_reveals == ()
    finally:
        node.seed("SubtensorModule", "CommitRevealWeightsEnabled", [NETUID], False)


def test_reconnects_after_a_dropped_websocket(alice, node):
    node.drop_connections()
    assert alice.current_block() == node.head.number
    node.drop_connections()
    assert alice.set_weights(NETUID, [1], [1.0], 0).included


def test_a_dropped_submission_is_resent_once_and_never_applied_twice(alice, node):
    before = len(node.submitted)
    node.drop_after_next_submit()
    with pytest.raises(chain_errors.ChainConnectionError, match="unconfirmed"):
        alice.set_weights(NETUID, [1], [1.0], 0)
    first, resent = node.submitted[before:]
    assert first.raw == resent.raw and first.outcome == "success" and resent.outcome == "stale"
    assert alice.set_weights(NETUID, [1], [1.0], 0).included  # the nonce moved on


def test_timeouts(node):
    chain = SubtensorChain(node.url, ALICE, timeout_s=1.0)
    try:
        node.stall_next(1)
        assert chain.current_block() == node.head.number  # one silent answer: retried
        node.stall_next(2)
        started = time.monotonic()
        with pytest.raises(chain_errors.ChainTimeout):
            chain.current_block()
        assert time.monotonic() - started < 5
        assert chain.current_block() == node.head.number
    finally:
        chain.close()


def test_unreachable_endpoint():
    with pytest.raises(chain_errors.ChainConnectionError):
        SubtensorChain("ws://127.0.0.1:9", None, timeout_s=1)


def test_v15_metadata_is_served_and_describes_the_same_runtime(alice, node, codec):
    versions = alice.substrate.rpc_request("state_call", ["Metadata_metadata_versions", "0x"])[
        "result"
    ]
    assert versions == "0x" + codec.encode("Vec<u32>", [14, 15]).hex()
    blob = bytes.fromhex(node.v15_hex[2:])
    # Option<OpaqueMetadata>: Some, compact length, then "meta" and version 15.
    assert blob[0] == 1 and blob[5:9] == b"meta" and blob[9] == 15
    for name in codec.error_names("SubtensorModule"):
        assert name.encode() in blob


def test_weights_round_trip_time(alice, node, record_property):
    times = []
    for i in range(5):
        started = time.perf_counter()
        alice.set_weights(NETUID, [0, 1, 2], [1.0, 0.5, 0.25 + i], 0)
        times.append(time.perf_counter() - started)
    median = statistics.median(times)
    record_property("loopback_weights_round_trip_s", median)
    print(f"\nloopback node: set_weights round trip (included) median {median * 1000:.0f} ms")
    assert median < 10


def test_open_chain_picks_the_backend_by_url(node, monkeypatch):
    cfg = ChainConfig(url=node.url, key_env="LOOPBACK_TEST_KEY", timeout_s=5)
    monkeypatch.setenv("LOOPBACK_TEST_KEY", "//Bob")
    chain = open_chain(cfg)
    try:
        assert isinstance(chain, SubtensorChain) and isinstance(chain, Chain)
        assert chain.hotkey == BOB.ss58_address
        assert "//Bob" not in repr(chain)
    finally:
        chain.close()
    with pytest.raises(ChainError, match="expected sqlite"):
        open_chain(ChainConfig(url="http://127.0.0.1:1"))
