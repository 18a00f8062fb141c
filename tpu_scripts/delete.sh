#!/usr/bin/env bash
# Deletes a TPU VM or pod slice (and its queued resource, if it came from one).
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

QUEUED=0
QUEUED_ID=""
YES=0

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

normalise_args "$@"
set -- ${NORMALISED_ARGS[@]+"${NORMALISED_ARGS[@]}"}
while (($#)); do
	take_common_flag usage "$@"
	if ((SHIFT_BY)); then
		shift "$SHIFT_BY"
		continue
	fi
	case "$1" in
	--queued)
		QUEUED=1
		shift
		;;
	--queued-id)
		QUEUED_ID=$(flag_value "$@")
		QUEUED=1
		shift 2
		;;
	--yes)
		YES=1
		shift
		;;
	*) die "unknown flag '$1' (see --help)" ;;
	esac
done
finish_common_flags

flags=("${LOCATION_FLAGS[@]}")
if [[ $YES == 1 ]]; then
	flags+=(--quiet)
fi
if [[ $QUEUED == 1 ]]; then
	run gcloud compute tpus queued-resources delete "${QUEUED_ID:-$NAME-qr}" "${flags[@]}" --force
else
	run gcloud compute tpus tpu-vm delete "$NAME" "${flags[@]}"
fi
