#!/usr/bin/env bash
# Shows the job logs of one worker, several, or all of a TPU VM or pod slice.
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
	cat <<EOF2
Usage: $SCRIPT_NAME [flags]

Prints the last lines of the job logs on a worker (each line prefixed with the worker's
hostname), or follows them: the journal of a systemd job (journalctl -u gauntlet@JOB), the
file ~/$REMOTE_DIR/logs/JOB.log of a --no-systemd one.

  --worker W          worker index, range (1-3), list (0,2) or all (default: $WORKER; in a
                      multi-host job process 0 does the chain and bucket work)
  --job NAME          one job's log (default: every log on the worker)
  --lines N           how many lines (default: $LINES)
  -f, --follow        keep printing new lines (Ctrl-C to stop)
  --status            list the jobs and whether they run (systemd: state, restarts)
  --remote-dir DIR    directory under the workers' home (default: $REMOTE_DIR)
  --internal-ip       ssh to internal IPs (from a VM in the same VPC)

$COMMON_HELP
EOF2
}

accept_flags value --worker WORKER=0 --job JOB --lines LINES=100
accept_flags switch -f FOLLOW --follow FOLLOW --status STATUS
accept_worker_flags
parse_flags "$@"
check_worker_spec "$WORKER"
[[ $LINES =~ ^[0-9]+$ ]] || die "--lines '$LINES': expected a number"

if [[ $STATUS == 1 ]]; then
	worker_sh "$WORKER" status
	exit 0
fi
args=(logs --lines "$LINES")
if [[ -n $JOB ]]; then
	check_job_name --job "$JOB"
	args+=(--job "$JOB")
fi
if [[ $FOLLOW == 1 ]]; then
	args+=(--follow)
fi
worker_sh "$WORKER" "${args[@]}"
