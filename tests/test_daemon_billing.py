"""Bills end to end: the real daemon bills a tray of the live synthetic camera,
commits it, streams it over SSE, and keeps it through a ``kill -9``.

The synthetic camera of seed 3 brings a tray with three dishes over the
checkout line after about 4 s (frame 77 of the simulator's ground truth, which
the test renders to know the expected bill).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_daemon import _cli, _free_port, _Lines

from edge.config import DEFAULT_MODEL
from edge.groundtruth import read_trays
from edge.sim.writer import write_sequence

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="shipped model missing")

SEED = 3
CONFIG = """
[server]
host = "127.0.0.1"
port = {port}

[storage]
dir = "{storage}"

[[streams]]
id = "cam1"
url = "synthetic://?seed={seed}&fps=20&size=640x480"
"""


def _expected_first_bill() -> Counter[int]:
    with tempfile.TemporaryDirectory() as tmp:
        write_sequence(Path(tmp), seed=SEED, seconds=5.0, size=(640, 480))
        trays, _ = read_trays(Path(tmp) / "gt" / "trays.json")
    first = min((t for t in trays if t.checkout_frame is not None),
                key=lambda t: t.checkout_frame or 0)
    return Counter(i.class_id for i in first.items)


async def _first_bill_event(base: str, timeout: float) -> dict[str, Any]:
    """Read ``/api/events`` until a ``bill`` event arrives."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http, http.get(f"{base}/api/events") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/event-stream")
        event = None
        while time.monotonic() < deadline:
            line = await asyncio.wait_for(r.content.readline(), deadline - time.monotonic())
            text = line.decode().rstrip("\n")
            if text.startswith("event:"):
                event = text.split(":", 1)[1].strip()
            elif text.startswith("data:") and event == "bill":
                return dict(json.loads(text.split(":", 1)[1]))
            elif not text:
                event = None
    raise AssertionError("no bill event")


async def _get(base: str, path: str) -> tuple[int, bytes, str]:
    async with aiohttp.ClientSession() as http, http.get(base + path) as r:
        return r.status, await r.read(), r.headers.get("Content-Type", "")


def _start(tmp_path: Path, port: int) -> tuple[Any, _Lines]:
    site = tmp_path / "site.toml"
    site.write_text(CONFIG.format(port=port, storage=tmp_path / "var", seed=SEED))
    proc = _cli("run", "--config", str(site), merge_stderr=True)
    out = _Lines(proc.stdout)
    out.wait_for("open http://127.0.0.1:", 90)
    return proc, out


@pytest.mark.slow
def test_daemon_bills_a_tray_streams_it_and_keeps_it_through_kill_9(tmp_path: Path) -> None:
    expected = _expected_first_bill()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc, out = _start(tmp_path, port)
    try:
        bill = asyncio.run(_first_bill_event(base, 60))
        got = Counter(i["class_id"] for i in bill["items"])
        assert got == expected, (bill, dict(expected))
        assert bill["reason"] == "crossed" and bill["total"] > 0
        status, body, _ = asyncio.run(_get(base, f"/api/bills/{bill['bill_id']}"))
        assert status == 200 and json.loads(body)["items"] == bill["items"]
        status, body, ctype = asyncio.run(_get(base, f"/api/bills/{bill['bill_id']}/snapshot.jpg"))
        assert status == 200 and ctype == "image/jpeg" and body[:2] == b"\xff\xd8"
        out.wait_for('"event": "bill_closed"', 5)  # the operator's log line
    finally:
        proc.kill()  # SIGKILL: no shutdown, no final commit
        proc.wait(10)
        out.join()
        if proc.stdout is not None:
            proc.stdout.close()

    journal = tmp_path / "var" / "journal.sqlite3"
    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        ids = [r[0] for r in db.execute("SELECT bill_id FROM bills")]
    assert bill["bill_id"] in ids and len(ids) == len(set(ids))

    proc, out = _start(tmp_path, port)  # restart on the same journal
    try:
        status, body, _ = asyncio.run(_get(base, f"/api/bills/{bill['bill_id']}"))
        assert status == 200
        again = json.loads(body)
        assert again["items"] == bill["items"] and again["total"] == bill["total"]
    finally:
        proc.terminate()
        proc.wait(30)
        out.join()
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == 0
