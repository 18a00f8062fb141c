"""Attackers who adapt (issue 17): every attack and an all-honest run on the same seeds, one table.

    python -m benchmarks.attacks --windows 100 --out runs/attacks
    python -m benchmarks.attacks --windows 8 --honest 4 --attacks alie,echo --out runs/attacks-short

Each run is the real simulator (`sim.run`) with `--honest` honest peers plus one attack group
(same peer uids for the honest peers, same data and upload-timing seeds). The table gives, per
run: the honest peers' and the attackers' share of the weights (mean over the run's last quarter,
as the simulator's bars), the final held-out loss and its ratio to the all-honest run's. Bars:
honest ≥ 90 %, attackers ≤ 2 %, loss ratio ≤ 1.02. Summaries land in OUT/<attack>/summary.json.

Arms run as separate processes (`benchmarks/run_h200_attacks.sh`: one per arm on one GPU) use
`--no-all-honest` for the attack arms, and the table is then built from their summaries:

    python -m benchmarks.attacks --table-from runs/a/all_honest runs/a/alie runs/a/echo --out runs/a
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from gauntlet_jax.config import load_config, with_overrides
from gauntlet_jax.sim.judging import ADVERSARY_CLASS_BAR, HONEST_SHARE_BAR
from gauntlet_jax.sim.kinds import build_peers, parse_peers
from gauntlet_jax.sim.run import SimOptions, run_simulation

# The attack groups (peer spec appended to the honest peers); parameters are the kinds' defaults.
ATTACKS = {
    "alie": "alie:3",
    "echo": "echo:2",
    "sleeper": "sleeper:1,sleeper_noise:1",
    "data_skipper": "data_skipper@0.5:1,data_skipper:1",
}
LOSS_RATIO_BAR = 1.02


def run_one(name: str, spec: str, args: argparse.Namespace) -> dict:
    cfg = with_overrides(load_config(args.config), args.set or [])
    options = SimOptions(
        windows=args.windows,
        scenario=f"attack-{name}",
        peers_spec=spec,
        eval_every=args.windows,
        seed=args.seed,
    )

    # A window-by-window bar on stderr: an arm cut by its time limit still shows how far it got.
    def bar(**kwargs: object) -> tqdm:
        return tqdm(**{**kwargs, "desc": name}, mininterval=10)

    return run_simulation(
        cfg,
        build_peers(parse_peers(spec)),
        Path(args.out) / name,
        options,
        force=True,
        progress_factory=bar,
    )


def table(rows: dict[str, dict]) -> str:
    base = rows["all_honest"]["heldout_loss"]["loss"][-1]
    lines = [
        "| run | honest share | attackers' share (by kind) | held-out loss | ratio to all-honest |",
        "|---|---|---|---|---|",
    ]
    for name, s in rows.items():
        shares = s["class_weight_tail_mean"]
        attackers = {k: v for k, v in shares.items() if k != "honest"}
        loss = s["heldout_loss"]["loss"][-1]
        kinds = ", ".join(f"{k} {v:.2%}" for k, v in sorted(attackers.items())) or "–"
        honest = s["honest_weight_share_tail_mean"]
        lines.append(f"| {name} | {honest:.2%} | {kinds} | {loss:.4f} | {loss / base:.4f} |")
    return "\n".join(lines)


def passed(rows: dict[str, dict]) -> dict[str, bool]:
    base = rows["all_honest"]["heldout_loss"]["loss"][-1]
    out = {}
    for name, s in rows.items():
        attackers = [v for k, v in s["class_weight_tail_mean"].items() if k != "honest"]
        out[name] = (
            s["honest_weight_share_tail_mean"] >= HONEST_SHARE_BAR
            and all(v <= ADVERSARY_CLASS_BAR for v in attackers)
            and s["heldout_loss"]["loss"][-1] / base <= LOSS_RATIO_BAR
        )
    return out


def report(rows: dict[str, dict], windows: int, out: Path) -> None:
    """Prints the table and the bars' verdict; writes the table to out/attacks.md."""
    text = table(rows)
    print(text)
    print(json.dumps({"windows": windows, "bars_passed": passed(rows)}, indent=1))
    out.mkdir(parents=True, exist_ok=True)
    (out / "attacks.md").write_text(text + "\n")


def rows_from(dirs: Sequence[str]) -> dict[str, dict]:
    """{arm: summary} from run directories (each holds summary.json); all_honest first."""
    rows = {Path(d).name: json.loads((Path(d) / "summary.json").read_text()) for d in dirs}
    if "all_honest" not in rows:
        raise SystemExit("--table-from needs the all_honest run (the loss ratio's base)")
    return {"all_honest": rows.pop("all_honest"), **rows}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attacks", description=__doc__)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--set", action="append", help="config override key=value (repeatable)")
    parser.add_argument("--windows", type=int, default=100)
    parser.add_argument("--honest", type=int, default=6, help="honest peers in every run")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--no-all-honest", action="store_true", help="skip the baseline run (and the table)"
    )
    parser.add_argument(
        "--table-from", nargs="+", metavar="RUN_DIR", help="no runs: the table of these runs"
    )
    args = parser.parse_args(argv)
    if args.table_from:
        rows = rows_from(args.table_from)
        windows = rows["all_honest"]["windows"]
        report(rows, windows, Path(args.out))
        return 0
    chosen = [a for a in args.attacks.split(",") if a]
    unknown = sorted(set(chosen) - set(ATTACKS))
    if unknown:
        parser.error(f"unknown attacks {unknown}; known: {', '.join(ATTACKS)}")
    honest = f"honest:{args.honest}"
    rows = {} if args.no_all_honest else {"all_honest": run_one("all_honest", honest, args)}
    for name in chosen:
        rows[name] = run_one(name, f"{honest},{ATTACKS[name]}", args)
        print(f"{name}: done", file=sys.stderr)
    if "all_honest" in rows:
        report(rows, args.windows, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
