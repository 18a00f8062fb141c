"""Decoding payloads as they arrive (`compress.streaming`) gives the same outer step, to the bit, as
decoding them all and stacking afterwards; a bad payload is a verdict, never an exception."""

from __future__ import annotations

import random

import jax
import numpy as np
import pytest
from _pytrees import plan_for, random_tree

from gauntlet_jax.compress import codec
from gauntlet_jax.compress.streaming import StreamingDecoder
from gauntlet_jax.config import load_config
from gauntlet_jax.errors import InvalidPayload
from gauntlet_jax.protocol import outer
from gauntlet_jax.protocol.momentum import init_momentum, momentum_step

PLAN = plan_for()
CFG = load_config("tiny")
CAP = codec.max_payload_bytes(PLAN)
WINDOW = 9


def _blob(uid: int) -> bytes:
    grads = random_tree(100 + uid)
    sent = momentum_step(init_momentum(grads), grads, 0.01, 0, CFG, PLAN)
    return codec.encode_payload(uid, WINDOW, sent.idx, sent.vals, PLAN)


def _reference_stack(payloads: list[codec.DecodedPayload | None]) -> tuple:
    """The stacking as it was before the preallocated stack: one fresh array per leaf."""
    n = len(payloads)
    idx_out, val_out = [], []
    for i, lp in enumerate(PLAN.leaves):
        idx = np.broadcast_to(np.arange(lp.k, dtype=lp.index_dtype), (n, *lp.payload_shape)).copy()
        vals = np.zeros((n, *lp.payload_shape), dtype=np.float32)
        for p, payload in enumerate(payloads):
            if payload is not None:
                idx[p] = PLAN.flatten(payload.idx)[i]
                vals[p] = PLAN.flatten(payload.vals)[i]
        idx_out.append(idx)
        val_out.append(vals)
    mask = np.array([p is not None for p in payloads], dtype=bool)
    return PLAN.unflatten(idx_out), PLAN.unflatten(val_out), mask


def _bits(tree) -> list[bytes]:
    return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize("seed", [0, 1])
def test_streaming_stack_and_signs_equal_the_decode_then_stack_path(seed: int) -> None:
    n_rows = 6
    blobs = {uid: _blob(uid) for uid in range(5)}
    bad_uid = 2
    blobs[bad_uid] = blobs[bad_uid][:-40]  # truncated tensor data
    # The old path: decode each, reject the bad one, stack (row 5 stays empty).
    old = []
    for uid in range(n_rows):
        try:
            old.append(
                codec.decode_payload(
                    blobs[uid], PLAN, expected_uid=uid, expected_window=WINDOW, max_bytes=CAP
                )
                if uid in blobs
                else None
            )
        except InvalidPayload:
            old.append(None)
    assert old[bad_uid] is None and sum(p is not None for p in old) == 4
    want = _reference_stack(old)

    # Streaming: arrivals in a random order, decoded on three workers into their rows.
    stack = codec.PayloadStack(PLAN, n_rows)
    arrivals = list(blobs)
    random.Random(seed).shuffle(arrivals)
    with StreamingDecoder(PLAN, stack, CAP, workers=3) as decoder:
        futures = {uid: decoder.submit(uid, uid, WINDOW, blobs[uid]) for uid in arrivals}
        results = {uid: f.result() for uid, f in futures.items()}
    assert isinstance(results[bad_uid], InvalidPayload)
    assert results[bad_uid].uid == bad_uid and "malformed tensor data" in str(results[bad_uid])
    got_payloads = [
        results[u] if u in results and not isinstance(results[u], InvalidPayload) else None
        for u in range(n_rows)
    ]
    got = stack.stacked(got_payloads)
    assert _bits(got) == _bits(want)
    assert got[2].tolist() == [True, True, False, True, True, False]
    signs_old = outer.aggregate_sign(*want, CFG, PLAN)
    signs_new = outer.aggregate_sign(*got, CFG, PLAN)
    assert _bits(signs_new) == _bits(signs_old)
    assert codec.stack_payloads(old, PLAN)[2].tolist() == want[2].tolist()
    assert _bits(codec.stack_payloads(old, PLAN)) == _bits(want)


def test_stack_rewrites_rows_that_do_not_hold_the_given_payload() -> None:
    a, b = (
        codec.decode_payload(_blob(u), PLAN, expected_uid=u, expected_window=WINDOW, max_bytes=CAP)
        for u in (0, 1)
    )
    stack = codec.PayloadStack(PLAN, 3)
    stack.put(0, a)
    stack.put(1, b)
    # Row 0 now asked for b, row 1 for nothing, row 2 for a: every row must follow the request.
    got = stack.stacked([b, None, a])
    assert _bits(got) == _bits(_reference_stack([b, None, a]))
    with pytest.raises(ValueError, match="2 payloads for a stack of 3"):
        stack.stacked([a, b])
