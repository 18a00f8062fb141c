"""Step 2 of a validator window: the fast checks that read the network (GAUNTLET.md §2, §2.5,
§10.2), over the pure rules of `checks` and `overlap`.

- the gather set's payloads: missing / too early / too late / invalid → slash (flat, or the
  escalating ladder, `ladder`);
- sync probes of window w−1 (gather and active peers) against the validator's θ_w → how many
  steps behind each peer is; gather peers beyond `sync_max_steps` are slashed;
- index overlap between the gather set's valid payloads → the later uploader is slashed.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from gauntlet_jax.compress.codec import PayloadStack, stack_payloads
from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.config import Config, ValidatorConfig
from gauntlet_jax.node.network import Fetched, Network
from gauntlet_jax.node.phases import PhaseTimer
from gauntlet_jax.node.replica import Replica
from gauntlet_jax.node.stack import StackWarnings
from gauntlet_jax.protocol import names
from gauntlet_jax.protocol.probes import Probes, decode_probes, max_probe_bytes
from gauntlet_jax.validator import checks, ladder, overlap
from gauntlet_jax.validator.window_record import WindowLedger

# Fetch status → slash reason of a gather peer (GAUNTLET.md §2.5).
_GATHER_SLASH = {
    "missing": "missing",
    "too_early": "early",
    "too_late": "late",
    "invalid": "invalid",
}


class FastChecks(NamedTuple):
    fetched: dict[int, Fetched]  # the gather set's payloads
    sync_x: dict[int, float]  # steps behind, for the peers whose probes were read
    overlaps: dict[int, float]  # the overlap of each offender
    stack: PayloadStack  # the gather set's payloads stacked as they arrived, for the outer step


def fast_checks(
    window: int,
    gather: list[int],
    active: list[int],
    replica: Replica,
    network: Network,
    ledger: WindowLedger,
    cfg: Config,
    stacks: StackWarnings | None = None,
    timer: PhaseTimer | None = None,
) -> FastChecks:
    """Runs the window's fast checks, recording statuses and slashes in `ledger`; `stacks`
    warns about peers that publish another software stack; `timer` gets the gather set's fetch
    and decode phases (`Network.fetch_payloads`)."""
    vcfg = cfg.validator
    stack = replica.new_stack()
    fetched = network.fetch_payloads(
        gather, window, replica.plan, deadline=0.0, stack=stack, timer=timer
    )
    for uid, f in fetched.items():
        ledger.note(uid, "payload", f.status)
        if f.status == "ok":
            ledger.peers[uid] = ladder.payload_ok(ledger.peers[uid], vcfg)
            continue
        reason = _GATHER_SLASH[f.status]
        ledger.peers[uid], reset = ladder.payload_fault(ledger.peers[uid], reason, window, vcfg)
        ledger.flag(uid, reason)
        if reset:
            ledger.flag(uid, "repeated_faults")
    uids = sorted(set(gather) | set(active))
    sync_x = sync_checks(window, uids, replica, network, ledger, cfg, stacks)
    for uid in gather:
        if checks.is_out_of_sync(sync_x.get(uid, math.inf), vcfg):
            ledger.slash(uid, "out_of_sync", vcfg)
    overlaps = overlap_checks(window, gather, fetched, replica.plan, ledger, vcfg)
    return FastChecks(fetched, sync_x, overlaps, stack)


def sync_checks(
    window: int,
    uids: list[int],
    replica: Replica,
    network: Network,
    ledger: WindowLedger,
    cfg: Config,
    stacks: StackWarnings | None = None,
) -> dict[int, float]:
    """x per peer after window w−1: 0 where its published θ fingerprint equals ours (θ equal to
    the bit, noted as check "theta"), else mean |θ_w − θ_peer| / α over its probes."""
    probe_window = window - 1
    if probe_window < replica.start_window:
        return dict.fromkeys(uids, 0.0)  # nothing to be out of sync with yet
    mine = replica.probes(probe_window)
    own_fingerprint = replica.fingerprint()
    lr = replica.lr(probe_window)
    out: dict[int, float] = {}
    for uid in uids:
        name = names.debug_name(probe_window, uid, cfg.protocol.version)

        def decode(data: bytes, uid: int = uid) -> Probes:
            return decode_probes(data, uid=uid, window=probe_window, expected_len=len(mine))

        f = network.fetch(
            uid,
            probe_window,
            name,
            decode,
            max_bytes=max_probe_bytes(len(mine)),
            deadline=0.0,
            check_put_window=False,
        )
        ledger.note(uid, "probes", f.status)
        if f.status == "ok":
            if stacks is not None:
                stacks.check(uid, f.value.stack)
            equal = f.value.fingerprint == own_fingerprint
            ledger.note(uid, "theta", "equal" if equal else "differs")
            out[uid] = 0.0 if equal else checks.steps_behind(mine, f.value.values, lr)[0]
            in_sync = out[uid] <= cfg.validator.sync_max_steps
            ledger.note(uid, "sync", "ok" if in_sync else "out_of_sync")
    return out


def overlap_checks(
    window: int,
    gather: list[int],
    fetched: dict[int, Fetched],
    plan: CompressionPlan,
    ledger: WindowLedger,
    vcfg: ValidatorConfig,
) -> dict[int, float]:
    """Slashes the later uploader of each overlapping pair; returns each offender's overlap."""
    valid = [u for u in gather if fetched[u].status == "ok"]
    if not vcfg.overlap_check or len(valid) < 2:
        return {}
    idx, _, mask = stack_payloads([fetched[u].value for u in valid], plan)
    matrix = overlap.overlap_matrix(idx)
    found = overlap.find_overlaps(
        valid,
        matrix,
        {u: float(fetched[u].last_modified or 0.0) for u in valid},
        vcfg.overlap_threshold,
        valid=mask,
    )
    for uid, record in overlap.apply_overlap_slashes(ledger.peers, found, window, vcfg).items():
        ledger.peers[uid] = record
        ledger.flag(uid, "overlap")
    return overlap.offender_overlaps(found)
