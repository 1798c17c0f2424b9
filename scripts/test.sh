#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite. GPU tests skip themselves here.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
