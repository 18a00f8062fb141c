"""Chain adapters: the `Chain` interface (base) and its typed errors (errors), the embedded SQLite
chain (local, over local_store and local_pallet) and a thin subtensor client (subtensor, over
subtensor_read, substrate and subtensor_decode); both share weights (u16 math, commit hashes) and
reveal (client-side commit-reveal). `open_chain` picks a backend by the URL scheme of
`ChainConfig.url`."""

from __future__ import annotations

from gauntlet_jax.chain.base import Chain, Metagraph, WeightsResult
from gauntlet_jax.chain.errors import ChainConnectionError, PalletError
from gauntlet_jax.chain.keys import Hotkey, address_of, hotkey_from_config
from gauntlet_jax.config import ChainConfig
from gauntlet_jax.errors import ChainError

__all__ = [
    "Chain",
    "ChainConnectionError",
    "ChainError",
    "Hotkey",
    "Metagraph",
    "PalletError",
    "WeightsResult",
    "open_chain",
]


def open_chain(cfg: ChainConfig, hotkey_source: object = None) -> Chain:
    """The chain of `cfg.url`: `sqlite:///path` → LocalChain, `ws://` / `wss://` → SubtensorChain.

    hotkey_source: a `Hotkey`, or None to load it from the config (`key_file`, else the env var
    named by `key_env`; no key = read-only). The local chain also takes a bare SS58 address.
    """
    if hotkey_source is None:
        hotkey_source = hotkey_from_config(cfg)
    if cfg.url.startswith("sqlite:///"):
        from gauntlet_jax.chain.local import LocalChain
        from gauntlet_jax.chain.local_store import path_from_sqlite_url

        return LocalChain(
            path_from_sqlite_url(cfg.url),
            address_of(hotkey_source),
            block_time_s=cfg.block_time_s,
            busy_timeout_s=cfg.timeout_s,
        )
    if cfg.url.startswith(("ws://", "wss://")):
        from gauntlet_jax.chain.subtensor import SubtensorChain

        if hotkey_source is not None and not isinstance(hotkey_source, Hotkey):
            raise ChainError("a subtensor chain signs with a Hotkey (see chain.keys.hotkey_from_*)")
        return SubtensorChain(
            cfg.url,
            hotkey_source,
            timeout_s=cfg.timeout_s,
            wait_for_inclusion=cfg.wait_for_inclusion,
        )
    raise ChainError(f"chain url {cfg.url!r}: expected sqlite:///path, ws:// or wss://")
