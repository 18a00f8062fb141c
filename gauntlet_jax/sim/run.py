"""The simulator: many peers with behaviours and the real validator in one process, on simulated
time. This module runs the timeline; `sim.network` builds the network it runs on, `sim.training`
computes the peers' payloads, `sim.baselines` and `sim.judging` give the summary its yardsticks.

Nothing here re-implements a rule. The validator is `Validator.process_window`, the peers' outer
step is `Replica.apply_gathered` over `Network.gather_set` / `fetch_payloads`, and the peers'
inner steps are one jitted `vmap` over a peer axis per distinct θ (`sim.training`). The one
thing the simulation sets for the validator is its scoring pace: a simulated window lasts
blocks_per_window · block_time_s of chain time, so the time budget counts the exact
evaluations that window holds on the simulated network (`sim.exact_per_window`,
`sim.network.chain_pace`), not this host's seconds.

The timeline of chain window c (the loop's step), as a live network would produce it:

    1. the chain moves to the first block of c: window c−1 has ended, its put window opens at
       t_min = timestamp(first block of c);
    2. every peer uploads its payload of c−1 at t_min + its delay (late peers: after the put
       window; copycats: after the peer they copy);
    3. every peer gathers c−1's payloads and applies the outer step → θ_c, and publishes its sync
       probes of c−1 (the stale peer publishes those of its lagging θ);
    4. the validator processes window c−1−offset_windows (it runs that far behind the chain);
    5. every training peer computes its payload of window c on its θ (uploaded at step 1 of c+1).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.compress.codec import max_payload_bytes
from gauntlet_jax.config import Config, to_dict
from gauntlet_jax.data.corpus import TokenCorpus, open_corpus
from gauntlet_jax.data.pages import heldout_batches
from gauntlet_jax.model import llama
from gauntlet_jax.node.metrics import METRICS_FILE, read_records
from gauntlet_jax.node.startup import GATHER_GRACE_S, new_replica
from gauntlet_jax.protocol import names
from gauntlet_jax.protocol.fingerprint import fingerprint
from gauntlet_jax.protocol.honest import mean_loss
from gauntlet_jax.protocol.probes import encode_probes, gather_probes
from gauntlet_jax.sim.baselines import run_baselines
from gauntlet_jax.sim.judging import (
    class_weights,
    evaluate_bars,
    honest_share,
    rating_separation,
    screen_agreement,
)
from gauntlet_jax.sim.network import (
    SUMMARY_FILE,
    SimNetwork,
    build_network,
    chain_pace,
    prepare_out_dir,
    sim_config,
)
from gauntlet_jax.sim.peers import Honest, UploadContext
from gauntlet_jax.sim.training import PeerTraining
from gauntlet_jax.validator.rating import peer_ordinal
from gauntlet_jax.validator.window_record import WindowOutcome


@dataclass(frozen=True)
class SimOptions:
    """How to run: windows the validator processes, extra baselines, held-out cadence."""

    windows: int
    scenario: str = "custom"
    peers_spec: str = ""
    # "honest": the scenario's honest peers alone (no validator, all gathered);
    # "adamw": centralised AdamW on the honest peers' tokens, one step per window.
    baselines: tuple[str, ...] = ()
    eval_every: int = 1
    shard_peers: bool = False
    tensorboard: bool = False
    # Kinds in the order their ratings should end up (Figure 2), for the separation figure.
    expected_order: tuple[str, ...] = ()
    seed: int = 0


@dataclass
class PeerLog:
    """What the simulator did for one peer (beside what the validator saw)."""

    uploads: int = 0
    micro_batches: int = 0
    train_loss: list[float] = field(default_factory=list)


class Simulation:
    """One simulated network: chain, buckets, peers, the validator; `run()` drives it."""

    def __init__(
        self, cfg: Config, peers: Sequence[Honest], out_dir: str | Path, options: SimOptions
    ) -> None:
        if options.windows < 1:
            raise ValueError(f"windows must be ≥ 1, got {options.windows}")
        self.out_dir = Path(out_dir).resolve()
        self.options = options
        self.cfg = sim_config(cfg, self.out_dir, tensorboard=options.tensorboard)
        self.peers = list(peers)
        self.kinds = {p.uid: p.kind for p in self.peers}
        self.peer_logs = {p.uid: PeerLog() for p in self.peers}
        self.version = self.cfg.protocol.version
        self.offset = self.cfg.validator.offset_windows
        self.heldout_windows: list[int] = []
        self.heldout_losses: list[float] = []
        self.outcomes: list[WindowOutcome] = []
        self.window_seconds: list[float] = []
        # Seconds spent per phase over the run (first calls include compilation).
        self.phase_seconds: dict[str, float] = {}

    # -- set-up -------------------------------------------------------------------------------

    def setup(self) -> None:
        cfg = self.cfg
        self.corpus: TokenCorpus = open_corpus(cfg.data, progress=False)
        self.heldout = jnp.asarray(heldout_batches(self.corpus, cfg))
        self.net: SimNetwork = build_network(cfg, self.peers, self.corpus, self.out_dir)
        # The validator budgets its exact evaluations in chain time (`sim.exact_per_window`).
        self.net.validator.pace = chain_pace(cfg)
        self.clock = self.net.clock
        replica = self.net.validator.replica
        assert replica is not None
        self.start = replica.start_window
        self.shared = new_replica(cfg, self.start)
        self.plan = self.shared.plan
        self.abstract = llama.abstract_params(cfg.model)
        self.cap = min(cfg.compress.max_payload_bytes, max_payload_bytes(self.plan))
        self.history: dict[int, Any] = {self.start: self.shared.params}
        self.max_lag = max((p.lag for p in self.peers), default=0)
        for p in self.peers:
            if p.trains:
                self.peer_logs[p.uid].micro_batches = p.micro_batches(cfg)
        self.training = PeerTraining(
            cfg, self.peers, self.shared.params, self.plan, shard_peers=self.options.shard_peers
        )
        self.honest_uids = [p.uid for p in self.peers if p.kind == "honest"]
        self.last_signs: Any = None
        self.pending: dict[int, bytes] = {}
        self.net.advance_to(self.start)

    def theta_at(self, window: int) -> Any:
        """θ_window of the network (θ_start before the run began)."""
        return self.history[max(window, self.start)]

    # -- one window ---------------------------------------------------------------------------

    def train(self, window: int) -> None:
        """Every training peer's payload of `window`, kept until its upload."""
        self.pending, losses = self.training.payloads(
            window, self.theta_at, self.corpus, self.shared.lr(window), window - self.start
        )
        for uid, loss in losses.items():
            self.peer_logs[uid].train_loss.append(loss)

    def upload(self, window: int) -> None:
        """Window `window`'s uploads, each at its simulated time in (or after) the put window."""
        rng = np.random.default_rng([self.options.seed, window, 0x55504C44])
        ctx = UploadContext(
            window=window,
            cfg=self.cfg,
            plan=self.plan,
            abstract=self.abstract,
            cap=self.cap,
            honest_uids=self.honest_uids,
            last_signs=self.last_signs,
            rng=rng,
            weights=self.posted_weight_shares(),
            gather=self.net.follower.gather_set(window),
        )
        delays = {p.uid: p.upload_delay(self.cfg, rng) for p in self.peers}
        for p in sorted(self.peers, key=lambda q: (q.copies, delays[q.uid], q.uid)):
            data = p.payload(self.pending.get(p.uid), ctx)
            if data is None:
                continue
            self.clock.offset_s = delays[p.uid]
            name = names.gradient_name(window, p.uid, self.version)
            self.net.nodes[p.uid].bucket.put(name, data, if_absent=True)
            ctx.uploaded[p.uid] = data
            self.peer_logs[p.uid].uploads += 1

    def posted_weight_shares(self) -> dict[int, float]:
        """The weights the validator last posted on chain, as shares of their sum."""
        posted = self.net.chain.get_weights(self.cfg.chain.netuid, 0)
        total = sum(posted.values())
        return {u: v / total for u, v in posted.items()} if total > 0 else {}

    def apply(self, window: int) -> None:
        """The peers' outer step of `window` from its gather set, then their sync probes."""
        # Peers gather once the put window has closed.
        self.clock.offset_s = self.cfg.protocol.put_window_s + GATHER_GRACE_S
        self.net.follower.refresh()
        gather = self.net.follower.gather_set(window)
        stack = self.shared.new_stack()
        fetched = self.net.follower.fetch_payloads(gather, window, self.plan, 0.0, stack)
        self.last_signs, _ = self.shared.apply_gathered(window, [fetched[u] for u in gather], stack)
        self.history[window + 1] = self.shared.params
        for old in [w for w in self.history if w < window + 1 - self.max_lag]:
            del self.history[old]
        positions = self.shared.probe_positions(window)
        states = {
            lag: (
                np.asarray(gather_probes(self.theta_at(window + 1 - lag), positions)),
                fingerprint(self.theta_at(window + 1 - lag)),
            )
            for lag in {p.lag for p in self.peers}
        }
        keep = self.cfg.protocol.retention_windows
        for p in self.peers:
            bucket = self.net.nodes[p.uid].bucket
            name = names.debug_name(window, p.uid, self.version)
            bucket.put(name, encode_probes(p.uid, window, *states[p.lag]))
            names.cleanup_own_objects(bucket, p.uid, window, keep, self.version)

    def evaluate_heldout(self, window: int) -> None:
        """Held-out loss of θ after `window`'s outer step (x = outer steps applied)."""
        steps = window + 1 - self.start
        if steps % self.options.eval_every and steps != self.options.windows:
            return
        loss = float(mean_loss(self.shared.params, self.heldout, self.cfg))
        self.heldout_windows.append(steps)
        self.heldout_losses.append(loss)

    def advance(self, c: int) -> int | None:
        """The peers' part of chain window c (the timeline above: steps 1–3 and 5, the validator
        left to the caller): returns the window the validator processes now (step 4), or None
        while it is still `offset_windows` behind the start."""
        n, start = self.options.windows, self.start
        self.net.advance_to(c)
        done = c - 1
        if done < start + n:
            self._timed("upload", self.upload, done)
            self._timed("outer_step", self.apply, done)
            self._timed("heldout", self.evaluate_heldout, done)
        if c < start + n:
            self._timed("train", self.train, c)
        self.clock.offset_s = 0.0  # the validator reads at the chain's time
        v = done - self.offset
        return v if v >= start else None

    # -- the run ------------------------------------------------------------------------------

    def run(self, progress_factory: Callable[..., Any] | None = None) -> dict[str, Any]:
        """Runs the whole simulation and returns (and writes) the summary."""
        t0 = time.perf_counter()
        self.setup()
        setup_s = time.perf_counter() - t0
        n, start = self.options.windows, self.start
        self.heldout_windows = [0]
        self.heldout_losses = [float(mean_loss(self.shared.params, self.heldout, self.cfg))]
        self.train(start)
        bar = None
        if progress_factory is not None:
            bar = progress_factory(total=n + self.offset, desc="windows", unit="win")
        for c in range(start + 1, start + n + self.offset + 1):
            w0 = time.perf_counter()
            v = self.advance(c)
            if v is not None:
                self.outcomes.append(self._timed("validator", self.net.validator.process_window, v))
            self.window_seconds.append(time.perf_counter() - w0)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(self._postfix())
        if bar is not None:
            bar.close()
        self.net.validator.metrics.close()
        baselines = run_baselines(
            self.options.baselines,
            self.cfg,
            self.corpus,
            self.heldout,
            self.peers,
            self.start,
            windows=self.options.windows,
            eval_every=self.options.eval_every,
            progress_factory=progress_factory,
        )
        summary = self.summary(setup_s, time.perf_counter() - t0, baselines)
        (self.out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
        self.net.close()
        return summary

    def _timed(self, phase: str, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.phase_seconds[phase] = self.phase_seconds.get(phase, 0.0) + (
                time.perf_counter() - t0
            )

    def _postfix(self) -> dict[str, str]:
        out = {"held-out": f"{self.heldout_losses[-1]:.3f}"}
        if self.outcomes:
            w = self.outcomes[-1].weights
            out["honest w"] = f"{honest_share(w, self.kinds):.2f}"
        return out

    # -- summary ------------------------------------------------------------------------------

    def summary(self, setup_s: float, total_s: float, baselines: dict[str, Any]) -> dict[str, Any]:
        state = self.net.validator.state
        peers: dict[str, Any] = {}
        for p in self.peers:
            r = state.peer(p.uid)
            log_ = self.peer_logs[p.uid]
            peers[str(p.uid)] = {
                "kind": p.kind,
                "param": p.param,
                "weight": r.weight,
                "final": r.final,
                "ordinal": peer_ordinal(r) if r.rated else None,
                "mu": r.mu,
                "sigma": r.sigma,
                "bma": r.bma,
                "sync": r.sync,
                "sync_x": r.sync_x,
                "eval_count": r.eval_count,
                "slash_counts": dict(r.slash_counts),
                "uploads": log_.uploads,
                "micro_batches": log_.micro_batches,
                "lag": p.lag,
            }
        weights = {p.uid: state.peer(p.uid).weight for p in self.peers}
        # Weights swing from window to window (c = 2 on noisy BMAs); what a peer earns is their
        # average, so the bars use the mean over the last quarter of the run.
        tail = self.outcomes[-max(1, len(self.outcomes) // 4) :]
        tail_mean = {
            p.uid: float(np.mean([o.weights.get(p.uid, 0.0) for o in tail])) if tail else 0.0
            for p in self.peers
        }
        for p in self.peers:
            peers[str(p.uid)]["weight_tail_mean"] = tail_mean[p.uid]
        summary: dict[str, Any] = {
            "scenario": self.options.scenario,
            "peers_spec": self.options.peers_spec,
            "windows": self.options.windows,
            "start_window": self.start,
            "seconds": {
                "total": round(total_s, 1),
                "setup": round(setup_s, 1),
                "per_window_mean": round(float(np.mean(self.window_seconds)), 3),
                "per_window_max": round(float(np.max(self.window_seconds)), 3),
                "per_window_median": round(float(np.median(self.window_seconds)), 3),
                "phases": {k: round(v, 1) for k, v in self.phase_seconds.items()},
            },
            "devices": [str(d) for d in jax.devices()],
            "peers": peers,
            "class_weight": class_weights(weights, self.kinds),
            "honest_weight_share": honest_share(weights, self.kinds),
            "tail_windows": len(tail),
            "class_weight_tail_mean": class_weights(tail_mean, self.kinds),
            "honest_weight_share_tail_mean": honest_share(tail_mean, self.kinds),
            "heldout_loss": {"steps": self.heldout_windows, "loss": self.heldout_losses},
            "baselines": baselines,
            "weights_on_chain": {
                str(k): v for k, v in self.net.chain.get_weights(self.cfg.chain.netuid, 0).items()
            },
            "validator_windows": [o.window for o in self.outcomes],
            "config": to_dict(self.cfg),
        }
        summary["bars"] = evaluate_bars(summary)
        records = read_records(self.out_dir / METRICS_FILE)
        summary["screen"] = screen_agreement(records)
        if self.options.expected_order:
            summary["separation"] = rating_separation(
                records, self.kinds, self.options.expected_order
            )
        return summary


def run_simulation(
    cfg: Config,
    peers: Sequence[Honest],
    out_dir: str | Path,
    options: SimOptions,
    *,
    force: bool = False,
    progress_factory: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Prepares `out_dir`, runs the simulation, writes summary.json; returns the summary."""
    prepare_out_dir(Path(out_dir), force)
    return Simulation(cfg, peers, out_dir, options).run(progress_factory)


__all__ = ["PeerLog", "SimOptions", "Simulation", "run_simulation"]
