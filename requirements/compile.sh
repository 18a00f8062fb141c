#!/usr/bin/env bash
# Regenerates the lock files (hashes included) of a node's run-time stack, one per platform,
# for Python 3.12 on x86-64 Linux (what tpu_scripts/setup.sh installs). Needs uv (pip install uv).
# Change the shared jax pin in constraints.txt, run this, commit the three .txt files.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
common=(--generate-hashes --python-version 3.12 --python-platform x86_64-manylinux_2_31
	--constraint requirements/constraints.txt --no-header --quiet)
uv pip compile pyproject.toml "${common[@]}" -o requirements/cpu.txt
uv pip compile pyproject.toml requirements/cuda.in "${common[@]}" -o requirements/cuda.txt
uv pip compile pyproject.toml --extra tpu "${common[@]}" -o requirements/tpu.txt
