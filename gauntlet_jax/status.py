"""`python -m gauntlet_jax.status --config C`: this node's hotkey on the configured subnet.

Prints JSON: uid, stake, validator permit, the block of its last weights, its bucket commitment,
blocks until the next weight call is allowed, and the subnet's and this node's version keys.
The hotkey comes from `chain.key_env` / `chain.key_file` (only its address is used), or
`--address SS58`. Works on the local SQLite chain and on subtensor alike.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gauntlet_jax.chain import open_chain
from gauntlet_jax.chain.keys import hotkey_from_config
from gauntlet_jax.chain.status import neuron_status
from gauntlet_jax.config import add_config_args, config_from_args
from gauntlet_jax.errors import ChainError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gauntlet_jax.status", description=__doc__)
    add_config_args(parser)
    parser.add_argument("--address", help="SS58 hotkey address (default: the node's hotkey)")
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    try:
        address = args.address
        if address is None:
            hotkey = hotkey_from_config(cfg.chain)
            if hotkey is None:
                raise ChainError(
                    f"no hotkey: set {cfg.chain.key_env} or chain.key_file, or pass --address"
                )
            address = hotkey.ss58_address
        chain = open_chain(cfg.chain)
        try:
            status = neuron_status(chain, cfg.chain.netuid, address)
        finally:
            chain.close()
    except ChainError as e:
        print(f"status: {e}", file=sys.stderr)
        return 1
    print(json.dumps(status.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
