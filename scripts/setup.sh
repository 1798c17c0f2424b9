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
# norfair-enough replaces upstream norfair under the same import name: an older .venv
# with norfair still installed would mix the two packages' files, so both go first
if .venv/bin/python -m pip show -q norfair >/dev/null 2>&1; then
  .venv/bin/python -m pip uninstall -y -q norfair norfair-enough
fi
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
