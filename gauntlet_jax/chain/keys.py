"""Hotkeys (sr25519) from a dev URI, a mnemonic, a hex seed or a key file, never leaking the secret.

The secret itself is never logged, printed, put in an exception message or shown by repr: a
`Hotkey` shows only its SS58 address, and every error names where the secret came from (an
environment variable's name, a file's path), not what it was. Derivation errors from the key
library are replaced, not chained, since their messages may quote the input.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from scalecodec.utils.ss58 import is_valid_ss58_address, ss58_decode
from substrateinterface import Keypair, KeypairType

from gauntlet_jax.chain.errors import HotkeyError
from gauntlet_jax.config import ChainConfig

MAX_KEY_FILE_BYTES = 64 * 1024
_HEX_SEED = re.compile(r"^(0x)?[0-9a-fA-F]{64}$")
DEV_NAMES = ("Alice", "Bob", "Charlie", "Dave", "Eve", "Ferdie")


class Hotkey:
    """An sr25519 signing key. Shows only its address; cannot be pickled."""

    __slots__ = ("_keypair",)

    def __init__(self, keypair: Keypair) -> None:
        if keypair.crypto_type != KeypairType.SR25519:
            raise HotkeyError("hotkeys must be sr25519")
        self._keypair = keypair

    @property
    def ss58_address(self) -> str:
        return self._keypair.ss58_address

    @property
    def public_key(self) -> bytes:
        return bytes(self._keypair.public_key)

    @property
    def keypair(self) -> Keypair:
        """The substrate-interface keypair, for signing extrinsics. Do not log it."""
        return self._keypair

    def sign(self, data: bytes) -> bytes:
        return bytes(self._keypair.sign(data))

    def verify(self, data: bytes, signature: bytes) -> bool:
        return bool(self._keypair.verify(data, signature))

    def __repr__(self) -> str:
        return f"Hotkey({self.ss58_address})"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("a Hotkey holds a secret and cannot be pickled")


def _keypair_from_secret(secret: str, source: str) -> Keypair:
    text = secret.strip()
    if not text:
        raise HotkeyError(f"hotkey from {source}: empty secret")
    try:
        if _HEX_SEED.match(text):
            seed = text[2:] if text.startswith("0x") else text
            return Keypair.create_from_seed(seed, crypto_type=KeypairType.SR25519)
        # Dev URIs (//Alice), and mnemonics with or without a derivation path.
        return Keypair.create_from_uri(text, crypto_type=KeypairType.SR25519)
    except (ValueError, NotImplementedError, TypeError, IndexError, KeyError):
        kind = "URI" if text.startswith("/") else "mnemonic, URI"
        raise HotkeyError(f"hotkey from {source}: not a valid {kind} or 32-byte hex seed") from None


def hotkey_from_secret(secret: str, source: str = "the given secret") -> Hotkey:
    """A hotkey from a dev URI (`//Alice`), a mnemonic (optionally with `//path`), or a hex seed.
    `source` names where the secret came from, for error messages."""
    if not isinstance(secret, str):
        raise HotkeyError(f"hotkey from {source}: expected a string")
    return Hotkey(_keypair_from_secret(secret, source))


def hotkey_from_file(path: str | Path) -> Hotkey:
    """A hotkey from a file holding a URI / mnemonic / hex seed, or a bittensor wallet hotkey JSON
    (`secretSeed` or `secretPhrase`)."""
    p = Path(path).expanduser()
    source = f"key file {str(p)!r}"
    try:
        size = p.stat().st_size
        if size > MAX_KEY_FILE_BYTES:
            raise HotkeyError(f"{source}: {size} bytes, limit {MAX_KEY_FILE_BYTES}")
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise HotkeyError(f"{source}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise HotkeyError(f"{source}: not UTF-8 text") from None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            doc = json.loads(stripped)
        except json.JSONDecodeError:
            raise HotkeyError(f"{source}: malformed JSON") from None
        if not isinstance(doc, dict):
            raise HotkeyError(f"{source}: JSON must be an object")
        for field in ("secretSeed", "secretPhrase"):
            value = doc.get(field)
            if isinstance(value, str) and value.strip():
                hotkey = hotkey_from_secret(value, f"{source} ({field})")
                expected = doc.get("ss58Address")
                if isinstance(expected, str) and expected and expected != hotkey.ss58_address:
                    raise HotkeyError(f"{source}: ss58Address does not match the secret")
                return hotkey
        raise HotkeyError(f"{source}: JSON has neither secretSeed nor secretPhrase")
    return hotkey_from_secret(stripped, source)


def hotkey_from_config(cfg: ChainConfig, env: Mapping[str, str] | None = None) -> Hotkey | None:
    """The node's hotkey: `cfg.key_file` if set, else the env var named by `cfg.key_env`; None
    when neither is set (read-only use)."""
    environ = os.environ if env is None else env
    if cfg.key_file:
        return hotkey_from_file(cfg.key_file)
    if cfg.key_env and environ.get(cfg.key_env):
        return hotkey_from_secret(environ[cfg.key_env], f"environment variable {cfg.key_env}")
    return None


def dev_uri(index: int) -> str:
    """Deterministic dev key URIs: //Alice … //Ferdie, then //Neuron6, //Neuron7 …"""
    if index < 0:
        raise ValueError(f"index must be non-negative, got {index}")
    return f"//{DEV_NAMES[index]}" if index < len(DEV_NAMES) else f"//Neuron{index}"


def dev_hotkey(index: int) -> Hotkey:
    return hotkey_from_secret(dev_uri(index), f"dev key {index}")


def address_of(hotkey_source: object) -> str | None:
    """An SS58 address from a Hotkey, a Keypair, or an address string."""
    if hotkey_source is None:
        return None
    if isinstance(hotkey_source, Hotkey):
        return hotkey_source.ss58_address
    if isinstance(hotkey_source, Keypair):
        return hotkey_source.ss58_address
    if isinstance(hotkey_source, str):
        if not is_valid_ss58_address(hotkey_source):
            # Do not echo it: a secret URI passed here by mistake must not reach a log.
            raise HotkeyError("expected an SS58 address string (secrets go through hotkey_from_*)")
        return hotkey_source
    raise HotkeyError(f"cannot take an address from a {type(hotkey_source).__name__}")


def public_key_of(address: str) -> bytes:
    """The 32-byte account id of an SS58 address."""
    if not isinstance(address, str) or not is_valid_ss58_address(address):
        raise HotkeyError(f"not an SS58 address: {str(address)[:64]!r}")
    return bytes.fromhex(ss58_decode(address))
