"""The exact outer step gives the same bits on 1 device, on 8 simulated devices with θ sharded,
and under other XLA CPU flags (issue 15): each in its own process, since XLA reads its flags and
device count once, at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from exact_worker import write_inputs

WORKER = Path(__file__).with_name("exact_worker.py")
EIGHT = "--xla_force_host_platform_device_count=8"
# Flags that change how XLA's CPU backend compiles and runs elementwise work and reductions.
OTHER_FLAGS = "--xla_cpu_multi_thread_eigen=false --xla_backend_optimization_level=0"


def _run(xla_flags: str, inputs: Path, *args: str) -> dict:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": xla_flags}
    done = subprocess.run(
        [sys.executable, str(WORKER), str(inputs), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_outer_step_bits_equal_on_1_and_8_devices_and_under_other_flags(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs.pkl"
    write_inputs(inputs)
    one = _run("", inputs)
    eight = _run(EIGHT, inputs, "--shard")
    other = _run(OTHER_FLAGS, inputs)
    assert (one["devices"], eight["devices"]) == (1, 8)
    assert len(one["windows"]) == 3
    # θ moves every window, so equal digests are not equal by standing still.
    assert len({w["theta"] for w in one["windows"]}) == 3
    assert len({w["theta_wd"] for w in one["windows"]}) == 3
    assert one["windows"][0]["theta"] != one["windows"][0]["theta_wd"]
    assert eight["windows"] == one["windows"]
    assert other["windows"] == one["windows"]
