"""The validator's window loop: the Gauntlet, one window at a time (GAUNTLET.md §2–§6).

`Validator.process_window(w)` runs once the chain is `offset_windows` past w, holding θ_w:
  1. who is registered and active (an upload in the last `active_windows` windows); inactivity;
  2. fast checks on the gather set: payload missing / too early / too late / invalid → slash;
     sync probes of window w−1 against θ_w → sync score, slash beyond `sync_max_steps`;
     index overlap between gather payloads → slash the later uploader;
  3. every active peer screened (the first-order estimate of its LossScore, `screen`); as many
     peers as the window's time budget holds (`budget`; the top by estimate plus the stalest)
     scored exactly by the loss change of their own pseudo-gradient on their own pages and on the
     window's random pages, one compiled chunk at a time (`loss_delta.score_candidates`); b, BMA,
     OpenSkill, final scores;
  4. weights (∝ final^c), posted every `windows_per_weights`; the gather set refreshed every
     `peer_refresh_windows` and published;
  5. the shared outer step → θ_{w+1}, its sign aggregate published (catch-up), state saved.

All scoring randomness derives from (seed, window), and θ is rebuilt on restart by replaying the
published aggregates, so a validator killed anywhere and restarted posts the same weights.

Multi-host (a TPU pod slice): every process runs this loop on one mesh. The leader alone reads
the chain and the buckets and hands every answer to the others (`node.multihost`), so all of
them make the same choices and run the same programs; the leader alone writes the state file,
the metrics and the console.

Faults (docs/attacks.md, "Faults and what the node does"): a peer's or a bucket's fault is that
peer's verdict, never the loop's. A transient chain fault (a dropped connection, a timeout, the
local chain's file locked past the busy timeout, malformed chain data) is one log line: a failed
metagraph refresh keeps the last-known metagraph (it changes by registrations, which a window
late is what any node sees between refreshes), and any other failed read of the window (block
timestamps the put window is judged by, the block number) leaves the window unapplied — state and
θ untouched, since every chain read of a window comes before its first write — and is retried
after `CHAIN_RETRY_S`; a window is never skipped, as θ must pass through every outer step. A
permanent one (`errors.is_permanent`: a corrupt chain file, a deregistered hotkey, a weights
version key above this node's) ends the loop, and the entry point exits 78.

Each step's work lives in its own module: the fast checks in `window_checks`, evaluation and
rating in `evaluation`, what goes to the chain and the bucket in `publish`, the window's ledger
and per-peer records in `window_record`; this module runs them in order.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from pathlib import Path

import jax
import numpy as np
from rich.console import Console

from gauntlet_jax.config import Config
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.errors import ChainError, is_permanent
from gauntlet_jax.node import multihost
from gauntlet_jax.node.metrics import (
    MetricsLogger,
    open_exporter,
    peer_line,
    render_window_table,
)
from gauntlet_jax.node.phases import PhaseTimer
from gauntlet_jax.node.replica import Replica, node_placement
from gauntlet_jax.node.stack import StackWarnings
from gauntlet_jax.node.startup import (
    Node,
    checkpoint_store,
    maybe_checkpoint,
    new_replica,
    restore_replica,
)
from gauntlet_jax.validator import checks, weights
from gauntlet_jax.validator.budget import ScoringPace
from gauntlet_jax.validator.evaluation import (
    evaluate_window,
    rate_scored,
    score_payloads,
    screen_payloads,
    window_pages,
)
from gauntlet_jax.validator.publish import (
    announce_start_window,
    check_version_key,
    post_weights,
    publish_aggregate,
    publish_gather_set,
)
from gauntlet_jax.validator.state import ValidatorState, load_state, save_state
from gauntlet_jax.validator.window_checks import fast_checks
from gauntlet_jax.validator.window_record import WindowLedger, WindowOutcome, peer_window_records

log = logging.getLogger(__name__)

STATE_FILE = "validator_state.json"
# Seconds before a window whose chain reads failed (or the wait for the chain) is tried again.
CHAIN_RETRY_S = 5.0


class Validator:
    """One validator process: a `Node`, θ (`Replica`), persistent scoring state and metrics."""

    def __init__(self, cfg: Config, node: Node, corpus: TokenCorpus, out_dir: str | Path) -> None:
        self.cfg = cfg
        self.vcfg = cfg.validator
        self.node = node
        self.corpus = corpus
        self.out_dir = Path(out_dir)
        self.writes = multihost.is_leader()
        if self.writes:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.out_dir / STATE_FILE
        self.state: ValidatorState = multihost.leader_call(
            lambda: load_state(self.state_path, self.vcfg.seed)
        )
        # On the node, so that every step holding it can count its errors (`Node.count_error`).
        node.exporter = open_exporter(
            "validator", cfg.run.prometheus_port, cfg.run.prometheus_addr, enabled=self.writes
        )
        self.metrics = MetricsLogger(
            self.out_dir, tensorboard=cfg.run.tensorboard, write=self.writes, exporter=node.exporter
        )
        self.replica: Replica | None = None
        self.checkpoints = checkpoint_store(cfg, node.name)
        self.placement = node_placement(cfg)
        self.stacks = StackWarnings()
        self.pace = ScoringPace()

    # -- start-up -----------------------------------------------------------------------------

    def start(self, stop: threading.Event) -> Replica:
        """Announces the start window (lead validator, once), rebuilds θ up to the state."""
        node = self.node
        check_version_key(node, self.cfg)
        self.warm_up()
        node.commit_bucket()
        announce_start_window(node, self.cfg)
        start = node.wait_for_start_window(stop, timeout_s=60.0)
        done = self.state.last_window
        # A checkpoint newer than the saved state (a crash between the two) must not be used.
        replica, _ = restore_replica(
            self.cfg,
            self.checkpoints,
            start,
            self.placement,
            up_to_window=None if done is None else done + 1,
            count_error=node.count_error,
        )
        if done is not None:
            # θ_{last+1}: replay the aggregates this validator published before it stopped.
            node.catch_up(replica, done + 1)
        self.replica = replica
        return replica

    def warm_up(self) -> None:
        """Compiles scoring, the screen, the outer step and the probes on throwaway inputs (the
        first real window would otherwise spend a minute compiling while the network moves on),
        at the padded batch count of window 0's random pages (peers' own pages yield
        about as many; a window whose pages pad to another count compiles once, then never
        again). The pace of the time budget is measured on real windows: the first one
        evaluates `uids_per_window` peers exactly."""
        replica = new_replica(self.cfg, 0, self.placement)
        rand = window_pages(0, replica, self.corpus, self.cfg, self.state.seed).rand
        own = np.zeros_like(rand)
        score_payloads(replica, self.cfg, [None], [own], own, 0.0)
        if self.vcfg.screen:
            screen_payloads(replica, self.cfg, [None], own, 0.0)
        replica.apply_gathered(0, [])
        replica.probes(0)

    # -- one window ---------------------------------------------------------------------------

    def refresh_metagraph(self, window: int) -> None:
        """Re-reads the metagraph and commitments; on a transient chain fault the last-known
        metagraph stays in use for this window (one log line). Permanent faults propagate."""
        net = self.node.network
        try:
            net.refresh()
        except ChainError as e:
            if is_permanent(e) or net.metagraph is None:
                raise
            self.node.count_error("metagraph", e)
            log.warning(
                "window %d: metagraph refresh failed, using block %d's (%s)",
                window,
                net.metagraph.block,
                e,
            )

    def try_window(self, window: int) -> WindowOutcome | None:
        """`process_window`, or None when a transient chain fault stopped it before anything of
        the window was applied (one log line; state, θ and the window counter unchanged, the
        caller retries the window). Permanent faults propagate."""
        try:
            return self.process_window(window)
        except ChainError as e:
            if is_permanent(e):
                raise
            self.node.count_error("window", e)
            log.warning("window %d: chain read failed, nothing applied, retrying (%s)", window, e)
            return None

    def process_window(self, window: int) -> WindowOutcome:
        """Scores `window`, posts weights and applies its outer step. Every chain read that can
        raise comes before the first write (weights, the gather set, θ, the state; the weight
        calls and the gather set's block number handle their own faults), so a chain fault
        raised here leaves the validator as it was (`try_window`)."""
        assert self.replica is not None and self.replica.next_window == window
        # The window's split (`WindowOutcome.phases`, the metrics' `seconds_<phase>`).
        timer = PhaseTimer()
        node, vcfg, replica = self.node, self.vcfg, self.replica
        net = node.network
        self.refresh_metagraph(window)
        miners = net.miner_uids()
        gather = net.gather_set(window)
        ledger = WindowLedger.open(self.state.peers, miners)

        # 1. Activity and inactivity.
        last_upload = net.last_upload_windows(miners, window, vcfg.active_windows)
        active = checks.active_uids(last_upload, window, vcfg)
        ledger.peers, reset = checks.apply_inactivity(ledger.peers, active, window, vcfg)
        for uid in reset:
            ledger.flag(uid, "inactive_reset")
        timer.lap("listing")

        # 2. Fast checks on the gather set (the gather set's fetch and decode are lapped inside).
        found = fast_checks(
            window, gather, active, replica, net, ledger, self.cfg, self.stacks, timer
        )
        timer.lap("fast_checks")

        # 3. The screen of every active peer, exact loss deltas of as many as the budget
        # holds, and their ratings.
        seed = self.state.seed
        chosen, exact = evaluate_window(
            window,
            active,
            miners,
            found.fetched,
            found.sync_x,
            ledger,
            self.pace,
            replica=replica,
            network=net,
            corpus=self.corpus,
            cfg=self.cfg,
            seed=seed,
            count_error=node.count_error,
        )
        evaluated = rate_scored(exact.scores, ledger, self.state.evaluated_uids, vcfg)
        peers = ledger.peers
        timer.lap("scoring")

        # 4. Weights and the next gather set.
        finals = {u: peers[u].final for u in evaluated if u in peers}
        w = weights.weights_from_finals(finals, vcfg.power)
        for uid in peers:
            peers[uid] = dataclasses.replace(peers[uid], weight=w.get(uid, 0.0))
        posted = post_weights(node, self.cfg, window, w, self.state.last_weights_window)
        schedule = dict(self.state.gather_schedule)
        if weights.is_gather_refresh_window(window, self.cfg):
            publish_gather_set(node, self.cfg, window, w, active, peers, schedule)
        timer.lap("weights")

        # 5. The shared outer step, its aggregate, and the state.
        signs, mask = replica.apply_gathered(
            window, [found.fetched[u] for u in gather], found.stack
        )
        publish_aggregate(node, self.cfg, window, signs, replica)
        # θ_{w+1} is dispatched, not done: wait, so its device time is the outer step's.
        jax.block_until_ready(replica.params)
        timer.lap("outer_step")
        self.state = dataclasses.replace(
            self.state,
            peers=peers,
            evaluated_uids=tuple(sorted(evaluated)),
            gather_schedule=weights.prune_schedule(schedule, window),
            last_window=window,
            last_weights_window=window if posted else self.state.last_weights_window,
        )
        if self.writes:
            save_state(self.state, self.state_path)
        maybe_checkpoint(self.cfg, self.checkpoints, replica, count_error=node.count_error)
        records = peer_window_records(
            window, self.state, miners, gather, chosen, ledger, found.sync_x, found.overlaps
        )
        for record in records:
            self.metrics.log_peer(record)
        timer.lap("state_metrics")
        outcome = WindowOutcome(
            window, chosen, w, posted, int(mask.sum()), timer.total(), records, timer.seconds
        )
        self.pace.record_other(outcome.seconds - exact.seconds)
        self.metrics.log_window(
            window,
            {
                "gathered": outcome.gathered,
                "gather_size": len(gather),
                "evaluated": len(chosen),
                "exact": len(exact.scores),
                "screened": len(ledger.screens),
                "exact_seconds": exact.seconds,
                "active": len(active),
                "posted_weights": posted,
                "seconds": outcome.seconds,
                "lr": replica.lr(window),
                **{f"seconds_{phase}": s for phase, s in timer.seconds.items()},
            },
        )
        self.metrics.end_window(window)
        return outcome

    # -- the live loop ------------------------------------------------------------------------

    def run(
        self,
        stop: threading.Event,
        max_windows: int | None = None,
        until_window: int | None = None,
    ) -> list[WindowOutcome]:
        """The live loop: stops on `stop`, after `max_windows` windows of this process, or once
        window `until_window` is done (which a restarted validator reaches the same as one that
        never stopped)."""
        console = Console(stderr=True, quiet=not self.writes)
        log.info("validator: compiling scoring and the outer step, then joining the network…")
        with console.status("warming up and joining the network…"):
            self.start(stop)
        assert self.replica is not None
        log.info("validator: ready at window %d", self.replica.next_window)
        outcomes: list[WindowOutcome] = []
        while not stop.is_set() and (max_windows is None or len(outcomes) < max_windows):
            window = self.replica.next_window
            if until_window is not None and window > until_window:
                break
            # Process w only once the chain is offset windows past it (GAUNTLET.md §1.2).
            with console.status(f"window {window}: waiting for the chain to move past it…"):
                try:
                    if not self.node.wait_for_window(window + self.vcfg.offset_windows + 1, stop):
                        break
                except ChainError as e:
                    if is_permanent(e):
                        raise
                    self.node.count_error("wait", e)
                    log.warning("window %d: reading the block number failed (%s)", window, e)
                    stop.wait(CHAIN_RETRY_S)
                    continue
            with console.status(f"window {window}: scoring…"):
                outcome = self.try_window(window)
            if outcome is None:
                stop.wait(CHAIN_RETRY_S)
                continue
            if console.is_terminal:
                console.print(render_window_table(outcome.records))
            else:  # a log file or journal: one line per peer, never cut to a width
                for record in outcome.records:
                    log.info("%s", peer_line(record))
            outcomes.append(outcome)
            log.info(
                "validator window %d: evaluated %s, %d gathered, weights %s, %.1fs",
                window,
                outcome.evaluated,
                outcome.gathered,
                {u: round(v, 3) for u, v in outcome.weights.items() if v > 0},
                outcome.seconds,
            )
        self.metrics.close()
        return outcomes
