"""The cashier page in real headless Chromium: live annotated video, delay, reconnects.

Serves the static page, a minimal ``GET /api/streams`` and the real WebRTC
route on 127.0.0.1, and drives Debian's Chromium through Playwright (the pip
package only; the browser is ``apt-get install chromium``, never
``playwright install``).

The page is judged on what a cashier must see, not on a frame rate, which a
busy 2-core machine does not hold: the video plays (its ``currentTime``
advances, frames decode, their corner stamps read back), the boxes are drawn
where the tracks are, in their class colours, and the delay is shown.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp import web
from test_webrtc_support import STATIC_DIR, TOKEN, CameraView, fake_tracks, serve

from edge.annotate import class_colour
from edge.config import ServerConfig
from edge.metrics import Metrics
from edge.stamp import read_stamp
from edge.web.access import protect
from edge.web.headers import add_security_headers
from edge.web.webrtc import WebRtcHub, add_webrtc_routes

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--autoplay-policy=no-user-gesture-required"]

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} missing: apt-get install -y chromium", allow_module_level=True)
async_api = pytest.importorskip("playwright.async_api",
                                reason="pip install playwright (the package only)")


def run_in_own_thread(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """``asyncio.run(main())`` on a new thread.

    aioice (0.13) keeps the lock of its mDNS resolver per thread, bound to the
    first event loop that resolves a Chromium ``….local`` candidate; a second
    ``asyncio.run`` on the same thread then fails with "bound to a different
    event loop" (the daemon runs one loop, so only tests meet this).
    """
    errors: list[BaseException] = []

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as err:  # handed to the test's thread
            errors.append(err)

    thread = threading.Thread(target=target, name="browser-test-loop")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def cashier_app(views: dict[str, CameraView], codec: str) -> web.Application:
    """The page, /api/streams and the WebRTC route, as edge/web/app.py serves them:
    with its security headers (CSP), the offer guarded by :data:`TOKEN`."""
    hub = WebRtcHub(views, ServerConfig.model_validate({"codec": codec}), Metrics(),
                    disconnect_grace_s=1.0, idle_grace_s=0.5)

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def streams(_: web.Request) -> web.Response:
        return web.json_response([{"id": sid, "state": "running"} for sid in views])

    app = web.Application()
    add_security_headers(app)
    protect(app, TOKEN)
    app.router.add_get("/", index)
    app.router.add_get("/api/streams", streams)
    app.router.add_static("/static", STATIC_DIR)
    add_webrtc_routes(app, hub)
    return app


OVERLAY_KEY = "dishtracker.overlay"
"""Where the page keeps the viewer's overlay choice (localStorage)."""


@asynccontextmanager
async def chromium(tmp_path: Path, *, overlay: str | None = None) -> AsyncIterator[Any]:
    """Debian's Chromium on a fresh profile in ``tmp_path``, headless, one page.

    ``overlay`` is stored as the page's overlay choice before its first load
    (a viewer's toggle still changes it): ``"engineer"`` for stories that read
    the corner stamp, which the cashier's overlay does not carry.
    """
    async with async_api.async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, args=FLAGS, headless=True,
            viewport={"width": 1280, "height": 800})
        if overlay is not None:
            await context.add_init_script(
                f"if (!localStorage.getItem('{OVERLAY_KEY}')) "
                f"localStorage.setItem('{OVERLAY_KEY}', '{overlay}');")
        page = context.pages[0] if context.pages else await context.new_page()
        page.console_log = []
        page.on("console", lambda msg: page.console_log.append(f"{msg.type}: {msg.text}"))
        try:
            yield page
        finally:
            await context.close()


async def measurements(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate("() => ({...window.dishtracker})")
    return result


async def wait_for(page: Any, condition: str, timeout: float = 20.0) -> dict[str, Any]:
    """Poll ``window.dishtracker`` until the JS expression ``condition`` (on ``m``) holds."""
    deadline = time.monotonic() + timeout
    while True:
        m = await measurements(page)
        if await page.evaluate(f"(m) => Boolean({condition})", m):
            return m
        if time.monotonic() > deadline:
            notice = await page.locator("#notice").inner_text()
            log = "\n".join(page.console_log[-20:])
            pytest.fail(f"timed out waiting for {condition}: {m}\nnotice: {notice}\n{log}")
        await asyncio.sleep(0.2)


VIDEO_TIME = "document.getElementById('video').currentTime"
"""The page's ``<video>`` playback position (s), as a JavaScript expression."""


async def video_plays(page: Any, timeout: float = 30.0) -> dict[str, Any]:
    """Wait until the page plays live video; returns ``window.dishtracker`` then.

    Playing means connected, with the ``<video>``'s ``currentTime`` advancing
    over newly decoded frames and at least one corner stamp read back from a
    shown frame: true at any frame rate, false for a frozen or black picture.
    """
    first = await wait_for(page, "m.state === 'connected' && m.framesDecoded > 0", timeout)
    start = await page.evaluate(VIDEO_TIME)
    return await wait_for(
        page, f"m.state === 'connected' && {VIDEO_TIME} > {start} "
              f"&& m.framesDecoded > {first['framesDecoded']} && m.stampsRead > 0", timeout)


async def shown_frame(page: Any) -> np.ndarray:
    """The picture the page's ``<video>`` shows now, as ``(height, width, 3)`` BGR pixels."""
    url: str = await page.evaluate("""() => {
        const video = document.getElementById('video');
        const canvas = document.createElement('canvas');
        canvas.width = video.videoWidth;
        canvas.height = video.videoHeight;
        canvas.getContext('2d').drawImage(video, 0, 0);
        return canvas.toDataURL('image/png');
    }""")
    png = np.frombuffer(base64.b64decode(url.split(",", 1)[1]), np.uint8)
    img = cv2.imdecode(png, cv2.IMREAD_COLOR)
    assert img is not None, "the video shows no picture"
    return np.asarray(img, dtype=np.uint8)


def boxes_match_their_tracks(img: np.ndarray) -> int:
    """Check the boxes :class:`CameraView` drew on the frame ``img`` shows.

    The frame's stamp gives its id, the id the tracks :func:`fake_tracks` gave
    it; along the top edge of each detected track's box the picture must have
    that class's colour (a 3 px line survives the encoder's 4:2:0 chroma).

    Returns
    -------
    int
        The frame id read from the stamp.
    """
    stamp = read_stamp(img)
    assert stamp is not None, "no readable stamp in the shown frame"
    frame_id = stamp[0]
    height, width = img.shape[:2]
    for track in fake_tracks(frame_id, width, height):
        if not track.detected:
            continue
        x1, y1, x2, _ = (round(v) for v in track.box)
        edge = img[y1, x1 + 8:x2 - 8].astype(np.int32)
        seen = np.median(edge, axis=0)
        want = np.array(class_colour(track.class_id))
        assert np.abs(seen - want).max() < 70, (
            f"frame {frame_id}: track {track.track_id}'s box edge is {seen.tolist()}, "
            f"its class colour {want.tolist()}")
    return frame_id


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_page_shows_live_annotated_video_with_its_delay(
        codec: str, tmp_path: Path, record_property: Any) -> None:
    async def main() -> None:
        views = {"cam1": CameraView("cam1"), "cam2": CameraView("cam2", seed=2)}
        try:
            async with (serve(cashier_app(views, codec)) as url,
                        chromium(tmp_path, overlay="engineer") as page):
                await page.goto(f"{url}/#token={TOKEN}")
                first = await video_plays(page)
                assert first["streamId"] == "cam1"
                await asyncio.sleep(2.5)  # a full 2 s latency window
                m = await video_plays(page)
                assert m["latencyMs"] is not None and 0 < m["latencyMs"] < 2000
                assert (await page.locator("#latency").inner_text()).isdigit()
                boxes_match_their_tracks(await shown_frame(page))
                p50 = round(m["latencyMs"], 1)
                record_property(f"chromium_latency_p50_ms_{codec}", p50)
                print(f"chromium {codec}: p50 {p50} ms, fps {m['fps']:.1f}, "
                      f"unreadable stamps {m['stampsUnreadable']} of "
                      f"{m['stampsRead'] + m['stampsUnreadable']}")
                assert await page.locator("#stream option").count() == 2
                assert await page.locator("aside h2").inner_text() == "Bill"
                await page.screenshot(path=str(tmp_path / f"cashier-{codec}.png"))
        finally:
            for view in views.values():
                view.close()

    run_in_own_thread(main)


def test_page_switches_streams_remembers_the_choice_and_survives_a_restart(
        tmp_path: Path) -> None:
    async def main() -> None:
        views = {"cam1": CameraView("cam1"), "cam2": CameraView("cam2", seed=2)}
        try:
            async with chromium(tmp_path, overlay="engineer") as page:
                async with serve(cashier_app(views, "vp8")) as url:
                    await page.goto(f"{url}/#token={TOKEN}")
                    await video_plays(page)
                    await page.select_option("#stream", "cam2")
                    await wait_for(page, "m.streamId === 'cam2' && m.state === 'connected'")
                    await page.reload()
                    m = await video_plays(page)
                    assert m["streamId"] == "cam2"  # from localStorage
                    for _ in range(100):  # cam1 is released after the hub's idle grace
                        if not views["cam1"].slots:
                            break
                        await asyncio.sleep(0.05)
                    assert views["cam1"].slots == []
                # the daemon is gone: the page says so and keeps trying
                await wait_for(page, "m.state !== 'connected'", timeout=15)
                port = int(url.rsplit(":", 1)[1])
                app = cashier_app(views, "vp8")
                runner = web.AppRunner(app)
                await runner.setup()
                await web.TCPSite(runner, "127.0.0.1", port).start()
                try:
                    await video_plays(page, timeout=30)  # reconnected by itself
                finally:
                    await runner.cleanup()
        finally:
            for view in views.values():
                view.close()

    run_in_own_thread(main)



def test_page_asks_for_the_token_and_keeps_it_for_the_session(tmp_path: Path) -> None:
    async def main() -> None:
        views = {"cam1": CameraView("cam1")}
        try:
            async with (serve(cashier_app(views, "vp8")) as url,
                        chromium(tmp_path, overlay="engineer") as page):
                await page.goto(url)  # no token in the URL: the page asks for it
                await wait_for(page, "m.state === 'locked'")
                form = page.locator("#token-form")
                assert await form.is_visible()
                assert views["cam1"].slots == []  # no offer was made

                await page.fill("#token-input", "not-the-token-0123456789")
                await page.click("#token-form button")
                await page.locator("#token-message", has_text="refused").wait_for(timeout=10_000)
                assert (await measurements(page))["state"] == "locked"
                assert await page.evaluate("sessionStorage.getItem('dishtracker.token')") is None

                await page.fill("#token-input", TOKEN)
                await page.click("#token-form button")
                await video_plays(page)
                assert not await form.is_visible()
                stored = await page.evaluate("sessionStorage.getItem('dishtracker.token')")
                assert stored == TOKEN

                # from the fragment: taken once, then gone from the address bar
                await page.evaluate("sessionStorage.clear()")
                await page.goto(f"{url}/?x=1#token={TOKEN}")
                await video_plays(page)
                assert page.url == f"{url}/?x=1"
                assert await page.evaluate("history.length") >= 1
                assert not await form.is_visible()
                violations = [m for m in page.console_log if "Content Security Policy" in m]
                assert violations == []  # no inline script or style anywhere
        finally:
            for view in views.values():
                view.close()

    run_in_own_thread(main)
