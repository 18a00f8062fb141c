"""What the screen buys (issue 21, part 3): the 4-per-window validator against the new default on
the same seeds.

    python -m benchmarks.screen_vs_sampled --windows 30 --out runs/screen_vs_sampled

Two runs of the real simulator (`sim.run`) on the tiny config with the default adversarial mix
plus one peer with twice the data (`heavy@2`, so the Figure 2 order heavy > honest > stale can
be read in the same run); same peers, uids, pages and upload-timing seed:

- sampled: the reference's behaviour, `uids_per_window` 4 peers a window from a random ordinal
  bin, no screen, no time budget (`validator.screen=false`, `score_budget_fraction=0`);
- screened: the new default (every active peer screened, exact evaluations by the time
  budget: the top by estimate, and a quarter of the slots, at least one, to the stalest others).

The simulator's windows last `blocks_per_window · block_time_s` of chain time, and the
screened run's budget is counted on that clock: `sim.exact_per_window` (8 by default: one chunk)
exact evaluations a window, not what this host's pace gives (`--set sim.exact_per_window=16`
for another budget; 0 = this host's measured pace, the floor of 4 on a slow CPU). The
per-window counts are in the output (`evaluations`). `--arm all_exact` adds a run with the
screen and every eligible peer evaluated exactly.

Prints one JSON line per run set: per run the window from which the rating order heavy > honest
> stale holds to the end (and windows until then), the honest share of the weights after the
last window (and its mean over the last quarter), the screened/exact counts per window, and per
peer kind its exact evaluations and the longest run of windows one of its uids went without
being chosen for one (`coverage`).
Writes OUT/compare.html with the comparison plot (`gauntlet_jax.report.build_comparison`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gauntlet_jax.config import load_config, with_overrides
from gauntlet_jax.node.metrics import METRICS_FILE, read_records
from gauntlet_jax.sim.judging import honest_share_per_window
from gauntlet_jax.sim.kinds import build_peers, parse_peers
from gauntlet_jax.sim.run import SimOptions, run_simulation

PEERS = (
    "honest:6,copycat:1,free_rider:1,noise:1,lazy:1,stale:1,late:1,malformed:1,sybil:3,heavy@2:1"
)
EXPECTED_ORDER = ("heavy", "honest", "stale")
ARMS: dict[str, list[str]] = {
    "sampled": [
        "validator.screen=false",
        "validator.score_budget_fraction=0",
        "validator.uids_per_window=4",
    ],
    "screened": [],
    # exact_max and the floor at the number of peers: every eligible peer exactly.
    "all_exact": ["validator.uids_per_window=64", "validator.exact_max=64"],
}


def run_arm(arm: str, args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out) / arm
    if (out / "summary.json").exists() and not args.force:
        return json.loads((out / "summary.json").read_text())
    cfg = with_overrides(load_config(args.config), [*ARMS[arm], *(args.set or [])])
    options = SimOptions(
        windows=args.windows,
        scenario=f"screen_vs_sampled-{arm}",
        peers_spec=PEERS,
        eval_every=args.windows,
        expected_order=EXPECTED_ORDER,
        seed=args.seed,
    )
    print(f"{arm}: {args.windows} windows → {out}", file=sys.stderr, flush=True)
    return run_simulation(cfg, build_peers(parse_peers(PEERS)), out, options, force=True)


# A chosen peer whose payload turns out missing or invalid is slashed instead of scored: its
# record says so by these slashes (its `evaluated` is false).
CHOSEN_UNSCORED = ("eval_missing", "eval_invalid")


def exact_coverage(records: list[dict[str, Any]], kinds: dict[int, str]) -> dict[str, Any]:
    """Per kind: exact evaluations scored (summed over the kind's uids), and the longest run of
    consecutive validator windows one of its uids went without being chosen for the exact
    evaluation (scored, or slashed as missing/invalid: the bound of `choose_exact` in the
    screened run; a run at the start or the end counts)."""
    windows = sorted({r["window"] for r in records if r.get("kind") == "window"})
    chosen: dict[int, set[int]] = {u: set() for u in kinds}
    scored = dict.fromkeys(kinds, 0)
    for r in records:
        if r.get("kind") != "peer" or r["uid"] not in chosen:
            continue
        scored[r["uid"]] += bool(r.get("evaluated"))
        # The screen penalises an invalid payload with the same slash without choosing it.
        screen_invalid = (r.get("checks") or {}).get("screen") == "invalid"
        unscored = set(r.get("slashes") or ()) & set(CHOSEN_UNSCORED)
        if r.get("evaluated") or (unscored and not screen_invalid):
            chosen[r["uid"]].add(r["window"])
    out: dict[str, Any] = {}
    for uid, kind in sorted(kinds.items()):
        gap = longest = 0
        for w in windows:
            gap = 0 if w in chosen[uid] else gap + 1
            longest = max(longest, gap)
        row = out.setdefault(kind, {"exact": 0, "chosen": 0, "longest_gap": 0})
        row["exact"] += scored[uid]
        row["chosen"] += len(chosen[uid])
        row["longest_gap"] = max(row["longest_gap"], longest)
    return out


def arm_result(arm: str, summary: dict[str, Any], out: Path) -> dict[str, Any]:
    kinds = {int(u): p["kind"] for u, p in summary["peers"].items()}
    records = read_records(out / METRICS_FILE)
    sep = summary.get("separation", {})
    counts = summary["screen"]["per_window"]
    return {
        "arm": arm,
        "order_from_window": sep.get("rating_in_order_from_window"),
        "windows_to_order": sep.get("windows_to_separate"),
        "order_fraction": sep.get("rating_in_order_fraction"),
        "honest_share_final": summary["honest_weight_share"],
        "honest_share_tail_mean": summary["honest_weight_share_tail_mean"],
        "honest_share_per_window": honest_share_per_window(records, kinds),
        "evaluations": {
            "screened": [c["screened"] for c in counts.values()],
            "exact": [c["exact"] for c in counts.values()],
        },
        "coverage": exact_coverage(records, kinds),
        "screen_spearman_mean": summary["screen"]["spearman_mean"],
        "seconds": summary["seconds"]["total"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--set", action="append", help="extra override for every run")
    parser.add_argument("--windows", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0, help="upload-timing seed (all runs)")
    parser.add_argument(
        "--arm", action="append", choices=sorted(ARMS), help="default: sampled, screened"
    )
    parser.add_argument("--out", default="runs/screen_vs_sampled")
    parser.add_argument("--force", action="store_true", help="rerun runs that already exist")
    args = parser.parse_args(argv)
    arms = args.arm or ["sampled", "screened"]
    results = []
    for arm in arms:
        summary = run_arm(arm, args)
        results.append(arm_result(arm, summary, Path(args.out) / arm))
    from gauntlet_jax.report import build_comparison

    page = build_comparison({arm: Path(args.out) / arm for arm in arms}, Path(args.out))
    print(
        json.dumps(
            {
                "bench": "screen_vs_sampled",
                "windows": args.windows,
                "peers": PEERS,
                "expected_order": EXPECTED_ORDER,
                "runs": results,
                "report": str(page),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
