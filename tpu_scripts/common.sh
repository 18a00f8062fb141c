# shellcheck shell=bash
# Globals set here are read by the scripts that source this file.
# shellcheck disable=SC2034
# Helpers shared by the tpu_scripts/*.sh entry points. Sourced, never run on its own.
#
# Every entry point accepts --project, --zone, --name, --dry-run and --help. Defaults come from
# the environment so an operator can set them once per shell:
#   GAUNTLET_TPU_PROJECT  (default: empty = gcloud's configured core/project)
#   GAUNTLET_TPU_ZONE     (default: us-central1-a)
#   GAUNTLET_TPU_NAME     (default: gauntlet-tpu)
# DRY_RUN=1 in the environment is the same as --dry-run.

SCRIPT_NAME=$(basename "$0")
SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPTS_DIR/.." && pwd)

PROJECT=${GAUNTLET_TPU_PROJECT:-}
ZONE=${GAUNTLET_TPU_ZONE:-us-central1-a}
NAME=${GAUNTLET_TPU_NAME:-gauntlet-tpu}
DRY_RUN=${DRY_RUN:-0}
INTERNAL_IP=0
# Directory on every worker, relative to the login user's home, that holds the venv, the copied
# files (worker.sh, wheel, configs), job pid files and logs.
REMOTE_DIR=${GAUNTLET_TPU_REMOTE_DIR:-gauntlet}

# The help text shared by every script; each script's usage() prints it after its own flags.
COMMON_HELP="Common flags:
  --project ID      GCP project (default: \$GAUNTLET_TPU_PROJECT, else gcloud's core/project)
  --zone ZONE       TPU zone (default: \$GAUNTLET_TPU_ZONE, else us-central1-a)
  --name NAME       TPU VM / pod slice name (default: \$GAUNTLET_TPU_NAME, else gauntlet-tpu)
  --dry-run         print every command it would run, one per line, and run none
  -h, --help        this help
Flags also accept the --flag=value form."

die() {
	printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
	exit 2
}

note() {
	printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2
}

# One shell-quoted line for an argv: what you would paste into a POSIX shell to run exactly that
# argv. Plain words stay bare; others are single-quoted (easier to read than printf %q's
# backslashes, and also safe in sh).
quote_cmd() {
	local word prefix line="" q="'\\''"
	for word in "$@"; do
		prefix=""
		if [[ $word =~ ^--[A-Za-z0-9-]+= ]]; then
			prefix=${BASH_REMATCH[0]}
			word=${word#"$prefix"}
		fi
		if [[ $word =~ ^[-A-Za-z0-9_@%+=:,./]+$ ]]; then
			line+="$prefix$word "
		else
			line+="$prefix'${word//\'/$q}' "
		fi
	done
	printf '%s' "${line% }"
}

# Prints the command, then runs it unless DRY_RUN=1. In a dry run the line goes to stdout with
# nothing else on it (so it can be parsed); a real run echoes it to stderr like `set -x`.
# Commands never carry secrets: keys are read on the worker (see worker.sh), so printing is safe.
run() {
	if [[ $DRY_RUN == 1 ]]; then
		printf '%s\n' "$(quote_cmd "$@")"
		return 0
	fi
	printf '+ %s\n' "$(quote_cmd "$@")" >&2
	"$@"
}

# Splits --flag=value into --flag value (up to a bare --), leaving the result in NORMALISED_ARGS.
normalise_args() {
	NORMALISED_ARGS=()
	local arg passthrough=0
	for arg in "$@"; do
		if [[ $passthrough == 1 ]]; then
			NORMALISED_ARGS+=("$arg")
			continue
		fi
		case "$arg" in
		--) passthrough=1 NORMALISED_ARGS+=("$arg") ;;
		--*=*) NORMALISED_ARGS+=("${arg%%=*}" "${arg#*=}") ;;
		*) NORMALISED_ARGS+=("$arg") ;;
		esac
	done
}

# The value following a flag; dies naming the flag when it is missing.
flag_value() {
	if [[ $# -lt 2 || -z $2 || $2 == --* ]]; then
		die "$1 needs a value"
	fi
	printf '%s' "$2"
}

# Handles a flag every script accepts. Sets SHIFT_BY to the number of words consumed
# (0 when $1 is not a common flag). Callers pass their usage function's name first.
take_common_flag() {
	local usage_fn=$1
	shift
	SHIFT_BY=0
	case "$1" in
	--project) PROJECT=$(flag_value "$@") SHIFT_BY=2 ;;
	--zone) ZONE=$(flag_value "$@") SHIFT_BY=2 ;;
	--name) NAME=$(flag_value "$@") SHIFT_BY=2 ;;
	--dry-run) DRY_RUN=1 SHIFT_BY=1 ;;
	-h | --help)
		"$usage_fn"
		exit 0
		;;
	esac
}

# Checks the common values once parsing is done and builds LOCATION_FLAGS (zone, project).
finish_common_flags() {
	[[ $NAME =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] ||
		die "--name '$NAME': TPU names are lower-case letters, digits and '-', starting with a letter"
	[[ $ZONE =~ ^[a-z]+-[a-z]+[0-9]+-[a-z]$ ]] || die "--zone '$ZONE': expected a zone such as us-central1-a"
	[[ -z $PROJECT || $PROJECT =~ ^[a-z][-a-z0-9.:]*[a-z0-9]$ ]] ||
		die "--project '$PROJECT': expected a project id such as my-project-123"
	[[ $REMOTE_DIR =~ ^[A-Za-z0-9_.][A-Za-z0-9_./-]*$ ]] ||
		die "--remote-dir '$REMOTE_DIR': use a path under the home directory (letters, digits, _ . / -)"
	LOCATION_FLAGS=("--zone=$ZONE")
	if [[ -n $PROJECT ]]; then
		LOCATION_FLAGS+=("--project=$PROJECT")
	fi
}

# Runs a shell command line on TPU workers ("all", an index, or a list such as 0,2).
tpu_ssh() {
	local worker=$1 command=$2
	local flags=("${LOCATION_FLAGS[@]}" "--worker=$worker")
	if [[ $INTERNAL_IP == 1 ]]; then
		flags+=(--internal-ip)
	fi
	run gcloud compute tpus tpu-vm ssh "$NAME" "${flags[@]}" "--command=$command"
}

# Copies local files into REMOTE_DIR/files/ on every worker (the directory must exist).
tpu_scp_files() {
	local flags=("${LOCATION_FLAGS[@]}" --worker=all)
	if [[ $INTERNAL_IP == 1 ]]; then
		flags+=(--internal-ip)
	fi
	run gcloud compute tpus tpu-vm scp "$@" "$NAME:$REMOTE_DIR/files/" "${flags[@]}"
}

# The remote command line that runs worker.sh (copied by setup.sh / launch.sh) with arguments.
worker_cmd() {
	quote_cmd bash "$REMOTE_DIR/files/worker.sh" "$@"
}

# Accepts "all", a worker index, a range (1-3) or a comma list (0,2).
check_worker_spec() {
	[[ $1 == all || $1 =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] ||
		die "--worker '$1': expected all, an index, a range such as 1-3, or a list such as 0,2"
}
