"""How many XLA programs a simulated network compiles, and the seconds they take.

    python -m benchmarks.compiles -- --config tiny --peers honest:3,noise:1,malformed:1,late:1 \
        --windows 6 --set train.max_micro_batches=1

Runs `gauntlet_jax.simulate` in this process with the arguments after `--` and counts every
program built (compiled, or loaded from a persistent cache: `bench.window.compilations`) with its
duration, and the wall time of the
whole run. A validator whose batch shapes change per window compiles each window; this is the
number that shows it. Prints one JSON line: compiles, compile_s, wall_s, and the simulate
arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from gauntlet_jax.bench.window import compilations


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("simulate_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    sim_args = [a for a in args.simulate_args if a != "--"]
    from gauntlet_jax import simulate

    with compilations() as durations:
        t0 = time.perf_counter()
        code = simulate.main(sim_args)
    wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "compiles": len(durations),
                "compile_s": round(sum(durations), 1),
                "wall_s": round(wall, 1),
                "simulate_rc": code,
                "simulate_args": sim_args,
            }
        )
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
