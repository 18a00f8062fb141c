"""`python -m gauntlet_jax.simulate`: honest and adversarial peers against the real validator, in
one process on simulated time, then summary.json and report.html in the output directory.

    python -m gauntlet_jax.simulate --config tiny --windows 100 --out runs/sim/default
    python -m gauntlet_jax.simulate --config tiny --peers honest:4,noise:1,late:1 --windows 20 \
        --out runs/sim/small
    python -m gauntlet_jax.simulate --scenario figure2 --windows 100 --out runs/sim/figure2
    python -m gauntlet_jax.simulate --scenario adamw --windows 100 --out runs/sim/adamw

Peer spec: comma-separated `kind[@param][:count]` (see gauntlet_jax/sim/peers.py for the kinds
and what each models). Scenarios preset the peers and baselines:

- default: 6 honest + copycat, free-rider, noise, lazy, stale, late, malformed + a 3-uid sybil,
  compared with the 6 honest peers alone (the issue's bars are checked in summary.json);
- figure2: the paper's Figure 2: one peer with 2× the data, one baseline, one desynchronised
  (2 outer steps behind); the rating should order them heavy > honest > stale;
- adamw: 6 honest peers, compared per iteration with centralised AdamW on the same tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from gauntlet_jax.cli import EX_CONFIG, exit_code, setup_logging
from gauntlet_jax.config import add_config_args, config_from_args
from gauntlet_jax.errors import GauntletError, MissingExtra
from gauntlet_jax.sim.kinds import build_peers, parse_peers
from gauntlet_jax.sim.run import SimOptions, run_simulation

SCENARIOS: dict[str, dict[str, object]] = {
    "default": {
        "peers": "honest:6,copycat:1,free_rider:1,noise:1,lazy:1,stale:1,late:1,malformed:1,"
        "sybil:3",
        "baselines": ("honest",),
    },
    "figure2": {
        "peers": "honest:1,heavy@2:1,stale@2:1",
        "baselines": (),
        "expected_order": ("heavy", "honest", "stale"),
    },
    "adamw": {"peers": "honest:6", "baselines": ("adamw",)},
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gauntlet_jax.simulate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_args(parser)
    parser.set_defaults(config="tiny")
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), default="default")
    parser.add_argument("--peers", default=None, help="peer spec; overrides the scenario's")
    parser.add_argument("--windows", type=int, default=100, help="windows the validator scores")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--baseline",
        action="append",
        choices=("honest", "adamw"),
        default=None,
        help="extra curve on the same tokens (repeatable); default: the scenario's",
    )
    parser.add_argument("--eval-every", type=int, default=1, help="held-out loss cadence")
    parser.add_argument("--shard-peers", action="store_true", help="peer axis over devices")
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard")
    parser.add_argument("--force", action="store_true", help="replace an earlier run in --out")
    parser.add_argument("--no-report", action="store_true", help="skip report.html")
    parser.add_argument("--seed", type=int, default=0, help="upload-timing randomness")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)

    preset = SCENARIOS[args.scenario]
    spec = args.peers or str(preset["peers"])
    baselines = tuple(args.baseline) if args.baseline is not None else preset["baselines"]
    expected = preset.get("expected_order", ()) if args.peers is None else ()
    try:
        cfg = config_from_args(args)
        peers = build_peers(parse_peers(spec))
        options = SimOptions(
            windows=args.windows,
            scenario=args.scenario if args.peers is None else "custom",
            peers_spec=spec,
            baselines=tuple(baselines),  # type: ignore[arg-type]
            eval_every=args.eval_every,
            shard_peers=args.shard_peers,
            tensorboard=args.tensorboard,
            expected_order=tuple(expected),  # type: ignore[arg-type]
            seed=args.seed,
        )
        summary = run_simulation(
            cfg, peers, args.out, options, force=args.force, progress_factory=tqdm
        )
    except GauntletError as e:
        print(f"error: {e}", file=sys.stderr)
        return exit_code(e)
    except FileExistsError as e:
        print(f"error: {e}", file=sys.stderr)
        return EX_CONFIG
    out = Path(args.out)
    if not args.no_report:
        try:
            from gauntlet_jax.report import build_report
        except ModuleNotFoundError as e:
            print(f"error: {MissingExtra('report.html', 'report', str(e.name))}", file=sys.stderr)
            return EX_CONFIG
        report = build_report(out)
        print(f"report: {report}", file=sys.stderr)
    brief = {
        k: summary[k]
        for k in ("honest_weight_share", "class_weight", "bars", "seconds", "separation")
        if k in summary
    }
    print(json.dumps(brief, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
