"""The wheel works outside the checkout: it carries the configs, and a node runs from it.

Built offline (--no-build-isolation) from a copy of the package, installed without dependencies
into a fresh venv that borrows this environment's site-packages (so no network), and run from a
directory with no `configs/` in sight."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from gauntlet_jax import __version__
from gauntlet_jax.chain.keys import dev_uri

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        cmd, cwd=cwd, env={**clean, "JAX_PLATFORMS": "cpu", **env},
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv's python, with only the wheel of this checkout installed in it."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "configs"):
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(REPO / name, src / name)
    shutil.copytree(
        REPO / "gauntlet_jax", src / "gauntlet_jax", symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )  # fmt: skip
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
         "-w", str(root / "dist"), str(src)], root,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (root / "dist").glob("*.whl")
    assert wheel.name.startswith(f"gauntlet_jax-{__version__}-")
    venv = root / "venv"
    made = _run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], root)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root
    )
    # This environment's packages as a plain path entry: its .pth files (an editable install of
    # a checkout) are not processed, so gauntlet_jax can only come from the wheel.
    Path(site.stdout.strip(), "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    done = _run([*pip, "--no-index", str(wheel)], root)
    assert done.returncode == 0, done.stderr
    return python


def test_info_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    where = _run(
        [str(installed), "-c", "import gauntlet_jax; print(gauntlet_jax.__file__)"], tmp_path
    )
    assert str(installed.parent.parent) in where.stdout, where.stdout + where.stderr
    for name in ("1b2", "configs/1b2.yaml"):
        run = _run([str(installed), "-m", "gauntlet_jax.info", "--config", name], tmp_path)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["parameters"] == 1_204_881_408


def test_a_validator_window_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    sets = [
        "--set", f"run.out_dir={tmp_path}/run", "--set", f"chain.url=sqlite:///{tmp_path}/chain.db",
    ]  # fmt: skip
    made = _run(
        [str(installed), "-m", "gauntlet_jax.localchain", "create", "--config", "tiny",
         "--neurons", "2", *sets], tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    run = _run(
        [str(installed), "-m", "gauntlet_jax.validate", "--config", "tiny", "--hotkey", "v",
         "--windows", "1", *sets], tmp_path, GAUNTLET_HOTKEY_SECRET=dev_uri(0),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "validator window" in run.stderr
    records = (tmp_path / "run" / "validator-v" / "metrics.jsonl").read_text().splitlines()
    assert any(json.loads(r)["kind"] == "window" for r in records)
