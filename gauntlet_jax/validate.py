"""`python -m gauntlet_jax.validate --config C --hotkey NAME`: a validator running the Gauntlet.

Scores peers, rates them with OpenSkill and posts weights on chain; metrics (JSONL, TensorBoard)
and the state file go to `run.out_dir`/validator-NAME. The signing secret is read from the env var
named by `chain.key_env` (default GAUNTLET_HOTKEY_SECRET) or `chain.key_file`.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from gauntlet_jax.config import Config
from gauntlet_jax.data.corpus import TokenCorpus
from gauntlet_jax.node.launch import run_role
from gauntlet_jax.node.startup import Node
from gauntlet_jax.validator.loop import Validator


def _validate(
    args: argparse.Namespace, cfg: Config, node: Node, corpus: TokenCorpus, stop: threading.Event
) -> None:
    out_dir = Path(cfg.run.out_dir) / f"validator-{args.hotkey}"
    Validator(cfg, node, corpus, out_dir).run(
        stop, max_windows=args.windows, until_window=args.until_window
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_role("python -m gauntlet_jax.validate", __doc__, argv, _validate)


if __name__ == "__main__":
    sys.exit(main())
