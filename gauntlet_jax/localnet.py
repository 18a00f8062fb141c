"""`python -m gauntlet_jax.localnet --config local --miners 4`: the whole network on one machine.

Creates the embedded chain (SQLite) with one validator and N miners, then starts the validator and
every miner as separate processes (`python -m gauntlet_jax.validate` / `mine`), each with its own
bucket directory under `run.out_dir`. Windows last `protocol.blocks_per_window ×
chain.block_time_s` seconds (a few seconds in configs/local.yaml). Ctrl-C stops every process
cleanly; at the end the weights on chain are printed as JSON.
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

VALIDATOR_NAME = "validator"


def _spawn(
    role: str, name: str, index: int, args: argparse.Namespace, log_dir: Path, extra: Sequence[str]
) -> subprocess.Popen:
    env = dict(os.environ)
    env["GAUNTLET_HOTKEY_SECRET"] = dev_uri(index)  # dev keys only: never real secrets in argv
    env.setdefault("JAX_PLATFORMS", "cpu")
    # Many small-model processes share the machine's cores: one XLA thread each keeps them
    # from crowding each other out (the windows are short).
    env.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    cmd = [sys.executable, "-m", f"gauntlet_jax.{role}", "--config", args.config, "--hotkey", name]
    for override in args.overrides:
        cmd += ["--set", override]
    cmd += list(extra)
    log = open(log_dir / f"{name}.log", "wb")  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


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
    parser.add_argument("--keep", action="store_true", help="keep an existing run directory")
    parser.add_argument(
        "--ready-timeout", type=float, default=900.0, help="seconds to wait for miners to compile"
    )
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    signal.signal(signal.SIGTERM, _interrupt)  # a terminated localnet stops its children too
    out = Path(cfg.run.out_dir)
    if out.exists() and not args.keep:
        shutil.rmtree(out)
    log_dir = out / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    open_corpus(cfg.data)  # prepare the demo corpus once, before processes race for it
    network = create_network(cfg, args.miners + 1, force=True)
    print(json.dumps({"chain": network["url"], "neurons": len(network["neurons"])}), flush=True)

    procs: dict[str, subprocess.Popen] = {}
    for i in range(1, args.miners + 1):
        extra = ["--behaviour", "noise"] if i > args.miners - args.noise else []
        procs[f"miner{i}"] = _spawn("mine", f"miner{i}", i, args, log_dir, extra)
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
        print("miners ready; validator started", flush=True)
        while procs[VALIDATOR_NAME].poll() is None:
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
    print(json.dumps({"weights": chain_weights(cfg)}), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
