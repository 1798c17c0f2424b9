"""The pipeline bench's RTSP cameras (issue 19 item 4): stamped clips, a real
GStreamer RTSP server sending them in real time, the daemon receiving them.

Needs the system Python's PyGObject with gst-rtsp-server (``.ci/run``
installs it, as for ``tests/test_sources_rtsp.py``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import av
import pytest

from bench import pipeline as pl
from bench.rtsp_clips import render_clip
from edge.stamp import read_stamp

pytestmark = pytest.mark.slow


def test_a_clip_is_served_in_real_time_with_stamps_from_its_first_frame(
        tmp_path: Path) -> None:
    clip = render_clip(tmp_path, 1, size=(320, 240), fps=20, seconds=6)
    assert render_clip(tmp_path, 1, size=(320, 240), fps=20, seconds=6) == clip  # reused
    server = pl.Child("rtsp", [pl.SYSTEM_PYTHON, str(pl.RTSP_SERVER), str(port := pl.free_port()),
                               str(clip)], tmp_path / "rtsp.log", {})
    try:
        deadline = time.monotonic() + 20
        while "ready" not in server.tail(5).split():
            server.check_alive()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        stamps, arrivals = [], []
        with av.open(f"rtsp://127.0.0.1:{port}/cam1", options={"rtsp_transport": "tcp"}) as c:
            for frame in c.decode(video=0):
                stamps.append(read_stamp(frame.to_ndarray(format="bgr24")))
                arrivals.append(time.time() * 1000)
                if len(stamps) == 80:
                    break
        played = pl.played_at(server, "cam1")
    finally:
        server.stop()
    assert played is not None
    ids = [s[0] for s in stamps if s is not None]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # every frame, in order
    assert all(s is not None and s[1] == round(s[0] * 50) for s in stamps)  # ms from frame 0
    # sent in real time: the last frames arrive as their stamps say, after the play time
    lag = [a - (played + s[1]) for a, s in zip(arrivals[-20:], stamps[-20:], strict=True)]
    assert all(0 < x < 1000 for x in lag), lag


def test_the_pipeline_bench_measures_the_daemon_on_rtsp_cameras(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    code = pl.main(["--source", "rtsp", "--streams", "1", "--seconds", "6",
                    "--baseline-seconds", "0", "--size", "320x240", "--clips",
                    str(tmp_path / "clips"), "--json", str(out)])
    assert code in (0, 1)  # 1: a target missed on a busy machine; the figures are there
    report = json.loads(out.read_text())
    daemon = report["daemon"]
    assert daemon["source"] == "rtsp"
    stream = daemon["streams"][0]
    assert stream["frames"] > 30 and stream["unreadable"] == 0
    assert 0 < stream["latency_ms"]["p50"] < 2000
    assert report["machine"]["cpu_flags"] is not None
