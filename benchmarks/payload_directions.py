"""How aligned each peer's pseudo-gradient is with everyone else's, per window, from the
payloads a run left in its local buckets (issue 17: can a direction test see ALIE?).

    python -m gauntlet_jax.simulate --config tiny --peers honest:6,alie:3 --windows 12 \\
        --out runs/alie --no-report
    python -m benchmarks.payload_directions runs/alie --config tiny

For every window whose payloads are still in the buckets (peers keep their last few), each
payload is decoded and normalised chunk by chunk as the merge normalises it, and its cosine with
the sum of the other peers' (the leave-one-out aggregate before the sign) is printed per uid.
The chunked DCT is orthonormal, so the cosine in coefficient space is the cosine of the dense
updates. Bucket folders are `peer<uid>-<kind>` (the simulator's); the summary line gives the
range per kind.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from gauntlet_jax.compress.codec import decode_payload, payload_cap
from gauntlet_jax.config import add_config_args, config_from_args
from gauntlet_jax.errors import InvalidPayload
from gauntlet_jax.node.replica import plan_for
from gauntlet_jax.sim.adaptive import dense_chunks, unit_chunks

BUCKET = re.compile(r"peer(\d+)-(\w+)")


def leave_one_out_cosines(units: Mapping[int, np.ndarray]) -> dict[int, float]:
    """Each vector's cosine with the sum of the others (two or more vectors)."""
    if len(units) < 2:
        raise ValueError(f"need at least two payloads, got {len(units)}")
    total = sum(units.values())
    return {
        uid: float(u @ (total - u) / (np.linalg.norm(u) * np.linalg.norm(total - u)))
        for uid, u in units.items()
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.payload_directions", description=__doc__
    )
    parser.add_argument("run_dir", type=Path, help="a simulation's --out directory")
    parser.add_argument("--skip-windows", type=int, default=1, help="leave out the first N")
    add_config_args(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    plan = plan_for(cfg)
    cap = payload_cap(plan, cfg.compress.max_payload_bytes)  # as the validator reads them
    payloads: dict[int, dict[int, bytes]] = defaultdict(dict)
    kinds: dict[int, str] = {}
    for f in sorted((args.run_dir / "buckets").glob("peer*/*/gradient-*-*.safetensors")):
        match = BUCKET.fullmatch(f.parts[-3])
        if match is None:
            continue
        uid, window = int(match.group(1)), int(f.stem.split("-")[1])
        kinds[uid] = match.group(2)
        payloads[window][uid] = f.read_bytes()
    if not payloads:
        parser.error(f"no payloads under {args.run_dir / 'buckets'}")
    first = min(payloads) + args.skip_windows
    ranges: dict[str, list[float]] = defaultdict(list)
    for window in sorted(w for w in payloads if w >= first):
        units = {}
        for uid, data in sorted(payloads[window].items()):
            try:
                p = decode_payload(
                    data, plan, expected_uid=uid, expected_window=window, max_bytes=cap
                )
            except InvalidPayload as e:
                print(f"window {window} uid {uid}: skipped ({e})")
                continue
            units[uid] = np.concatenate(
                [
                    dense_chunks(
                        np.asarray(idx), unit_chunks(np.asarray(vals)), lp.chunk_elems
                    ).ravel()
                    for lp, idx, vals in zip(
                        plan.leaves, plan.flatten(p.idx), plan.flatten(p.vals), strict=True
                    )
                ]
            )
        if len(units) < 2:
            continue
        cells = []
        for uid, cos in leave_one_out_cosines(units).items():
            ranges[kinds[uid]].append(cos)
            cells.append(f"{uid} ({kinds[uid]}) {cos:+.3f}")
        print(f"window {window}: " + ", ".join(cells))
    print(
        f"windows {first}–{max(payloads)}: "
        + "; ".join(f"{k} {min(v):+.3f} to {max(v):+.3f}" for k, v in sorted(ranges.items()))
    )


if __name__ == "__main__":
    main()
