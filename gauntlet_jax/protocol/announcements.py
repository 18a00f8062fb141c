"""What the lead validator announces in its bucket (GAUNTLET.md §1.1, §1.6): the run's start
window and each gather set. One writer and one strict reader per kind, so what nodes read is
exactly what a validator can write: `{"start_window": W}` and `{"peers": [uid, …],
"chosen_at": W}`, integers only (`true` is not window 1), under a size and depth cap.
"""

from __future__ import annotations

import json

from gauntlet_jax.errors import InvalidPayload, MalformedJson
from gauntlet_jax.strict_json import as_object, int_field, int_list_field, load_json

# Announcements are tiny; a cap far below any payload bounds what a hostile lead can make us read.
MAX_ANNOUNCEMENT_BYTES = 64 * 1024
MAX_ANNOUNCEMENT_DEPTH = 2
MAX_LISTED_PEERS = 4096
UID_MAX = 65535


def encode_start_window(window: int) -> bytes:
    return json.dumps({"start_window": int(window)}).encode()


def encode_peer_list(peers: list[int], chosen_at: int) -> bytes:
    return json.dumps({"peers": [int(u) for u in peers], "chosen_at": int(chosen_at)}).encode()


def parse_start_window(data: bytes, uid: int) -> int:
    """The announced start window; InvalidPayload (naming the lead `uid`) for anything else."""
    try:
        doc = as_object(load_json(data, **_CAPS), "start window")
        return int_field(doc, "start_window")
    except MalformedJson as e:
        raise InvalidPayload(uid, "malformed start window", str(e)) from None


def parse_peer_list(data: bytes, uid: int) -> list[int]:
    """The announced gather set (uids in order); InvalidPayload for anything else."""
    try:
        doc = as_object(load_json(data, **_CAPS), "peer list")
        peers = int_list_field(doc, "peers", max_len=MAX_LISTED_PEERS)
        int_field(doc, "chosen_at")
    except MalformedJson as e:
        raise InvalidPayload(uid, "malformed peer list", str(e)) from None
    if any(u > UID_MAX for u in peers):
        raise InvalidPayload(uid, "malformed peer list", f"a uid above {UID_MAX}")
    return peers


_CAPS = {"max_bytes": MAX_ANNOUNCEMENT_BYTES, "max_depth": MAX_ANNOUNCEMENT_DEPTH}
