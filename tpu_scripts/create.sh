#!/usr/bin/env bash
# Creates a TPU VM or pod slice (directly, or through a queued resource).
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
	cat <<EOF
Usage: $SCRIPT_NAME [flags]

Creates the TPU VM (single host) or pod slice (several workers) NAME.

  --accelerator-type T  v5litepod-16 (default), v5litepod-8, v4-32, v5p-8, v6e-4, ...
                        ('gcloud compute tpus accelerator-types list --zone=Z' lists a zone's)
  --version V           TPU software (runtime) version; default from the accelerator:
                        v5litepod-* v2-alpha-tpuv5-lite, v5p-* v2-alpha-tpuv5,
                        v6e-* v2-alpha-tpuv6e, v4 and older tpu-ubuntu2204-base
  --spot                Spot capacity: much cheaper, may be preempted at any time (and then
                        must be deleted and created again)
  --preemptible         older preemptible capacity (not with --queued)
  --reserved            use this project's reservation
  --service-account SA  e-mail of the VM's service account (default: Compute Engine default).
                        It needs write access to your bucket and, for launch --key-secret,
                        roles/secretmanager.secretAccessor on the hotkey secret.
  --scopes S            OAuth scopes (default: cloud-platform, so IAM alone decides access)
  --network N           VPC network (default: gcloud's, "default")
  --subnetwork S        VPC subnetwork
  --labels K=V,...      resource labels (e.g. role=validator)
  --queued              request through a queued resource (waits for capacity instead of
                        failing; the usual way to get spot or large slices)
  --queued-id ID        queued resource id (default: NAME-qr)

$COMMON_HELP

Example:
  $SCRIPT_NAME --name val-1 --zone us-west4-a --accelerator-type v5litepod-16 --spot
EOF
}

default_runtime() {
	case "$1" in
	v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
	v5p-*) echo v2-alpha-tpuv5 ;;
	v6e-*) echo v2-alpha-tpuv6e ;;
	v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
	*) die "no default --version for accelerator type '$1'; pass --version" ;;
	esac
}

accept_flags value --accelerator-type ACCELERATOR=v5litepod-16 --version RUNTIME \
	--service-account SERVICE_ACCOUNT --scopes SCOPES=https://www.googleapis.com/auth/cloud-platform \
	--network NETWORK --subnetwork SUBNETWORK --labels LABELS --queued-id QUEUED_ID
accept_flags switch --spot SPOT --preemptible PREEMPTIBLE --reserved RESERVED --queued QUEUED
parse_flags "$@"
[[ $SPOT == 0 || $PREEMPTIBLE == 0 ]] || die "--spot and --preemptible exclude each other"

[[ $ACCELERATOR =~ ^v[0-9][a-z0-9]*-[0-9]+$ ]] ||
	die "--accelerator-type '$ACCELERATOR': expected a type such as v5litepod-16 or v4-32"
if [[ -z $RUNTIME ]]; then
	RUNTIME=$(default_runtime "$ACCELERATOR")
fi
if [[ $QUEUED == 1 && $PREEMPTIBLE == 1 ]]; then
	die "--preemptible is not available with --queued; use --spot"
fi

extra=()
if [[ $SPOT == 1 ]]; then
	extra+=(--spot)
elif [[ $PREEMPTIBLE == 1 ]]; then
	extra+=(--preemptible)
fi
if [[ $RESERVED == 1 ]]; then
	extra+=(--reserved)
fi
for word in "--service-account=$SERVICE_ACCOUNT" "--scopes=$SCOPES" "--network=$NETWORK" \
	"--subnetwork=$SUBNETWORK" "--labels=$LABELS"; do
	# A flag left empty stays off the command line.
	[[ $word == *= ]] || extra+=("$word")
done

if [[ $QUEUED == 1 ]]; then
	qr=${QUEUED_ID:-$NAME-qr}
	run gcloud compute tpus queued-resources create "$qr" "--node-id=$NAME" "${LOCATION_FLAGS[@]}" \
		"--accelerator-type=$ACCELERATOR" "--runtime-version=$RUNTIME" "${extra[@]}"
	note "queued; watch with: gcloud compute tpus queued-resources describe $qr" \
		"$(quote_cmd "${LOCATION_FLAGS[@]}")"
else
	run gcloud compute tpus tpu-vm create "$NAME" "${LOCATION_FLAGS[@]}" \
		"--accelerator-type=$ACCELERATOR" "--version=$RUNTIME" "${extra[@]}"
fi
