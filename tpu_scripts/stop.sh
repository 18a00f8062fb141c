#!/usr/bin/env bash
# Stops the background job(s) on every worker of a TPU VM or pod slice.
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

JOB=""
GRACE=60

usage() {
	cat <<EOF2
Usage: $SCRIPT_NAME [flags]

On every worker of NAME at once: sends SIGTERM to the job's whole process group, waits up to
the grace time, then SIGKILL. A multi-host JAX job must stop on all workers together (one
worker alone leaves the others blocked in a collective), so there is no per-worker stop.

  --job NAME          the job to stop (default: every job started by launch.sh)
  --grace SECONDS     wait before SIGKILL (default: $GRACE)
  --remote-dir DIR    directory under the workers' home (default: $REMOTE_DIR)
  --internal-ip       ssh to internal IPs (from a VM in the same VPC)

$COMMON_HELP
EOF2
}

normalise_args "$@"
set -- ${NORMALISED_ARGS[@]+"${NORMALISED_ARGS[@]}"}
while (($#)); do
	take_common_flag usage "$@"
	if ((SHIFT_BY)); then
		shift "$SHIFT_BY"
		continue
	fi
	case "$1" in
	--job)
		JOB=$(flag_value "$@")
		shift 2
		;;
	--grace)
		GRACE=$(flag_value "$@")
		shift 2
		;;
	--remote-dir)
		REMOTE_DIR=$(flag_value "$@")
		shift 2
		;;
	--internal-ip)
		INTERNAL_IP=1
		shift
		;;
	*) die "unknown flag '$1' (see --help)" ;;
	esac
done
finish_common_flags
[[ $GRACE =~ ^[0-9]+$ ]] || die "--grace '$GRACE': expected whole seconds"

args=(stop --grace "$GRACE")
if [[ -n $JOB ]]; then
	[[ $JOB =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "--job '$JOB': use letters, digits, '_', '.', '-'"
	args+=(--job "$JOB")
fi
tpu_ssh all "$(worker_cmd "${args[@]}")"
