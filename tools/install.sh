#!/usr/bin/env bash
# Installs everything skbackdoor needs for development on a fresh machine:
# a virtual environment in .venv with the package (editable) and its dev extras, and,
# where apt exists, Debian's dataset-fashion-mnist for the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev,docs]"

if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    if [ ! -d /usr/share/datasets/fashion-mnist ]; then
        $SUDO apt-get update -qq
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null
    fi
else
    echo "apt-get not found: install Fashion-MNIST yourself for the benchmarks (see README)." >&2
fi
echo "skbackdoor installed in .venv"
