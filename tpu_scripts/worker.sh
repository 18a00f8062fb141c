#!/usr/bin/env bash
# Runs ON each TPU worker (copied to ~/gauntlet/files/ by setup.sh and launch.sh): installs the
# package into a venv and starts, stops and inspects background jobs. The operator-side scripts
# call it over `gcloud compute tpus tpu-vm ssh --worker=all`, so every worker does the same thing.
#
# Layout under ROOT (the parent of this file's directory, ~/gauntlet by default):
#   venv/             Python venv: the locked stack (files/tpu.txt) and gauntlet-jax
#   files/            what the operator copied: worker.sh, tpu.txt, the wheel, config YAMLs
#   jobs/JOB.pid      "PID BOOT_ID" of a running job (PID is also its process group id)
#   logs/JOB.log      the job's stdout and stderr
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
  start  --job NAME [--secret NAME [--secret-version V] [--secret-project P]]
         [--secret-env VAR] [--env KEY=VALUE]... -- COMMAND...
         Start COMMAND in ROOT in a new session (immune to the ssh session ending), stdout and
         stderr to logs/NAME.log. With --secret, the secret's latest value is read here from
         Secret Manager into the environment variable VAR (default GAUNTLET_HOTKEY_SECRET):
         never onto a command line, never into a log.
  stop   [--job NAME] [--grace SECONDS]
         SIGTERM the job's process group (all jobs without --job), SIGKILL after the grace time.
  status
         List jobs and whether they run.
  logs   [--job NAME] [--lines N] [--follow]
         Print the last N lines (default 100) of the job's log (all logs without --job), each
         line prefixed with this worker's hostname.
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

cmd_start() {
	local job="" secret="" secret_version=latest secret_project="" secret_env=GAUNTLET_HOTKEY_SECRET
	local envs=() pair
	while (($#)); do
		case "$1" in
		--job) job=$(flag_value "$@"); shift 2 ;;
		--secret) secret=$(flag_value "$@"); shift 2 ;;
		--secret-version) secret_version=$(flag_value "$@"); shift 2 ;;
		--secret-project) secret_project=$(flag_value "$@"); shift 2 ;;
		--secret-env) secret_env=$(flag_value "$@"); shift 2 ;;
		--env)
			pair=$(flag_value "$@")
			envs+=("$pair")
			shift 2
			;;
		--)
			shift
			break
			;;
		*) die "start: unknown flag $1 (the command goes after --)" ;;
		esac
	done
	[[ -n $job ]] || die "start: --job is required"
	check_job_name "$job"
	(($#)) || die "start: no command after --"
	[[ $secret_env =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "start: bad --secret-env '$secret_env'"
	cd "$ROOT"
	mkdir -p jobs logs

	local pidfile=jobs/$job.pid log=logs/$job.log running
	running=$(live_pid "$pidfile")
	[[ -z $running ]] || die "job $job already runs (pid $running); stop it first"

	for pair in ${envs[@]+"${envs[@]}"}; do
		[[ $pair =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "start: --env '$pair' is not KEY=VALUE"
		export "${pair?}"
	done
	if [[ -n $secret ]]; then
		local value
		local access=(gcloud secrets versions access "$secret_version" "--secret=$secret" --quiet)
		if [[ -n $secret_project ]]; then
			access+=("--project=$secret_project")
		fi
		# The value only ever lives in this shell's memory and the job's environment.
		value=$("${access[@]}") || die "cannot read secret '$secret' (version $secret_version)" \
			"from Secret Manager: does this VM's service account have" \
			"roles/secretmanager.secretAccessor on it, and the cloud-platform scope?"
		[[ -n $value ]] || die "secret '$secret' is empty"
		export "$secret_env=$value"
		unset value
	fi

	{
		printf '=== %s start on %s (job %s): ' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(hostname)" "$job"
		printf '%q ' "$@"
		printf '\n'
	} >>"$log"
	# setsid gives the job its own session and process group (so ending ssh does not hang it up,
	# and stop can signal the whole group); the inner bash records the group leader's PID and
	# execs the command, which keeps that PID.
	# shellcheck disable=SC2016
	setsid bash -c 'printf "%s %s\n" "$$" "$1" >"$2"; shift 2; exec "$@"' \
		_ "$(boot_id)" "$pidfile" "$@" >>"$log" 2>&1 </dev/null &
	sleep 3
	running=$(live_pid "$pidfile")
	if [[ -z $running ]]; then
		tail -n 30 "$log" >&2 || true
		die "job $job exited at once; see $ROOT/$log"
	fi
	printf '%s: started job %s (pid %s), log %s\n' "$(hostname)" "$job" "$running" "$ROOT/$log"
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
	local pidfile pid name waited stopped=0
	while read -r pidfile; do
		[[ -n $pidfile ]] || continue
		name=$(basename "$pidfile" .pid)
		pid=$(live_pid "$pidfile")
		if [[ -z $pid ]]; then
			printf '%s: job %s is not running\n' "$(hostname)" "$name"
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
	local pidfile pid any=0
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
	local files=()
	if [[ -n $job ]]; then
		check_job_name "$job"
		files=("logs/$job.log")
		[[ -f ${files[0]} ]] || die "no log for job $job"
	else
		local f
		for f in logs/*.log; do
			[[ -e $f ]] && files+=("$f")
		done
		((${#files[@]})) || die "no logs in $ROOT/logs"
	fi
	local host tail_flags=(-n "$lines")
	host=$(hostname)
	if [[ $follow == 1 ]]; then
		tail_flags+=(-F)
	fi
	tail "${tail_flags[@]}" "${files[@]}" | sed -u "s/^/[$host] /"
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
	-h | --help) usage ;;
	*) die "unknown command '$command' (setup, start, stop, status, logs)" ;;
	esac
}

main "$@"
