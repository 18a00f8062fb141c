"""The simulator: many peers with behaviours and the real validator in one process, on simulated
time.

Nothing here re-implements a rule. The chain is the embedded SQLite chain on a manual clock, the
buckets are local directories whose "server clock" follows the chain's simulated time
(`LocalBucket(clock=...)`), the validator is `Validator.process_window`, the peers' outer step is
`Replica.apply_gathered` over `Network.gather_set` / `fetch_payloads`, and the peers' inner steps
are one jitted `vmap` over a peer axis (`protocol.honest.peer_updates`), one call per distinct θ
(every synchronised peer shares θ_w; a stale peer holds θ_{w−L}).

The timeline of chain window c (the loop's step), as a live network would produce it:

    1. the chain moves to the first block of c: window c−1 has ended, its put window opens at
       t_min = timestamp(first block of c);
    2. every peer uploads its payload of c−1 at t_min + its delay (late peers: after the put
       window; copycats: after the peer they copy);
    3. every peer gathers c−1's payloads and applies the outer step → θ_c, and publishes its sync
       probes of c−1 (the stale peer publishes those of its lagging θ);
    4. the validator processes window c−1−offset_windows (it runs that far behind the chain);
    5. every training peer computes its payload of window c on its θ (uploaded at step 1 of c+1).

The peer axis can be sharded over devices (`shard_peers=True`, several devices): the stacked
batches and momenta are placed with a `peers` mesh axis and XLA partitions the vmapped step; θ is
replicated. With one device it is a plain vmap.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from gauntlet_jax.chain import open_chain
from gauntlet_jax.chain.keys import dev_hotkey
from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.compress.codec import encode_payload, max_payload_bytes
from gauntlet_jax.config import Config, to_dict, with_overrides
from gauntlet_jax.data.pages import heldout_batches
from gauntlet_jax.data.shards import TokenCorpus, open_corpus
from gauntlet_jax.localchain import create_network
from gauntlet_jax.model import grad, llama
from gauntlet_jax.node.metrics import METRICS_FILE, read_records
from gauntlet_jax.node.replica import initial_params
from gauntlet_jax.node.startup import GATHER_GRACE_S, Node, new_replica
from gauntlet_jax.protocol import names
from gauntlet_jax.protocol.fingerprint import fingerprint
from gauntlet_jax.protocol.honest import mean_loss, peer_updates, stack_peer_batches
from gauntlet_jax.protocol.momentum import init_momentum
from gauntlet_jax.protocol.probes import encode_probes, gather_probes
from gauntlet_jax.protocol.schedule import first_block_of_window
from gauntlet_jax.sim.peers import HONEST_KINDS, Honest, UploadContext
from gauntlet_jax.storage.local import LocalBucket
from gauntlet_jax.validator.loop import Validator, WindowOutcome
from gauntlet_jax.validator.rating import Rating, ordinal

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
# What a simulation writes into its directory (removed by `prepare_out_dir(force=True)`).
SIM_ARTEFACTS = (
    "buckets",
    "checkpoints",
    "chain.db",
    "chain.db-wal",
    "chain.db-shm",
    METRICS_FILE,
    "validator_state.json",
    SUMMARY_FILE,
    "report.html",
    "plots",
    "tb",
)


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
    progress: bool = True
    tensorboard: bool = False
    # Kinds in the order their ratings should end up (Figure 2), for the separation figure.
    expected_order: tuple[str, ...] = ()
    seed: int = 0


class SimClock:
    """Simulated server time: the chain's timestamp of its current block plus an offset the
    simulator sets before each write (seconds into the put window, say)."""

    def __init__(self, chain: LocalChain) -> None:
        self.chain = chain
        self.offset_s = 0.0

    def __call__(self) -> float:
        return self.chain.block_timestamp(self.chain.current_block()) + self.offset_s


def sim_config(cfg: Config, out_dir: Path, *, tensorboard: bool) -> Config:
    """The run's config with every path inside `out_dir` (chain, buckets, metrics)."""
    root = out_dir.resolve()
    return with_overrides(
        cfg,
        [
            f"chain.url=sqlite:///{root}/chain.db",
            f"storage.bucket={root}/buckets/{{hotkey}}",
            f"storage.checkpoint_dir={root}/checkpoints/{{hotkey}}",
            f"run.out_dir={root}",
            f"run.tensorboard={'true' if tensorboard else 'false'}",
            # The simulation never restarts a node, so checkpoints would only cost time.
            "protocol.checkpoint_every=1000000000",
        ],
    )


def prepare_out_dir(out_dir: Path, force: bool) -> None:
    """Refuses to mix two runs: an earlier simulation's files are removed only with `force`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    present = [name for name in SIM_ARTEFACTS if (out_dir / name).exists()]
    if present and not force:
        raise FileExistsError(
            f"{out_dir} holds an earlier run ({', '.join(present)}); pass --force to replace it"
        )
    for name in present:
        path = out_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


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
        self.peer_logs = {p.uid: PeerLog() for p in self.peers}
        self.version = self.cfg.protocol.version
        self.offset = self.cfg.validator.offset_windows
        self.heldout_windows: list[int] = []
        self.heldout_losses: list[float] = []
        self.outcomes: list[WindowOutcome] = []
        self.window_seconds: list[float] = []
        # Seconds spent per phase over the run (first calls include compilation).
        self.phase_seconds: dict[str, float] = {}
        self._chains: list[LocalChain] = []

    # -- set-up -------------------------------------------------------------------------------

    def _open_chain(self, index: int) -> LocalChain:
        chain = open_chain(self.cfg.chain, dev_hotkey(index))
        assert isinstance(chain, LocalChain)
        self._chains.append(chain)
        return chain

    def _clocked(self, node: Node) -> Node:
        """The node's own bucket with the simulated server clock (readers need no clock: the
        time is in the file)."""
        node.bucket = LocalBucket(node.url[len("file://") :], clock=self.clock)
        return node

    def setup(self) -> None:
        cfg = self.cfg
        create_network(cfg, len(self.peers) + 1, force=True, manual_clock=True)
        self.corpus: TokenCorpus = open_corpus(cfg.data, progress=False)
        self.heldout = jnp.asarray(heldout_batches(self.corpus, cfg))
        chain = self._open_chain(0)
        self.chain = chain
        self.clock = SimClock(chain)
        self.validator = Validator(
            cfg, self._clocked(Node.connect(cfg, "validator", chain)), self.corpus, self.out_dir
        )
        self.nodes: dict[int, Node] = {}
        for p in self.peers:
            node = Node.connect(cfg, f"peer{p.uid}-{p.kind}", self._open_chain(p.uid))
            if node.uid != p.uid:
                raise RuntimeError(f"peer {p.kind} registered as uid {node.uid}, expected {p.uid}")
            self.nodes[p.uid] = self._clocked(node)
        # The network as every synchronised peer sees it (they all compute the same gather set).
        self.follower = self.nodes[self.peers[0].uid].network
        self.validator.start(threading.Event())
        assert self.validator.replica is not None
        self.start = self.validator.replica.start_window
        self.shared = new_replica(cfg, self.start)
        self.plan = self.shared.plan
        self.abstract = llama.abstract_params(cfg.model)
        self.cap = min(cfg.compress.max_payload_bytes, max_payload_bytes(self.plan))
        self.history: dict[int, Any] = {self.start: self.shared.params}
        self.max_lag = max((p.lag for p in self.peers), default=0)
        self.groups: dict[int, list[Honest]] = {}
        for p in self.peers:
            if p.trains:
                self.groups.setdefault(p.lag, []).append(p)
                self.peer_logs[p.uid].micro_batches = p.micro_batches(cfg)
        self.mesh = self._peer_mesh() if self.options.shard_peers else None
        self.momentum = {
            lag: self._place(self._stack_momentum(len(group))) for lag, group in self.groups.items()
        }
        self.honest_uids = [p.uid for p in self.peers if p.kind == "honest"]
        self.last_signs: Any = None
        self.pending: dict[int, bytes] = {}
        self._advance_to(self.start)

    def _peer_mesh(self) -> jax.sharding.Mesh | None:
        n = jax.device_count()
        if n < 2:
            return None
        return jax.make_mesh((n,), ("peers",), axis_types=(AxisType.Auto,))

    def _padded(self, n: int) -> int:
        if self.mesh is None:
            return n
        d = self.mesh.size
        return -(-n // d) * d

    def _place(self, tree: Any) -> Any:
        """Peer-axis arrays onto the `peers` mesh axis (a no-op on one device)."""
        if self.mesh is None:
            return tree
        sharding = NamedSharding(self.mesh, P("peers"))
        return jax.tree.map(lambda x: jax.device_put(x, sharding), tree)

    def _stack_momentum(self, n: int) -> Any:
        zeros = init_momentum(self.shared.params)
        return jax.tree.map(lambda x: jnp.zeros((self._padded(n), *x.shape), x.dtype), zeros)

    def _advance_to(self, window: int) -> None:
        target = first_block_of_window(window, self.cfg.protocol.blocks_per_window)
        now = self.chain.current_block()
        if target > now:
            self.chain.advance(target - now)

    def theta_at(self, window: int) -> Any:
        """θ_window of the network (θ_start before the run began)."""
        return self.history[max(window, self.start)]

    # -- one window ---------------------------------------------------------------------------

    def train(self, window: int) -> None:
        """Every training peer's payload of `window`: one vmapped inner step per distinct θ."""
        cfg = self.cfg
        lr = self.shared.lr(window)
        step = window - self.start
        self.pending = {}
        for lag, group in self.groups.items():
            batches = [
                p.training_batches(self.corpus, cfg, window)[: p.micro_batches(cfg)] for p in group
            ]
            micro = max(p.micro_batches(cfg) for p in group)
            stacked, n_valid = stack_peer_batches(batches, micro)
            pad = self._padded(len(group)) - len(group)
            if pad:
                stacked = np.concatenate([stacked, np.zeros((pad, *stacked.shape[1:]), np.int32)])
                n_valid = np.concatenate([n_valid, np.zeros(pad, np.int32)])
            result, loss_P = peer_updates(
                self.theta_at(window - lag),
                self.momentum[lag],
                self._place(jnp.asarray(stacked)),
                self._place(jnp.asarray(n_valid)),
                lr,
                step,
                cfg,
                self.plan,
            )
            self.momentum[lag] = result.m
            idx, vals = jax.tree.map(np.asarray, result.idx), jax.tree.map(np.asarray, result.vals)
            quant = None if result.quant is None else jax.tree.map(np.asarray, result.quant)
            losses = np.asarray(loss_P)
            for i, p in enumerate(group):
                row = _row(i)
                self.pending[p.uid] = encode_payload(
                    p.uid,
                    window,
                    jax.tree.map(row, idx),
                    jax.tree.map(row, vals),
                    self.plan,
                    None if quant is None else jax.tree.map(row, quant),
                )
                self.peer_logs[p.uid].train_loss.append(float(losses[i]))

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
        )
        delays = {p.uid: p.upload_delay(self.cfg, rng) for p in self.peers}
        for p in sorted(self.peers, key=lambda q: (q.copies, delays[q.uid], q.uid)):
            data = p.payload(self.pending.get(p.uid), ctx)
            if data is None:
                continue
            self.clock.offset_s = delays[p.uid]
            name = names.gradient_name(window, p.uid, self.version)
            self.nodes[p.uid].bucket.put(name, data, if_absent=True)
            ctx.uploaded[p.uid] = data
            self.peer_logs[p.uid].uploads += 1

    def apply(self, window: int) -> None:
        """The peers' outer step of `window` from its gather set, then their sync probes."""
        # Peers gather once the put window has closed.
        self.clock.offset_s = self.cfg.protocol.put_window_s + GATHER_GRACE_S
        self.follower.refresh()
        gather = self.follower.gather_set(window)
        fetched = self.follower.fetch_payloads(gather, window, self.plan, deadline=0.0)
        self.last_signs, _ = self.shared.apply_gathered(window, [fetched[u] for u in gather])
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
            bucket = self.nodes[p.uid].bucket
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
            self._advance_to(c)
            done = c - 1
            if done < start + n:
                self._timed("upload", self.upload, done)
                self._timed("outer_step", self.apply, done)
                self._timed("heldout", self.evaluate_heldout, done)
            v = done - self.offset
            if v >= start:
                self.clock.offset_s = 0.0
                self.outcomes.append(self._timed("validator", self.validator.process_window, v))
            if c < start + n:
                self._timed("train", self.train, c)
            self.window_seconds.append(time.perf_counter() - w0)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(self._postfix())
        if bar is not None:
            bar.close()
        self.validator.metrics.close()
        baselines = self.run_baselines(progress_factory)
        summary = self.summary(setup_s, time.perf_counter() - t0, baselines)
        (self.out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
        for chain in self._chains:
            chain.close()
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
            out["honest w"] = f"{self._honest_share(w):.2f}"
        return out

    def _kind(self, uid: int) -> str:
        return next((p.kind for p in self.peers if p.uid == uid), "?")

    def _honest_share(self, weights: dict[int, float]) -> float:
        total = sum(weights.values())
        honest = sum(v for u, v in weights.items() if self._kind(u) in HONEST_KINDS)
        return honest / total if total > 0 else 0.0

    # -- baselines ----------------------------------------------------------------------------

    def run_baselines(self, progress_factory: Callable[..., Any] | None = None) -> dict[str, Any]:
        honest = [p for p in self.peers if p.kind in HONEST_KINDS]
        out: dict[str, Any] = {}
        if not honest:
            return out
        runners = {"honest": honest_baseline, "adamw": adamw_baseline}
        for name in self.options.baselines:
            if name not in runners:
                raise ValueError(f"unknown baseline {name!r} ({', '.join(runners)})")
            bar = None
            if progress_factory is not None:
                bar = progress_factory(total=self.options.windows, desc=name, unit="step")
            out[name] = runners[name](
                self.cfg, self.corpus, self.heldout, honest, self.start, self.options, bar
            )
            if bar is not None:
                bar.close()
        return out

    # -- summary ------------------------------------------------------------------------------

    def summary(self, setup_s: float, total_s: float, baselines: dict[str, Any]) -> dict[str, Any]:
        state = self.validator.state
        peers: dict[str, Any] = {}
        for p in self.peers:
            r = state.peer(p.uid)
            log_ = self.peer_logs[p.uid]
            peers[str(p.uid)] = {
                "kind": p.kind,
                "param": p.param,
                "weight": r.weight,
                "final": r.final,
                "ordinal": ordinal(Rating(r.mu, r.sigma)) if r.rated else None,  # type: ignore[arg-type]
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
        kinds = {p.uid: p.kind for p in self.peers}
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
            "class_weight": class_weights(weights, kinds),
            "honest_weight_share": self._honest_share(weights),
            "tail_windows": len(tail),
            "class_weight_tail_mean": class_weights(tail_mean, kinds),
            "honest_weight_share_tail_mean": self._honest_share(tail_mean),
            "heldout_loss": {"steps": self.heldout_windows, "loss": self.heldout_losses},
            "baselines": baselines,
            "weights_on_chain": {
                str(k): v for k, v in self.chain.get_weights(self.cfg.chain.netuid, 0).items()
            },
            "validator_windows": [o.window for o in self.outcomes],
            "config": to_dict(self.cfg),
        }
        summary["bars"] = evaluate_bars(summary)
        if self.options.expected_order:
            records = read_records(self.out_dir / METRICS_FILE)
            summary["separation"] = rating_separation(records, kinds, self.options.expected_order)
        return summary


def _row(i: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: x[i]


# ---------------------------------------------------------------------------------------------
# Baselines on the same tokens


def honest_baseline(
    cfg: Config,
    corpus: TokenCorpus,
    heldout: jax.Array,
    honest: Sequence[Honest],
    start: int,
    options: SimOptions,
    bar: Any = None,
) -> dict[str, Any]:
    """The scenario's honest peers alone: the same pages, θ_0 and schedule, every payload
    gathered, no validator (`protocol.honest.train_honest`)."""
    from gauntlet_jax.protocol.honest import train_honest

    t0 = time.perf_counter()
    _, curve = train_honest(
        cfg,
        lambda i, w: honest[i].training_batches(corpus, cfg, start + w)[
            : honest[i].micro_batches(cfg)
        ],
        np.asarray(heldout),
        n_peers=len(honest),
        n_windows=options.windows,
        eval_every=options.eval_every,
        log=None if bar is None else (lambda _line: bar.update(options.eval_every)),
    )
    return {
        "steps": curve.windows,
        "loss": curve.heldout_loss,
        "peers": len(honest),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def adamw_baseline(
    cfg: Config,
    corpus: TokenCorpus,
    heldout: jax.Array,
    honest: Sequence[Honest],
    start: int,
    options: SimOptions,
    bar: Any = None,
) -> dict[str, Any]:
    """Centralised AdamW on exactly the tokens the honest peers trained on: step k takes the
    micro-batches all honest peers used in window start+k (`model.grad.adamw_step`)."""
    t0 = time.perf_counter()
    optimizer = grad.make_adamw(cfg.train, options.windows)
    params = initial_params(cfg)
    opt_state = optimizer.init(params)
    steps, losses = [0], [float(mean_loss(params, heldout, cfg))]
    for k in range(options.windows):
        tokens = np.concatenate(
            [p.training_batches(corpus, cfg, start + k)[: p.micro_batches(cfg)] for p in honest]
        )
        params, opt_state, _ = grad.adamw_step(
            params, opt_state, jnp.asarray(tokens), cfg.model, optimizer
        )
        if (k + 1) % options.eval_every == 0 or k + 1 == options.windows:
            steps.append(k + 1)
            losses.append(float(mean_loss(params, heldout, cfg)))
        if bar is not None:
            bar.update(1)
    return {
        "steps": steps,
        "loss": losses,
        "peers": len(honest),
        "seconds": round(time.perf_counter() - t0, 1),
        "lr": cfg.train.adamw_lr,
    }


# ---------------------------------------------------------------------------------------------
# Judging a run


def class_weights(weights: dict[int, float], kinds: dict[int, str]) -> dict[str, float]:
    """Weight share of each peer kind (sums to 1 when any weight is positive)."""
    total = sum(weights.values())
    out: dict[str, float] = {}
    for uid, kind in kinds.items():
        out[kind] = out.get(kind, 0.0) + (weights.get(uid, 0.0) / total if total > 0 else 0.0)
    return out


# Bars of the default scenario (issue 7): honest ≥ 90 %, no adversary class above 2 %, the
# sybil group below one honest peer, held-out loss drop ≥ 90 % of the all-honest run's.
HONEST_SHARE_BAR = 0.90
ADVERSARY_CLASS_BAR = 0.02
LOSS_DROP_BAR = 0.90


def evaluate_bars(summary: dict[str, Any]) -> dict[str, Any]:
    """The issue's bars, each with its numbers and whether it passed (absent when the scenario
    lacks the peers a bar is about). Weights are the mean over the run's last quarter
    (`weight_tail_mean`); the final snapshot is shown beside."""
    peers = summary["peers"]
    shares = summary["class_weight_tail_mean"]
    bars: dict[str, Any] = {}
    kinds = {p["kind"] for p in peers.values()}
    share = summary["honest_weight_share_tail_mean"]
    bars["honest_share"] = {
        "value": share,
        "final": summary["honest_weight_share"],
        "bar": HONEST_SHARE_BAR,
        "passed": share >= HONEST_SHARE_BAR,
    }
    adversaries = {k: v for k, v in shares.items() if k not in HONEST_KINDS and k != "sybil"}
    if adversaries:
        worst = max(adversaries, key=lambda k: adversaries[k])
        bars["adversary_class_max"] = {
            "value": adversaries[worst],
            "class": worst,
            "final": summary["class_weight"][worst],
            "bar": ADVERSARY_CLASS_BAR,
            "passed": adversaries[worst] <= ADVERSARY_CLASS_BAR,
        }
    honest_w = [p["weight_tail_mean"] for p in peers.values() if p["kind"] == "honest"]
    if "sybil" in kinds and honest_w:
        sybil = sum(p["weight_tail_mean"] for p in peers.values() if p["kind"] == "sybil")
        mean_honest = float(np.mean(honest_w))
        bars["sybil_vs_one_honest"] = {
            "value": sybil,
            "one_honest_mean": mean_honest,
            "passed": sybil < mean_honest,
        }
    if "malformed" in kinds:
        invalid = sum(
            p["slash_counts"].get("invalid", 0) + p["slash_counts"].get("eval_invalid", 0)
            for p in peers.values()
            if p["kind"] == "malformed"
        )
        completed = len(summary["validator_windows"]) == summary["windows"]
        bars["malformed_never_stopped"] = {
            "windows_completed": len(summary["validator_windows"]),
            "rejections": invalid,
            "passed": completed and invalid > 0,
        }
    base = summary["baselines"].get("honest")
    if base:
        sim = summary["heldout_loss"]["loss"]
        drop_sim, drop_base = sim[0] - sim[-1], base["loss"][0] - base["loss"][-1]
        ratio = drop_sim / drop_base if drop_base > 0 else math.nan
        bars["heldout_drop_vs_all_honest"] = {
            "value": ratio,
            "final_loss": sim[-1],
            "all_honest_final_loss": base["loss"][-1],
            "bar": LOSS_DROP_BAR,
            "passed": bool(ratio >= LOSS_DROP_BAR),
        }
    return bars


def rating_separation(
    records: Sequence[dict[str, Any]], kinds: dict[int, str], expected: Sequence[str]
) -> dict[str, Any]:
    """Figure 2's claim in numbers: how often the per-window LossScores of the expected peers
    come in the expected order (noisy), and from which window on their ratings (ordinals) stay
    in that order (the rating separates them)."""
    order = [next(u for u, k in sorted(kinds.items()) if k == kind) for kind in expected]
    by_window: dict[int, dict[int, dict[str, Any]]] = {}
    for r in records:
        if r.get("kind") == "peer" and r["uid"] in order:
            by_window.setdefault(r["window"], {})[r["uid"]] = r
    windows = sorted(by_window)
    score_pairs = score_right = 0
    rating_ok: list[bool] = []
    for w in windows:
        rows = by_window[w]
        scored = [u for u in order if rows.get(u, {}).get("evaluated")]
        for a, b in itertools.pairwise(scored):
            score_pairs += 1
            score_right += rows[a]["improvement_random"] > rows[b]["improvement_random"]
        ords = [rows.get(u, {}).get("ordinal") for u in order]
        known = [o for o in ords if o is not None]
        rating_ok.append(
            len(known) == len(ords) and all(x > y for x, y in itertools.pairwise(known))
        )
    settled = None
    for i in range(len(windows)):
        if all(rating_ok[i:]):
            settled = windows[i]
            break
    first = windows[0] if windows else None
    return {
        "order": [f"{u} ({kinds[u]})" for u in order],
        "loss_score_pairs_in_order": score_right / score_pairs if score_pairs else None,
        "rating_in_order_from_window": settled,
        "windows_to_separate": None if settled is None or first is None else settled - first + 1,
        "rating_in_order_fraction": float(np.mean(rating_ok)) if rating_ok else None,
    }


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


__all__ = [
    "SimClock",
    "SimOptions",
    "Simulation",
    "adamw_baseline",
    "class_weights",
    "evaluate_bars",
    "honest_baseline",
    "rating_separation",
    "run_simulation",
    "sim_config",
]
