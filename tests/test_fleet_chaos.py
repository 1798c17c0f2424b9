"""Ten kill -9 cycles of the real daemon with a real broker (bench/chaos.py, CI-sized).

Deselect with ``-m "not chaos"``; the 100-cycle figure in docs/RELIABILITY.md
comes from the same script.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mqtt_broker import mosquitto_path

from edge.config import DEFAULT_MODEL

CHAOS = Path(__file__).parents[1] / "bench" / "chaos.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.chaos,
    pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="shipped model missing"),
    pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed"),
]


def test_ten_kill_9_cycles_lose_no_bill_and_publish_every_one(tmp_path: Path) -> None:
    pytest.importorskip("aiomqtt", reason="the mqtt extra is not installed")
    out = tmp_path / "chaos.json"
    proc = subprocess.run(
        [sys.executable, str(CHAOS), "--cycles", "10", "--min-run", "1", "--max-run", "7",
         "--outage-every", "3", "--seed", "7", "--work", str(tmp_path / "work"),
         "--json", str(out)],
        capture_output=True, text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads(out.read_text())["summary"]
    assert summary["kills"] == 10 and summary["outages"] == 3
    assert summary["violations"] == 0
    assert summary["bills"] > 0, "no bill was journaled: the cycles proved nothing"
    assert summary["received"] == summary["bills"]
