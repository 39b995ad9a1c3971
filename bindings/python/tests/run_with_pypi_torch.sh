#!/usr/bin/env bash
# Runs the Python suite once against the current torch release from PyPI (CI runs it against
# Debian's torch 1.13): a venv of the interpreter the extension was built for, with torch,
# numpy and pytest from PyPI, and the package from a CMake build (-DECCL_BUILD_PYTHON=ON).
# The default torch wheel pulls its CUDA packages (several GB); nothing here needs a GPU.
#
# Usage: bindings/python/tests/run_with_pypi_torch.sh [BUILD_DIR (default build)] [VENV]
#   TORCH_SPEC picks the release (default "torch", the newest); extra pytest args via PYTEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/../../.."
build=${1:-build}
venv=${2:-${TMPDIR:-/tmp}/eccl-pypi-torch}
python=/usr/bin/python3  # the interpreter scripts/test.sh builds the extension for
[ -d "$build/python/eccl" ] || { echo "no $build/python/eccl: configure with -DECCL_BUILD_PYTHON=ON" >&2; exit 2; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/pip" install -q --upgrade "${TORCH_SPEC:-torch}" numpy pytest
"$venv/bin/python" -c 'import torch, sys; print("torch", torch.__version__, "python", sys.version.split()[0])'
# shellcheck disable=SC2086
PYTHONPATH="$PWD/$build/python" "$venv/bin/python" -m pytest -p no:cacheprovider -q \
  bindings/python/tests ${PYTEST_ARGS:-}
