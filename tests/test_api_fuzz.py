"""schemathesis against the live daemon application: no 5xx, no hang, JSON errors with field paths.

Runs ``bench/fuzz_api.py`` (the same harness as the long run quoted in
docs/RELIABILITY.md) with a few examples per operation and mode, in its own
process: schemathesis and Hypothesis run there with their own warnings, outside
this suite's ``filterwarnings = error``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[1] / "bench" / "fuzz_api.py"


def test_fuzzed_requests_get_no_server_error_and_documented_answers(tmp_path: Path) -> None:
    out = tmp_path / "fuzz.json"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, str(FUZZ), "--max-examples", "25", "--seed", "1",
                           "--timeout", "10", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    report = json.loads(out.read_text())
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    assert report["server_errors"] == 0 and report["timeouts"] == 0
    assert report["problems"] == {}
    assert report["cases"] >= 400, report["by_operation"]
    assert len(report["by_operation"]) >= 15  # every operation but the event stream
    assert {"400", "401", "404", "422"} <= set(report["by_status"])
    assert time.monotonic() - started < 150
