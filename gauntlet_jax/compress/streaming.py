"""Decoding the gather set's payloads while they arrive: each payload's bytes are validated on a
worker thread and written straight into its row of a preallocated `PayloadStack`, so what is left
after the last arrival is that payload's own decode, the device transfer and the outer step.

Only the decode is threaded; whoever fetches the bytes keeps doing so in order on its own thread
(on a pod slice every process must make the same bucket calls in the same order). The result is
the same stacked arrays as `codec.stack_payloads` over the same decoded payloads, bit for bit:
the rows are the same copies of the same validated arrays, written in a different order.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from gauntlet_jax.compress.codec import DecodedPayload, PayloadStack, decode_payload
from gauntlet_jax.compress.plan import CompressionPlan
from gauntlet_jax.errors import InvalidPayload


class StreamingDecoder:
    """A decode pool feeding one `PayloadStack`; use as a context manager (joins the workers).

    `submit(row, uid, window, data)` returns a future of the `DecodedPayload`, or of the
    `InvalidPayload` that rejected it (returned, not raised: a bad payload is a verdict on the
    peer, and its row stays the placeholder with mask False). A row ≥ the stack's size is decoded
    and judged but not stacked (a gather list longer than the protocol's gather set).
    """

    def __init__(self, plan: CompressionPlan, stack: PayloadStack, max_bytes: int, workers: int):
        if workers < 1:
            raise ValueError(f"decode workers must be ≥ 1, got {workers}")
        self.plan = plan
        self.stack = stack
        self.max_bytes = max_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")

    def __enter__(self) -> StreamingDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

    def _decode_into(
        self, row: int, uid: int, window: int, data: bytes
    ) -> DecodedPayload | InvalidPayload:
        try:
            payload = decode_payload(
                data, self.plan, expected_uid=uid, expected_window=window, max_bytes=self.max_bytes
            )
        except InvalidPayload as err:
            return err
        if row < self.stack.n_peers:
            self.stack.put(row, payload)
        return payload

    def submit(
        self, row: int, uid: int, window: int, data: bytes
    ) -> Future[DecodedPayload | InvalidPayload]:
        return self._pool.submit(self._decode_into, row, uid, window, data)
