"""The product as a cashier sees it: ``dishtracker run`` and its page in headless Chromium.

Starts the real daemon (built-in defaults: one synthetic camera, the shipped
model, ONNX Runtime) on a free port, opens ``/`` in Debian's Chromium, and
waits for what the cashier must see: live annotated video (playing, stamps
read back), a measured delay and the first closed bill. The page is judged
on that, never on a frame rate, which a busy 2-core machine does not hold.
The screenshots (a 1280x800 till, an 820x1180 tablet) go to ``tmp_path``;
``python bench/screenshots.py`` runs the same story to make the docs'
``docs/cashier.png`` and ``docs/cashier_tablet.png``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_browser import chromium, run_in_own_thread, video_plays, wait_for
from test_daemon import _free_port, _Lines

from edge.config import DEFAULT_MODEL

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="shipped model missing")]


def daemon_page_story(workdir: Path, screenshot: Path, tablet: Path | None = None) -> None:
    """Run the daemon in ``workdir``, watch its page until a bill closes, shoot it.

    Parameters
    ----------
    workdir : Path
        The daemon's working directory (its ``var/``: token, journal) and the
        browser profile's parent.
    screenshot : Path
        Where the page's screenshot (PNG, 1280x800) is written.
    tablet : Path, optional
        Where the same page on a tablet (PNG, 820x1180, portrait) is written.
    """
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "--host", "127.0.0.1", "--port", str(port)],
        cwd=workdir, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ})
    out = _Lines(proc.stdout)
    try:
        line = out.wait_for(f"open http://127.0.0.1:{port}/", 90)
        # the first start generated the token and printed it once, in the URL's fragment
        url = line.split("open ", 1)[1].strip()
        token = (workdir / "var" / "token").read_text().strip()
        assert url == f"http://127.0.0.1:{port}/#token={token}"

        async def main() -> None:
            async with chromium(workdir, overlay="engineer") as page:  # delay: the stamp
                await page.goto(url)  # what the cashier opens
                await video_plays(page, timeout=60)
                m = await wait_for(page, "m.latencyMs !== null", 20)
                assert 0 < m["latencyMs"] < 2000
                assert page.url == f"http://127.0.0.1:{port}/"  # token gone from the address bar
                # the first tray of the default camera crosses the line after ~8 s:
                # its bill is committed, streamed and listed, folded, under "Last bills"
                await page.wait_for_selector("#bills [data-bill-id]", timeout=60_000)
                await page.locator("#bills [data-bill-id] .bill-head").first.click()
                assert await page.locator("#bills [data-bill-id] .line .price").count() >= 1
                await video_plays(page)  # still live after the bill
                # what a cashier sees by default: the toggle negotiates the cashier's overlay
                await page.click("#overlay")
                m = await wait_for(page, "m.overlay === 'cashier' && m.state === 'connected'")
                await wait_for(page, f"m.framesDecoded > {m['framesDecoded'] + 10}")
                await page.wait_for_timeout(1500)  # the next tray's open bill builds up
                if await page.locator("#new-pill").is_visible():  # newer bills above
                    await page.click("#new-pill")
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                await page.screenshot(path=str(screenshot))
                if tablet is not None:
                    await page.set_viewport_size({"width": 820, "height": 1180})
                    await page.wait_for_timeout(1000)
                    await page.screenshot(path=str(tablet))

        run_in_own_thread(main)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        out.join()
        if proc.stdout is not None:
            proc.stdout.close()


def test_cashier_page_shows_the_daemons_annotated_video(tmp_path: Path) -> None:
    shot, tablet = tmp_path / "cashier.png", tmp_path / "cashier_tablet.png"
    daemon_page_story(tmp_path, shot, tablet)
    assert shot.read_bytes().startswith(b"\x89PNG")
    assert tablet.read_bytes().startswith(b"\x89PNG")
