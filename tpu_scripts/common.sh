# shellcheck shell=bash
# Globals set here are read by the scripts that source this file.
# shellcheck disable=SC2034
# Helpers shared by the tpu_scripts/*.sh entry points: the flag parser, the command printer and
# the helpers that reach the TPU workers. Sourced, never run on its own.
#
# Every entry point accepts --project, --zone, --name, --dry-run and --help. Defaults come from
# the environment so an operator can set them once per shell:
#   GAUNTLET_TPU_PROJECT  (default: empty = gcloud's configured core/project)
#   GAUNTLET_TPU_ZONE     (default: us-central1-a)
#   GAUNTLET_TPU_NAME     (default: gauntlet-tpu)
# DRY_RUN=1 in the environment is the same as --dry-run.
#
# An entry point defines usage() (what --help prints), declares its own flags with accept_flags,
# calls parse_flags "$@", then checks what only it knows and runs its commands.

SCRIPT_NAME=$(basename "$0")
SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPTS_DIR/.." && pwd)

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

# --- flags ---------------------------------------------------------------------------------------

# The flags this script accepts: FLAG_NAMES[i] is handled as FLAG_KINDS[i] into FLAG_TARGETS[i].
FLAG_NAMES=()
FLAG_KINDS=()
FLAG_TARGETS=()

# accept_flags KIND FLAG TARGET [FLAG TARGET]...: declares flags of one kind.
#   value   FLAG VALUE (or FLAG=VALUE) sets the variable TARGET to VALUE
#   switch  FLAG sets the variable TARGET to 1
#   call    FLAG VALUE runs the function TARGET FLAG VALUE (checks, repeatable flags)
# A variable TARGET is given its default here: TARGET=DEFAULT, else empty (value) or 0 (switch).
accept_flags() {
	local kind=$1 target default
	shift
	(($# % 2 == 0)) || die "accept_flags $kind: a flag without its target (a bug in $SCRIPT_NAME)"
	while (($#)); do
		target=${2%%=*} default=""
		if [[ $2 == *=* ]]; then
			default=${2#*=}
		elif [[ $kind == switch ]]; then
			default=0
		fi
		if [[ $kind != call ]]; then
			printf -v "$target" '%s' "$default"
		fi
		FLAG_NAMES+=("$1")
		FLAG_KINDS+=("$kind")
		FLAG_TARGETS+=("$target")
		shift 2
	done
}

accept_flags value --project "PROJECT=${GAUNTLET_TPU_PROJECT:-}" \
	--zone "ZONE=${GAUNTLET_TPU_ZONE:-us-central1-a}" --name "NAME=${GAUNTLET_TPU_NAME:-gauntlet-tpu}"
accept_flags switch --dry-run "DRY_RUN=${DRY_RUN:-0}"

# The two flags of the scripts that ssh into the workers. Their variables keep the defaults set
# at the top: the checks and helpers here read them in every script.
accept_worker_flags() {
	accept_flags value --remote-dir "REMOTE_DIR=$REMOTE_DIR"
	accept_flags switch --internal-ip "INTERNAL_IP=$INTERNAL_IP"
}

# Takes the flags in order: -h/--help prints usage and exits 0; an unknown flag, or one whose
# value is missing, exits 2 before anything runs. Then checks the common values and builds
# LOCATION_FLAGS (zone, project) for gcloud.
parse_flags() {
	local arg words=() i kind target
	for arg in "$@"; do
		if [[ $arg == --*=* ]]; then
			words+=("${arg%%=*}" "${arg#*=}")
		else
			words+=("$arg")
		fi
	done
	set -- ${words[@]+"${words[@]}"}
	while (($#)); do
		if [[ $1 == -h || $1 == --help ]]; then
			usage
			exit 0
		fi
		kind=""
		for i in "${!FLAG_NAMES[@]}"; do
			if [[ ${FLAG_NAMES[i]} == "$1" ]]; then
				kind=${FLAG_KINDS[i]} target=${FLAG_TARGETS[i]}
				break
			fi
		done
		case "$kind" in
		switch)
			printf -v "$target" 1
			shift
			;;
		value | call)
			if [[ $# -lt 2 || -z $2 || $2 == --* ]]; then
				die "$1 needs a value"
			fi
			if [[ $kind == value ]]; then
				printf -v "$target" '%s' "$2"
			else
				"$target" "$1" "$2"
			fi
			shift 2
			;;
		*) die "unknown flag '$1' (see --help)" ;;
		esac
	done

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

# A job or hotkey name, as it becomes a file name on the workers.
check_job_name() {
	[[ $2 =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "$1 '$2': use letters, digits, '_', '.', '-'"
}

# Accepts "all", a worker index, a range (1-3) or a comma list (0,2).
check_worker_spec() {
	[[ $1 == all || $1 =~ ^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$ ]] ||
		die "--worker '$1': expected all, an index, a range such as 1-3, or a list such as 0,2"
}

# --- commands ------------------------------------------------------------------------------------

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

# --- the workers ---------------------------------------------------------------------------------

# The gcloud flags that reach WORKERS of NAME, into WORKER_FLAGS.
worker_flags() {
	WORKER_FLAGS=("${LOCATION_FLAGS[@]}" "--worker=$1")
	if [[ $INTERNAL_IP == 1 ]]; then
		WORKER_FLAGS+=(--internal-ip)
	fi
}

# on_workers WORKERS COMMAND...: runs COMMAND on WORKERS ("all", an index, a range or a list;
# "all" reaches every worker at once, as a multi-host JAX job needs) over one gcloud ssh.
on_workers() {
	local workers=$1
	shift
	worker_flags "$workers"
	run gcloud compute tpus tpu-vm ssh "$NAME" "${WORKER_FLAGS[@]}" "--command=$(quote_cmd "$@")"
}

# worker_sh WORKERS ARGS...: runs worker.sh (copied there by copy_to_workers) with ARGS.
worker_sh() {
	local workers=$1
	shift
	on_workers "$workers" bash "$REMOTE_DIR/files/worker.sh" "$@"
}

# copy_to_workers [FILE]...: copies worker.sh and FILEs into REMOTE_DIR/files/ on every worker.
copy_to_workers() {
	on_workers all mkdir -p "$REMOTE_DIR/files"
	worker_flags all
	run gcloud compute tpus tpu-vm scp "$SCRIPTS_DIR/worker.sh" "$@" "$NAME:$REMOTE_DIR/files/" \
		"${WORKER_FLAGS[@]}"
}
