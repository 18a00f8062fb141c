"""The one strict reader for JSON that crosses a trust boundary (a peer's or a bucket's
document, a payload header, a corpus manifest), and exact-type field accessors over it.

`json.loads` alone accepts what a hostile writer can exploit: nesting deep enough to raise
RecursionError (not a typed error), `NaN`/`Infinity`, repeated keys (which one wins?), integers
of thousands of digits, and `true` where an integer is expected (bool is an int in Python).
`load_json` caps size and depth before parsing (the depth is counted without recursion), and
refuses the rest; the field accessors compare exact types. Everything raises MalformedJson,
which each caller turns into the typed error of its boundary.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from gauntlet_jax.errors import MalformedJson

DEFAULT_MAX_DEPTH = 16
MAX_INT_DIGITS = 20  # any u64 fits; longer integers are refused before int() sees them
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in `text` (strings skipped), without
    recursion: the running sum of opening minus closing brackets."""
    skeleton = _STRING.sub("", text).encode("utf-8", "replace")
    chars = np.frombuffer(skeleton, np.uint8)
    steps = np.isin(chars, (ord("["), ord("{"))).astype(np.int64) - np.isin(
        chars, (ord("]"), ord("}"))
    )
    return int(np.cumsum(steps).max(initial=0))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedJson(f"key {key[:40]!r} repeats")
        out[key] = value
    return out


def _refuse_constant(name: str) -> Any:
    raise MalformedJson(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise MalformedJson(f"integer of {len(text)} digits")
    return int(text)


def load_json(data: bytes, *, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parses `data` (UTF-8 JSON) under the caps; every fault is MalformedJson."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedJson(f"expected bytes, got {type(data).__name__}")
    if len(data) > max_bytes:
        raise MalformedJson(f"{len(data)} bytes > cap {max_bytes}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedJson(f"not UTF-8 ({e.reason} at byte {e.start})") from None
    depth = nesting_depth(text)
    if depth > max_depth:
        raise MalformedJson(f"nested {depth} deep > cap {max_depth}")
    try:
        return json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_refuse_constant,
            parse_int=_bounded_int,
        )
    except ValueError as e:
        raise MalformedJson(f"not JSON: {str(e)[:120]}") from None


def as_object(value: Any, what: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise MalformedJson(f"{what} is not a JSON object")
    return value


def int_field(doc: dict[str, Any], key: str, *, minimum: int = 0) -> int:
    """`doc[key]`, an integer ≥ `minimum` (exactly int: `true` and `1.0` are refused)."""
    value = doc.get(key)
    if type(value) is not int or value < minimum:
        raise MalformedJson(f"{key!r} must be an integer ≥ {minimum}, got {str(value)[:40]}")
    return value


def int_list_field(doc: dict[str, Any], key: str, *, max_len: int, minimum: int = 0) -> list[int]:
    """`doc[key]`, a list of at most `max_len` integers ≥ `minimum` (exact types)."""
    value = doc.get(key)
    if type(value) is not list or len(value) > max_len:
        raise MalformedJson(f"{key!r} must be a list of at most {max_len} integers")
    if not all(type(v) is int and v >= minimum for v in value):
        raise MalformedJson(f"{key!r} must hold integers ≥ {minimum} only")
    return list(value)
