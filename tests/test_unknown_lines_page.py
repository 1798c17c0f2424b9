"""An unknown dish on the cashier page, in headless Chromium, on the real app and service.

A bill whose second line is an unknown item (``BillItem.unknown``, price 0,
three proposals) goes into the journal as the stream runners hand bills over
(``service.submit``). The page shows the line as unknown ("Unknown dish — pick
it", "—" for a price, no confirm, no quantity) with its proposals as one-tap
buttons and the menu as a fallback; one tap, or the key ``2``, resolves it:
the effective bill then has that dish at the menu's price and needs no
review. The screenshot of the bill panel goes to ``tmp_path``; the docs'
``docs/cashier_unknown.png`` is the same story's::

    .venv/bin/python -c "import sys, tempfile; from pathlib import Path; \\
      sys.path.insert(0, 'tests'); from test_unknown_lines_page import unknown_line_story; \\
      unknown_line_story(Path(tempfile.mkdtemp()), Path('docs/cashier_unknown.png'))"
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from bills_support import item
from test_browser import run_in_own_thread, wait_for
from test_cashier_page import LAYOUT, cashier_page

from edge.billing.model import (
    UNKNOWN_KEY,
    UNKNOWN_NAME,
    Bill,
    BillItem,
    Proposal,
    TrayState,
    round_money,
)
from edge.billing.photo import bill_photo
from edge.billing.service import BillingService
from edge.config import MenuEntry, SiteConfig

pytestmark = pytest.mark.browser

DONUT = MenuEntry(name="Donut", price=2.4)
"""A dish new to the site: on its menu, never seen by the model."""
PROPOSALS = (Proposal("donut", "Donut", 2.4, 0.62), Proposal("yogurt", "Yogurt", 1.7, 0.21),
             Proposal("cheesecake", "Cheesecake", 3.6, 0.09))
TRAY_BOX = (80.0, 90.0, 520.0, 400.0)
DISH_BOXES = ((130.0, 160.0, 230.0, 260.0), (300.0, 180.0, 400.0, 280.0))


def _site() -> SiteConfig:
    """The built-in site with a donut on its menu."""
    site = SiteConfig()
    return site.model_copy(update={"menu": {**site.menu, "donut": DONUT}})


def _unknown(track_id: int) -> BillItem:
    return BillItem(class_id=-1, key=UNKNOWN_KEY, name=UNKNOWN_NAME, price=0.0, confidence=0.0,
                    track_id=track_id, needs_review=True, unknown=True, proposals=PROPOSALS,
                    source="unknown")


def _photo(items: tuple[BillItem, ...]) -> bytes:
    """The bill photo of a drawn tray: a coffee and a ring-shaped dish the box never saw."""
    image = np.full((480, 640, 3), 96, np.uint8)
    cv2.rectangle(image, (80, 90), (519, 399), (200, 205, 210), cv2.FILLED)
    cv2.circle(image, (180, 210), 42, (40, 70, 110), cv2.FILLED)
    cv2.circle(image, (350, 230), 44, (60, 140, 220), cv2.FILLED)
    cv2.circle(image, (350, 230), 16, (200, 205, 210), cv2.FILLED)
    photo = bill_photo(image, 5, TRAY_BOX, items, DISH_BOXES)
    ok, buf = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return bytes(buf)


def unknown_bill(bill_id: str, tray_id: int, closed_at: float, *,
                 snapshot: bool = False, doubtful: bool = False) -> Bill:
    """A closed bill: a coffee, then a dish the box does not know (line 1); with
    ``doubtful``, then an apple pie it is unsure of, with proposals (line 2)."""
    items: tuple[BillItem, ...] = (item("coffee", 0.97, 11), _unknown(12))
    if doubtful:
        pie = dataclasses.replace(item("apple_pie", 0.52, 13), proposals=(
            Proposal("apple_pie", "Apple pie", 3.4, 0.48),
            Proposal("cheesecake", "Cheesecake", 3.6, 0.31)))
        items += (pie,)
        snapshot = False
    return Bill(bill_id=bill_id, stream_id="cam1", tray_id=tray_id, opened_at=closed_at - 6.0,
                closed_at=closed_at, frame_seq=900, items=items,
                total=round_money(sum(i.price for i in items)), needs_review=True,
                reason="crossed", tray_box=TRAY_BOX, review=("unknown_dish",),
                snapshot_jpeg=_photo(items) if snapshot else None)


async def _resolved_as(service: BillingService, bill_id: str, key: str) -> dict[str, Any]:
    """The bill on the server: line 1 is ``key`` at the menu's price, no longer to review."""
    view = await service.get(bill_id)
    assert view is not None
    assert view["corrections"][-1] == {**view["corrections"][-1], "action": "change",
                                       "line": 1, "class_key": key}
    eff = view["effective"]
    line = eff["items"][1]
    price = _site().menu[key].price
    assert (line["key"], line["price"], line["unknown"], line["needs_review"]) == (
        key, price, False, False)
    assert line["status"] == "changed"
    others = sum(ln["line_total"] for ln in eff["items"] if ln["line"] != 1)
    assert eff["total"] == round_money(others + price)
    return view


async def _shown_as_unknown(page: Any, card: Any, line: Any) -> None:
    """Line 1 of the open ``card`` reads as unknown, with three one-tap choices and the menu."""
    assert await line.get_attribute("data-unknown") == "true"
    assert "Unknown dish — pick it" in await line.locator(".name").inner_text()
    assert '"2 ?" in the photo' in await line.locator(".reason").inner_text()
    assert (await line.locator(".price").inner_text()).startswith("—")
    # an unknown line is never confirmed nor counted: picked, or removed
    assert await line.locator(".confirm, .qty").count() == 0
    assert await line.locator(".remove").count() == 1
    choices = line.locator(".choice")
    assert await choices.count() == 3
    texts = [" ".join((await c.inner_text()).split()) for c in await choices.all()]
    assert texts == ["1 Donut €2.40", "2 Yogurt €1.70", "3 Cheesecake €3.60"]
    assert await choices.nth(0).get_attribute("aria-keyshortcuts") == "1"
    assert await line.locator(".choices").get_attribute("role") == "group"
    # the whole menu is the fallback, searchable as ever
    await line.locator(".choices .pick").click()
    await card.locator('[data-role="picker-query"]').fill("cake")
    assert await card.locator('[role="option"]').count() == 2  # chocolate, cheese
    await page.keyboard.press("Escape")
    assert await card.locator('[role="option"]').count() == 0


async def _live_tray_with_an_unknown_dish(page: Any, service: BillingService) -> None:
    """The next tray at the checkout holds an unknown dish too: it is never priced."""
    service.tray_update("cam1", (TrayState("cam1", 6, TRAY_BOX, (
        item("tea", 0.95, 21), _unknown(22)), 2.0),))
    live = page.locator('#bill .line[data-unknown="true"]')
    await live.wait_for(timeout=5000)
    assert " ".join((await live.inner_text()).split()) == (
        "Unknown dish? pick it on the bill —")
    assert "€2.00 + ?" in await page.locator("#bill .tray-total").inner_text()


def unknown_line_story(workdir: Path, screenshot: Path) -> None:
    """A cashier opens a bill with an unknown dish, opens its photo, shoots the bill
    panel, then taps the first proposal.

    Parameters
    ----------
    workdir : Path
        Holds the journal and the browser profile.
    screenshot : Path
        Where the bill panel's screenshot (PNG) is written, before the tap.
    """
    async def main() -> None:
        bill = unknown_bill("cam1-1-5", 5, 1_700_000_000.0, snapshot=True)
        async with cashier_page(workdir, bill, config=_site()) as (service, page):
            await wait_for(page, "m.bills.events === 'open' && m.bills.shown === 1")
            card = page.locator('[data-bill-id="cam1-1-5"]')
            assert await card.get_attribute("data-review") == "true"
            head = await card.locator(".bill-head").inner_text()
            assert "Unknown dish?" in head and "+ ?" in head  # folded: never a priced dish
            await card.locator(".bill-head").click()
            line = card.locator('.line[data-line="1"]')
            await _shown_as_unknown(page, card, line)
            await _live_tray_with_an_unknown_dish(page, service)
            await card.locator(".bill-foot .photo").click()
            await page.wait_for_function(
                "() => (document.querySelector('img.snapshot') || {}).naturalWidth > 0")
            await page.set_viewport_size({"width": 1280, "height": 1240})  # the whole card
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            await page.locator("aside.bill").screenshot(path=str(screenshot))
            await page.set_viewport_size({"width": 1280, "height": 800})
            await card.locator(".bill-foot .photo").click()

            await line.locator(".choice").first.click()  # one tap
            await wait_for(page, "m.bills.corrections === 1")
            view = await _resolved_as(service, "cam1-1-5", "donut")
            assert view["effective"]["needs_review"] is False
            await page.wait_for_function(
                "() => document.querySelector('[data-bill-id=\"cam1-1-5\"]')"
                ".dataset.review === 'false'")
            text = await line.inner_text()
            assert "Donut" in text and "was Unknown dish" in text and "€2.40" in text
            assert await line.locator(".choice").count() == 0
            assert await line.get_attribute("data-unknown") is None
            assert "+ ?" not in await card.locator(".bill-foot .total").inner_text()

    run_in_own_thread(main)


def test_an_unknown_line_is_resolved_by_one_tap_on_a_proposal(tmp_path: Path) -> None:
    shot = tmp_path / "cashier_unknown.png"
    unknown_line_story(tmp_path, shot)
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_key_2_picks_the_second_proposal_and_the_help_lists_the_keys(tmp_path: Path) -> None:
    async def main() -> None:
        async with cashier_page(tmp_path, config=_site()) as (service, page):
            await wait_for(page, "m.bills.events === 'open'")
            service.submit(unknown_bill("cam1-1-6", 6, 1_700_000_050.0, doubtful=True))
            m = await wait_for(page, "m.bills.shown === 1")
            assert "1 unknown dish to pick" in m["bills"]["announced"]
            await page.keyboard.press("?")
            keys = await page.locator("#keys-help").inner_text()
            assert "1 2 3" in " ".join(keys.split()) and "proposed dish" in keys
            await page.keyboard.press("Escape")

            await page.keyboard.press("j")
            card = page.locator('[data-bill-id="cam1-1-6"]')
            await page.keyboard.press("2")  # a folded bill opens first: nothing picked yet
            await card.locator(".lines").wait_for(timeout=5000)
            focused = await page.evaluate("() => document.activeElement.dataset.value")
            assert focused == "yogurt"
            assert (await wait_for(page, "m.bills"))["bills"]["corrections"] == 0
            view = await service.get("cam1-1-6")
            assert view is not None and view["corrections"] == []

            await page.keyboard.press("2")
            await wait_for(page, "m.bills.corrections === 1")
            await _resolved_as(service, "cam1-1-6", "yogurt")
            line = card.locator('.line[data-line="1"]')
            await page.wait_for_function("() => !document.querySelector("
                                         "'[data-bill-id=\"cam1-1-6\"] [data-line=\"1\"] .choice')")
            assert "Yogurt" in await line.inner_text()
            # the next line to pick is the doubtful apple pie: 1, the dish it already
            # names, confirms it
            await page.keyboard.press("1")
            await wait_for(page, "m.bills.corrections === 2")
            view = await service.get("cam1-1-6")
            assert view is not None
            assert [c["action"] for c in view["corrections"]] == ["change", "confirm"]
            assert view["effective"]["items"][2]["status"] == "confirmed"
            assert view["effective"]["needs_review"] is False
            await page.keyboard.press("3")  # no line left to pick: nothing happens
            await page.wait_for_timeout(300)
            view = await service.get("cam1-1-6")
            assert view is not None and len(view["corrections"]) == 2

            # undo brings the unknown line back, with its choices, 44 px on a tablet
            for done in (3, 4):
                await card.locator(".till-actions .undo").click()
                await wait_for(page, f"m.bills.corrections === {done}")
            await line.locator(".choice").first.wait_for(timeout=5000)
            await page.set_viewport_size({"width": 820, "height": 1180})
            tablet = await page.evaluate(LAYOUT)
            assert tablet["smallest"] >= 44, tablet["smallest"]
            assert tablet["scrollWidth"] <= 820

    run_in_own_thread(main)
