"""Creates and inspects the embedded local chain (one SQLite file) for demos and simulation.

    python -m gauntlet_jax.localchain create --config local --neurons 4
    python -m gauntlet_jax.localchain show --config local
    python -m gauntlet_jax.localchain advance --config local --blocks 7   (manual clock only)

`create` registers N neurons with deterministic dev hotkeys (//Alice, //Bob, …, //Neuron6 …):
uid 0 is the validator (validator permit, stake above the evaluation stake cap), the others are
miners with no stake. It prints JSON: the url, netuid, current block and every neuron with its uid,
hotkey and the dev URI to pass as the node's secret (GAUNTLET_HOTKEY_SECRET=//Bob …).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gauntlet_jax.chain.keys import dev_hotkey, dev_uri
from gauntlet_jax.chain.local import LocalChain
from gauntlet_jax.chain.local_store import path_from_sqlite_url
from gauntlet_jax.cli import run_guarded
from gauntlet_jax.config import Config, add_config_args, add_version_flag, config_from_args
from gauntlet_jax.errors import ConfigError


def _chain_path(cfg: Config) -> Path:
    return path_from_sqlite_url(cfg.chain.url)


def create_network(
    cfg: Config,
    neurons: int,
    *,
    force: bool = False,
    manual_clock: bool = False,
    rate_limit: int | None = None,
) -> dict:
    """Creates the local chain file of `cfg.chain.url` with `neurons` registered neurons."""
    if neurons < 1:
        raise ConfigError(f"need at least one neuron, got {neurons}")
    path = _chain_path(cfg)
    if path.exists():
        if not force:
            raise ConfigError(f"{path} exists; pass --force to replace it")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    netuid = cfg.chain.netuid
    # A validator posts every windows_per_weights windows; the default rate limit lets it.
    limit = (
        rate_limit
        if rate_limit is not None
        else min(100, cfg.validator.windows_per_weights * cfg.protocol.blocks_per_window)
    )
    with LocalChain(path, block_time_s=cfg.chain.block_time_s) as chain:
        if manual_clock:
            chain.set_clock_mode("manual")
        chain.create_subnet(
            netuid, weights_rate_limit=limit, tempo=cfg.protocol.blocks_per_window * 10
        )
        rows = []
        for index in range(neurons):
            hotkey = dev_hotkey(index).ss58_address
            is_validator = index == 0
            stake = 10.0 * cfg.validator.stake_cap if is_validator else 0.0
            uid = chain.register(netuid, hotkey, stake=stake, validator_permit=is_validator)
            rows.append(
                {
                    "uid": uid,
                    "hotkey": hotkey,
                    "uri": dev_uri(index),
                    "stake": stake,
                    "validator_permit": is_validator,
                }
            )
        return {
            "url": cfg.chain.url,
            "netuid": netuid,
            "block": chain.current_block(),
            "clock": chain.clock_mode,
            "block_time_s": chain.block_time_s,
            "params": chain.params(netuid),
            "neurons": rows,
        }


def show_network(cfg: Config) -> dict:
    path = _chain_path(cfg)
    if not path.exists():
        raise ConfigError(f"{path} does not exist; run `python -m gauntlet_jax.localchain create`")
    with LocalChain(path, block_time_s=cfg.chain.block_time_s) as chain:
        graph = chain.metagraph(cfg.chain.netuid)
        commitments = chain.get_commitments(cfg.chain.netuid)
        return {
            "url": cfg.chain.url,
            "netuid": cfg.chain.netuid,
            "block": chain.current_block(),
            "clock": chain.clock_mode,
            "params": chain.params(cfg.chain.netuid),
            "neurons": [
                {
                    "uid": int(uid),
                    "hotkey": hotkey,
                    "stake": float(stake),
                    "validator_permit": bool(permit),
                    "last_update": int(last),
                    "has_commitment": int(uid) in commitments,
                }
                for uid, hotkey, stake, permit, last in zip(
                    graph.uids,
                    graph.hotkeys,
                    graph.stake,
                    graph.validator_permit,
                    graph.last_update,
                    strict=True,
                )
            ],
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gauntlet_jax.localchain", description=__doc__)
    add_version_flag(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create a local network with N registered neurons")
    add_config_args(create)
    create.add_argument("--neurons", type=int, required=True)
    create.add_argument("--force", action="store_true", help="replace an existing chain file")
    create.add_argument("--manual-clock", action="store_true", help="blocks advance only by hand")
    create.add_argument("--rate-limit", type=int, default=None, help="WeightsSetRateLimit (blocks)")
    show = sub.add_parser("show", help="print the metagraph of the local network")
    add_config_args(show)
    advance = sub.add_parser("advance", help="advance a manual clock by N blocks")
    add_config_args(advance)
    advance.add_argument("--blocks", type=int, default=1)
    args = parser.parse_args(argv)
    return run_guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> None:
    cfg = config_from_args(args)
    if args.command == "create":
        out = create_network(
            cfg,
            args.neurons,
            force=args.force,
            manual_clock=args.manual_clock,
            rate_limit=args.rate_limit,
        )
    elif args.command == "show":
        out = show_network(cfg)
    else:
        with LocalChain(_chain_path(cfg), block_time_s=cfg.chain.block_time_s) as chain:
            out = {"block": chain.advance(args.blocks)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
