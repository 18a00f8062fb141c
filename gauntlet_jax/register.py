"""`python -m gauntlet_jax.register --config C [--yes]`: burned registration of this node's hotkey
on the configured subnet.

Shows the burn cost and the coldkey's balance, asks for confirmation (unless `--yes`), then sends
`burned_register` signed by the coldkey and prints the uid. The hotkey comes from `chain.key_env`
/ `chain.key_file`, the coldkey from the env var named by `chain.coldkey_env` (default
GAUNTLET_COLDKEY_SECRET) or `chain.coldkey_file`: never from the command line. On the local
SQLite chain registration is free (it keeps no balances) and needs no coldkey.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from gauntlet_jax.chain import open_chain
from gauntlet_jax.chain.errors import HotkeyError
from gauntlet_jax.chain.keys import Hotkey, hotkey_from_config, hotkey_from_file, hotkey_from_secret
from gauntlet_jax.config import ChainConfig, add_config_args, config_from_args
from gauntlet_jax.errors import ChainError

RAO_PER_TAO = 1_000_000_000


def coldkey_from_config(cfg: ChainConfig) -> Hotkey:
    """The coldkey: `cfg.coldkey_file` if set, else the env var named by `cfg.coldkey_env`."""
    if cfg.coldkey_file:
        return hotkey_from_file(cfg.coldkey_file)
    secret = os.environ.get(cfg.coldkey_env) if cfg.coldkey_env else None
    if not secret:
        raise HotkeyError(
            f"no coldkey: set the env var {cfg.coldkey_env or '(chain.coldkey_env)'} or "
            "chain.coldkey_file"
        )
    return hotkey_from_secret(secret, f"env var {cfg.coldkey_env}")


def register(
    cfg: ChainConfig, *, yes: bool, ask: Callable[[str], str] = input, out=print
) -> int | None:
    """Registers the configured hotkey; returns its uid, or None when the operator declined."""
    hotkey = hotkey_from_config(cfg)
    if hotkey is None:
        raise HotkeyError(f"no hotkey: set the env var {cfg.key_env} or chain.key_file")
    local = cfg.url.startswith("sqlite:///")
    chain = open_chain(cfg, hotkey.ss58_address if local else hotkey)
    try:
        cost = chain.burn_cost(cfg.netuid)
        coldkey = None if local else coldkey_from_config(cfg)
        out(f"hotkey {hotkey.ss58_address} on netuid {cfg.netuid} at {cfg.url}")
        if coldkey is None:
            out("burn cost: 0 (the local chain keeps no balances)")
        else:
            balance = chain.free_balance(coldkey.ss58_address)
            out(
                f"burn cost: {cost / RAO_PER_TAO:.9f} TAO, paid by coldkey "
                f"{coldkey.ss58_address} (free balance {balance / RAO_PER_TAO:.9f} TAO)"
            )
        if not yes and ask("register? [y/N] ").strip().lower() not in ("y", "yes"):
            out("not registered")
            return None
        uid = chain.burned_register(cfg.netuid, coldkey)
        out(f"registered: uid {uid}")
        return uid
    finally:
        chain.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gauntlet_jax.register", description=__doc__)
    add_config_args(parser)
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    try:
        uid = register(cfg.chain, yes=args.yes)
    except ChainError as e:
        print(f"register: {e}", file=sys.stderr)
        return 1
    return 0 if uid is not None else 2


if __name__ == "__main__":
    sys.exit(main())
