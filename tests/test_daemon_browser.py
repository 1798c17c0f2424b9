"""The product as a cashier sees it: ``dishtracker run`` and its page in headless Chromium.

Starts the real daemon (built-in defaults: one synthetic camera, the shipped
model, ONNX Runtime) on a free port, opens ``/`` in Debian's Chromium, waits
for live annotated video, a measured delay and the first closed bill, and
keeps a screenshot in
``docs/cashier.png`` (the README's "look at what users see").
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_browser import chromium, run_in_own_thread, wait_for
from test_daemon import _free_port, _Lines

from edge.config import DEFAULT_MODEL

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="shipped model missing")]
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "cashier.png"


def test_cashier_page_shows_the_daemons_annotated_video(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ})
    out = _Lines(proc.stdout)
    try:
        line = out.wait_for(f"open http://127.0.0.1:{port}/", 90)
        # the first start generated the token and printed it once, in the URL's fragment
        url = line.split("open ", 1)[1].strip()
        token = (tmp_path / "var" / "token").read_text().strip()
        assert url == f"http://127.0.0.1:{port}/#token={token}"

        async def main() -> None:
            async with chromium(tmp_path) as page:
                await page.goto(url)  # what the cashier opens
                await wait_for(page, "m.state === 'connected' && m.framesDecoded > 20", 40)
                m = await wait_for(page, "m.latencySamples.length > 20", 20)
                assert 0 < m["latencyMs"] < 1000
                assert m["fps"] > 15
                await wait_for(page, "m.framesDecoded > 100", 20)
                assert page.url == f"http://127.0.0.1:{port}/"  # token gone from the address bar
                # the first tray of the default camera crosses the line after ~8 s:
                # its bill is committed, streamed and listed under "Last bills"
                await page.wait_for_selector("#bills li:not(.empty)", timeout=40_000)
                await page.wait_for_timeout(1500)  # the next tray's open bill builds up
                SCREENSHOT.parent.mkdir(exist_ok=True)
                await page.screenshot(path=str(SCREENSHOT))

        run_in_own_thread(main)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        out.join()
        if proc.stdout is not None:
            proc.stdout.close()
