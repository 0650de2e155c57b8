#!/usr/bin/env bash
# Installs algnet and its test tools. Keeps an already-installed torch; where none is installed it
# asks for torch 2.13.0 (on the project's CI machines that is the CPU build on local disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[test]"
