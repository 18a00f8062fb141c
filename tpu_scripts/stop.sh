#!/usr/bin/env bash
# Stops the background job(s) on every worker of a TPU VM or pod slice.
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
	cat <<EOF2
Usage: $SCRIPT_NAME [flags]

On every worker of NAME at once: stops a systemd job's unit gauntlet@JOB and removes it (so it
does not come back at boot; systemd waits the unit's TimeoutStopSec, 180 s, then SIGKILL); a
--no-systemd job's whole process group gets SIGTERM, then SIGKILL after the grace time. A
multi-host JAX job must stop on all workers together (one worker alone leaves the others
blocked in a collective), so there is no per-worker stop.

  --job NAME          the job to stop (default: every job started by launch.sh)
  --grace SECONDS     wait before SIGKILL, --no-systemd jobs (default: $GRACE)
  --remote-dir DIR    directory under the workers' home (default: $REMOTE_DIR)
  --internal-ip       ssh to internal IPs (from a VM in the same VPC)

$COMMON_HELP
EOF2
}

accept_flags value --job JOB --grace GRACE=60
accept_worker_flags
parse_flags "$@"
[[ $GRACE =~ ^[0-9]+$ ]] || die "--grace '$GRACE': expected whole seconds"

args=(stop --grace "$GRACE")
if [[ -n $JOB ]]; then
	check_job_name --job "$JOB"
	args+=(--job "$JOB")
fi
worker_sh all "${args[@]}"
