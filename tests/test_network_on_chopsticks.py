"""A whole network on the real subtensor runtime: one validator and two miners, each its own
process (`python -m gauntlet_jax.validate` / `mine`, as operators run them), against spec 218
under Chopsticks instead of the embedded SQLite chain.

Chopsticks builds a block every second (`chopsticks_subnet.BlockProducer`, wall-clock
timestamps), so windows follow the chain's blocks and extrinsics wait in the pool for the next
block, as on a live chain. The subnet demands this node's weights version key. The validator
first posts with plain `set_weights`; then the subnet turns commit-reveal on while it runs, and
its next weights go through a hash commit that it reveals itself when the runtime's reveal
period opens. The runtime in `../shared/chain/raonet.json` has no timelocked commit-reveal
(no Drand pallet, no `commit_timelocked_weights`), so that path cannot run here;
`tests/test_timelock.py` covers it offline.
"""

from __future__ import annotations

import ast
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from chopsticks_subnet import (
    MINER,
    OTHER,
    VALIDATOR,
    BlockProducer,
    chopsticks_node,
    set_subnet_params,
    setup_real_subnet,
)

from gauntlet_jax.chain.base import NODE_VERSION_KEY
from gauntlet_jax.chain.keys import dev_uri
from gauntlet_jax.chain.subtensor import SubtensorChain
from gauntlet_jax.config import load_config
from gauntlet_jax.data.corpus import open_corpus
from gauntlet_jax.localnet import child_env

pytestmark = [pytest.mark.slow, pytest.mark.wallclock, pytest.mark.timeout(1200)]

BLOCK_TIME_S = 1.0
# The dev keys of the subnet's neurons (chopsticks_subnet): uid 0 validates, 1 and 2 mine.
NEURONS = {"validator": (1, VALIDATOR), "miner1": (2, MINER), "miner2": (3, OTHER)}


def _overrides(root: Path, url: str, netuid: int) -> list[str]:
    return [
        f"run.out_dir={root}",
        f"storage.bucket={root}/buckets/{{hotkey}}",
        f"storage.checkpoint_dir={root}/checkpoints/{{hotkey}}",
        f"chain.url={url}",
        f"chain.netuid={netuid}",
        f"chain.block_time_s={BLOCK_TIME_S}",
        "protocol.blocks_per_window=8",
        "protocol.put_window_s=4.0",
        "protocol.start_delay_windows=1",
        "validator.windows_per_weights=2",
        "train.max_micro_batches=1",
        "run.tensorboard=false",
    ]


def _spawn(role: str, name: str, overrides: list[str], root: Path) -> subprocess.Popen:
    index, _ = NEURONS[name]
    env = {**child_env(root), "GAUNTLET_HOTKEY_SECRET": dev_uri(index)}
    cmd = [sys.executable, "-m", f"gauntlet_jax.{role}", "--config", "tiny", "--hotkey", name]
    cmd += [a for o in overrides for a in ("--set", o)]
    log = open(root / "logs" / f"{name}.log", "wb")  # noqa: SIM115 (the child owns it)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _logs(root: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
        for p in sorted((root / "logs").glob("*.log"))
    )


def _wait_for(
    what: str,
    condition: Callable[[], bool],
    timeout_s: float,
    procs: dict[str, subprocess.Popen],
    root: Path,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        dead = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
        if dead:
            pytest.fail(f"{dead} exited while waiting for {what}\n{_logs(root)}")
        time.sleep(0.5)
    pytest.fail(f"no {what} within {timeout_s:.0f} s\n{_logs(root)}")


def test_validator_and_miners_post_weights_on_the_real_runtime(
    shared_dir: Path, tmp_path: Path
) -> None:
    node = chopsticks_node(shared_dir, tmp_path / "chopsticks.log", build_block_mode="Manual")
    producer = BlockProducer(node.url, BLOCK_TIME_S).start()
    procs: dict[str, subprocess.Popen] = {}
    root = tmp_path / "run"
    (root / "logs").mkdir(parents=True)
    chain = SubtensorChain(node.url, None, timeout_s=120)
    try:
        netuid = setup_real_subnet(chain)
        set_subnet_params(
            chain, netuid, rate_limit=2, version_key=NODE_VERSION_KEY, commit_reveal=False, tempo=8
        )
        overrides = _overrides(root, node.url, netuid)
        open_corpus(load_config("tiny", overrides).data)  # prepared once, before processes race

        for name in ("miner1", "miner2"):
            procs[name] = _spawn("mine", name, overrides, root)
        # Miners commit their buckets once compiled; the validator starts after that.
        _wait_for(
            "bucket commitments of both miners",
            lambda: len(chain.get_commitments(netuid)) >= 2,
            600,
            procs,
            root,
        )
        procs["validator"] = _spawn("validate", "validator", overrides, root)
        log = root / "logs" / "validator.log"

        def posted(method: str) -> re.Match | None:
            text = log.read_text(errors="replace") if log.exists() else ""
            return re.search(rf"weights posted \({method}\) (\{{.*\}})", text)

        # Plain weights: on chain as posted, with this node's version key (the runtime refuses
        # any other on this subnet).
        _wait_for("plain set_weights", lambda: posted("set_weights") is not None, 420, procs, root)
        plain = chain.get_weights(netuid, 0)
        assert plain and set(plain) <= {1, 2}, plain
        plain_block = int(chain.metagraph(netuid).last_update[0])

        # The subnet turns commit-reveal on mid-run: the validator's next weights are a hash
        # commit, which it reveals itself once the reveal period opens.
        set_subnet_params(chain, netuid, commit_reveal=True)
        _wait_for("a hash commit", lambda: posted("commit_weights") is not None, 300, procs, root)
        committed = ast.literal_eval(posted("commit_weights").group(1))
        commits = chain.substrate.query(
            "SubtensorModule", "WeightCommits", [netuid, VALIDATOR.ss58_address]
        ).value
        assert commits, "the runtime stored no commit"
        _wait_for(
            "the reveal",
            lambda: "weights revealed (reveal_weights)" in log.read_text(errors="replace"),
            300,
            procs,
            root,
        )
        revealed_block = int(chain.metagraph(netuid).last_update[0])
        assert revealed_block > plain_block
        # The chain holds a committed vector. Not necessarily the first: the validator commits
        # every 2 windows, and on a loaded machine a later commit may be revealed before this
        # reads the chain (the chain is read first, then the log, which lists every commit).
        on_chain = chain.get_weights(netuid, 0)
        commits_logged = [
            ast.literal_eval(m.group(1))
            for m in re.finditer(r"weights posted \(commit_weights\) (\{.*\})", log.read_text())
        ]
        assert commits_logged[0] == committed
        assert on_chain in commits_logged, (on_chain, commits_logged)
        text = log.read_text(errors="replace")
        assert "set_weights failed" not in text and "reveal failed" not in text
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        chain.close()
        producer.stop()
        node.stop()
    assert all(p.returncode == 0 for p in procs.values()), (
        {n: p.returncode for n, p in procs.items()},
        _logs(root),
    )
