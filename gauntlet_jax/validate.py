"""`python -m gauntlet_jax.validate --config C --hotkey NAME`: a validator running the Gauntlet.

Scores peers, rates them with OpenSkill and posts weights on chain; metrics (JSONL, TensorBoard)
and the state file go to `run.out_dir`/validator-NAME. The signing secret is read from the env var
named by `chain.key_env` (default GAUNTLET_HOTKEY_SECRET) or `chain.key_file`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from gauntlet_jax.errors import GauntletError
from gauntlet_jax.roles import open_node, parse_role_args, setup_logging, stop_on_signals
from gauntlet_jax.validator.loop import Validator


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_role_args("python -m gauntlet_jax.validate", __doc__, argv)
    setup_logging(args.log_level)
    stop = stop_on_signals()
    try:
        cfg, node, corpus = open_node(args)
        out_dir = Path(cfg.run.out_dir) / f"validator-{args.hotkey}"
        Validator(cfg, node, corpus, out_dir).run(
            stop, max_windows=args.windows, until_window=args.until_window
        )
    except GauntletError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
