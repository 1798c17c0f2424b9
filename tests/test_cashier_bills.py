"""The bill panel of the cashier page in headless Chromium, on the real app and service.

Serves the control plane with the real bills API, a real
:class:`~edge.billing.service.BillingService` on a journal in ``tmp_path``
and the WebRTC route fed by a synthetic camera; bills go in through
``service.submit`` as the stream runners hand them over. The screenshot goes
to ``tmp_path``; ``python bench/screenshots.py`` runs the same story to make
the docs' ``docs/cashier_bill.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bills_support import jpeg, make_bill, tray
from test_browser import (
    boxes_match_their_tracks,
    chromium,
    run_in_own_thread,
    shown_frame,
    video_plays,
    wait_for,
)
from test_http_api import MemoryDaemon
from test_webrtc_support import STATIC_DIR, TOKEN, CameraView, serve

from edge.billing.service import BillingService
from edge.config import ServerConfig, SiteConfig
from edge.metrics import Metrics
from edge.web.access import Keyring
from edge.web.app import make_app
from edge.web.bills import add_bill_routes
from edge.web.webrtc import WebRtcHub, add_webrtc_routes

pytestmark = pytest.mark.browser


async def _photo_opens_and_closes(page: Any, card: Any) -> None:
    """The snapshot needs the token: fetched with it, shown inline as a ``blob:`` image."""
    await card.locator(".photo").click()
    photo = card.locator("img.snapshot")
    await photo.wait_for(timeout=5000)
    assert (await photo.get_attribute("src") or "").startswith("blob:")
    await page.wait_for_function("() => document.querySelector('img.snapshot').naturalWidth > 0")
    await card.locator(".photo").click()
    assert await card.locator("img.snapshot").count() == 0


async def _newest_goes_in_folded(page: Any, service: BillingService, card: Any) -> None:
    """A newer bill goes in on top, folded; the open ``card`` stays open; a click opens it."""
    service.submit(make_bill("cam1-1-10", tray_id=10, closed_at=1_700_000_150.0,
                             lines=(("burger", 0.93), ("beer", 0.61))))
    await wait_for(page, "m.bills.lastBillId === 'cam1-1-10'")
    newest = page.locator('[data-bill-id="cam1-1-10"]')
    assert await newest.locator(".lines").count() == 0
    assert await card.locator(".lines").count() == 1
    await newest.locator(".bill-head").click()
    await newest.locator(".lines").wait_for(timeout=5000)


async def cashier_app(workdir: Path, token: str | Keyring = TOKEN,
                      config: SiteConfig | None = None,
                      ) -> tuple[BillingService, Any, dict[str, CameraView]]:
    """An open billing service (journal in ``workdir``), the daemon's app serving
    the cashier page, bills and WebRTC, and its one camera's view; ``token``:
    the tokens in force (one: the owner's, a manager); ``config``: the site's
    (default: the built-in one)."""
    views = {"cam1": CameraView("cam1", fps=10)}
    metrics = Metrics()
    service = BillingService(workdir / "journal.sqlite3", metrics, tray_interval_s=0.05)
    await service.open()
    daemon = MemoryDaemon(config or SiteConfig())
    app = make_app(daemon, config_path=None, token=token, static_dir=STATIC_DIR,
                   readiness_checks=[service.readiness])
    add_webrtc_routes(app, WebRtcHub(views, ServerConfig(), metrics, disconnect_grace_s=1.0))
    add_bill_routes(app, service, menu=lambda: daemon.config.menu)
    return service, app, views


def cashier_bill_story(workdir: Path, screenshot: Path) -> None:
    """A cashier sees committed bills, corrects one and opens its photo; shoot the page.

    Parameters
    ----------
    workdir : Path
        Holds the journal and the browser profile.
    screenshot : Path
        Where the bill panel's screenshot (PNG, its size on a 1280x800 page) is written.
    """
    async def main() -> None:  # the story itself
        service, app, views = await cashier_app(workdir)
        service.submit(make_bill("cam1-1-3", tray_id=3, closed_at=1_700_000_000.0,
                                 lines=(("coffee", 0.98), ("croissant", 0.95))))
        service.submit(make_bill("cam2-1-4", stream="cam2", tray_id=4))  # another camera
        try:
            async with serve(app) as url, chromium(workdir, overlay="engineer") as page:
                await page.goto(f"{url}/#token={TOKEN}")
                await wait_for(page, "m.bills.events === 'open' && m.bills.shown === 1")
                service.tray_update("cam1", (tray("cam1", 9, ("pasta_bolognese", "water_still")),))
                await page.locator("#bill .tray").wait_for(timeout=5000)
                assert "Running total" in await page.locator("#bill").inner_text()

                service.submit(make_bill("cam1-1-8", tray_id=8, closed_at=1_700_000_090.0,
                                         snapshot=jpeg(2)))
                await wait_for(page, "m.bills.lastBillId === 'cam1-1-8' && m.bills.shown === 2")
                card = page.locator('[data-bill-id="cam1-1-8"]')
                assert await card.get_attribute("data-review") == "true"
                assert await card.locator(".tag.review").inner_text() == "Review"
                await card.locator(".bill-head").click()  # a new bill comes in folded
                review = card.locator('.line[data-review="true"]')
                assert await review.count() == 1
                assert "check" in await review.locator(".reason").inner_text()

                await card.locator('.line[data-line="2"] .confirm').click()
                await wait_for(page, "m.bills.corrections === 1")
                assert await card.get_attribute("data-review") == "false"
                await card.locator('.line[data-line="1"] .change').click()
                await card.locator('[data-role="picker-query"]').fill("tea")
                await card.locator('[role="option"][data-value="tea"]').click()
                await wait_for(page, "m.bills.corrections === 2")
                assert "was Green salad" in await card.locator('.line[data-line="1"]').inner_text()
                view = await service.get("cam1-1-8")
                assert view is not None
                assert [c["action"] for c in view["corrections"]] == ["confirm", "change"]
                total = await card.locator(".bill-foot .total").inner_text()
                digits = "".join(ch for ch in total if ch.isdigit())
                assert digits == f"{view['effective']['total']:.2f}".replace(".", "")
                await _photo_opens_and_closes(page, card)

                await _newest_goes_in_folded(page, service, card)
                await video_plays(page)
                boxes_match_their_tracks(await shown_frame(page))
                await page.wait_for_timeout(2000)  # for the picture: 2 s of video in the counters
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                # the bill panel only: this story's video is a scripted test view
                await page.locator("aside.bill").screenshot(path=str(screenshot))
        finally:
            for v in views.values():
                v.close()
            await service.close()

    run_in_own_thread(main)


def test_cashier_sees_a_committed_bill_and_corrects_it(tmp_path: Path) -> None:
    shot = tmp_path / "cashier_bill.png"
    cashier_bill_story(tmp_path, shot)
    assert shot.read_bytes().startswith(b"\x89PNG")
