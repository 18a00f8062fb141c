#!/usr/bin/env bash
# Installs the locked TPU stack (requirements/tpu.txt) and gauntlet-jax into a venv on every worker
# of a TPU VM or pod slice.
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
	cat <<EOF
Usage: $SCRIPT_NAME [flags]

On every worker of NAME: creates ~/$REMOTE_DIR/venv (Python $PYTHON_VERSION through uv, which
fetches that Python when the TPU image has an older one), makes it hold exactly the locked
run-time stack of requirements/tpu.txt (jax, jaxlib and libtpu pinned, every file checked
against its hash: every node computes the same θ only on the same stack), installs gauntlet-jax
on top without dependencies, then checks that JAX sees the TPU chips. Safe to run again.

Where the package comes from (default: build a wheel from this checkout):
  --wheel PATH        copy this wheel or sdist to the workers and install it
  --git URL[@REF]     install 'gauntlet-jax @ git+URL[@REF]' on the workers (needs their
                      internet access and, for a private repository, credentials there)
  (default)           'python3 -m pip wheel --no-deps' of this checkout into dist/, copied
                      with 'gcloud compute tpus tpu-vm scp': the workers need no git access
                      and run exactly the code you have here.

  --python VERSION    Python for the venv (default: $PYTHON_VERSION, the lock's; another one
                      needs --jax-spec, since the lock holds wheels for $LOCK_PYTHON only)
  --lock FILE         the lock file (default: requirements/tpu.txt of this checkout; made
                      by requirements/compile.sh)
  --jax-spec SPEC     leave the lock: install SPEC (e.g. 'jax[tpu]==0.10.3') and whatever
                      the package's dependencies resolve to now. For experiments only: this
                      node's stack then differs from the other nodes'.
  --fresh             delete the venv first
  --no-check          skip the JAX device check
  --remote-dir DIR    directory under the workers' home (default: $REMOTE_DIR)
  --internal-ip       ssh/scp to internal IPs (from a VM in the same VPC)

$COMMON_HELP

Example:
  $SCRIPT_NAME --name val-1 --zone us-west4-a
EOF
}

# The Python the lock files are compiled for (requirements/compile.sh --python-version).
LOCK_PYTHON=3.12
accept_flags value --wheel WHEEL --git GIT_URL --python "PYTHON_VERSION=$LOCK_PYTHON" \
	--lock "LOCK=$REPO_ROOT/requirements/tpu.txt" --jax-spec JAX_SPEC
accept_flags switch --fresh FRESH --no-check NO_CHECK
accept_worker_flags
parse_flags "$@"
[[ -z $WHEEL || -z $GIT_URL ]] || die "--wheel and --git exclude each other"
[[ $PYTHON_VERSION =~ ^3\.[0-9]+$ ]] || die "--python '$PYTHON_VERSION': expected e.g. 3.12"

files=()
if [[ -n $JAX_SPEC ]]; then
	note "warning: --jax-spec '$JAX_SPEC' leaves the lock file: this node's stack may differ from" \
		"the other nodes' (and with it θ)"
else
	[[ $PYTHON_VERSION == "$LOCK_PYTHON" ]] ||
		die "--python $PYTHON_VERSION: the lock is for Python $LOCK_PYTHON (pass --jax-spec to leave it)"
	[[ $DRY_RUN == 1 || -f $LOCK ]] || die "--lock '$LOCK': no such file"
	# The lock travels with the wheel; the workers install from their copy.
	files+=("$LOCK")
fi
if [[ -n $WHEEL ]]; then
	from=wheel
elif [[ -n $GIT_URL ]]; then
	from=git
else
	from=build
fi
case "$from" in
build)
	version=$(sed -n 's/^__version__ *= *"\([^"]*\)".*/\1/p' "$REPO_ROOT/gauntlet_jax/__init__.py" | head -n 1)
	[[ -n $version ]] || die "no __version__ in $REPO_ROOT/gauntlet_jax/__init__.py; build one and pass --wheel"
	WHEEL=$REPO_ROOT/dist/gauntlet_jax-$version-py3-none-any.whl
	run "${PYTHON:-python3}" -m pip wheel --no-deps --quiet --wheel-dir "$REPO_ROOT/dist" "$REPO_ROOT"
	if [[ $DRY_RUN != 1 && ! -f $WHEEL ]]; then
		die "the build did not produce $WHEEL"
	fi
	files+=("$WHEEL")
	package=files/$(basename "$WHEEL")
	;;
wheel)
	[[ $WHEEL == *.whl || $WHEEL == *.tar.gz ]] || die "--wheel '$WHEEL': expected a .whl or .tar.gz"
	[[ $DRY_RUN == 1 || -f $WHEEL ]] || die "--wheel '$WHEEL': no such file"
	files+=("$WHEEL")
	package=files/$(basename "$WHEEL")
	;;
git)
	package="gauntlet-jax @ git+$GIT_URL"
	;;
esac

setup_args=(setup --package "$package" --python "$PYTHON_VERSION")
if [[ -n $JAX_SPEC ]]; then
	setup_args+=(--jax-spec "$JAX_SPEC")
else
	setup_args+=(--lock "files/$(basename "$LOCK")")
fi
if [[ $FRESH == 1 ]]; then
	setup_args+=(--fresh)
fi
if [[ $NO_CHECK == 1 ]]; then
	setup_args+=(--no-check)
fi

copy_to_workers ${files[@]+"${files[@]}"}
worker_sh all "${setup_args[@]}"
