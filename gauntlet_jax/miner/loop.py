"""The miner's window loop (GAUNTLET.md §1.3).

Each window w, holding θ_w:
  1. gradients on its pages (uid, w), one micro-batch at a time until the window's compute budget
     is spent (at least one micro-batch, else no upload);
  2. error-feedback momentum → DCT top-k payload, uploaded once window w has ended (inside the put
     window);
  3. the gather set's payloads for w, validated (a bad peer is skipped), and the shared outer step
     → θ_{w+1};
  4. sync probes of θ_{w+1} published (the debug object the validator compares).

`Behaviour` lets the simulator swap what a peer trains on or uploads without a second copy of
this loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gauntlet_jax.compress.codec import encode_payload
from gauntlet_jax.config import Config
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.data.pages import batches_for
from gauntlet_jax.errors import PreconditionFailed, StorageError
from gauntlet_jax.model import grad, llama
from gauntlet_jax.model.sharding import to_host
from gauntlet_jax.node import multihost
from gauntlet_jax.node.metrics import open_exporter
from gauntlet_jax.node.placement import Placement
from gauntlet_jax.node.replica import Replica, node_placement
from gauntlet_jax.node.stack import stack_string
from gauntlet_jax.node.startup import (
    Node,
    checkpoint_store,
    maybe_checkpoint,
    new_replica,
    restore_replica,
)
from gauntlet_jax.protocol import names
from gauntlet_jax.protocol.momentum import init_momentum, momentum_step
from gauntlet_jax.protocol.probes import encode_probes

log = logging.getLogger(__name__)

# Seconds after the put window opens before uploading (clock granularity, chain time skew).
UPLOAD_MARGIN_S = 0.1


# The accumulator is donated: one copy of θ-sized gradients lives on the devices, not two.
_grad_into = jax.jit(grad.add_grad, static_argnames=("cfg",), donate_argnums=0)


@dataclass
class WindowReport:
    window: int
    n_batches: int = 0
    train_loss: float = float("nan")
    uploaded_bytes: int = 0
    upload_s: float = 0.0
    gathered: int = 0
    gather_size: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        """The numbers of the window (what the Prometheus endpoint shows)."""
        return {
            "micro_batches": self.n_batches,
            "train_loss": self.train_loss,
            "uploaded_bytes": self.uploaded_bytes,
            "upload_seconds": self.upload_s,
            "gathered": self.gathered,
            "gather_size": self.gather_size,
            "window_seconds": self.seconds,
        }

    def line(self, uid: int) -> str:
        """The window in one log line."""
        upload = (
            f"uploaded {self.uploaded_bytes / 1e6:.2f} MB in {self.upload_s:.1f}s"
            if self.uploaded_bytes
            else "nothing uploaded"
        )
        return (
            f"miner {uid} window {self.window}: {self.n_batches} micro-batches, loss "
            f"{self.train_loss:.4f}, {upload}, gathered {self.gathered}/{self.gather_size}, "
            f"{self.seconds:.1f}s"
        )


def run_window_programs(cfg: Config, corpus: TokenCorpus, placement: Placement, uid: int) -> float:
    """Runs a miner window's programs once on θ of window 0 (one micro-batch's gradient,
    momentum + compression, the outer step of an empty gather set, the probes) and returns the
    seconds it took: the first call compiles them; a second one measures a window's least work
    (`localnet` sizes its windows from it)."""
    t0 = time.perf_counter()
    replica = new_replica(cfg, 0, placement)
    tokens = placement.place_tokens(batches_for(corpus, uid, 0, cfg)[0], ("batch", "seq"))
    acc = jax.tree.map(jnp.zeros_like, replica.params)
    acc, _ = _grad_into(acc, replica.params, tokens, cfg=cfg.model)
    grads = jax.tree.map(lambda g: g / 1, acc)  # as `Miner.train` takes the mean
    result = momentum_step(init_momentum(grads), grads, 1e-3, 0, cfg, replica.plan)
    idx, vals, quant = to_host((result.idx, result.vals, result.quant))
    encode_payload(uid, 0, idx, vals, replica.plan, quant)
    replica.apply_gathered(0, [])
    replica.probes(0)
    return time.perf_counter() - t0


# A payload transform: (window, honest payload bytes) → bytes to upload, or None to upload nothing.
PayloadHook = Callable[[int, bytes], bytes | None]


class Miner:
    """One miner: a `Node` plus θ (`Replica`), momentum and its data."""

    def __init__(
        self,
        cfg: Config,
        node: Node,
        corpus: TokenCorpus,
        *,
        payload_hook: PayloadHook | None = None,
    ) -> None:
        self.cfg = cfg
        self.node = node
        self.corpus = corpus
        self.payload_hook = payload_hook
        self.replica: Replica | None = None
        self.momentum: Any = None
        self.momentum_steps = 0
        self.checkpoints = checkpoint_store(cfg, node.name)
        self.placement = node_placement(cfg)
        self.stack = stack_string()  # published with every window's probes

    @property
    def uid(self) -> int:
        return self.node.uid

    def start(self, stop: threading.Event, start_timeout_s: float = 600.0) -> Replica:
        """Waits for the run's start window, then catches θ up to the current window."""
        log.info(
            "miner uid %d: compiling the window's programs (a minute or more on CPU)", self.uid
        )
        t0 = time.perf_counter()
        self.warm_up()
        log.info("miner uid %d: compiled in %.1fs", self.uid, time.perf_counter() - t0)
        self.node.commit_bucket()  # published once compiled: a committed miner is ready
        log.info("miner uid %d: waiting for the lead validator's start window", self.uid)
        start = self.node.wait_for_start_window(stop, start_timeout_s)
        replica, momentum = restore_replica(
            self.cfg, self.checkpoints, start, self.placement, count_error=self.node.count_error
        )
        self.replica = replica
        self.momentum = init_momentum(replica.params) if momentum is None else momentum
        # Windows whose put window has surely closed; the loop handles the newest one.
        self.node.catch_up(replica, max(start, self.node.current_window() - 1))
        log.info("miner uid %d at window %d (start %d)", self.uid, replica.next_window, start)
        return replica

    def warm_up(self) -> None:
        """Compiles the window's programs on throwaway inputs, so the first real window is not
        spent compiling."""
        run_window_programs(self.cfg, self.corpus, self.placement, self.uid)

    # -- one window -------------------------------------------------------------------------

    def train(self, window: int, deadline: float) -> tuple[llama.Params, int, float]:
        """Mean gradient over as many of the window's micro-batches as fit before `deadline`
        (each host sends its devices only their rows of each micro-batch)."""
        assert self.replica is not None
        batches = batches_for(self.corpus, self.uid, window, self.cfg)
        limit = min(len(batches), self.cfg.train.max_micro_batches)
        acc = jax.tree.map(jnp.zeros_like, self.replica.params)
        losses = []
        for i in range(limit):
            if i > 0:
                # Dispatch is asynchronous: without waiting for the last micro-batch the clock
                # reads a time before its work is done, and every batch is queued in time.
                jax.block_until_ready(losses[-1])
                if self.node.now() >= deadline:
                    break
            tokens = self.replica.placement.place_tokens(batches[i], ("batch", "seq"))
            acc, loss = _grad_into(acc, self.replica.params, tokens, cfg=self.cfg.model)
            losses.append(loss)
        n = len(losses)
        mean = jax.tree.map(lambda g: g / n, acc)
        return mean, n, float(np.mean(to_host(losses)))

    def make_payload(self, window: int, grads: llama.Params) -> bytes:
        assert self.replica is not None
        result = momentum_step(
            self.momentum,
            grads,
            self.replica.lr(window),
            self.momentum_steps,
            self.cfg,
            self.replica.plan,
        )
        self.momentum = result.m
        self.momentum_steps += 1
        idx, vals, quant = to_host((result.idx, result.vals, result.quant))
        return encode_payload(self.uid, window, idx, vals, self.replica.plan, quant)

    def upload(self, window: int, payload: bytes) -> int:
        data = self.payload_hook(window, payload) if self.payload_hook else payload
        if data is None:
            return 0
        name = names.gradient_name(window, self.uid, self.cfg.protocol.version)
        try:
            self.node.bucket.put(name, data, if_absent=True)
        except PreconditionFailed as e:
            # This window's upload is lost (a restarted miner finds its own earlier one there).
            self.node.count_error("upload", e)
            log.warning("window %d: %s already uploaded", window, name)
            return 0
        return len(data)

    def apply_window(self, window: int) -> tuple[int, int]:
        """Gathers window `window`'s payloads, applies the outer step, publishes probes;
        returns (valid payloads, gather set size)."""
        assert self.replica is not None
        node = self.node
        gather = node.network.gather_set(window)
        stack = self.replica.new_stack()
        fetched = node.network.fetch_payloads(
            gather, window, self.replica.plan, node.gather_deadline(window), stack
        )
        _, mask = self.replica.apply_gathered(window, list(fetched.values()), stack)
        maybe_checkpoint(
            self.cfg,
            self.checkpoints,
            self.replica,
            self.momentum,
            count_error=node.count_error,
        )
        probes = encode_probes(
            self.uid,
            window,
            self.replica.probes(window),
            self.replica.fingerprint(),
            stack=self.stack,
        )
        name = names.debug_name(window, self.uid, self.cfg.protocol.version)
        try:
            node.bucket.put(name, probes)
        except StorageError as e:
            node.count_error("probes", e)
            log.warning("window %d: probes not published (%s)", window, e)
        return int(mask.sum()), len(gather)

    def run_window(self, window: int) -> WindowReport:
        """Train, upload and apply for one window (the live loop's body)."""
        report = WindowReport(window)
        node = self.node
        t0 = node.now()
        end = node.window_end_estimate(window)
        budget_end = t0 + max(0.0, (end - t0) * self.cfg.train.compute_fraction)
        grads, report.n_batches, report.train_loss = self.train(window, budget_end)
        payload = self.make_payload(window, grads)
        # Uploads count only after the window has ended (GAUNTLET.md §2.2). t_min is the
        # timestamp of the next window's first block, which a live chain has only once it made
        # that block; the margin keeps a coarse file-system clock from stamping the object
        # before t_min.
        while node.current_window() <= window:
            time.sleep(min(0.05, self.cfg.chain.block_time_s / 4))
        opens = node.network.window_end_time(window) + UPLOAD_MARGIN_S
        time.sleep(max(0.0, opens - node.now()))
        t_upload = time.perf_counter()
        report.uploaded_bytes = self.upload(window, payload)
        report.upload_s = time.perf_counter() - t_upload
        report.gathered, report.gather_size = self.apply_window(window)
        self.cleanup(window)
        report.seconds = node.now() - t0
        return report

    def cleanup(self, window: int) -> None:
        keep = self.cfg.protocol.retention_windows
        try:
            names.cleanup_own_objects(
                self.node.bucket, self.uid, window, keep, self.cfg.protocol.version
            )
        except StorageError as e:
            self.node.count_error("cleanup", e)
            log.info("retention clean-up failed (%s)", e)

    def run(
        self,
        stop: threading.Event,
        max_windows: int | None = None,
        until_window: int | None = None,
    ) -> list[WindowReport]:
        """The live loop: one window after another until `stop` is set, `max_windows` windows
        were trained in this process, or window `until_window` is behind."""
        run = self.cfg.run
        # Open before start-up, so a checkpoint that fails to restore is counted too.
        exporter = open_exporter(
            "miner", run.prometheus_port, run.prometheus_addr, enabled=multihost.is_leader()
        )
        self.node.exporter = exporter
        try:
            return self._windows(stop, max_windows, until_window)
        finally:
            self.node.exporter = None
            if exporter is not None:
                exporter.close()

    def _windows(
        self, stop: threading.Event, max_windows: int | None, until_window: int | None
    ) -> list[WindowReport]:
        self.start(stop)
        assert self.replica is not None
        reports = []
        while not stop.is_set() and (max_windows is None or len(reports) < max_windows):
            window = self.replica.next_window
            if until_window is not None and window > until_window:
                break
            current = self.node.current_window()
            if current > window + 1:
                # Fell behind (slow windows, restart): follow closed windows without training.
                log.info(
                    "miner %d: catching up from window %d to %d", self.uid, window, current - 1
                )
                self.node.catch_up(self.replica, current - 1)
                continue
            if current == window + 1:
                # Too late to train for `window`; its put window may still be open: apply it.
                log.info(
                    "miner %d window %d: too late to train, applying it only", self.uid, window
                )
                self.apply_window(window)
                continue
            if not self.node.wait_for_window(window, stop):
                break
            report = self.run_window(window)
            reports.append(report)
            log.info("%s", report.line(self.uid))
            if self.node.exporter is not None:
                self.node.exporter.window(window, report.figures())
        return reports
