#!/usr/bin/env bash
# Installs algnet and its test tools. Keeps an already-installed torch; where none is installed it
# asks for torch 2.13.0 (on the project's CI machines that is the CPU build on local disk).
# The tests of `algnet app` drive Debian's Chromium (Playwright's own browser download is not used);
# it is installed with apt when /usr/bin/chromium is missing (as root, or through sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x /usr/bin/chromium ]; then
    SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e ".[test]"
