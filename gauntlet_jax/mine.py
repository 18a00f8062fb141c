"""`python -m gauntlet_jax.mine --config C --hotkey NAME`: a miner (GAUNTLET.md §1.3).

The signing secret is read from the env var named by `chain.key_env` (default
GAUNTLET_HOTKEY_SECRET: a URI such as //Bob, a mnemonic or a hex seed) or `chain.key_file`.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence

from gauntlet_jax.config import Config
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.miner.loop import Miner
from gauntlet_jax.model.llama import abstract_params
from gauntlet_jax.node.launch import run_role
from gauntlet_jax.node.replica import plan_for
from gauntlet_jax.node.startup import Node
from gauntlet_jax.sim.forged import BEHAVIOURS, noise_hook

BEHAVIOUR_FLAG = (
    "--behaviour",
    {
        "choices": BEHAVIOURS,
        "default": "honest",
        "help": "what this miner uploads (adversaries are for tests and demos)",
    },
)


def _mine(
    args: argparse.Namespace, cfg: Config, node: Node, corpus: TokenCorpus, stop: threading.Event
) -> None:
    hook = None
    if args.behaviour == "noise":
        hook = noise_hook(abstract_params(cfg.model), plan_for(cfg), node.uid, cfg.train.seed)
    Miner(cfg, node, corpus, payload_hook=hook).run(
        stop, max_windows=args.windows, until_window=args.until_window
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_role("python -m gauntlet_jax.mine", __doc__, argv, _mine, extra=[BEHAVIOUR_FLAG])


if __name__ == "__main__":
    sys.exit(main())
