"""`python -m gauntlet_jax.bench SUBCOMMAND ...` (see `gauntlet_jax.bench.cli`)."""

import sys

from gauntlet_jax.bench.cli import main

sys.exit(main())
