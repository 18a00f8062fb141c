#!/usr/bin/env bash
# Deletes a TPU VM or pod slice (and its queued resource, if it came from one).
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
	cat <<EOF2
Usage: $SCRIPT_NAME [flags]

Deletes the TPU VM NAME. Everything on its disks (venv, logs, local state) is lost; what the
node wrote to buckets stays. Billing for the TPU stops once the deletion completes.

  --queued            NAME came from 'create.sh --queued': delete the queued resource and
                      its node together
  --queued-id ID      queued resource id (default: NAME-qr)
  --yes               do not ask for confirmation (passes --quiet to gcloud)

$COMMON_HELP
EOF2
}

accept_flags value --queued-id QUEUED_ID
accept_flags switch --queued QUEUED --yes YES
parse_flags "$@"
# A queued resource id says that NAME came from one.
if [[ -n $QUEUED_ID ]]; then
	QUEUED=1
fi

flags=("${LOCATION_FLAGS[@]}")
if [[ $YES == 1 ]]; then
	flags+=(--quiet)
fi
if [[ $QUEUED == 1 ]]; then
	run gcloud compute tpus queued-resources delete "${QUEUED_ID:-$NAME-qr}" "${flags[@]}" --force
else
	run gcloud compute tpus tpu-vm delete "$NAME" "${flags[@]}"
fi
