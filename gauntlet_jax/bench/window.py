"""`bench window`: one whole validator window, `Validator.process_window`, on this machine.

What is built (in a temporary directory, on the simulator's network: `sim.network`): the embedded
chain on a manual clock with the validator (uid 0) and `--peers` miners registered, each miner's
local bucket, and the real validator, started (it compiles its programs at start-up as a live one
does). Every window each peer is a real `Miner`: its gradient on its own pages at θ_w
(`--micro-batches` of them), its momentum step and DCT top-k, the wire encoding and the upload
inside the put window; the first peer then gathers the window and applies the outer step (θ_{w+1}),
and every peer publishes its sync probes of θ_{w+1}. The peers share one θ (they are all in sync)
and start each window from zero momentum (a fresh miner's first payload), so 20 peers at 1b2 fit
next to the validator on one accelerator; what they upload is what a miner uploads. The
validator processes window w as soon as the peers have gathered it, not `offset_windows` later:
nothing it does reads the chain's present, and the peers need not run windows ahead.

Measured: the validator processes the run's first window (its first call of every program past
start-up: the probes, the overlap matrix, the exact chunks at the window's count) and then the
second, which is the one reported: its wall seconds around `process_window`, and the validator's
own split (`WindowOutcome.phases`, the same figures as the metrics record's `seconds_<phase>`):

  listing      chain refresh, gather set, every peer's bucket listed (activity)
  fetch        the gather set's payload bytes, fetched in order (decoding overlaps on workers)
  decode       what decoding was left after the last bytes were in
  fast_checks  the sync probes (fetched, decoded, compared) and the overlap check
  scoring      the screen of every active peer (fetching the non-gather ones), the exact
               evaluation of as many as the budget holds (`exact_s` of it), the rating
  weights      weights, posting them, the gather set's refresh
  outer_step   the gather set's sign aggregate and θ_{w+1}, the aggregate published
  state_metrics  the state file, a checkpoint when due, the per-peer records

`untimed_s` is the call's seconds outside every phase (the window record's own write).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from gauntlet_jax.bench.measure import Machine, Measured, Options, make_record
from gauntlet_jax.config import Config, with_overrides
from gauntlet_jax.data.corpus import TokenCorpus, open_corpus
from gauntlet_jax.miner.loop import Miner
from gauntlet_jax.node.startup import GATHER_GRACE_S, new_replica
from gauntlet_jax.protocol import names
from gauntlet_jax.protocol.momentum import init_momentum
from gauntlet_jax.protocol.probes import encode_probes
from gauntlet_jax.sim.kinds import PeerGroup, build_peers
from gauntlet_jax.sim.network import SimNetwork, build_network, sim_config

DEFAULT_PEERS = 20
# Each peer's gradient gets Gaussian noise of this many × each tensor's RMS before its momentum
# step: at a fresh θ, from zero momentum, the peers' top-k indices overlap past
# `overlap_threshold` (on a 1-layer tiny model the overlap check excluded 14 of 16 peers from
# scoring without it), which would time a window that scores almost nobody. The record's
# `overlap_slashed` shows what the check did.
DEFAULT_PEER_NOISE = 1.0
# JAX's events for a program built: one XLA compilation (jax._src.dispatch.BACKEND_COMPILE_EVENT)
# or one load from the persistent compilation cache (jax._src.compiler), so a window counts the
# programs it had to build whether or not an earlier process left them in a cache.
COMPILE_EVENTS = (
    "/jax/core/compile/backend_compile_duration",
    "/jax/compilation_cache/cache_retrieval_time_sec",
)
# Where in the put window the peers' uploads land (a fraction of put_window_s).
UPLOAD_AT = 0.1


def bench_window(cfg: Config, opts: Options, machine: Machine) -> Measured:
    """Prepares a network of `opts.peers` miners and times the validator's second window."""
    n_peers = opts.peers or DEFAULT_PEERS
    noise = DEFAULT_PEER_NOISE if opts.peer_noise is None else opts.peer_noise
    with tempfile.TemporaryDirectory(prefix="gauntlet-bench-window-") as tmp:
        fields = run_windows(cfg, n_peers, opts.micro_batches, noise, Path(tmp))
    warm, measured = fields.pop("windows")
    return Measured(
        make_record(
            "window",
            cfg,
            machine,
            batch_shape=None,
            first_s=warm["total_s"],
            times=[measured["total_s"]],
            throughput=1.0 / measured["total_s"],
            unit="windows/s",
            flops=0.0,  # not counted: checks, screen, exact scoring and the outer step mixed
            peers=n_peers,
            micro_batches=opts.micro_batches,
            peer_noise=noise,
            warmup="window 1 (compiles what start-up did not) processed first; window 2 measured",
            **measured,
            warmup_window=warm,
            **fields,
        ),
        None,
    )


def run_windows(
    cfg: Config, n_peers: int, micro_batches: int, noise: float, out_dir: Path
) -> dict[str, Any]:
    """Builds the network in `out_dir` and processes two windows; returns the preparation's
    seconds and, under "windows", both windows' figures."""
    # One config for every node (the validator never reads the miners' micro-batch bound), so
    # the programs they share compile once.
    cfg = sim_config(
        with_overrides(cfg, [f"train.max_micro_batches={micro_batches}"]),
        out_dir,
        tensorboard=False,
    )
    t0 = time.perf_counter()
    corpus = open_corpus(cfg.data, progress=False)
    net = build_network(cfg, build_peers([PeerGroup("honest", n_peers)]), corpus, out_dir)
    setup_s = time.perf_counter() - t0
    try:
        peers = PeerWindows(cfg, net, corpus, noise)
        assert net.validator.replica is not None
        start = net.validator.replica.start_window
        windows = []
        for window in (start, start + 1):
            prepared = peers.run(window)
            windows.append({"window": window, **prepared, **validator_window(net, window)})
    finally:
        net.validator.metrics.close()
        net.close()
    return {
        "setup_s": setup_s,
        "miner_warmup_s": peers.warmup_s,
        "windows": windows,
    }


def validator_window(net: SimNetwork, window: int) -> dict[str, Any]:
    """One `process_window`: its wall seconds, the validator's split and what it did."""
    validator = net.validator
    with compilations() as compiled:
        start = time.perf_counter()
        outcome = validator.process_window(window)
        total = time.perf_counter() - start
    records = [r for r in validator.metrics.records() if r["window"] == window]
    record = next(r for r in records if r.get("kind") == "window")
    overlap_slashed = sum("overlap" in r["slashes"] for r in records if r.get("kind") == "peer")
    return {
        "total_s": total,
        "phases_s": dict(outcome.phases),
        "untimed_s": total - sum(outcome.phases.values()),
        # Programs compiled or loaded from the persistent cache inside the window (shapes
        # start-up did not cover).
        "compiles": len(compiled),
        "compile_s": sum(compiled),
        "exact_s": record["exact_seconds"],
        "gathered": outcome.gathered,
        "gather_size": record["gather_size"],
        "active": record["active"],
        "screened": record["screened"],
        "exact": record["exact"],
        "posted_weights": outcome.posted,
        "overlap_slashed": overlap_slashed,
    }


@contextmanager
def compilations() -> Iterator[list[float]]:
    """The seconds of every program compiled or loaded from the persistent cache in the block,
    in a list filled as they happen."""
    seconds: list[float] = []

    def listen(event: str, duration: float, **_: Any) -> None:
        if event in COMPILE_EVENTS:
            seconds.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield seconds
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


@jax.jit
def _with_noise(grads: Any, key: jax.Array, scale: float) -> Any:
    """grads + scale · RMS(leaf) · N(0, 1), leaf by leaf."""
    leaves, treedef = jax.tree.flatten(grads)
    keys = jax.random.split(key, len(leaves))
    return treedef.unflatten(
        [
            g + scale * jnp.sqrt(jnp.mean(g * g)) * jax.random.normal(k, g.shape, g.dtype)
            for g, k in zip(leaves, keys, strict=True)
        ]
    )


class PeerWindows:
    """The network's miners, in sync on one shared θ: each window's payloads, uploads, outer
    step and probes."""

    def __init__(self, cfg: Config, net: SimNetwork, corpus: TokenCorpus, noise: float) -> None:
        self.cfg = cfg
        self.net = net
        self.noise = noise
        assert net.validator.replica is not None
        self.miners = [Miner(cfg, node, corpus) for node in net.nodes.values()]
        t0 = time.perf_counter()
        self.miners[0].warm_up()
        self.warmup_s = time.perf_counter() - t0
        self.replica = new_replica(cfg, net.validator.replica.start_window)
        for miner in self.miners:
            miner.replica = self.replica

    def run(self, window: int) -> dict[str, Any]:
        """Window `window` on the peers' side, the chain at its first block; returns its
        seconds and bytes."""
        t0 = time.perf_counter()
        self.net.advance_to(window)
        payloads = {m.uid: self.payload(m, window) for m in self.miners}
        trained_at = time.perf_counter()
        clock, protocol = self.net.clock, self.cfg.protocol
        self.net.advance_to(window + 1)
        clock.offset_s = UPLOAD_AT * protocol.put_window_s
        uploaded = sum(m.upload(window, payloads[m.uid]) for m in self.miners)
        uploaded_at = time.perf_counter()
        clock.offset_s = protocol.put_window_s + GATHER_GRACE_S
        # One peer gathers and steps the shared θ (publishing its probes); the others publish
        # the same θ's probes.
        self.miners[0].node.network.refresh()
        gathered, _ = self.miners[0].apply_window(window)
        probes = self.replica.probes(window)
        fingerprint = self.replica.fingerprint()
        for miner in self.miners[1:]:
            data = encode_probes(miner.uid, window, probes, fingerprint, stack=miner.stack)
            miner.node.bucket.put(names.debug_name(window, miner.uid, protocol.version), data)
        return {
            "peers_payloads_s": trained_at - t0,
            "peers_upload_s": uploaded_at - trained_at,
            "peers_outer_step_s": time.perf_counter() - uploaded_at,
            "peers_gathered": gathered,
            "payload_bytes": uploaded,
        }

    def payload(self, miner: Miner, window: int) -> bytes:
        """The miner's own gradient (with the bench's noise), momentum step and encoding, from
        zero momentum (dropped after, so only one peer's momentum is ever held)."""
        miner.momentum, miner.momentum_steps = init_momentum(self.replica.params), 0
        grads, _, _ = miner.train(window, deadline=math.inf)
        if self.noise > 0:
            key = jax.random.fold_in(jax.random.key(miner.uid), window)
            grads = _with_noise(grads, key, self.noise)
        data = miner.make_payload(window, grads)
        miner.momentum = None
        return data
