#!/usr/bin/env bash
# Starts the validator or the miner on every worker of a TPU VM or pod slice, under systemd.
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

OVERRIDES=()
ENVS=()

usage() {
	cat <<EOF
Usage: $SCRIPT_NAME --role validate|mine --hotkey NAME [flags]

Copies the config to every worker of NAME and starts
  python -m gauntlet_jax.<role> --config CONFIG --hotkey NAME --set ...
on all of them at once (JAX multi-host: every worker runs the same command and
jax.distributed.initialize finds the pod by itself) as the systemd unit gauntlet@JOB
(deploy/gauntlet@.service): restarted with back-off after a crash or transient fault
(exit 78, a config to fix, is not restarted) and started again after a reboot or
maintenance. Its output goes to each worker's journal (see logs.sh).

  --no-systemd        start it detached with setsid instead: never restarted; output to
                      ~/$REMOTE_DIR/logs/JOB.log (for a VM without passwordless sudo)

  --role R            validate or mine (required)
  --hotkey NAME       the hotkey name this node runs as (required)
  --config C          YAML path, or a name in configs/ (default: $CONFIG)
  --bucket URL        this node's bucket, gs://BUCKET/PREFIX   (--set storage.bucket=URL)
  --checkpoint-dir U  checkpoints, e.g. gs://BUCKET/ckpt     (--set storage.checkpoint_dir=U)
  --chain-url URL     subtensor endpoint ws://... or wss://...   (--set chain.url=URL)
  --netuid N          subnet id                                  (--set chain.netuid=N)
  --shards URL        token shards, e.g. gs://BUCKET/shards      (--set data.shards=URL)
  --set KEY=VALUE     any other config override (repeatable)
  --env KEY=VALUE     a non-secret environment variable for the job (repeatable)
  --job NAME          job name for pid and log files (default: ROLE-HOTKEY)

The hotkey secret is read ON the worker, never passed on a command line or printed:
  --key-secret NAME   Secret Manager secret holding the secret URI / mnemonic / seed;
                      each worker reads it with 'gcloud secrets versions access' into the
                      environment variable of --key-env (the VM's service account needs
                      roles/secretmanager.secretAccessor on the secret)
  --key-secret-version V   (default: latest)
  --key-secret-project P   project of the secret (default: --project)
  --key-file PATH     a key file already on every worker   (--set chain.key_file=PATH)
  --key-env VAR       env variable the node reads the secret from
                      (default: $KEY_ENV; also passed as --set chain.key_env=VAR)

  --remote-dir DIR    directory under the workers' home (default: $REMOTE_DIR)
  --internal-ip       ssh/scp to internal IPs (from a VM in the same VPC)

$COMMON_HELP

Example:
  $SCRIPT_NAME --name val-1 --role validate --hotkey val1 --config configs/1b2.yaml \\
    --bucket gs://my-val-bucket/run1 --chain-url wss://entrypoint-finney.opentensor.ai:443 \\
    --netuid 3 --key-secret gauntlet-val1-hotkey
EOF
}

# --set KEY=VALUE, and the flags that stand for one override each.
take_override() {
	local flag=$1 value=$2
	case "$flag" in
	--bucket) value=storage.bucket=$value ;;
	--checkpoint-dir) value=storage.checkpoint_dir=$value ;;
	--chain-url)
		[[ $value =~ ^(wss?|sqlite)://.+ ]] ||
			die "--chain-url '$value': expected ws://HOST:PORT or wss://HOST:PORT"
		value=chain.url=$value
		;;
	--netuid)
		[[ $value =~ ^[0-9]+$ ]] || die "--netuid '$value': expected a number"
		value=chain.netuid=$value
		;;
	--shards) value=data.shards=$value ;;
	esac
	[[ $value =~ ^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+=.*$ ]] ||
		die "override '$value' must look like section.key=value"
	OVERRIDES+=("$value")
}

take_env() {
	[[ $2 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env '$2' must look like KEY=VALUE"
	ENVS+=("$2")
}

accept_flags value --role ROLE --hotkey HOTKEY --config CONFIG=1b2 --job JOB \
	--key-secret KEY_SECRET --key-secret-version KEY_SECRET_VERSION=latest \
	--key-secret-project KEY_SECRET_PROJECT --key-file KEY_FILE --key-env KEY_ENV=GAUNTLET_HOTKEY_SECRET
accept_flags call --bucket take_override --checkpoint-dir take_override --chain-url take_override \
	--netuid take_override --shards take_override --set take_override --env take_env
accept_flags switch --no-systemd NO_SYSTEMD
accept_worker_flags
parse_flags "$@"

case "$ROLE" in
validate | mine) ;;
"") die "--role is required (validate or mine)" ;;
*) die "--role '$ROLE': expected validate or mine" ;;
esac
[[ -n $HOTKEY ]] || die "--hotkey is required"
check_job_name --hotkey "$HOTKEY"
JOB=${JOB:-$ROLE-$HOTKEY}
check_job_name --job "$JOB"
[[ $KEY_ENV =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "--key-env '$KEY_ENV' is not a variable name"
[[ -z $KEY_SECRET || -z $KEY_FILE ]] || die "--key-secret and --key-file exclude each other"
for pair in ${ENVS[@]+"${ENVS[@]}"}; do
	[[ ${pair%%=*} != "$KEY_ENV" ]] ||
		die "--env $KEY_ENV=... would put the secret on a command line; use --key-secret or --key-file"
done
if [[ -z $KEY_SECRET && -z $KEY_FILE ]]; then
	note "warning: neither --key-secret nor --key-file: the node must find its key some other way"
fi

# The config travels with the job: the installed wheel does not carry configs/.
if [[ -f $CONFIG ]]; then
	config_path=$CONFIG
elif [[ -f $REPO_ROOT/configs/$CONFIG.yaml ]]; then
	config_path=$REPO_ROOT/configs/$CONFIG.yaml
elif [[ -f $REPO_ROOT/configs/$CONFIG ]]; then
	config_path=$REPO_ROOT/configs/$CONFIG
else
	die "--config '$CONFIG': no such file here nor in $REPO_ROOT/configs/"
fi
config_name=$(basename "$config_path")

start=(start --job "$JOB")
copy=("$config_path")
if [[ $NO_SYSTEMD == 0 ]]; then
	start+=(--systemd)
	# The unit's template: its restart policy is the GPU servers' too.
	copy+=("$REPO_ROOT/deploy/gauntlet@.service")
fi
if [[ -n $KEY_SECRET ]]; then
	start+=(--secret "$KEY_SECRET" --secret-version "$KEY_SECRET_VERSION" --secret-env "$KEY_ENV")
	if [[ -n ${KEY_SECRET_PROJECT:-$PROJECT} ]]; then
		start+=(--secret-project "${KEY_SECRET_PROJECT:-$PROJECT}")
	fi
fi
for pair in ${ENVS[@]+"${ENVS[@]}"}; do
	start+=(--env "$pair")
done
# Jobs start in ~/REMOTE_DIR, so the venv and the copied config are relative paths.
start+=(-- venv/bin/python -m "gauntlet_jax.$ROLE" --config "files/$config_name" --hotkey "$HOTKEY")
start+=(--set "chain.key_env=$KEY_ENV")
if [[ -n $KEY_FILE ]]; then
	start+=(--set "chain.key_file=$KEY_FILE")
fi
for override in ${OVERRIDES[@]+"${OVERRIDES[@]}"}; do
	start+=(--set "$override")
done

copy_to_workers "${copy[@]}"
worker_sh all "${start[@]}"
