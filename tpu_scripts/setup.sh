#!/usr/bin/env bash
# Installs jax[tpu] and gauntlet-jax into a venv on every worker of a TPU VM or pod slice.
set -euo pipefail
# shellcheck source=tpu_scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
	cat <<EOF
Usage: $SCRIPT_NAME [flags]

On every worker of NAME: creates ~/$REMOTE_DIR/venv (Python $PYTHON_VERSION through uv, which
fetches that Python when the TPU image has an older one), installs jax[tpu] (libtpu matching
JAX) and gauntlet-jax, then checks that JAX sees the TPU chips. Safe to run again (it upgrades).

Where the package comes from (default: build a wheel from this checkout):
  --wheel PATH        copy this wheel or sdist to the workers and install it
  --git URL[@REF]     install 'gauntlet-jax @ git+URL[@REF]' on the workers (needs their
                      internet access and, for a private repository, credentials there)
  (default)           'python3 -m pip wheel --no-deps' of this checkout into dist/, copied
                      with 'gcloud compute tpus tpu-vm scp': the workers need no git access
                      and run exactly the code you have here.

  --python VERSION    Python for the venv (default: $PYTHON_VERSION; JAX needs >= 3.11)
  --jax-spec SPEC     JAX requirement (default: '$JAX_SPEC'; pin e.g. 'jax[tpu]==0.10.2')
  --fresh             delete the venv first
  --no-check          skip the JAX device check
  --remote-dir DIR    directory under the workers' home (default: $REMOTE_DIR)
  --internal-ip       ssh/scp to internal IPs (from a VM in the same VPC)

$COMMON_HELP

Example:
  $SCRIPT_NAME --name val-1 --zone us-west4-a
EOF
}

accept_flags value --wheel WHEEL --git GIT_URL --python PYTHON_VERSION=3.12 --jax-spec 'JAX_SPEC=jax[tpu]'
accept_flags switch --fresh FRESH --no-check NO_CHECK
accept_worker_flags
parse_flags "$@"
[[ -z $WHEEL || -z $GIT_URL ]] || die "--wheel and --git exclude each other"
[[ $PYTHON_VERSION =~ ^3\.[0-9]+$ ]] || die "--python '$PYTHON_VERSION': expected e.g. 3.12"

files=()
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

setup_args=(setup --package "$package" --python "$PYTHON_VERSION" --jax-spec "$JAX_SPEC")
if [[ $FRESH == 1 ]]; then
	setup_args+=(--fresh)
fi
if [[ $NO_CHECK == 1 ]]; then
	setup_args+=(--no-check)
fi

copy_to_workers ${files[@]+"${files[@]}"}
worker_sh all "${setup_args[@]}"
