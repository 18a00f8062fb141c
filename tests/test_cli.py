"""Entry points: logging at the asked level, one-line errors with the exit code of their kind,
--version, and the software stack a node publishes and compares."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gauntlet_jax import __version__, info
from gauntlet_jax.chain.errors import (
    ChainBusy,
    ChainStoreCorrupt,
    ColdkeyMismatch,
    HotkeyError,
    HotKeyNotRegisteredInSubNet,
    InsufficientBalance,
    NodeVersionTooOld,
    RuntimeCallMissing,
)
from gauntlet_jax.chain.keys import hotkey_from_secret
from gauntlet_jax.cli import EX_CONFIG, EX_TEMPFAIL, exit_code
from gauntlet_jax.errors import ChainError, ConfigError, MissingExtra, StorageError
from gauntlet_jax.node.stack import StackWarnings, parse_stack, stack_string, stack_versions
from gauntlet_jax.protocol.probes import decode_probes, encode_probes

FINGERPRINT = "0123456789abcdef"


def _validate(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GAUNTLET_HOTKEY_SECRET"}
    cmd = [
        sys.executable, "-m", "gauntlet_jax.validate", "--config", "tiny", "--hotkey", "v",
        "--set", f"run.out_dir={tmp_path}", "--set", f"chain.url=sqlite:///{tmp_path}/chain.db",
        *flags,
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_validate_logs_at_info_and_names_the_key_variable(tmp_path: Path) -> None:
    # Importing the node pulls in Orbax, whose absl logging installs a root handler: the entry
    # point's logging must still come out at INFO, one plain line per record in a file.
    run = _validate(tmp_path)
    assert run.returncode == EX_CONFIG, run.stderr
    lines = run.stderr.splitlines()
    start = [line for line in lines if "INFO gauntlet_jax.node.launch" in line]
    assert start and f"gauntlet-jax={__version__}" in start[0] and "backend=cpu" in start[0]
    assert lines[-1].startswith("error: no hotkey: set the env var GAUNTLET_HOTKEY_SECRET")
    assert "Traceback" not in run.stderr
    quiet = _validate(tmp_path, "--log-level", "WARNING")
    assert quiet.returncode == EX_CONFIG and "INFO" not in quiet.stderr


def test_wrong_config_name_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert info.main(["--config", "no-such-config"]) == EX_CONFIG
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: config file 'no-such-config' not found") and "\n" not in err


def test_version_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        info.main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"gauntlet-jax {__version__}"


def test_exit_codes_by_kind() -> None:
    assert exit_code(ConfigError("x")) == EX_CONFIG
    assert exit_code(MissingExtra("plots", "report", "matplotlib")) == EX_CONFIG
    assert exit_code(HotkeyError("x")) == EX_CONFIG
    assert exit_code(HotKeyNotRegisteredInSubNet("x")) == EX_CONFIG
    assert exit_code(StorageError("x")) == EX_TEMPFAIL
    assert exit_code(ChainError("connection refused")) == EX_TEMPFAIL
    assert exit_code(ChainBusy("locked")) == EX_TEMPFAIL
    # The chain's permanent kinds: retrying the same node, key or file cannot help.
    for permanent in (
        ChainStoreCorrupt,
        NodeVersionTooOld,
        RuntimeCallMissing,
        InsufficientBalance,
        ColdkeyMismatch,
    ):
        assert exit_code(permanent("x")) == EX_CONFIG, permanent


def test_bad_mnemonic_message() -> None:
    with pytest.raises(HotkeyError, match="not a valid mnemonic, URI or 32-byte hex seed"):
        hotkey_from_secret("not words at all", "test")


def test_probes_carry_the_stack_and_old_objects_still_decode() -> None:
    values = np.arange(4, dtype=np.float32)
    stack = stack_string()
    got = decode_probes(
        encode_probes(3, 7, values, FINGERPRINT, stack=stack), uid=3, window=7, expected_len=4
    )
    assert got.stack == stack and parse_stack(got.stack) == stack_versions()
    old = decode_probes(encode_probes(3, 7, values, FINGERPRINT), uid=3, window=7, expected_len=4)
    assert old.stack is None and np.array_equal(old.values, values)


def test_stack_warning_once_per_peer(caplog: pytest.LogCaptureFixture) -> None:
    own = {"gauntlet-jax": "0.1.0", "jax": "0.10.2", "jaxlib": "0.10.2", "backend": "cpu"}
    warnings = StackWarnings(own)
    other = "gauntlet-jax=0.1.0 jax=0.9.0 jaxlib=0.9.0 backend=tpu"
    same_but_gpu = "gauntlet-jax=0.1.0 jax=0.10.2 jaxlib=0.10.2 backend=gpu"
    with caplog.at_level(logging.WARNING, logger="gauntlet_jax.node.stack"):
        for _ in range(3):  # three windows
            assert warnings.check(5, other) == {
                "jax": ("0.10.2", "0.9.0"),
                "jaxlib": ("0.10.2", "0.9.0"),
            }
            assert warnings.check(6, same_but_gpu) == {}
            assert warnings.check(7, None) == {}
    assert len(caplog.records) == 1 and "peer 5" in caplog.records[0].getMessage()
