"""``bench/learning.py`` briefly (issue 14 item 7): the real daemon with a site2
camera, once with learning on and once off, an aiortc viewer and the scripted
cashier over HTTP.

Checks what a test can check on a shared box: the report has its figures, the
cashier matched the bills to the scene's trays (no bill left without its
tray, the scene frame never before ``frame_seq``), corrected the new dishes,
and every ``change`` reached the daemon's index within 2 s (``GET
/api/learning``). The frame-rate and latency targets are the bench's, on a
quiet machine (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import learning

pytestmark = pytest.mark.slow


def test_the_learning_bench_corrects_over_http_and_the_index_follows(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    try:
        code = learning.main(["--streams", "1", "--seconds", "20", "--order", "on,off",
                              "--json", str(out)])
    finally:
        for child in list(learning.pl.Child.running):
            child.stop()
    assert code == 0
    report = json.loads(out.read_text())
    assert {"machine", "runs", "pooled", "targets", "on_minus_off_p95_ms", "seeds"} <= set(report)
    assert report["seeds"] == [17000]
    on, off = report["runs"]
    assert (on["learning"], off["learning"]) == ("on", "off")
    for run in (on, off):
        assert {"streams", "latency_ms", "server_cpu_pct", "contention", "cashier", "effect",
                "exact", "learning_status"} <= set(run)
        stream = run["streams"][0]
        assert stream["fps"] > 0 and stream["detect_hz"] > 0
        assert run["latency_ms"]["p95"] is not None
        assert run["cashier"]["bills"] >= 2 and not run["cashier"]["errors"]
        assert run["cashier"]["frames_skipped_before_bill"][0] >= 0
        assert run["exact"]["all"]["trays"] >= 2
    assert on["learning_status"]["enabled"] is True
    assert off["learning_status"]["enabled"] is False
    # a new dish was corrected, and its examples were in the index within 2 s
    assert on["cashier"]["actions"].get("change", 0) >= 1
    assert set(on["cashier"]["taught"]) <= {"ramen", "sushi", "donut", "ice_cream", "curry_rice"}
    assert on["effect"]["changes"] >= 1 and on["effect"]["not_seen"] == 0
    assert on["effect"]["after_answer"]["max_ms"] <= 2000
    assert sum(on["learning_status"]["in_use"].values()) >= 1
    effect_target = [t for t in report["targets"] if "correction-to-effect" in t["target"]]
    assert effect_target and effect_target[0]["pass"]
