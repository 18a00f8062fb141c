"""`python -m gauntlet_jax.localnet --config local --miners 4`: the whole network on one machine.

Creates the embedded chain (SQLite) with one validator and N miners, then starts the validator and
every miner as separate processes (`python -m gauntlet_jax.validate` / `mine`), each with its own
bucket directory under `run.out_dir`. Windows last `protocol.blocks_per_window ×
chain.block_time_s` seconds: at least the config's, longer when one miner step measured at
start-up says this machine cannot hold them (`--window-s` or a `--set` of the window's keys
chooses instead). One line per validator window says what landed and why a payload or the
weights are missing; the validator's full per-window table goes to `run.out_dir`/logs/
validator.log. Ctrl-C stops every process cleanly; at the end the weights on chain are printed
with each uid's role, and as JSON. Exits 1 when nothing was scored.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from gauntlet_jax.chain.keys import dev_uri
from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.chain.local_store import path_from_sqlite_url
from gauntlet_jax.config import Config, add_config_args, config_from_args
from gauntlet_jax.data.corpus import open_corpus
from gauntlet_jax.localchain import create_network
from gauntlet_jax.localnet_view import (
    Peer,
    WindowPlan,
    final_weights,
    nothing_scored,
    plan_window,
    window_line,
)
from gauntlet_jax.node.metrics import METRICS_FILE, read_records

VALIDATOR_NAME = "validator"
# The keys that set a window's length: a user who sets one chooses the windows.
WINDOW_KEYS = ("chain.block_time_s", "protocol.blocks_per_window", "protocol.put_window_s")
# Compiled programs shared by the start-up measurement and every process (XLA's persistent
# cache): the miners load what the measurement compiled instead of compiling it again.
CACHE_DIR = "xla-cache"


def child_env(out: Path) -> dict[str, str]:
    """The environment of every process of the network, and of the start-up measurement (the
    same flags, so they share compiled programs)."""
    env = dict(os.environ)
    env.setdefault("JAX_PLATFORMS", "cpu")
    # Many small-model processes share the machine's cores: one XLA thread each keeps them
    # from crowding each other out (the windows are short).
    env.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str((out / CACHE_DIR).resolve()))
    return env


def _spawn(
    role: str, name: str, index: int, args: argparse.Namespace, log_dir: Path, extra: Sequence[str]
) -> subprocess.Popen:
    env = child_env(log_dir.parent)
    env["GAUNTLET_HOTKEY_SECRET"] = dev_uri(index)  # dev keys only: never real secrets in argv
    cmd = [sys.executable, "-m", f"gauntlet_jax.{role}", "--config", args.config, "--hotkey", name]
    for override in args.overrides:
        cmd += ["--set", override]
    cmd += list(extra)
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _time_window_programs(cfg: Config, out: Path, runs: int) -> list[float]:
    """Seconds of `runs` calls of `run_window_programs` in this process (the first compiles, or
    loads what an earlier process compiled from the shared cache)."""
    os.environ.update({k: v for k, v in child_env(out).items() if k not in os.environ})
    import jax  # after the environment: XLA reads its flags when the backend starts

    from gauntlet_jax.miner.loop import run_window_programs
    from gauntlet_jax.node.replica import node_placement

    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    corpus = open_corpus(cfg.data, progress=False)
    placement = node_placement(cfg)
    return [run_window_programs(cfg, corpus, placement, 1) for _ in range(runs)]


def measure_window(cfg: Config, args: argparse.Namespace, out: Path, processes: int) -> WindowPlan:
    """Compiles a miner window's programs here (filling the shared cache), then times their
    least work in `processes` processes at once — the network's own number of processes, on
    whatever else the machine runs — and sizes the windows from the slowest."""
    compile_s = _time_window_programs(cfg, out, 1)[0]
    from gauntlet_jax.node.startup import GATHER_GRACE_S  # imports JAX: after the environment

    cmd = [sys.executable, "-m", "gauntlet_jax.localnet", "--config", args.config]
    for override in args.overrides:
        cmd += ["--set", override]
    env = child_env(out)
    timers = [
        subprocess.Popen([*cmd, "--time-step"], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(processes)
    ]
    steps = []
    for timer in timers:
        stdout, _ = timer.communicate()
        if timer.returncode != 0:
            raise SystemExit("timing a miner window in parallel processes failed (see above)")
        steps.append(float(json.loads(stdout.strip().splitlines()[-1])["step_s"]))
    window_s = cfg.protocol.blocks_per_window * cfg.chain.block_time_s
    return plan_window(
        configured_s=window_s,
        configured_put_s=cfg.protocol.put_window_s,
        compile_s=compile_s,
        step_s=max(steps),
        processes=processes,
        grace_s=GATHER_GRACE_S,
    )


def chosen_window(cfg: Config, args: argparse.Namespace) -> WindowPlan | None:
    """The user's window (`--window-s`, or None when a `--set` of a window key chose it)."""
    if args.window_s is not None:
        share = cfg.protocol.put_window_s / (
            cfg.protocol.blocks_per_window * cfg.chain.block_time_s
        )
        return WindowPlan(args.window_s, args.window_s * share, "--window-s")
    return None


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _wait_until_committed(
    cfg: Config, procs: dict[str, subprocess.Popen], n: int, timeout_s: float
) -> bool:
    deadline = time.time() + timeout_s
    with LocalChain(path_from_sqlite_url(cfg.chain.url)) as chain:
        while time.time() < deadline:
            if any(p.poll() not in (None, 0) for p in procs.values()):
                return False
            if len(chain.get_commitments(cfg.chain.netuid)) >= n:
                return True
            time.sleep(0.5)
    return False


class ValidatorWatch:
    """Follows the validator's metrics file and prints one line per finished window."""

    def __init__(self, path: Path, peers: dict[int, Peer], plan: WindowPlan) -> None:
        self.path, self.peers, self.plan = path, peers, plan
        self.shown: set[int] = set()

    def poll(self) -> None:
        if not self.path.exists():
            return
        records = read_records(self.path)
        done = sorted({r["window"] for r in records if r.get("kind") == "window"} - self.shown)
        for window in done:
            print(window_line(records, window, self.peers, self.plan), flush=True)
            self.shown.add(window)


def chain_weights(cfg: Config) -> dict[str, dict[str, int]]:
    with LocalChain(path_from_sqlite_url(cfg.chain.url)) as chain:
        graph = chain.metagraph(cfg.chain.netuid)
        return {
            str(int(uid)): {
                str(k): v for k, v in chain.get_weights(cfg.chain.netuid, int(uid)).items()
            }
            for uid, permit in zip(graph.uids, graph.validator_permit, strict=True)
            if permit
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gauntlet_jax.localnet", description=__doc__)
    add_config_args(parser)
    parser.add_argument("--miners", type=int, default=4)
    parser.add_argument("--noise", type=int, default=0, help="how many of them upload noise")
    parser.add_argument("--windows", type=int, default=None, help="validator windows, then stop")
    parser.add_argument(
        "--window-s",
        type=float,
        default=None,
        help="window length in seconds (default: the config's, or longer if a miner step "
        "measured at start-up needs it); the put window keeps the config's share",
    )
    parser.add_argument("--keep", action="store_true", help="keep an existing run directory")
    parser.add_argument(
        "--ready-timeout", type=float, default=900.0, help="seconds to wait for miners to compile"
    )
    # Internal: one of the processes `measure_window` times at once.
    parser.add_argument("--time-step", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.time_step:
        # The first run loads the programs from the cache; the slower of two more is the step.
        step_s = max(_time_window_programs(cfg, Path(cfg.run.out_dir), 3)[1:])
        print(json.dumps({"step_s": step_s}), flush=True)
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated localnet stops its children too
    out = Path(cfg.run.out_dir)
    if out.exists() and not args.keep:
        for entry in out.iterdir():  # compiled programs stay: they depend only on the code
            if entry.name != CACHE_DIR:
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    open_corpus(cfg.data)  # prepare the demo corpus once, before processes race for it
    user_keys = {o.split("=", 1)[0].strip() for o in args.overrides}
    plan = chosen_window(cfg, args)
    if plan is None and user_keys.isdisjoint(WINDOW_KEYS):
        print("measuring one miner step to size the windows (compiling)…", flush=True)
        plan = measure_window(cfg, args, out, args.miners + 1)
    else:
        # Compiled once here (as measure_window does), the miners load their programs from the
        # shared cache instead of each compiling them at once.
        print("compiling a miner window's programs once, for every miner…", flush=True)
        _time_window_programs(cfg, out, 1)
    if plan is None:
        window_s = cfg.protocol.blocks_per_window * cfg.chain.block_time_s
        plan = WindowPlan(window_s, cfg.protocol.put_window_s, "set with --set")
    else:
        args.overrides = [*args.overrides, *plan.overrides(cfg.protocol.blocks_per_window)]
        cfg = config_from_args(args)
    print(
        f"windows of {plan.window_s:g} s, put window {plan.put_window_s:g} s ({plan.reason})",
        flush=True,
    )
    network = create_network(cfg, args.miners + 1, force=True)
    print(json.dumps({"chain": network["url"], "neurons": len(network["neurons"])}), flush=True)

    peers = {0: Peer(0, VALIDATOR_NAME, "validator")}
    procs: dict[str, subprocess.Popen] = {}
    for i in range(1, args.miners + 1):
        noisy = i > args.miners - args.noise
        extra = ["--behaviour", "noise"] if noisy else []
        procs[f"miner{i}"] = _spawn("mine", f"miner{i}", i, args, log_dir, extra)
        peers[i] = Peer(i, f"miner{i}", "noise miner" if noisy else "honest miner")
    print(f"started {len(procs)} miners; logs in {log_dir}; Ctrl-C to stop", flush=True)
    code = 0
    try:
        # Miners commit their bucket once compiled; the validator starts the run after that, so
        # compile time on a slow machine never eats the first windows.
        if not _wait_until_committed(cfg, procs, args.miners, args.ready_timeout):
            raise SystemExit(f"miners did not become ready; see {log_dir}")
        validator_extra = ["--windows", str(args.windows)] if args.windows else []
        procs[VALIDATOR_NAME] = _spawn(
            "validate", VALIDATOR_NAME, 0, args, log_dir, validator_extra
        )
        print(
            f"miners ready; validator started (its per-window table: {log_dir}/validator.log)",
            flush=True,
        )
        watch = ValidatorWatch(out / f"validator-{VALIDATOR_NAME}" / METRICS_FILE, peers, plan)
        while procs[VALIDATOR_NAME].poll() is None:
            watch.poll()
            dead = [n for n, p in procs.items() if p.poll() not in (None, 0)]
            if dead:
                print(f"process {dead} exited with an error; see {log_dir}", file=sys.stderr)
                code = 1
                break
            time.sleep(0.5)
        if procs[VALIDATOR_NAME].returncode not in (None, 0):
            code = 1
    except KeyboardInterrupt:
        print("stopping…", file=sys.stderr)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.time() + 30
        for p in procs.values():
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
    if VALIDATOR_NAME in procs:
        watch.poll()
    raw = chain_weights(cfg)
    normalised, lines = final_weights(raw, peers)
    print("\n".join(lines), flush=True)
    if nothing_scored(raw):
        print(
            f"nothing was scored: no weights on chain (see the lines above and "
            f"{log_dir}/validator.log); on a loaded machine try a longer --window-s",
            file=sys.stderr,
        )
        code = code or 1
    roles = {str(p.uid): f"{p.name}, {p.role}" for p in peers.values()}
    print(json.dumps({"weights": raw, "normalised": normalised, "roles": roles}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
