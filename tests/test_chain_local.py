"""The embedded SQLite chain: clock, subtensor's check order, commit-reveal, hostile rows,
several processes on one file, and the `localchain` command."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3

import pytest

from gauntlet_jax import localchain
from gauntlet_jax.chain import Chain, open_chain
from gauntlet_jax.chain import errors as chain_errors
from gauntlet_jax.chain.keys import dev_hotkey
from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.chain.local_store import path_from_sqlite_url
from gauntlet_jax.cli import EX_CONFIG
from gauntlet_jax.config import ChainConfig
from gauntlet_jax.errors import ChainError

NETUID = 2
VALIDATOR, MINER1, MINER2, MINER3 = (dev_hotkey(i).ss58_address for i in range(4))
OUTSIDER = dev_hotkey(5).ss58_address


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "chain.db"
    with LocalChain(path) as admin:
        admin.set_clock_mode("manual")
        admin.create_subnet(NETUID, weights_rate_limit=10, tempo=9)
        admin.register(NETUID, VALIDATOR, stake=1e6, validator_permit=True)
        for hotkey in (MINER1, MINER2, MINER3):
            admin.register(NETUID, hotkey)
        admin.advance(100)
    return path


def handle(path, hotkey=VALIDATOR):
    return LocalChain(path, hotkey)


def test_sqlite_url():
    assert str(path_from_sqlite_url("sqlite:///runs/x.db")) == "runs/x.db"
    assert str(path_from_sqlite_url("sqlite:////abs/x.db")) == "/abs/x.db"
    with pytest.raises(ChainError):
        path_from_sqlite_url("postgres://x")


def test_wall_clock_manual_clock_and_deterministic_timestamps(tmp_path):
    clock = Clock(1000.0)
    chain = LocalChain(tmp_path / "c.db", block_time_s=12.0, now=clock)
    assert chain.current_block() == 0
    clock.t += 12 * 5 + 3
    assert chain.current_block() == 5
    assert chain.window(2) == 2
    assert chain.block_timestamp(5) == 1000.0 + 60.0
    with pytest.raises(ChainError, match="manual"):
        chain.advance(1)
    chain.set_clock_mode("manual")
    clock.t += 1000
    assert chain.current_block() == 5  # frozen
    assert chain.advance(3) == 8
    # Another process opening the same file with another block time sees the same clock.
    other = LocalChain(tmp_path / "c.db", block_time_s=1.0, now=clock)
    assert other.current_block() == 8 and other.block_time_s == 12.0
    assert other.block_timestamp(8) == chain.block_timestamp(8) == 1000.0 + 96.0
    chain.set_clock_mode("wall")
    assert chain.current_block() == 8  # continues from where the manual clock stood
    clock.t += 24
    assert other.current_block() == 10


def test_metagraph(db):
    graph = handle(db).metagraph(NETUID)
    assert graph.n == 4
    assert graph.uids.tolist() == [0, 1, 2, 3]
    assert graph.uid_of(MINER2) == 2 and graph.hotkey_of(0) == VALIDATOR
    assert graph.validator_permit.tolist() == [True, False, False, False]
    assert graph.stake[0] == 1e6 and graph.last_update.tolist() == [0, 0, 0, 0]
    assert graph.block == 100
    with pytest.raises(ValueError):
        graph.stake[0] = 0.0  # read-only arrays
    with pytest.raises(chain_errors.SubnetNotExists):
        handle(db).metagraph(99)


def test_set_weights_round_trip_and_rate_limit(db):
    chain = handle(db)
    result = chain.set_weights(NETUID, [1, 2, 3], [0.25, 1.0, 0.0], version_key=0)
    assert result.included and result.method == "set_weights" and result.block == 100
    assert (result.uids, result.values) == ((1, 2), (16384, 65535))
    assert chain.get_weights(NETUID, 0) == {1: 16384, 2: 65535}
    assert chain.metagraph(NETUID).last_update[0] == 100
    chain.advance(9)
    with pytest.raises(chain_errors.SettingWeightsTooFast, match="1 to go"):
        chain.set_weights(NETUID, [1], [1.0], 0)
    chain.advance(1)  # block − LastUpdate = 10 ≥ WeightsSetRateLimit
    assert chain.set_weights(NETUID, [3], [1.0], 0).block == 110
    assert chain.get_weights(NETUID, 0) == {3: 65535}  # the row is replaced
    nothing = chain.set_weights(NETUID, [1, 2], [0.0, 0.0], 0)
    assert not nothing.included and nothing.method == "none"


def expect(exc_type, fn, *args):
    with pytest.raises(exc_type) as info:
        fn(*args)
    assert type(info.value) is exc_type, f"got {type(info.value).__name__}: {info.value}"


def test_checks_run_in_subtensor_order(db):
    """Each call breaks two checks; the one subtensor's do_set_weights makes first must win."""
    admin, validator, miner = handle(db, None), handle(db), handle(db, MINER1)
    u16 = validator.set_weights_u16
    expect(chain_errors.WeightVecNotEqualSize, u16, 99, [0, 1], [1], 0)  # before SubnetNotExists
    expect(chain_errors.SubnetNotExists, u16, 99, [0], [1], 0)
    outsider = handle(db, OUTSIDER)
    expect(
        chain_errors.UidsLengthExceedUidsInSubNet,
        outsider.set_weights_u16,
        NETUID,
        list(range(5)),
        [1] * 5,
        0,
    )
    expect(chain_errors.HotKeyNotRegisteredInSubNet, outsider.set_weights_u16, NETUID, [0], [1], 0)
    admin.set_param(NETUID, "weights_min_stake", 10.0)
    expect(chain_errors.NotEnoughStakeToSetWeights, miner.set_weights_u16, NETUID, [1], [1], 0)
    admin.set_param(NETUID, "weights_min_stake", 0.0)
    admin.set_param(NETUID, "version_key", 5)
    validator.set_weights_u16(NETUID, [1], [1], 5)  # sets LastUpdate: now rate limited too
    expect(
        chain_errors.IncorrectWeightVersionKey, u16, NETUID, [1], [1], 4
    )  # before the rate limit
    admin.set_validator_permit(NETUID, 0, False)
    expect(chain_errors.SettingWeightsTooFast, u16, NETUID, [1], [1], 5)  # before the permit
    admin.advance(10)
    expect(
        chain_errors.NeuronNoValidatorPermit, u16, NETUID, [1, 1], [1, 1], 5
    )  # before duplicates
    miner.set_weights_u16(NETUID, [1], [7], 5)  # a self-weight needs no permit
    assert miner.get_weights(NETUID, 1) == {1: 65535}
    admin.set_validator_permit(NETUID, 0, True)
    expect(chain_errors.DuplicateUids, u16, NETUID, [1, 1, 77], [1, 1, 1], 5)  # before invalid uids
    admin.set_param(NETUID, "min_allowed_weights", 3)
    expect(
        chain_errors.UidVecContainInvalidOne, u16, NETUID, [77], [1], 5
    )  # before the length check
    expect(chain_errors.WeightVecLengthIsLow, u16, NETUID, [1, 2], [1, 1], 5)
    admin.set_param(NETUID, "min_allowed_weights", 0)
    admin.set_param(NETUID, "max_weight_limit", 40000)
    expect(chain_errors.MaxWeightExceeded, u16, NETUID, [1, 2], [65535, 1], 5)
    validator.set_weights_u16(NETUID, [1, 2], [65535, 65535], 5)  # each is half: within limit
    admin.create_subnet(0)
    expect(chain_errors.CanNotSetRootNetworkWeights, u16, 0, [0, 1], [1], 5)  # the very first check


def test_commit_reveal_flow(db):
    admin, chain = handle(db, None), handle(db)
    admin.set_param(NETUID, "commit_reveal", True)
    expect(chain_errors.CommitRevealEnabled, chain.set_weights_u16, NETUID, [1], [1], 0)
    result = chain.set_weights(NETUID, [1, 2], [1.0, 0.5], 0)
    assert result.method == "commit_weights" and result.commit_hash.startswith("0x")
    assert chain.get_weights(NETUID, 0) == {}
    assert chain.reveal_pending(NETUID) == []  # block 100: epoch 10; reveal in epoch 11
    pending = chain.pending_reveals[0]
    expect(
        chain_errors.RevealTooEarly,
        chain.reveal_weights,
        NETUID,
        list(pending.uids),
        list(pending.values),
        pending.salt,
        0,
    )
    wrong_salt = [s ^ 1 for s in pending.salt]
    expect(
        chain_errors.InvalidRevealCommitHashNotMatch,
        chain.reveal_weights,
        NETUID,
        list(pending.uids),
        list(pending.values),
        wrong_salt,
        0,
    )
    with pytest.raises(chain_errors.CommittingWeightsTooFast):
        chain.set_weights(NETUID, [1], [1.0], 0)
    chain.advance(8)  # block 108 = first block of epoch 11 for netuid 2, tempo 9
    (revealed,) = chain.reveal_pending(NETUID)
    assert revealed.included and revealed.method == "reveal_weights" and revealed.block == 108
    assert chain.get_weights(NETUID, 0) == {1: 65535, 2: 32768}
    assert chain.pending_reveals == ()
    # A commit left past its reveal epoch expires.
    chain.advance(10)
    chain.set_weights(NETUID, [3], [1.0], 0)
    late = chain.pending_reveals[0]
    chain.advance(25)
    (dropped,) = chain.reveal_pending(NETUID)
    assert not dropped.included and "passed" in dropped.message
    expect(
        chain_errors.ExpiredWeightCommit,
        chain.reveal_weights,
        NETUID,
        list(late.uids),
        list(late.values),
        late.salt,
        0,
    )
    admin.set_param(NETUID, "commit_reveal", False)
    expect(chain_errors.CommitRevealDisabled, chain.commit_weights, NETUID, "0x" + "00" * 32)


def test_commitments_round_trip_and_hostile_rows(db):
    miner = handle(db, MINER1)
    block = miner.commit(NETUID, "gs://bucket-1/prefix key=ABC")
    assert block == 100
    assert miner.get_commitment(NETUID, 1) == "gs://bucket-1/prefix key=ABC"
    assert miner.get_commitment(NETUID, MINER1) == "gs://bucket-1/prefix key=ABC"
    assert miner.get_commitment(NETUID, 2) is None
    for bad in ("", "a\nb", "x" * 129, " padded", "caf\u00e9"):
        with pytest.raises(chain_errors.ChainDataError):
            miner.commit(NETUID, bad)
    with pytest.raises(chain_errors.PalletError) as info:
        handle(db, OUTSIDER).commit(NETUID, "hello")
    assert info.value.name == "AccountNotAllowedCommit"
    # Another writer puts garbage straight into the file: readers must refuse it, not parse it.
    raw = sqlite3.connect(db)
    raw.execute("INSERT INTO commitments VALUES (?, ?, ?, 0)", (NETUID, MINER2, "evil\x00\x1b[2J"))
    raw.commit()
    raw.close()
    with pytest.raises(chain_errors.ChainDataError, match="forbidden"):
        miner.get_commitment(NETUID, 2)
    assert miner.get_commitments(NETUID) == {1: "gs://bucket-1/prefix key=ABC"}


def _race_set_weights(path: str, barrier, results) -> None:
    chain = LocalChain(path, VALIDATOR)
    barrier.wait()
    try:
        chain.set_weights(NETUID, [1], [1.0], 0)
        results.put("ok")
    except chain_errors.SettingWeightsTooFast:
        results.put("too fast")


def test_several_processes_share_the_file(db):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_race_set_weights, args=(str(db), barrier, results)) for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    # The rate-limit check and the write sit in one IMMEDIATE transaction: one winner only.
    assert outcomes == ["ok", "too fast", "too fast", "too fast"]
    assert handle(db).get_weights(NETUID, 0) == {1: 65535}


def test_localchain_command(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/net.db"
    argv = [
        "create",
        "--config",
        "tiny",
        "--set",
        f"chain.url={url}",
        "--neurons",
        "3",
        "--manual-clock",
    ]
    assert localchain.main(argv) == 0
    created = json.loads(capsys.readouterr().out)
    assert [n["uid"] for n in created["neurons"]] == [0, 1, 2]
    assert [n["uri"] for n in created["neurons"]] == ["//Alice", "//Bob", "//Charlie"]
    assert created["neurons"][0]["validator_permit"] and created["neurons"][0]["stake"] > 20000
    assert not created["neurons"][1]["validator_permit"] and created["neurons"][1]["stake"] == 0
    assert created["clock"] == "manual"
    assert localchain.main(argv) == EX_CONFIG  # exists: refuses without --force
    assert "exists" in capsys.readouterr().err
    assert (
        localchain.main(
            ["advance", "--config", "tiny", "--set", f"chain.url={url}", "--blocks", "7"]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["block"] == 7
    assert localchain.main(["show", "--config", "tiny", "--set", f"chain.url={url}"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [n["hotkey"] for n in shown["neurons"]] == [n["hotkey"] for n in created["neurons"]]


def test_open_chain_sqlite(tmp_path):
    cfg = ChainConfig(url=f"sqlite:///{tmp_path}/open.db", block_time_s=2.0)
    chain = open_chain(cfg, VALIDATOR)
    assert isinstance(chain, LocalChain) and isinstance(chain, Chain)
    assert chain.hotkey == VALIDATOR and chain.block_time_s == 2.0
    with pytest.raises(ChainError):
        open_chain(cfg, "//Alice")  # a secret where an address belongs: refused, not echoed
