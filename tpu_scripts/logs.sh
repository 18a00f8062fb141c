#!/usr/bin/env bash
# Shows the job logs of one worker, several, or all of a TPU VM or pod slice.
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

JOB=""
WORKER=0
LINES=100
FOLLOW=0
STATUS=0

usage() {
	cat <<EOF2
Usage: $SCRIPT_NAME [flags]

Prints the last lines of the job logs on a worker (each line prefixed with the worker's
hostname), or follows them.

  --worker W          worker index, range (1-3), list (0,2) or all (default: $WORKER; in a
                      multi-host job process 0 does the chain and bucket work)
  --job NAME          one job's log (default: every log on the worker)
  --lines N           how many lines (default: $LINES)
  -f, --follow        keep printing new lines (Ctrl-C to stop)
  --status            list the jobs and whether they run, instead of logs
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
	--worker)
		WORKER=$(flag_value "$@")
		shift 2
		;;
	--job)
		JOB=$(flag_value "$@")
		shift 2
		;;
	--lines)
		LINES=$(flag_value "$@")
		shift 2
		;;
	-f | --follow)
		FOLLOW=1
		shift
		;;
	--status)
		STATUS=1
		shift
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
check_worker_spec "$WORKER"
[[ $LINES =~ ^[0-9]+$ ]] || die "--lines '$LINES': expected a number"

if [[ $STATUS == 1 ]]; then
	tpu_ssh "$WORKER" "$(worker_cmd status)"
	exit 0
fi
args=(logs --lines "$LINES")
if [[ -n $JOB ]]; then
	[[ $JOB =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "--job '$JOB': use letters, digits, '_', '.', '-'"
	args+=(--job "$JOB")
fi
if [[ $FOLLOW == 1 ]]; then
	args+=(--follow)
fi
tpu_ssh "$WORKER" "$(worker_cmd "${args[@]}")"
