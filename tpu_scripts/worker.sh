#!/usr/bin/env bash
# Runs ON each TPU worker (copied to ~/gauntlet/files/ by setup.sh and launch.sh): installs the
# package into a venv and starts, stops and inspects background jobs. The operator-side scripts
# call it over `gcloud compute tpus tpu-vm ssh --worker=all`, so every worker does the same thing.
#
# Layout under ROOT (the parent of this file's directory, ~/gauntlet by default):
#   venv/             Python venv: the locked stack (files/tpu.txt) and gauntlet-jax
#   files/            what the operator copied: worker.sh, tpu.txt, the wheel, config YAMLs
#   jobs/JOB.pid      "PID BOOT_ID" of a running plain job (PID is also its process group id)
#   jobs/JOB.argv     a systemd job's flags and command (its unit gauntlet@JOB runs exec on it)
#   logs/JOB.log      a plain job's stdout and stderr (a systemd job's go to the journal)
#   runs/             the default run.out_dir of relative configs (jobs start in ROOT)
set -euo pipefail

SCRIPT_NAME=worker.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
	cat <<EOF
Usage: worker.sh COMMAND [flags]   (runs on a TPU worker; called by the tpu_scripts over ssh)

Commands:
  setup  --package SPEC (--lock FILE | --jax-spec SPEC) [--python 3.12] [--fresh] [--no-check]
         Create ROOT/venv with uv (which fetches a Python >= 3.11 when the image has none),
         make it hold exactly the hashed lock FILE (uv pip sync --require-hashes), then install
         the package (a wheel path relative to ROOT, or a pip requirement such as
         'gauntlet-jax @ git+https://...') without dependencies. --jax-spec instead installs
         SPEC and the package with freshly resolved dependencies (off the lock). Then check
         that JAX sees the TPU.
  start  --job NAME [--systemd] [--secret NAME [--secret-version V] [--secret-project P]]
         [--secret-env VAR] [--env KEY=VALUE]... -- COMMAND...
         Start COMMAND in ROOT. With --systemd: as the systemd unit gauntlet@NAME (an instance
         of files/gauntlet@.service, needs passwordless sudo): restarted after a crash or a
         transient fault (not after exit 78), and after a reboot; output to the journal.
         Without: in a new session (immune to the ssh session ending), not restarted, stdout
         and stderr to logs/NAME.log. With --secret, the secret's value is read from Secret
         Manager into the environment variable VAR (default GAUNTLET_HOTKEY_SECRET) at every
         start: never onto a command line, into a file or a log.
  stop   [--job NAME] [--grace SECONDS]
         Stop the job (all jobs without --job): a systemd job's unit is stopped (its
         TimeoutStopSec, 180 s, before SIGKILL) and removed; any other gets SIGTERM to its
         process group, SIGKILL after the grace time.
  status
         List jobs and whether they run (systemd jobs: unit state, pid, restarts).
  logs   [--job NAME] [--lines N] [--follow]
         Print the last N lines (default 100) of the job's log or journal (all jobs without
         --job), each line prefixed with this worker's hostname.
  exec   --job NAME
         What a systemd job's unit runs: reads jobs/NAME.argv, exports the job's environment
         and secret, execs the command (exit 75 if the secret cannot be read, 78 if no job).
EOF
}

die() {
	printf '%s: error on %s: %s\n' "$SCRIPT_NAME" "$(hostname)" "$*" >&2
	exit 2
}

flag_value() {
	[[ $# -ge 2 && -n $2 ]] || die "$1 needs a value"
	printf '%s' "$2"
}

check_job_name() {
	[[ $1 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "job name '$1': use letters, digits, '_', '.', '-'"
}

boot_id() {
	cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo unknown
}

# The PID recorded for a job if that process group still runs in this boot; empty otherwise.
# The boot id guards against killing an unrelated process that reused the PID after a reboot.
live_pid() {
	local pidfile=$1 pid boot
	[[ -f $pidfile ]] || return 0
	read -r pid boot <"$pidfile" || true
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	[[ $boot == "$(boot_id)" ]] || return 0
	if kill -0 -- "-$pid" 2>/dev/null; then
		printf '%s' "$pid"
	fi
}

cmd_setup() {
	local package="" python=3.12 lock="" jax_spec="" fresh=0 check=1
	while (($#)); do
		case "$1" in
		--package) package=$(flag_value "$@"); shift 2 ;;
		--python) python=$(flag_value "$@"); shift 2 ;;
		--lock) lock=$(flag_value "$@"); shift 2 ;;
		--jax-spec) jax_spec=$(flag_value "$@"); shift 2 ;;
		--fresh) fresh=1; shift ;;
		--no-check) check=0; shift ;;
		*) die "setup: unknown flag $1" ;;
		esac
	done
	[[ -n $package ]] || die "setup: --package is required"
	[[ -n $lock || -n $jax_spec ]] || die "setup: --lock or --jax-spec is required"
	[[ -z $lock || -z $jax_spec ]] || die "setup: --lock and --jax-spec exclude each other"
	cd "$ROOT"
	[[ -z $lock || -f $lock ]] || die "setup: no lock file $ROOT/$lock"

	local uv
	uv=$(command -v uv || true)
	if [[ -z $uv ]]; then
		uv=$HOME/.local/bin/uv
		if [[ ! -x $uv ]]; then
			# pip --user works on the Ubuntu 22.04 TPU images; the official installer otherwise.
			python3 -m pip install --user --quiet uv ||
				curl -LsSf https://astral.sh/uv/install.sh | sh
		fi
	fi
	[[ -x $uv ]] || die "setup: could not install uv"

	if [[ $fresh == 1 ]]; then
		rm -rf venv
	fi
	if [[ ! -x venv/bin/python ]]; then
		"$uv" venv --python "$python" venv
	fi
	# --reinstall-package: a rebuilt wheel keeps its version number but not its contents.
	if [[ -n $lock ]]; then
		# sync: the venv ends up holding the lock's packages and nothing else (an earlier
		# --jax-spec install's extras go), each file checked against the lock's hashes.
		"$uv" pip sync --python venv/bin/python --require-hashes "$lock"
		"$uv" pip install --python venv/bin/python --no-deps --reinstall-package gauntlet-jax "$package"
	else
		"$uv" pip install --python venv/bin/python --reinstall-package gauntlet-jax "$jax_spec" "$package"
	fi
	if [[ $check == 1 ]]; then
		# On a pod every worker runs this at once (ssh --worker=all), as libtpu needs all hosts.
		timeout 600 venv/bin/python -c 'import jax, gauntlet_jax
print(f"jax {jax.__version__}: {jax.device_count()} devices, {jax.local_device_count()} local,"
      f" backend {jax.default_backend()}")'
	fi
}

# The job flags shared by `start` and `exec`: the secret to read, the environment, then -- and
# the command. Sets SECRET, SECRET_VERSION, SECRET_PROJECT, SECRET_ENV, JOB_ENVS and JOB_COMMAND.
parse_job_flags() {
	SECRET="" SECRET_VERSION=latest SECRET_PROJECT="" SECRET_ENV=GAUNTLET_HOTKEY_SECRET
	JOB_ENVS=() JOB_COMMAND=()
	local pair
	while (($#)); do
		case "$1" in
		--secret) SECRET=$(flag_value "$@"); shift 2 ;;
		--secret-version) SECRET_VERSION=$(flag_value "$@"); shift 2 ;;
		--secret-project) SECRET_PROJECT=$(flag_value "$@"); shift 2 ;;
		--secret-env) SECRET_ENV=$(flag_value "$@"); shift 2 ;;
		--env)
			pair=$(flag_value "$@")
			[[ $pair =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "start: --env '$pair' is not KEY=VALUE"
			JOB_ENVS+=("$pair")
			shift 2
			;;
		--)
			shift
			JOB_COMMAND=("$@")
			break
			;;
		*) die "start: unknown flag $1 (the command goes after --)" ;;
		esac
	done
	((${#JOB_COMMAND[@]})) || die "start: no command after --"
	[[ $SECRET_ENV =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "start: bad --secret-env '$SECRET_ENV'"
}

# Exports the job's environment and, with --secret, the secret's value into SECRET_ENV: read from
# Secret Manager here at every start, it lives only in memory and the job's environment (never
# on a command line, in a file or in a log). Returns 1, having said why, when the read fails.
export_job_env() {
	local pair value
	for pair in ${JOB_ENVS[@]+"${JOB_ENVS[@]}"}; do
		export "${pair?}"
	done
	[[ -n $SECRET ]] || return 0
	local access=(gcloud secrets versions access "$SECRET_VERSION" "--secret=$SECRET" --quiet)
	if [[ -n $SECRET_PROJECT ]]; then
		access+=("--project=$SECRET_PROJECT")
	fi
	if ! value=$("${access[@]}"); then
		printf '%s: error on %s: %s %s %s\n' "$SCRIPT_NAME" "$(hostname)" \
			"cannot read secret '$SECRET' (version $SECRET_VERSION) from Secret Manager:" \
			"does this VM's service account have roles/secretmanager.secretAccessor on it," \
			"and the cloud-platform scope?" >&2
		return 1
	fi
	if [[ -z $value ]]; then
		printf '%s: error on %s: secret %s is empty\n' "$SCRIPT_NAME" "$(hostname)" "$SECRET" >&2
		return 1
	fi
	export "$SECRET_ENV=$value"
}

start_banner() {
	printf '=== %s start on %s (job %s): ' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" "$1"
	shift
	printf '%q ' "$@"
	printf '\n'
}

cmd_start() {
	local job="" systemd=0 spec=()
	while (($#)); do
		case "$1" in
		--job) job=$(flag_value "$@"); shift 2 ;;
		--systemd) systemd=1; shift ;;
		*)
			spec=("$@")
			break
			;;
		esac
	done
	[[ -n $job ]] || die "start: --job is required"
	check_job_name "$job"
	parse_job_flags ${spec[@]+"${spec[@]}"}
	cd "$ROOT"
	mkdir -p jobs logs

	local running
	running=$(live_pid "jobs/$job.pid")
	[[ -z $running ]] || die "job $job already runs (pid $running); stop it first"
	if [[ $systemd == 1 ]]; then
		# Read once here too (the unit reads it at every start): a secret this VM cannot read
		# fails the launch, not a restart loop.
		(export_job_env) || exit 2
		start_systemd "$job" "${spec[@]}"
		return 0
	fi
	[[ ! -f jobs/$job.argv ]] || die "job $job runs under systemd ($(unit_of "$job")); stop it first"
	export_job_env || exit 2

	local pidfile=jobs/$job.pid log=logs/$job.log
	start_banner "$job" "${JOB_COMMAND[@]}" >>"$log"
	# setsid gives the job its own session and process group (so ending ssh does not hang it up,
	# and stop can signal the whole group); the inner bash records the group leader's PID and
	# execs the command, which keeps that PID.
	# shellcheck disable=SC2016
	setsid bash -c 'printf "%s %s\n" "$$" "$1" >"$2"; shift 2; exec "$@"' \
		_ "$(boot_id)" "$pidfile" "${JOB_COMMAND[@]}" >>"$log" 2>&1 </dev/null &
	sleep 3
	running=$(live_pid "$pidfile")
	if [[ -z $running ]]; then
		tail -n 30 "$log" >&2 || true
		die "job $job exited at once; see $ROOT/$log"
	fi
	printf '%s: started job %s (pid %s), log %s\n' "$(hostname)" "$job" "$running" "$ROOT/$log"
}

# --- systemd jobs ------------------------------------------------------------------------------
# A systemd job is an instance gauntlet@JOB of deploy/gauntlet@.service (launch.sh copies it to
# files/), so the restart policy has one home: exit 78 = fix the config, not restarted; any other
# failure restarted with back-off; enabled, so started again at boot. A drop-in makes the instance
# run `worker.sh exec --job JOB` as this user in ROOT; jobs/JOB.argv holds the job's flags and
# command, NUL-separated (no secret: exec reads it at every start).

SYSTEMD_DIR=${GAUNTLET_SYSTEMD_DIR:-/etc/systemd/system}

unit_of() {
	printf 'gauntlet@%s.service' "$1"
}

# As root, never prompting (TPU VMs give their ssh users passwordless sudo).
as_root() {
	sudo -n "$@"
}

unit_state() {
	systemctl is-active "$(unit_of "$1")" 2>/dev/null || true
}

start_systemd() {
	local job=$1 unit state
	shift
	unit=$(unit_of "$job")
	command -v systemctl >/dev/null || die "no systemctl on this worker; use launch.sh --no-systemd"
	as_root true 2>/dev/null || die "systemd jobs need passwordless sudo; use launch.sh --no-systemd"
	[[ -f files/gauntlet@.service ]] || die "no $ROOT/files/gauntlet@.service (launch.sh copies it)"
	# The drop-in names these paths unquoted.
	[[ $ROOT =~ ^/[A-Za-z0-9_./-]+$ ]] || die "systemd jobs need a plain path, not '$ROOT'"
	state=$(unit_state "$job")
	[[ $state != active && $state != activating ]] ||
		die "job $job already runs ($unit is $state); stop it first"

	# The unit gets this shell's PATH: systemd's own may lack where gcloud lives (/snap/bin).
	printf '%s\0' --env "PATH=$PATH" "$@" >"jobs/$job.argv"
	{
		printf '# Written by tpu_scripts/worker.sh start --systemd: job %s as %s in %s.\n' \
			"$job" "$(id -un)" "$ROOT"
		printf '# Its flags and command: %s/jobs/%s.argv; the hotkey secret is never stored.\n' \
			"$ROOT" "$job"
		printf '[Service]\nUser=%s\nWorkingDirectory=%s\nEnvironmentFile=\nExecStart=\n' \
			"$(id -un)" "$ROOT"
		printf 'ExecStart=/bin/bash %s/files/worker.sh exec --job %s\n' "$ROOT" "$job"
	} >"jobs/$job.conf"
	as_root install -m 644 files/gauntlet@.service "$SYSTEMD_DIR/gauntlet@.service"
	as_root install -D -m 644 "jobs/$job.conf" "$SYSTEMD_DIR/$unit.d/tpu-worker.conf"
	as_root systemctl daemon-reload
	as_root systemctl enable --now "$unit"
	sleep 3
	state=$(unit_state "$job")
	if [[ $state != active ]]; then
		as_root journalctl -u "$unit" -n 30 --no-pager >&2 || true
		stop_systemd "$job" >/dev/null
		die "job $job did not stay up ($unit was $state); removed it"
	fi
	printf '%s: started job %s (systemd unit %s, pid %s), log: journalctl -u %s\n' "$(hostname)" \
		"$job" "$unit" "$(systemctl show -p MainPID --value "$unit")" "$unit"
}

# Stops and disables the unit (systemd waits the template's TimeoutStopSec, then SIGKILL) and
# removes its drop-in and spec.
stop_systemd() {
	local job=$1 unit
	unit=$(unit_of "$job")
	as_root systemctl disable --now "$unit" || true
	as_root rm -rf "$SYSTEMD_DIR/$unit.d"
	as_root systemctl daemon-reload
	rm -f "jobs/$job.argv" "jobs/$job.conf"
	printf '%s: job %s (systemd unit %s) stopped\n' "$(hostname)" "$job" "$unit"
}

# What the unit runs at every (re)start: the job's environment and secret, then the command. A
# secret that cannot be read exits 75 (transient: restarted with back-off); no spec exits 78.
cmd_exec() {
	[[ $# -eq 2 && $1 == --job ]] || die "exec: usage: exec --job NAME"
	local job=$2 spec=()
	check_job_name "$job"
	cd "$ROOT"
	if [[ ! -f jobs/$job.argv ]]; then
		printf '%s: error on %s: no %s/jobs/%s.argv: start the job with launch.sh\n' \
			"$SCRIPT_NAME" "$(hostname)" "$ROOT" "$job" >&2
		exit 78
	fi
	mapfile -d '' -t spec <"jobs/$job.argv"
	parse_job_flags ${spec[@]+"${spec[@]}"}
	export_job_env || exit 75
	start_banner "$job" "${JOB_COMMAND[@]}"
	exec "${JOB_COMMAND[@]}"
}

# The systemd jobs here (a name a line), or JOB alone if it is one.
systemd_jobs() {
	local job=$1 f
	if [[ -n $job ]]; then
		if [[ -f jobs/$job.argv ]]; then
			printf '%s\n' "$job"
		fi
		return 0
	fi
	for f in jobs/*.argv; do
		[[ -e $f ]] && basename "$f" .argv
	done
	return 0
}

job_pidfiles() {
	local job=$1
	if [[ -n $job ]]; then
		check_job_name "$job"
		printf '%s\n' "jobs/$job.pid"
		return 0
	fi
	local f
	for f in jobs/*.pid; do
		[[ -e $f ]] && printf '%s\n' "$f"
	done
	return 0
}

cmd_stop() {
	local job="" grace=60
	while (($#)); do
		case "$1" in
		--job) job=$(flag_value "$@"); shift 2 ;;
		--grace) grace=$(flag_value "$@"); shift 2 ;;
		*) die "stop: unknown flag $1" ;;
		esac
	done
	[[ $grace =~ ^[0-9]+$ ]] || die "stop: --grace must be whole seconds"
	cd "$ROOT"
	local pidfile pid name waited stopped=0 under_systemd=" "
	while read -r name; do
		[[ -n $name ]] || continue
		stop_systemd "$name"
		under_systemd+="$name "
		stopped=$((stopped + 1))
	done < <(systemd_jobs "$job")
	while read -r pidfile; do
		[[ -n $pidfile ]] || continue
		name=$(basename "$pidfile" .pid)
		pid=$(live_pid "$pidfile")
		if [[ -z $pid ]]; then
			# (Unless it was a systemd job, stopped above.)
			if [[ $under_systemd != *" $name "* ]]; then
				printf '%s: job %s is not running\n' "$(hostname)" "$name"
			fi
			rm -f "$pidfile"
			continue
		fi
		kill -TERM -- "-$pid" 2>/dev/null || true
		waited=0
		while kill -0 -- "-$pid" 2>/dev/null && ((waited < grace)); do
			sleep 1
			waited=$((waited + 1))
		done
		if kill -0 -- "-$pid" 2>/dev/null; then
			kill -KILL -- "-$pid" 2>/dev/null || true
			printf '%s: job %s (pid %s) killed after %ss\n' "$(hostname)" "$name" "$pid" "$grace"
		else
			printf '%s: job %s (pid %s) stopped\n' "$(hostname)" "$name" "$pid"
		fi
		rm -f "$pidfile"
		stopped=$((stopped + 1))
	done < <(job_pidfiles "$job")
	if ((stopped == 0)) && [[ -z $job ]]; then
		printf '%s: no running jobs\n' "$(hostname)"
	fi
}

cmd_status() {
	(($# == 0)) || die "status takes no flags"
	cd "$ROOT"
	local pidfile pid any=0 name state
	while read -r name; do
		[[ -n $name ]] || continue
		any=1
		state=$(unit_state "$name")
		# NRestarts: how often systemd restarted it (crashes, transient faults) since it started.
		printf '%s: %s %s (systemd unit %s: %s, pid %s, restarts %s)\n' "$(hostname)" "$name" \
			"$([[ $state == active ]] && echo running || echo 'not running')" "$(unit_of "$name")" \
			"$state" "$(systemctl show -p MainPID --value "$(unit_of "$name")" 2>/dev/null)" \
			"$(systemctl show -p NRestarts --value "$(unit_of "$name")" 2>/dev/null)"
	done < <(systemd_jobs "")
	while read -r pidfile; do
		[[ -n $pidfile ]] || continue
		any=1
		pid=$(live_pid "$pidfile")
		if [[ -n $pid ]]; then
			printf '%s: %s running (pid %s)\n' "$(hostname)" "$(basename "$pidfile" .pid)" "$pid"
		else
			printf '%s: %s not running\n' "$(hostname)" "$(basename "$pidfile" .pid)"
		fi
	done < <(job_pidfiles "")
	if ((any == 0)); then
		printf '%s: no jobs\n' "$(hostname)"
	fi
}

cmd_logs() {
	local job="" lines=100 follow=0
	while (($#)); do
		case "$1" in
		--job) job=$(flag_value "$@"); shift 2 ;;
		--lines) lines=$(flag_value "$@"); shift 2 ;;
		--follow) follow=1; shift ;;
		*) die "logs: unknown flag $1" ;;
		esac
	done
	[[ $lines =~ ^[0-9]+$ ]] || die "logs: --lines must be a number"
	cd "$ROOT"
	local files=() units=() name
	if [[ -n $job ]]; then
		check_job_name "$job"
	fi
	while read -r name; do
		[[ -n $name ]] && units+=(-u "$(unit_of "$name")")
	done < <(systemd_jobs "$job")
	if [[ -n $job ]]; then
		if ((${#units[@]} == 0)); then
			files=("logs/$job.log")
			[[ -f ${files[0]} ]] || die "no log for job $job"
		fi
	else
		local f
		for f in logs/*.log; do
			[[ -e $f ]] && files+=("$f")
		done
		((${#files[@]} + ${#units[@]})) || die "no logs in $ROOT/logs and no systemd jobs"
	fi
	local host follow_flag=()
	host=$(hostname)
	if [[ $follow == 1 ]]; then
		((${#files[@]} == 0 || ${#units[@]} == 0)) ||
			die "logs --follow: both systemd and plain jobs here; pick one with --job"
		follow_flag=(-F)
	fi
	if ((${#units[@]})); then
		# The journal keeps (and rotates) a systemd job's output.
		if [[ $follow == 1 ]]; then
			follow_flag=(-f)
		fi
		as_root journalctl "${units[@]}" -n "$lines" --no-pager -o short-iso ${follow_flag[@]+"${follow_flag[@]}"} |
			sed -u "s/^/[$host] /"
	fi
	if ((${#files[@]})); then
		tail -n "$lines" ${follow_flag[@]+"${follow_flag[@]}"} "${files[@]}" | sed -u "s/^/[$host] /"
	fi
}

main() {
	(($#)) || {
		usage >&2
		exit 2
	}
	local command=$1
	shift
	case "$command" in
	setup) cmd_setup "$@" ;;
	start) cmd_start "$@" ;;
	stop) cmd_stop "$@" ;;
	status) cmd_status "$@" ;;
	logs) cmd_logs "$@" ;;
	exec) cmd_exec "$@" ;;
	-h | --help) usage ;;
	*) die "unknown command '$command' (setup, start, stop, status, logs, exec)" ;;
	esac
}

main "$@"
