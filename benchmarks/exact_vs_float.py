"""Training quality of the exact (integer) outer step against the old float path (issue 15, part 2).

    python -m benchmarks.exact_vs_float --old-tree /work/main/old39451ef --windows 20 \
        --seeds 0,1,2 --out runs/exact_vs_float --plot docs/img/exact-vs-float-heldout.png

Per seed, the simulator's honest peers alone (`protocol.honest.train_honest`, the simulator's
"honest" baseline: the peers' vmapped inner steps, every payload gathered, the outer step) on
the tiny config, once in this tree (the exact integer step) and once in `--old-tree` (a tree
whose `gauntlet_jax` has the float step, e.g. commit 39451ef), each in its own process with that
tree first on PYTHONPATH. In an honest-only simulation this is θ's whole path: the validator
gathers every active peer whatever it scores (an honest-only `simulate` run's held-out loss
equals its honest baseline's to the bit), so the validator is left out to save its time. A seed
sets `train.seed` (θ_0) and `data.seed` (the pages); the held-out documents are the corpus's
last ones in every run.

Prints one JSON line: per run the held-out curve; per window the across-seed mean and standard
deviation of each path and the paired difference float − exact; and the verdict: the paired
difference (mean over seeds) lies within 2 standard deviations of the exact path's run-to-run
spread at every evaluated window. With `--plot` it draws both paths' curves and the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> int:
    """In the tree first on PYTHONPATH: the honest peers alone for `--windows` outer steps
    (`protocol.honest.train_honest`, as the simulator's honest baseline), one JSON line."""
    import gauntlet_jax
    from gauntlet_jax.config import load_config
    from gauntlet_jax.data.pages import batches_for, heldout_batches
    from gauntlet_jax.protocol.honest import train_honest

    try:
        from gauntlet_jax.data.corpus import open_corpus
    except ModuleNotFoundError:  # trees before the data/ split (39451ef)
        from gauntlet_jax.data.shards import open_corpus  # type: ignore[no-redef]

    seed = args.seed
    cfg = load_config(args.config, [f"train.seed={seed}", f"data.seed={seed}"])
    corpus = open_corpus(cfg.data, progress=False)
    t0 = time.perf_counter()
    _, curve = train_honest(
        cfg,
        # Peer i is uid i + 1 (uid 0 is the simulator's validator).
        lambda i, w: batches_for(corpus, i + 1, w, cfg)[: cfg.train.max_micro_batches],
        heldout_batches(corpus, cfg),
        n_peers=args.peers,
        n_windows=args.windows,
        eval_every=1,
    )
    record = {
        "package": str(Path(gauntlet_jax.__file__).parent),
        "protocol_version": cfg.protocol.version,
        "seed": seed,
        "steps": curve.windows,
        "loss": curve.heldout_loss,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(record))
    return 0


def run_path(tree: Path, path: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """One run in `tree`'s own process (reused from OUT/<path>-s<seed>.json unless --force)."""
    out = Path(args.out) / f"{path}-s{seed}.json"
    if out.exists() and not args.force:
        return json.loads(out.read_text())
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.exact_vs_float",
        "--worker",
        "--config",
        str(tree / "configs" / "tiny.yaml"),
        "--seed",
        str(seed),
        "--windows",
        str(args.windows),
        "--peers",
        str(args.peers),
    ]
    # The tree's gauntlet_jax first; this script's benchmarks package after it.
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{HERE}", "JAX_PLATFORMS": "cpu"}
    # Runs of one tree compile the same programs: XLA's persistent cache spares the later seeds.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str((Path(args.out) / "jax_cache").resolve()))
    print(f"{path} seed {seed}: PYTHONPATH={env['PYTHONPATH']}", file=sys.stderr, flush=True)
    # cwd = the tree: `python -m` puts the working directory ahead of PYTHONPATH.
    done = subprocess.run(cmd, env=env, cwd=tree, check=True, capture_output=True, text=True)
    record = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(record["package"]) != tree / "gauntlet_jax":
        raise RuntimeError(f"{path} seed {seed} ran {record['package']}, not {tree}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record))
    return record


def compare(curves: dict[str, dict[int, list[float]]], steps: list[int]) -> dict[str, Any]:
    """Across-seed statistics per evaluated window and the verdict (see the module doc)."""
    seeds = sorted(set(curves["exact"]) & set(curves["float"]))
    exact = np.array([curves["exact"][s] for s in seeds])
    old = np.array([curves["float"][s] for s in seeds])
    diff = old - exact
    spread = exact.std(axis=0, ddof=1) if len(seeds) > 1 else np.full(len(steps), np.nan)
    mean_diff = diff.mean(axis=0)
    within = bool(np.all(np.abs(mean_diff[1:]) <= 2 * spread[1:])) if len(seeds) > 1 else None
    return {
        "seeds": seeds,
        "steps": steps,
        "exact_mean": exact.mean(axis=0).tolist(),
        "exact_sd": spread.tolist(),
        "float_mean": old.mean(axis=0).tolist(),
        "float_sd": (old.std(axis=0, ddof=1) if len(seeds) > 1 else spread).tolist(),
        "float_minus_exact_mean": mean_diff.tolist(),
        "float_minus_exact_per_seed": diff.tolist(),
        "final": {
            "exact_mean": float(exact[:, -1].mean()),
            "exact_sd": float(spread[-1]),
            "float_mean": float(old[:, -1].mean()),
            "float_minus_exact_mean": float(mean_diff[-1]),
            "max_abs_float_minus_exact": float(np.abs(diff).max()),
        },
        "within_noise": within,
        "rule": "|mean over seeds of float − exact| ≤ 2 × across-seed sd of exact, every window",
    }


def plot(
    result: dict[str, Any], curves: dict[str, dict[int, list[float]]], old_name: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result["steps"]
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7, 5.5), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
    )
    colours = {"exact": "#2b7bba", "float": "#d73027"}
    labels = {"exact": "exact integer step (this tree)", "float": f"float step ({old_name})"}
    for name, by_seed in curves.items():
        for i, (_seed, loss) in enumerate(sorted(by_seed.items())):
            top.plot(
                steps,
                loss,
                color=colours[name],
                ls="-" if name == "exact" else "--",
                lw=1.2,
                alpha=0.85,
                label=labels[name] if i == 0 else None,
            )
    top.set_ylabel("held-out loss")
    top.set_title(f"honest peers only, tiny config, seeds {result['seeds']}", fontsize=9)
    top.grid(alpha=0.3)
    top.legend(fontsize=8)
    sd = np.array(result["exact_sd"])
    bottom.fill_between(steps, -2 * sd, 2 * sd, color="#bbbbbb", label="±2 sd across seeds (exact)")
    for row in result["float_minus_exact_per_seed"]:
        bottom.plot(steps, row, color="#555555", lw=0.8, alpha=0.6)
    bottom.plot(steps, result["float_minus_exact_mean"], color="k", lw=1.6, label="float − exact")
    bottom.axhline(0, color="k", lw=0.5)
    bottom.set_xlabel("outer step (window)")
    bottom.set_ylabel("difference")
    bottom.grid(alpha=0.3)
    bottom.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-tree", help="tree with the float outer step")
    parser.add_argument("--windows", type=int, default=20)
    parser.add_argument("--peers", type=int, default=4, help="honest peers")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated")
    parser.add_argument("--out", default="runs/exact_vs_float")
    parser.add_argument("--plot", default=None, help="PNG path for the curves")
    parser.add_argument("--force", action="store_true", help="rerun runs that already exist")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if not args.old_tree:
        parser.error("--old-tree is required")
    seeds = [int(s) for s in args.seeds.split(",")]
    trees = {"exact": HERE, "float": Path(args.old_tree).resolve()}
    curves: dict[str, dict[int, list[float]]] = {"exact": {}, "float": {}}
    steps: list[int] = []
    runs: dict[str, Any] = {}
    for seed in seeds:
        for path, tree in trees.items():
            record = run_path(tree, path, seed, args)
            steps = record["steps"]
            curves[path][seed] = record["loss"]
            runs[f"{path}-s{seed}"] = {
                k: record[k] for k in ("package", "protocol_version", "seconds", "loss")
            }
    result = compare(curves, steps)
    result.update(
        {"bench": "exact_vs_float", "windows": args.windows, "peers": args.peers, "runs": runs}
    )
    if args.plot:
        plot(result, curves, trees["float"].name, Path(args.plot))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
