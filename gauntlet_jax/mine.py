"""`python -m gauntlet_jax.mine --config C --hotkey NAME`: a miner (GAUNTLET.md §1.3).

The signing secret is read from the env var named by `chain.key_env` (default
GAUNTLET_HOTKEY_SECRET: a URI such as //Bob, a mnemonic or a hex seed) or `chain.key_file`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from gauntlet_jax.errors import GauntletError
from gauntlet_jax.miner.loop import Miner
from gauntlet_jax.model.llama import abstract_params
from gauntlet_jax.replica import plan_for
from gauntlet_jax.roles import open_node, parse_role_args, setup_logging, stop_on_signals
from gauntlet_jax.sim.peers import BEHAVIOURS, noise_hook


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_role_args(
        "python -m gauntlet_jax.mine",
        __doc__,
        argv,
        extra=[
            (
                "--behaviour",
                {
                    "choices": BEHAVIOURS,
                    "default": "honest",
                    "help": "what this miner uploads (adversaries are for tests and demos)",
                },
            )
        ],
    )
    setup_logging(args.log_level)
    stop = stop_on_signals()
    try:
        cfg, node, corpus = open_node(args)
        hook = None
        if args.behaviour == "noise":
            hook = noise_hook(abstract_params(cfg.model), plan_for(cfg), node.uid, cfg.train.seed)
        Miner(cfg, node, corpus, payload_hook=hook).run(
            stop, max_windows=args.windows, until_window=args.until_window
        )
    except GauntletError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
