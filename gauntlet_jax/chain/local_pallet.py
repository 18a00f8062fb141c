"""subtensor's weights dispatchables, run on the local chain's tables inside one write transaction.

`do_set_weights` makes the same checks, in the same order and with the same typed errors as
subtensor's `do_set_weights` (pallets/subtensor/src/subnets/weights.rs, read 2025): root netuid,
lengths equal, subnet exists, not more uids than neurons, hotkey registered, minimum stake, version
key, rate limit (only without commit-reveal), validator permit unless a self-weight, duplicates,
unknown uids, minimum length, max-upscale, max weight limit; then store and set LastUpdate. The
dispatchable `set_weights` refuses with CommitRevealEnabled first when the subnet has commit-reveal
on (`refuse_under_commit_reveal`); `commit_weights` / `reveal_weights` follow `do_commit_weights` /
`do_reveal_weights` (epochs of tempo+1 blocks offset by netuid+1, reveal only in epoch
commit+reveal_period, at most 10 unrevealed commits).

The functions take the open write transaction (and the block it runs at); an error they raise
rolls the whole transaction back, as a failed extrinsic changes nothing.
"""

from __future__ import annotations

import sqlite3

from gauntlet_jax.chain import weights as wmath
from gauntlet_jax.chain.base import ROOT_NETUID, blocks_until_weights_allowed
from gauntlet_jax.chain.errors import (
    CanNotSetRootNetworkWeights,
    CommitRevealDisabled,
    CommitRevealEnabled,
    CommittingWeightsTooFast,
    DuplicateUids,
    ExpiredWeightCommit,
    HotKeyNotRegisteredInSubNet,
    IncorrectWeightVersionKey,
    InvalidRevealCommitHashNotMatch,
    MaxWeightExceeded,
    NeuronNoValidatorPermit,
    NotEnoughStakeToSetWeights,
    NoWeightsCommitFound,
    RevealTooEarly,
    SettingWeightsTooFast,
    TooManyUnrevealedCommits,
    UidsLengthExceedUidsInSubNet,
    UidVecContainInvalidOne,
    WeightVecLengthIsLow,
    WeightVecNotEqualSize,
)
from gauntlet_jax.chain.keys import public_key_of
from gauntlet_jax.chain.local_store import SubnetParams, subnet_params, uid_of
from gauntlet_jax.chain.reveal import commit_hash_of

MAX_UNREVEALED_COMMITS = 10


def refuse_under_commit_reveal(db: sqlite3.Connection, netuid: int) -> None:
    """The dispatchable `set_weights` reads the commit-reveal flag before anything else (storage
    default: off) and refuses with CommitRevealEnabled."""
    row = db.execute("SELECT commit_reveal FROM params WHERE netuid = ?", (netuid,)).fetchone()
    if row is not None and row[0]:
        raise CommitRevealEnabled(detail=f"netuid {netuid} uses commit-reveal")


def do_set_weights(
    db: sqlite3.Connection,
    netuid: int,
    hotkey: str,
    uids: list[int],
    values: list[int],
    version_key: int,
    block: int,
) -> None:
    """subtensor's `do_set_weights`, check for check."""
    if netuid == ROOT_NETUID:
        raise CanNotSetRootNetworkWeights(detail="netuid 0 is the root network")
    if len(uids) != len(values):
        raise WeightVecNotEqualSize(detail=f"{len(uids)} uids, {len(values)} values")
    params = subnet_params(db, netuid)  # SubnetNotExists
    n = db.execute("SELECT COUNT(*) FROM neurons WHERE netuid = ?", (netuid,)).fetchone()[0]
    if len(uids) > n:
        raise UidsLengthExceedUidsInSubNet(detail=f"{len(uids)} uids, subnet has {n}")
    row = db.execute(
        "SELECT uid, stake, validator_permit, last_update FROM neurons "
        "WHERE netuid = ? AND hotkey = ?",
        (netuid, hotkey),
    ).fetchone()
    if row is None:
        raise HotKeyNotRegisteredInSubNet(detail=f"{hotkey} on netuid {netuid}")
    uid, stake, permit, last_update = int(row[0]), float(row[1]), bool(row[2]), int(row[3])
    if stake < params.weights_min_stake:
        raise NotEnoughStakeToSetWeights(
            detail=f"uid {uid} has stake {stake}, minimum {params.weights_min_stake}"
        )
    if not (params.version_key == 0 or version_key >= params.version_key):
        raise IncorrectWeightVersionKey(
            detail=f"version_key {version_key} < subnet's {params.version_key}"
        )
    if not params.commit_reveal:
        wait = blocks_until_weights_allowed(block, last_update, params.weights_rate_limit)
        if wait:
            raise SettingWeightsTooFast(
                detail=f"uid {uid} set weights at block {last_update}, now {block}; "
                f"rate limit {params.weights_rate_limit} blocks ({wait} to go)"
            )
    if not (wmath.is_self_weight(uid, uids, values) or permit):
        raise NeuronNoValidatorPermit(detail=f"uid {uid} has no validator permit")
    if len(set(uids)) != len(uids):
        raise DuplicateUids(detail=f"uids {uids}")
    existing = {
        int(r[0]) for r in db.execute("SELECT uid FROM neurons WHERE netuid = ?", (netuid,))
    }
    invalid = [u for u in uids if u not in existing]
    if invalid:
        raise UidVecContainInvalidOne(detail=f"uids {invalid} are not registered")
    min_allowed = min(n, params.min_allowed_weights)
    if not (wmath.is_self_weight(uid, uids, values) or len(values) >= min_allowed):
        raise WeightVecLengthIsLow(detail=f"{len(values)} weights, minimum {min_allowed}")
    upscaled = wmath.max_upscale_u16(values)
    if not (
        wmath.is_self_weight(uid, uids, upscaled)
        or wmath.max_weight_limited(upscaled, params.max_weight_limit)
    ):
        raise MaxWeightExceeded(detail=f"max weight limit {params.max_weight_limit}")
    db.execute("DELETE FROM weights WHERE netuid = ? AND uid = ?", (netuid, uid))
    db.executemany(
        "INSERT INTO weights VALUES (?, ?, ?, ?)",
        [(netuid, uid, int(d), int(v)) for d, v in zip(uids, upscaled, strict=True)],
    )
    if not params.commit_reveal:
        db.execute(
            "UPDATE neurons SET last_update = ? WHERE netuid = ? AND uid = ?",
            (block, netuid, uid),
        )


def commit_weights(
    db: sqlite3.Connection, netuid: int, hotkey: str, commit_hash: str, block: int
) -> None:
    """subtensor's `do_commit_weights`."""
    params = subnet_params(db, netuid)
    if not params.commit_reveal:
        raise CommitRevealDisabled(detail=f"netuid {netuid} has commit-reveal off")
    uid = uid_of(db, netuid, hotkey)
    if uid is None:
        raise HotKeyNotRegisteredInSubNet(detail=f"{hotkey} on netuid {netuid}")
    last = db.execute(
        "SELECT last_update FROM neurons WHERE netuid = ? AND uid = ?", (netuid, uid)
    ).fetchone()[0]
    wait = blocks_until_weights_allowed(block, int(last), params.weights_rate_limit)
    if wait:
        raise CommittingWeightsTooFast(
            detail=f"uid {uid} committed at block {last}, now {block} ({wait} to go)"
        )
    _drop_expired(db, netuid, hotkey, params, block)
    count = db.execute(
        "SELECT COUNT(*) FROM weight_commits WHERE netuid = ? AND hotkey = ?",
        (netuid, hotkey),
    ).fetchone()[0]
    if count >= MAX_UNREVEALED_COMMITS:
        raise TooManyUnrevealedCommits(detail=f"{count} unrevealed commits")
    db.execute(
        "INSERT INTO weight_commits (netuid, hotkey, commit_hash, commit_block) "
        "VALUES (?, ?, ?, ?)",
        (netuid, hotkey, commit_hash, block),
    )
    db.execute(
        "UPDATE neurons SET last_update = ? WHERE netuid = ? AND uid = ?",
        (block, netuid, uid),
    )


def _drop_expired(
    db: sqlite3.Connection, netuid: int, hotkey: str, params: SubnetParams, block: int
) -> list[str]:
    """Deletes the hotkey's commits whose reveal epoch has passed; returns their hashes."""
    now_epoch = wmath.epoch_index(netuid, block, params.tempo)
    expired: list[str] = []
    rows = db.execute(
        "SELECT seq, commit_hash, commit_block FROM weight_commits "
        "WHERE netuid = ? AND hotkey = ? ORDER BY seq",
        (netuid, hotkey),
    ).fetchall()
    for seq, hash_, commit_block in rows:
        commit_epoch = wmath.epoch_index(netuid, int(commit_block), params.tempo)
        if now_epoch <= commit_epoch + params.reveal_period:
            break  # queue order: later commits are not older
        expired.append(str(hash_))
        db.execute("DELETE FROM weight_commits WHERE seq = ?", (seq,))
    return expired


def reveal_weights(
    db: sqlite3.Connection,
    netuid: int,
    hotkey: str,
    uids: list[int],
    values: list[int],
    salt: list[int] | tuple[int, ...],
    version_key: int,
    block: int,
) -> None:
    """subtensor's `do_reveal_weights`: the matching commit (and older ones) go, the weights
    are set."""
    params = subnet_params(db, netuid)
    if not params.commit_reveal:
        raise CommitRevealDisabled(detail=f"netuid {netuid} has commit-reveal off")
    has_any = db.execute(
        "SELECT 1 FROM weight_commits WHERE netuid = ? AND hotkey = ? LIMIT 1",
        (netuid, hotkey),
    ).fetchone()
    if has_any is None:
        raise NoWeightsCommitFound(detail=f"{hotkey} on netuid {netuid}")
    expired = _drop_expired(db, netuid, hotkey, params, block)
    provided = commit_hash_of(public_key_of(hotkey), netuid, uids, values, salt, version_key)
    rows = db.execute(
        "SELECT seq, commit_hash, commit_block FROM weight_commits "
        "WHERE netuid = ? AND hotkey = ? ORDER BY seq",
        (netuid, hotkey),
    ).fetchall()
    if not rows:
        if provided in expired:
            raise ExpiredWeightCommit(detail=f"commit {provided} expired")
        raise NoWeightsCommitFound(detail=f"{hotkey} on netuid {netuid}")
    position = next((i for i, r in enumerate(rows) if r[1] == provided), None)
    if position is None:
        if provided in expired:
            raise ExpiredWeightCommit(detail=f"commit {provided} expired")
        raise InvalidRevealCommitHashNotMatch(detail=f"no commit with hash {provided}")
    commit_block = int(rows[position][2])
    commit_epoch = wmath.epoch_index(netuid, commit_block, params.tempo)
    if wmath.epoch_index(netuid, block, params.tempo) != commit_epoch + params.reveal_period:
        first, _ = wmath.reveal_blocks(netuid, commit_block, params.tempo, params.reveal_period)
        raise RevealTooEarly(detail=f"commit of block {commit_block} reveals from block {first}")
    for seq, _, _ in rows[: position + 1]:
        db.execute("DELETE FROM weight_commits WHERE seq = ?", (seq,))
    do_set_weights(db, netuid, hotkey, uids, values, version_key, block)
