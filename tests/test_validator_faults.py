"""The validator's window loop under every fault of issue 17 at once (faults 1–5, plus chain
reads that fail): one simulated network (real validator, real peers' outer step, the embedded
chain on a manual clock, local buckets), hostile peers from the start and faults injected window
by window. Each test checks one fault against the same run: the loop went on, the state is what
it should be (θ's fingerprint equals the honest peers', ratings and window counter intact), and
the faulty peer — not the node — paid for it."""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gauntlet_jax.chain.errors import ChainConnectionError, ChainStoreCorrupt
from gauntlet_jax.cli import EX_CONFIG, exit_code
from gauntlet_jax.config import Config, with_overrides
from gauntlet_jax.node.metrics import METRICS_FILE, read_records
from gauntlet_jax.protocol import names
from gauntlet_jax.protocol.fingerprint import fingerprint
from gauntlet_jax.sim.network import prepare_out_dir
from gauntlet_jax.sim.peers import Copycat, Honest, UploadContext
from gauntlet_jax.sim.run import SimOptions, Simulation
from gauntlet_jax.storage.base import Bucket
from gauntlet_jax.validator.loop import STATE_FILE, Validator
from gauntlet_jax.validator.publish import weights_due
from gauntlet_jax.validator.state import load_state
from gauntlet_jax.validator.window_record import WindowOutcome

pytestmark = pytest.mark.slow

WINDOWS = 9
HONEST = (1, 2, 3)
FIFO, PREDATER, COPIER = 4, 5, 6
# Validator windows (offsets from the start) at which a fault is injected.
METAGRAPH_FAULT, TIMESTAMP_FAULT, HOSTILE_JSON = 2, 3, 1
PREDATED_AHEAD = 40


class FifoPeer(Honest):
    """Fault 1: where its payload belongs, a FIFO (odd windows) or a symbolic link to an honest
    peer's payload (even windows); a reader that opened either would block or read another's."""

    kind = "fifo"
    trains = False
    bucket: Bucket

    def payload(self, own: bytes | None, ctx: UploadContext) -> bytes | None:
        version = ctx.cfg.protocol.version
        path = Path(self.bucket.root, names.gradient_name(ctx.window, self.uid, version))  # type: ignore[attr-defined]
        path.parent.mkdir(parents=True, exist_ok=True)
        if ctx.window % 2:
            os.mkfifo(path)
        else:
            victim = Path(self.victim_root, names.gradient_name(ctx.window, HONEST[0], version))
            path.symlink_to(victim)
        return None

    victim_root: Path


class PreDater(Honest):
    """Fault 4: at its first upload, objects named for the next PREDATED_AHEAD windows in one
    go (written now, before each one's put window) and nothing on time afterwards."""

    kind = "predater"
    trains = False
    bucket: Bucket
    done = False

    def payload(self, own: bytes | None, ctx: UploadContext) -> bytes | None:
        if not self.done:
            version = ctx.cfg.protocol.version
            data = b"pre-dated: never looked at, its time is before its put window"
            for w in range(ctx.window + 1, ctx.window + 1 + PREDATED_AHEAD):
                self.bucket.put(names.gradient_name(w, self.uid, version), data)
            self.done = True
        return None


class FaultyChain:
    """The validator's real chain with injected read faults: `fail[name] = n` makes the next n
    calls of method `name` raise what a dropped subtensor connection raises."""

    def __init__(self, chain: Any) -> None:
        self._chain = chain
        self.fail: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._chain, name)
        if not self.fail.get(name):
            return attr

        def failing(*args: Any, **kwargs: Any) -> Any:
            self.fail[name] -= 1
            raise ChainConnectionError(f"{name}: connection reset by peer (injected)")

        return failing


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclasses.dataclass
class Run:
    cfg: Config
    start: int
    out: Path
    validator: Validator
    outcomes: dict[int, WindowOutcome]
    honest_fingerprints: dict[int, str]  # θ_w of the peers' outer step, by w
    validator_fingerprints: dict[int, str]  # the validator's θ after window w−1, by w
    deferred: dict[str, Any]
    metagraph_blocks: tuple[int, int]  # (block of the metagraph used, block when it failed)
    locked_window: int
    hostile: dict[str, Any]
    corrupt_error: Exception | None
    state_before_corruption: Any
    next_window_before_corruption: int
    warnings: list[str]
    window_records: list[dict[str, Any]]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, tiny_config: Config) -> Run:
    out = tmp_path_factory.mktemp("faults")
    prepare_out_dir(out, force=False)
    cfg = with_overrides(
        tiny_config,
        [
            "train.max_micro_batches=1",
            "chain.timeout_s=0.2",
            # Cheap scoring: the faults are the point, not the ranking (2 exact per window).
            "validator.screen=false",
            "validator.exact_max=2",
            "validator.uids_per_window=2",
            "validator.candidate_chunk=2",
            "validator.sample_rate=0.1",
            "data.heldout_docs=8",
        ],
    )
    peers: list[Honest] = [Honest(u, None, i, len(HONEST)) for i, u in enumerate(HONEST)]
    fifo, predater = FifoPeer(FIFO, None, 0, 1), PreDater(PREDATER, None, 0, 1)
    peers += [fifo, predater, Copycat(COPIER, None, 0, 1)]
    options = SimOptions(windows=WINDOWS, eval_every=WINDOWS)
    sim = Simulation(cfg, peers, out, options)
    sim.setup()
    cfg = sim.cfg
    fifo.bucket = sim.net.nodes[FIFO].bucket
    fifo.victim_root = Path(sim.net.nodes[HONEST[0]].bucket.root)  # type: ignore[attr-defined]
    predater.bucket = sim.net.nodes[PREDATER].bucket
    validator = sim.net.validator
    chain = FaultyChain(validator.node.chain)
    validator.node.chain = validator.node.network.chain = chain  # type: ignore[assignment]
    handler = Lines()
    logging.getLogger("gauntlet_jax").addHandler(handler)

    start, version = sim.start, cfg.protocol.version
    lead_bucket = validator.node.bucket
    outcomes: dict[int, WindowOutcome] = {}
    honest_fp: dict[int, str] = {}
    validator_fp: dict[int, str] = {}
    deferred: dict[str, Any] = {}
    hostile: dict[str, Any] = {}
    metagraph_blocks = (-1, -1)
    locked_window = -1
    try:
        for c in range(start + 1, start + WINDOWS + sim.offset + 1):
            v = sim.advance(c)
            honest_fp[c] = fingerprint(sim.shared.params)
            if c == start + HOSTILE_JSON + sim.offset + 1:
                # Fault 2: the lead's start window and a gather list for the next window the
                # peers apply, both hostile (nesting under the size cap; a bool as a window).
                nested = b"[" * 5000 + b"]" * 5000
                lead_bucket.put(names.start_window_name(version), b'{"start_window": true}')
                lead_bucket.put(names.peers_name(c, version), b'{"peers": ' + nested + b"}")
                hostile["window"] = c
                hostile["start_window_read"] = validator.node.network.start_window()
            if v is None:
                continue
            i = v - start
            if i == METAGRAPH_FAULT:
                chain.fail["metagraph"] = 1
                metagraph_blocks = (validator.node.network.graph().block, chain.current_block())
            lock = None
            if (
                locked_window < 0
                and i >= 4
                and weights_due(v, validator.state.last_weights_window, cfg)
            ):
                # Fault 3: another writer holds the chain file past the busy timeout.
                lock = sqlite3.connect(out / "chain.db", isolation_level=None)
                lock.execute("BEGIN IMMEDIATE")
                locked_window = v
            if i == TIMESTAMP_FAULT:
                chain.fail["block_timestamp"] = 1
                before = (
                    validator.state,
                    validator.replica.fingerprint(),
                    validator.replica.next_window,
                )
                deferred["outcome"] = validator.try_window(v)
                deferred["before"] = before
                deferred["after"] = (
                    validator.state,
                    validator.replica.fingerprint(),
                    validator.replica.next_window,
                )
                deferred["saved"] = load_state(out / STATE_FILE, validator.state.seed)
            try:
                outcome = validator.try_window(v)
            finally:
                if lock is not None:
                    lock.execute("ROLLBACK")
                    lock.close()
            assert outcome is not None, f"window {v} was not processed"
            outcomes[v] = outcome
            validator_fp[v + 1] = validator.replica.fingerprint()
        # Fault 3, permanent: the chain file damaged under the validator's open handle. Another
        # writer first moves every page into the file (so the handle's cache is stale), then
        # the file is overwritten in place.
        state_before = validator.state
        next_before = validator.replica.next_window
        other = sqlite3.connect(out / "chain.db", isolation_level=None)
        other.execute("CREATE TABLE vandal (x)")
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        other.close()
        size = (out / "chain.db").stat().st_size
        with open(out / "chain.db", "r+b") as f:
            f.write(b"\xff" * size)
        corrupt_error: Exception | None = None
        try:
            validator.try_window(next_before)
        except ChainStoreCorrupt as e:
            corrupt_error = e
    finally:
        logging.getLogger("gauntlet_jax").removeHandler(handler)
    validator.metrics.close()
    return Run(
        cfg=cfg,
        start=start,
        out=out,
        validator=validator,
        outcomes=outcomes,
        honest_fingerprints=honest_fp,
        validator_fingerprints=validator_fp,
        deferred=deferred,
        metagraph_blocks=metagraph_blocks,
        locked_window=locked_window,
        hostile=hostile,
        corrupt_error=corrupt_error,
        state_before_corruption=state_before,
        next_window_before_corruption=next_before,
        warnings=handler.lines,
        window_records=[r for r in read_records(out / METRICS_FILE) if r.get("kind") == "window"],
    )


def _checks(run: Run, uid: int) -> list[dict[str, str]]:
    return [r.checks for o in run.outcomes.values() for r in o.records if r.uid == uid]


def test_every_window_was_processed_and_theta_follows_the_honest_peers(run: Run) -> None:
    assert sorted(run.outcomes) == list(range(run.start, run.start + WINDOWS))
    assert run.validator.state.last_window == run.start + WINDOWS - 1
    for w, fp in run.validator_fingerprints.items():
        assert fp == run.honest_fingerprints[w], f"θ_{w} differs from the peers'"
    peers = run.validator.state.peers
    for uid in HONEST:
        assert peers[uid].rated and peers[uid].eval_count > 0
    # Every window's weight went to honest peers alone.
    for outcome in run.outcomes.values():
        positive = {u for u, v in outcome.weights.items() if v > 0}
        assert positive <= set(HONEST)
    assert sum(peers[u].weight for u in HONEST) == pytest.approx(1.0)


def test_fifo_and_symlink_objects_are_missing_not_a_hang(run: Run) -> None:
    checks = [c for c in _checks(run, FIFO) if "payload" in c]
    assert checks and all(c["payload"] == "missing" for c in checks)
    peer = run.validator.state.peers[FIFO]
    assert peer.slash_counts.get("missing", 0) == len(checks) and peer.weight == 0.0
    assert not peer.rated
    # Neither kind of entry is listed as an object: the peer never counts as active.
    active = [r["active"] for r in run.window_records]
    assert max(active) == active[-1] == len(HONEST) + 1  # the honest peers and the copier


def test_hostile_json_in_the_lead_bucket_is_ignored(run: Run) -> None:
    assert run.hostile["start_window_read"] is None
    assert any("start window of uid 0 unusable" in line for line in run.warnings)
    assert any(
        f"peer list {run.hostile['window']} of uid 0 unusable" in line for line in run.warnings
    )
    hostile_window = run.hostile["window"]
    # The unusable list is not used: the gather set is every node's fallback, all miners.
    gather = {r.uid for r in run.outcomes[hostile_window].records if r.in_gather}
    assert gather == set(HONEST) | {FIFO, PREDATER, COPIER}
    assert run.validator.state.last_window == run.start + WINDOWS - 1


def test_a_locked_chain_file_defers_weights_to_the_next_window(run: Run) -> None:
    w = run.locked_window
    assert w > run.start, "no weights window was locked"
    assert not run.outcomes[w].posted
    assert any(
        f"window {w}: set_weights failed" in line and "busy timeout" in line
        for line in run.warnings
    )
    assert run.outcomes[w + 1].posted
    assert run.validator.state.last_weights_window is not None
    assert run.validator.state.last_weights_window >= w + 1


def test_a_failed_metagraph_refresh_uses_the_last_known_one(run: Run) -> None:
    used, now = run.metagraph_blocks
    assert used < now
    assert any(
        f"window {run.start + METAGRAPH_FAULT}: metagraph refresh failed, using block {used}'s"
        in line
        for line in run.warnings
    )
    assert run.outcomes[run.start + METAGRAPH_FAULT].gathered > 0


def test_a_failed_chain_read_leaves_the_window_unapplied_and_retried(run: Run) -> None:
    w = run.start + TIMESTAMP_FAULT
    assert run.deferred["outcome"] is None
    assert run.deferred["after"] == run.deferred["before"]  # state, θ, window counter
    assert run.deferred["before"][2] == w
    assert run.deferred["saved"] == run.deferred["before"][0]
    lines = [line for line in run.warnings if line.startswith(f"window {w}: chain read failed")]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert run.outcomes[w].window == w  # the retry processed it


def test_predated_objects_do_not_make_a_peer_active(run: Run) -> None:
    peer = run.validator.state.peers[PREDATER]
    assert peer.eval_count == 0 and peer.weight == 0.0 and not peer.rated
    payload = [c["payload"] for c in _checks(run, PREDATER) if "payload" in c]
    # Its first window has no object (it wrote only later windows' names), then each is early.
    assert payload[0] == "missing" and set(payload[1:]) == {"too_early"}
    assert peer.slash_counts.get("early", 0) == len(payload) - 1
    # Judged inactive in every window despite objects named for each of them.
    assert peer.slash_counts.get("inactive", 0) == WINDOWS


def test_a_caught_copier_is_reset_and_kept_out(run: Run) -> None:
    peer = run.validator.state.peers[COPIER]
    assert peer.slash_counts.get("overlap", 0) >= 1
    assert peer.excluded_until is not None
    assert (
        peer.excluded_until > run.start + WINDOWS + run.cfg.validator.overlap_exclude_windows - 10
    )
    assert peer.weight == 0.0 and not peer.rated
    last = run.outcomes[run.start + WINDOWS - 1]
    assert not any(r.uid == COPIER and r.in_gather for r in last.records)


def test_a_corrupt_chain_file_is_permanent_and_loses_nothing(run: Run) -> None:
    assert isinstance(run.corrupt_error, ChainStoreCorrupt)
    assert exit_code(run.corrupt_error) == EX_CONFIG
    assert run.validator.state == run.state_before_corruption
    assert run.validator.replica.next_window == run.next_window_before_corruption
    assert load_state(run.out / STATE_FILE, run.validator.state.seed) == run.state_before_corruption
