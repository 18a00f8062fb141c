"""The validator's window loop: the Gauntlet, one window at a time (GAUNTLET.md §2–§6).

`Validator.process_window(w)` runs once the chain is `offset_windows` past w, holding θ_w:
  1. who is registered and active (an upload in the last `active_windows` windows); inactivity;
  2. fast checks on the gather set: payload missing / too early / too late / invalid → slash;
     sync probes of window w−1 against θ_w → sync score, slash beyond `sync_max_steps`;
     index overlap between gather payloads → slash the later uploader;
  3. a few peers (staleness-weighted, from a random ordinal bin) scored by the loss change of
     their own pseudo-gradient on their own pages and on the window's random pages, all at once
     (`loss_delta.score_candidates`); b, BMA, OpenSkill, final scores;
  4. weights (∝ final^c), posted every `windows_per_weights`; the gather set refreshed every
     `peer_refresh_windows` and published;
  5. the shared outer step → θ_{w+1}, its sign aggregate published (catch-up), state saved.

All scoring randomness derives from (seed, window), and θ is rebuilt on restart by replaying the
published aggregates, so a validator killed anywhere and restarted posts the same weights.

Multi-host (a TPU pod slice): every process runs this loop on one mesh. The leader alone reads
the chain and the buckets and hands every answer to the others (node.py), so all of them make
the same choices and run the same programs; the leader alone writes the state file, the metrics
and the console.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from gauntlet_jax.compress.codec import stack_payloads
from gauntlet_jax.config import Config
from gauntlet_jax.data.pages import batches_for, random_batches
from gauntlet_jax.data.shards import TokenCorpus
from gauntlet_jax.errors import ChainError, DataError, PreconditionFailed, StorageError
from gauntlet_jax.model.sharding import to_host
from gauntlet_jax.node import multihost
from gauntlet_jax.node.metrics import MetricsLogger, PeerWindowRecord, render_window_table
from gauntlet_jax.node.network import Fetched, pad_to
from gauntlet_jax.node.replica import Replica, node_placement
from gauntlet_jax.node.startup import (
    Node,
    checkpoint_store,
    maybe_checkpoint,
    new_replica,
    restore_replica,
)
from gauntlet_jax.protocol import names, outer
from gauntlet_jax.protocol.probes import Probes, decode_probes, max_probe_bytes
from gauntlet_jax.validator import checks, overlap, rating, weights
from gauntlet_jax.validator.loss_delta import LossDeltas, pad_batches, score_candidates
from gauntlet_jax.validator.state import PeerRecord, ValidatorState, load_state, save_state

log = logging.getLogger(__name__)

STATE_FILE = "validator_state.json"
# Fetch status → slash reason of a gather peer (GAUNTLET.md §2.5).
_GATHER_SLASH = {
    "missing": "missing",
    "too_early": "early",
    "too_late": "late",
    "invalid": "invalid",
}


@dataclass
class WindowOutcome:
    window: int
    evaluated: list[int]
    weights: dict[int, float]
    posted: bool
    gathered: int
    seconds: float
    records: list[PeerWindowRecord]


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
        self.metrics = MetricsLogger(
            self.out_dir, tensorboard=cfg.run.tensorboard, write=self.writes
        )
        self.replica: Replica | None = None
        self.checkpoints = checkpoint_store(cfg, node.name)
        self.placement = node_placement(cfg)

    @property
    def version(self) -> str:
        return self.cfg.protocol.version

    # -- start-up -----------------------------------------------------------------------------

    def start(self, stop: threading.Event) -> Replica:
        """Announces the start window (lead validator, once), rebuilds θ up to the state."""
        node = self.node
        self.warm_up()
        node.commit_bucket()
        if node.network.lead_validator() == node.uid:
            first = node.current_window() + 1 + self.cfg.protocol.start_delay_windows
            body = json.dumps({"start_window": first}).encode()
            try:
                node.bucket.put(names.start_window_name(self.version), body, if_absent=True)
                log.info("announced start window %d", first)
            except PreconditionFailed:
                pass
        start = node.wait_for_start_window(stop, timeout_s=60.0)
        done = self.state.last_window
        # A checkpoint newer than the saved state (a crash between the two) must not be used.
        replica, _ = restore_replica(
            self.cfg,
            self.checkpoints,
            start,
            self.placement,
            up_to_window=None if done is None else done + 1,
        )
        if done is not None:
            # θ_{last+1}: replay the aggregates this validator published before it stopped.
            node.catch_up(replica, done + 1)
        self.replica = replica
        return replica

    def warm_up(self) -> None:
        """Compiles scoring, the outer step and the probes on throwaway inputs (the first real
        window would otherwise spend a minute compiling while the network moves on)."""
        replica = new_replica(self.cfg, 0, self.placement)
        self.replica = replica
        shape = (1, self.cfg.data.batch_size, self.cfg.model.seq_len)
        own = np.zeros(shape, np.int32)
        self._score([None], [own], own, 0.0)
        replica.apply_gathered(0, [])
        replica.probes(0)
        self.replica = None

    # -- one window ---------------------------------------------------------------------------

    def process_window(self, window: int) -> WindowOutcome:
        assert self.replica is not None and self.replica.next_window == window
        t0 = time.time()
        node, vcfg = self.node, self.vcfg
        net = node.network
        net.refresh()
        miners = net.miner_uids()
        gather = net.gather_set(window)
        checks_of: dict[int, dict[str, str]] = {uid: {} for uid in miners}
        slashes: dict[int, list[str]] = {uid: [] for uid in miners}
        peers = dict(self.state.peers)
        for uid in miners:
            peers.setdefault(uid, PeerRecord(uid=uid))

        # 1. Activity and inactivity.
        last_upload = net.last_upload_windows(miners, window, vcfg.active_windows)
        active = checks.active_uids(last_upload, window, vcfg)
        peers, reset = checks.apply_inactivity(peers, active, window, vcfg)
        for uid in reset:
            slashes.setdefault(uid, []).append("inactive_reset")

        # 2. Fast checks on the gather set.
        fetched = net.fetch_payloads(gather, window, self.replica.plan, deadline=0.0)
        for uid, f in fetched.items():
            checks_of.setdefault(uid, {})["payload"] = f.status
            if f.status != "ok":
                peers[uid] = checks.slash(peers[uid], _GATHER_SLASH[f.status], vcfg)
                slashes.setdefault(uid, []).append(_GATHER_SLASH[f.status])
        sync_x = self._sync_checks(window, sorted(set(gather) | set(active)), checks_of)
        for uid in gather:
            x = sync_x.get(uid, math.inf)
            if checks.is_out_of_sync(x, vcfg):
                peers[uid] = checks.slash(peers[uid], "out_of_sync", vcfg)
                slashes.setdefault(uid, []).append("out_of_sync")
        overlaps = self._overlap_checks(window, gather, fetched, peers, slashes)

        # 3. Loss deltas of a few peers.
        eval_peers = [u for u in active if u in set(miners)]
        ordinals = {u: self._ordinal(peers[u]) for u in eval_peers}
        staleness = {u: peers[u].staleness for u in eval_peers}
        rng = rating.window_rng(self.state.seed, window, "select")
        chosen = rating.select_eval_uids(eval_peers, ordinals, staleness, vcfg, rng)
        new_staleness = rating.update_staleness(staleness, eval_peers, chosen)
        for uid, s in new_staleness.items():
            peers[uid] = dataclasses.replace(peers[uid], staleness=s)
        scores = self._evaluate(window, chosen, fetched, sync_x, peers, checks_of, slashes)

        ratings = {
            u: rating.Rating(r.mu, r.sigma)
            for u, r in peers.items()
            if r.rated  # type: ignore[arg-type]
        }
        updated = rating.rate_window(ratings, scores, vcfg)
        evaluated = set(self.state.evaluated_uids)
        for uid in scores:
            r = updated[uid]
            peers[uid] = weights.refresh_final(
                dataclasses.replace(peers[uid], mu=r.mu, sigma=r.sigma)
            )
            evaluated.add(uid)

        # 4. Weights and the next gather set.
        finals = {u: peers[u].final for u in evaluated if u in peers}
        w = weights.weights_from_finals(finals, vcfg.power)
        for uid in peers:
            peers[uid] = dataclasses.replace(peers[uid], weight=w.get(uid, 0.0))
        posted = self._post_weights(window, w)
        schedule = dict(self.state.gather_schedule)
        if weights.is_gather_refresh_window(window, self.cfg):
            self._publish_gather_set(window, w, active, peers, schedule)

        # 5. The shared outer step, its aggregate, and the state.
        signs, mask = self.replica.apply_gathered(window, [fetched[u] for u in gather])
        self._publish_aggregate(window, signs)
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
        maybe_checkpoint(self.cfg, self.checkpoints, self.replica)
        records = self._log_window(
            window, miners, gather, chosen, checks_of, slashes, sync_x, overlaps
        )
        outcome = WindowOutcome(
            window, chosen, w, posted, int(mask.sum()), time.time() - t0, records
        )
        self.metrics.log_window(
            window,
            {
                "gathered": outcome.gathered,
                "gather_size": len(gather),
                "evaluated": len(chosen),
                "active": len(active),
                "posted_weights": posted,
                "seconds": outcome.seconds,
                "lr": self.replica.lr(window),
            },
        )
        self.metrics.end_window(window)
        return outcome

    @staticmethod
    def _ordinal(record: PeerRecord) -> float:
        if not record.rated:
            return 0.0
        return rating.ordinal(rating.Rating(record.mu, record.sigma))  # type: ignore[arg-type]

    def _sync_checks(
        self, window: int, uids: list[int], checks_of: dict[int, dict[str, str]]
    ) -> dict[int, float]:
        """x per peer after window w−1: 0 where its published θ fingerprint equals ours (θ equal to
        the bit), else mean |θ_w − θ_peer| / α over the probes it published."""
        assert self.replica is not None
        probe_window = window - 1
        if probe_window < self.replica.start_window:
            return dict.fromkeys(uids, 0.0)  # nothing to be out of sync with yet
        mine = self.replica.probes(probe_window)
        own_fingerprint = self.replica.fingerprint()
        lr = self.replica.lr(probe_window)
        out: dict[int, float] = {}
        for uid in uids:
            name = names.debug_name(probe_window, uid, self.version)

            def decode(data: bytes, uid: int = uid) -> Probes:
                return decode_probes(data, uid=uid, window=probe_window, expected_len=len(mine))

            f = self.node.network.fetch(
                uid,
                probe_window,
                name,
                decode,
                max_bytes=max_probe_bytes(len(mine)),
                deadline=0.0,
                check_put_window=False,
            )
            checks_of.setdefault(uid, {})["probes"] = f.status
            if f.status == "ok":
                equal = f.value.fingerprint == own_fingerprint
                checks_of[uid]["theta"] = "equal" if equal else "differs"
                out[uid] = 0.0 if equal else checks.steps_behind(mine, f.value.values, lr)[0]
                checks_of[uid]["sync"] = (
                    "ok" if out[uid] <= self.vcfg.sync_max_steps else "out_of_sync"
                )
        return out

    def _overlap_checks(
        self,
        window: int,
        gather: list[int],
        fetched: dict[int, Fetched],
        peers: dict[int, PeerRecord],
        slashes: dict[int, list[str]],
    ) -> dict[int, float]:
        valid = [u for u in gather if fetched[u].status == "ok"]
        if not self.vcfg.overlap_check or len(valid) < 2:
            return {}
        assert self.replica is not None
        idx, _, mask = stack_payloads([fetched[u].value for u in valid], self.replica.plan)
        matrix = overlap.overlap_matrix(idx)
        found = overlap.find_overlaps(
            valid,
            matrix,
            {u: float(fetched[u].last_modified or 0.0) for u in valid},
            self.vcfg.overlap_threshold,
            valid=mask,
        )
        for uid, record in overlap.apply_overlap_slashes(peers, found, window, self.vcfg).items():
            peers[uid] = record
            slashes.setdefault(uid, []).append("overlap")
        return overlap.offender_overlaps(found)

    def _sample(self, batches: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The reference's evaluation sample: max(1, ⌊rate·n⌋) batches, sorted indices."""
        n = max(1, int(self.vcfg.sample_rate * len(batches)))
        return batches[np.sort(rng.choice(len(batches), size=n, replace=False))]

    def _score(
        self,
        payloads: list[Any],
        own: list[np.ndarray],
        rand: np.ndarray,
        beta: float,
    ) -> LossDeltas:
        """Loss deltas of candidates (`score_candidates`) at static shapes: payloads padded to
        `uids_per_window` (absent ones weigh nothing), everything placed on the node's mesh."""
        assert self.replica is not None
        placement = self.replica.placement
        k_static = self.vcfg.uids_per_window
        n_static = max(len(b) for b in own)
        own_KNBT, own_w = pad_batches(pad_to(own, k_static, own[0]), n_static)
        own_w[len(own) :] = 0.0
        idx, vals, _ = stack_payloads(pad_to(payloads, k_static), self.replica.plan)
        idx, vals = placement.place_payloads(idx, vals)
        deltas = score_candidates(
            self.replica.params,
            idx,
            vals,
            placement.place_tokens(own_KNBT, ("peers", "micro", "batch", "seq")),
            placement.place_replicated(own_w),
            placement.place_tokens(rand, ("micro", "batch", "seq")),
            placement.place_replicated(np.ones(len(rand), np.float32)),
            placement.place_replicated(np.float32(beta)),
            model_cfg=self.cfg.model,
            plan=self.replica.plan,
            normalise=self.cfg.protocol.normalise,
            chunk=self.vcfg.candidate_chunk,
        )
        return LossDeltas(*to_host(tuple(deltas)))

    def _evaluate(
        self,
        window: int,
        chosen: list[int],
        fetched: dict[int, Fetched],
        sync_x: dict[int, float],
        peers: dict[int, PeerRecord],
        checks_of: dict[int, dict[str, str]],
        slashes: dict[int, list[str]],
    ) -> dict[int, float]:
        """Scores the chosen peers; returns uid → LossScore (relative gain on random data)."""
        assert self.replica is not None
        net = self.node.network
        candidates, own = [], []
        rng = rating.window_rng(self.state.seed, window, "batches")
        for uid in chosen:
            f = fetched.get(uid) or net.fetch_payload(uid, window, self.replica.plan, 0.0)
            if f.status == "invalid":
                peers[uid] = checks.zero_on_invalid_eval(peers[uid])
                slashes.setdefault(uid, []).append("eval_invalid")
                continue
            if f.status != "ok":
                peers[uid] = checks.slash(peers[uid], "eval_missing", self.vcfg)
                slashes.setdefault(uid, []).append("eval_missing")
                continue
            try:
                own.append(self._sample(batches_for(self.corpus, uid, window, self.cfg), rng))
            except DataError as e:
                log.warning("window %d uid %d: no own data (%s)", window, uid, e)
                peers[uid] = checks.slash(peers[uid], "eval_missing", self.vcfg)
                continue
            candidates.append(f)
        if not candidates:
            return {}
        seed = int(rating.window_rng(self.state.seed, window, "random").integers(1000, 10_000_000))
        rand = self._sample(random_batches(self.corpus, self.cfg, seed, window), rng)
        lr = self.replica.lr(window)
        deltas = self._score(
            [c.value for c in candidates], own, rand, self.vcfg.eval_lr_factor * lr
        )
        scores: dict[int, float] = {}
        for i, f in enumerate(candidates):
            uid = f.uid
            losses = {
                "loss_before_own": float(deltas.own_before[i]),
                "loss_after_own": float(deltas.own_after[i]),
                "loss_before_random": float(deltas.random_before),
                "loss_after_random": float(deltas.random_after[i]),
            }
            if not all(math.isfinite(v) for v in losses.values()):
                peers[uid] = checks.zero_on_invalid_eval(peers[uid])
                slashes.setdefault(uid, []).append("eval_invalid")
                continue
            x = sync_x.get(uid, math.inf)
            peers[uid] = checks.record_evaluation(peers[uid], window, losses, x, self.vcfg)
            scores[uid] = peers[uid].last_losses["improvement_random"]
            checks_of.setdefault(uid, {})["evaluated"] = "ok"
        return scores

    def _weights_due(self, window: int) -> bool:
        """Every `windows_per_weights` windows; a post the chain refused (rate limit, a
        dropped connection) is retried each window until it lands."""
        last = self.state.last_weights_window
        if last is None:
            return weights.should_post_weights(window, self.vcfg)
        return window - last >= self.vcfg.windows_per_weights

    def _post_weights(self, window: int, w: dict[int, float]) -> bool:
        if not self._weights_due(window):
            return False
        uids = sorted(u for u, v in w.items() if v > 0)
        if not uids:
            log.info("window %d: all weights zero; nothing posted", window)
            return False
        try:
            result = self.node.chain.set_weights(
                self.cfg.chain.netuid, uids, [w[u] for u in uids], version_key=0
            )
        except ChainError as e:
            log.warning("window %d: set_weights failed: %s", window, e)
            return False
        log.info(
            "window %d: weights posted (%s) %s",
            window,
            result.method,
            dict(zip(uids, result.values, strict=False)),
        )
        return result.included

    def _publish_gather_set(
        self,
        window: int,
        w: dict[int, float],
        active: list[int],
        peers: dict[int, PeerRecord],
        schedule: dict[int, tuple[int, ...]],
    ) -> None:
        """Chooses the next gather set; it takes effect `peer_effective_lag` windows after the
        chain's current window, so every miner sees it before it is used."""
        if self.node.network.lead_validator() != self.node.uid:
            return
        excluded = overlap.excluded_uids(peers, window)
        chosen = weights.gather_set(w, active, self.cfg.protocol.gather_peers, excluded)
        if not chosen:
            return  # nobody active: keep the set in force rather than announce an empty one
        effective = max(
            weights.gather_effective_window(window, self.cfg),
            self.node.current_window() + self.cfg.protocol.peer_effective_lag,
        )
        body = json.dumps({"peers": chosen, "chosen_at": window}).encode()
        try:
            self.node.bucket.put(names.peers_name(effective, self.version), body, if_absent=True)
            schedule[effective] = tuple(chosen)
        except (PreconditionFailed, StorageError) as e:
            log.info("gather set for %d not published (%s)", effective, e)

    def _publish_aggregate(self, window: int, signs: Any) -> None:
        if self.node.network.lead_validator() != self.node.uid:
            return
        assert self.replica is not None
        data = names.encode_arrays(outer.pack_signs(signs, self.replica.plan))
        try:
            self.node.bucket.put(names.aggregate_name(window, self.version), data)
        except StorageError as e:
            log.warning("aggregate %d not published (%s)", window, e)

    def _log_window(
        self,
        window: int,
        miners: list[int],
        gather: list[int],
        chosen: list[int],
        checks_of: dict[int, dict[str, str]],
        slashes: dict[int, list[str]],
        sync_x: dict[int, float],
        overlaps: dict[int, float],
    ) -> list[PeerWindowRecord]:
        out = []
        for uid in miners:
            r = self.state.peer(uid)
            losses = dict(r.last_losses) if r.last_eval_window == window else {}
            record = PeerWindowRecord(
                window=window,
                uid=uid,
                checks=checks_of.get(uid, {}),
                in_gather=uid in gather,
                evaluated=uid in chosen and bool(losses),
                loss_before_own=losses.get("loss_before_own"),
                loss_after_own=losses.get("loss_after_own"),
                loss_before_random=losses.get("loss_before_random"),
                loss_after_random=losses.get("loss_after_random"),
                improvement_own=losses.get("improvement_own"),
                improvement_random=losses.get("improvement_random"),
                binary=r.binary if losses else None,
                mu=r.mu,
                sigma=r.sigma,
                ordinal=self._ordinal(r) if r.rated else None,
                bma=r.bma,
                sync_x=sync_x.get(uid),
                sync_score=r.sync,
                overlap=overlaps.get(uid),
                slashes=tuple(slashes.get(uid, [])),
                final=r.final,
                weight=r.weight,
            )
            self.metrics.log_peer(record)
            out.append(record)
        return out

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
        with console.status("warming up and joining the network…"):
            self.start(stop)
        assert self.replica is not None
        outcomes: list[WindowOutcome] = []
        while not stop.is_set() and (max_windows is None or len(outcomes) < max_windows):
            window = self.replica.next_window
            if until_window is not None and window > until_window:
                break
            # Process w only once the chain is offset windows past it (GAUNTLET.md §1.2).
            with console.status(f"window {window}: waiting for the chain to move past it…"):
                if not self.node.wait_for_window(window + self.vcfg.offset_windows + 1, stop):
                    break
            with console.status(f"window {window}: scoring…"):
                outcome = self.process_window(window)
            console.print(render_window_table(outcome.records))
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


__all__ = ["StorageError", "Validator", "WindowOutcome"]
