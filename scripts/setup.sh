#!/usr/bin/env bash
# Create .venv and install the project with the extras named in $EXTRAS (default: train,dev).
# torch==2.13.0 is pinned first: on the build machines its CPU wheel is on local disk,
# and asking pip for a bare "torch" would pull a multi-GB CUDA build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-train,dev}"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
case ",$EXTRAS," in *,train,*) .venv/bin/python -m pip install -q "torch==2.13.0" ;; esac
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
