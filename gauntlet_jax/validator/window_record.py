"""What one validator window found and the records it leaves (GAUNTLET.md §2.5, operators' peers
table).

`WindowLedger` is the window's working copy: every peer's record as the checks and the
evaluation change it, each peer's check statuses and the slashes it took. Once the window's
state is saved, `peer_window_records` turns ledger and state into one `PeerWindowRecord` per
miner (the metrics line and the console table), and `WindowOutcome` is what the loop returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gauntlet_jax.config import ValidatorConfig
from gauntlet_jax.node.metrics import PeerWindowRecord
from gauntlet_jax.validator import checks
from gauntlet_jax.validator.rating import peer_ordinal
from gauntlet_jax.validator.state import PeerRecord, ValidatorState


@dataclass
class WindowLedger:
    """Peer records as this window changes them, with each peer's check statuses
    (check → status) and slash reasons, in the order they were found, and the screen's
    estimates (uid → estimated LossScore, finite ones only)."""

    peers: dict[int, PeerRecord]
    checks: dict[int, dict[str, str]]
    slashes: dict[int, list[str]]
    screens: dict[int, float] = field(default_factory=dict)

    @classmethod
    def open(cls, saved: Mapping[int, PeerRecord], miners: Iterable[int]) -> WindowLedger:
        """The saved records, with a fresh one for every miner not seen before."""
        miners = list(miners)
        peers = dict(saved)
        for uid in miners:
            peers.setdefault(uid, PeerRecord(uid=uid))
        return cls(peers, {uid: {} for uid in miners}, {uid: [] for uid in miners})

    def note(self, uid: int, check: str, status: str) -> None:
        self.checks.setdefault(uid, {})[check] = status

    def flag(self, uid: int, reason: str) -> None:
        """Records a slash reason whose effect on the peer's record is already applied."""
        self.slashes.setdefault(uid, []).append(reason)

    def slash(self, uid: int, reason: str, vcfg: ValidatorConfig) -> None:
        """Applies the slash for `reason` (`checks.slash`) and records it."""
        self.peers[uid] = checks.slash(self.peers[uid], reason, vcfg)
        self.flag(uid, reason)


@dataclass
class WindowOutcome:
    window: int
    evaluated: list[int]
    weights: dict[int, float]
    posted: bool
    gathered: int
    seconds: float
    records: list[PeerWindowRecord]
    # Seconds per phase (listing, fetch, decode, fast_checks, scoring, weights, outer_step,
    # state_metrics); they add up to `seconds`.
    phases: dict[str, float] = field(default_factory=dict)


def peer_window_records(
    window: int,
    state: ValidatorState,
    miners: list[int],
    gather: list[int],
    chosen: list[int],
    ledger: WindowLedger,
    sync_x: dict[int, float],
    overlaps: dict[int, float],
) -> list[PeerWindowRecord]:
    """One record per miner: its checks, losses (if evaluated this window), rating, scores,
    slashes and weight, as the saved `state` holds them after the window."""
    out = []
    for uid in miners:
        r = state.peer(uid)
        losses = dict(r.last_losses) if r.last_eval_window == window else {}
        out.append(
            PeerWindowRecord(
                window=window,
                uid=uid,
                checks=ledger.checks.get(uid, {}),
                in_gather=uid in gather,
                evaluated=uid in chosen and bool(losses),
                loss_before_own=losses.get("loss_before_own"),
                loss_after_own=losses.get("loss_after_own"),
                loss_before_random=losses.get("loss_before_random"),
                loss_after_random=losses.get("loss_after_random"),
                improvement_own=losses.get("improvement_own"),
                improvement_random=losses.get("improvement_random"),
                screen=ledger.screens.get(uid),
                binary=r.binary if losses else None,
                mu=r.mu,
                sigma=r.sigma,
                ordinal=peer_ordinal(r) if r.rated else None,
                bma=r.bma,
                sync_x=sync_x.get(uid),
                sync_score=r.sync,
                overlap=overlaps.get(uid),
                slashes=tuple(ledger.slashes.get(uid, [])),
                final=r.final,
                weight=r.weight,
            )
        )
    return out
