"""Building a simulated network: its output directory, its config, and the network itself.

Nothing here re-implements a rule. The chain is the embedded SQLite chain on a manual clock, the
buckets are local directories whose "server clock" follows the chain's simulated time
(`LocalBucket(clock=...)`), and every peer and the validator connect to them as real nodes do
(`Node.connect`); the validator is the real one, started. `chain_pace` is the scoring pace a
simulation gives it (`sim.run`): the simulated network's, not this host's.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gauntlet_jax.chain import open_chain
from gauntlet_jax.chain.keys import dev_hotkey
from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.config import Config, with_overrides
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.errors import ConfigError
from gauntlet_jax.localchain import create_network
from gauntlet_jax.node.metrics import METRICS_FILE
from gauntlet_jax.node.network import Network
from gauntlet_jax.node.startup import Node
from gauntlet_jax.protocol.schedule import first_block_of_window
from gauntlet_jax.sim.peers import Honest
from gauntlet_jax.storage.local import LocalBucket
from gauntlet_jax.validator.budget import ScoringPace, window_seconds
from gauntlet_jax.validator.loop import Validator

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


class SimClock:
    """Simulated server time: the chain's timestamp of its current block plus an offset the
    simulator sets before each write (seconds into the put window, say)."""

    def __init__(self, chain: LocalChain) -> None:
        self.chain = chain
        self.offset_s = 0.0

    def __call__(self) -> float:
        return self.chain.block_timestamp(self.chain.current_block()) + self.offset_s


class ChainPace(ScoringPace):
    """The simulated validator's scoring pace on the chain's clock (`sim.exact_per_window`):
    fixed, so the budget of a simulated window does not follow this host's seconds (a window
    lasts blocks_per_window · block_time_s of chain time, ~2 s on the tiny config, while the
    host takes a minute over it)."""

    def record_chunks(self, seconds: float, chunks: int) -> None:
        """Host seconds are not the simulated network's: the pace stays as configured."""

    def record_other(self, seconds: float) -> None:
        """As `record_chunks`."""


def chain_pace(cfg: Config) -> ScoringPace:
    """The pace the simulated validator budgets with: `sim.exact_per_window` exact evaluations
    in `score_budget_fraction` of the window, the window's other work inside the rest; a
    measured pace (a plain `ScoringPace`) when the knob is 0."""
    n = cfg.sim.exact_per_window
    if n < 0:
        raise ConfigError(f"sim.exact_per_window must be ≥ 0, got {n}")
    if n == 0:
        return ScoringPace()
    chunks = n // max(1, cfg.validator.candidate_chunk)
    budget_s = cfg.validator.score_budget_fraction * window_seconds(cfg)
    # Half a chunk of slack, so that rounding in budget_s / chunk_s never drops a chunk.
    return ChainPace(chunk_s=budget_s / (chunks + 0.5), other_s=0.0)


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
class SimNetwork:
    """The connected network: the validator's chain connection (whose clock every node shares),
    the simulated server clock, the started validator, each peer's node by uid, and `follower`:
    the network as every synchronised peer sees it (they all compute the same gather set)."""

    chain: LocalChain
    clock: SimClock
    validator: Validator
    nodes: dict[int, Node]
    follower: Network
    blocks_per_window: int
    chains: list[LocalChain] = field(default_factory=list)

    def advance_to(self, window: int) -> None:
        """Moves the chain to the first block of `window` (never backwards)."""
        target = first_block_of_window(window, self.blocks_per_window)
        now = self.chain.current_block()
        if target > now:
            self.chain.advance(target - now)

    def close(self) -> None:
        for chain in self.chains:
            chain.close()


def build_network(
    cfg: Config, peers: Sequence[Honest], corpus: TokenCorpus, out_dir: Path
) -> SimNetwork:
    """Creates the chain with the validator (uid 0) and `peers` registered, connects every node
    to its bucket on the simulated clock, and starts the validator."""
    create_network(cfg, len(peers) + 1, force=True, manual_clock=True)
    chains: list[LocalChain] = []

    def connect(index: int) -> LocalChain:
        chain = open_chain(cfg.chain, dev_hotkey(index))
        assert isinstance(chain, LocalChain)
        chains.append(chain)
        return chain

    chain = connect(0)
    clock = SimClock(chain)

    def clocked(node: Node) -> Node:
        """The node's own bucket with the simulated server clock (readers need no clock: the
        time is in the file)."""
        node.bucket = LocalBucket(node.url[len("file://") :], clock=clock)
        return node

    validator = Validator(cfg, clocked(Node.connect(cfg, "validator", chain)), corpus, out_dir)
    nodes: dict[int, Node] = {}
    for p in peers:
        node = Node.connect(cfg, f"peer{p.uid}-{p.kind}", connect(p.uid))
        if node.uid != p.uid:
            raise RuntimeError(f"peer {p.kind} registered as uid {node.uid}, expected {p.uid}")
        nodes[p.uid] = clocked(node)
    validator.start(threading.Event())
    return SimNetwork(
        chain=chain,
        clock=clock,
        validator=validator,
        nodes=nodes,
        follower=nodes[peers[0].uid].network,
        blocks_per_window=cfg.protocol.blocks_per_window,
        chains=chains,
    )


__all__ = [
    "SIM_ARTEFACTS",
    "SUMMARY_FILE",
    "ChainPace",
    "SimClock",
    "SimNetwork",
    "build_network",
    "chain_pace",
    "prepare_out_dir",
    "sim_config",
]
