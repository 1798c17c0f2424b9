#!/usr/bin/env bash
# The daemon's code paths on the numpy 1 stack of a JetPack 6 box: numpy 1.26, OpenCV 4.11
# (the newest for numpy 1), Python 3.10 where this machine has it. The main suite
# (scripts/test.sh) runs on the numpy 2 stack a fresh install gets.
# Its own venv, .venv-numpy1 (VENV_NUMPY1 to put it elsewhere); no training extra
# (torch), no browser tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV_NUMPY1:-.venv-numpy1}"
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  python3.10 -c '' 2>/dev/null && PYTHON=python3.10
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev]" "numpy==1.26.*" "opencv-python-headless<4.12"
"$VENV/bin/python" - <<'PY'
import cv2, numpy, sys
assert numpy.__version__.startswith("1.26."), numpy.__version__
assert tuple(int(v) for v in cv2.__version__.split(".")[:2]) < (4, 12), cv2.__version__
print(f"numpy {numpy.__version__}, OpenCV {cv2.__version__}, Python {sys.version.split()[0]}")
PY
# detect, track, bill, journal, config, sources, pipeline, HTTP API, the daemon itself,
# and the metrics the evaluation reports
shopt -s nullglob
tests=(tests/test_{detect,engine,tensorrt,track,trays,norfair,bills,journal,config,sources,pipeline,http,openapi,security,bad_input,daemon,systemd,annotate,stamp,logging,layering,mot_metrics}*.py)
exec "$VENV/bin/python" -m pytest -q -m "not browser and not gpu and not chaos" "${tests[@]}" "$@"
