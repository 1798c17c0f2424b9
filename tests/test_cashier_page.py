"""The cashier page keeps up, in headless Chromium, on the real app and billing service.

Bills go in as the stream runners hand them over (``service.submit``): the
journal commits them and the event stream brings them to the page. The page
must patch itself: a correction in progress (an open card, a focused search
with text typed in it, a half-typed void reason) survives any number of
arrivals, and the new bills come in folded, announced, above the card in use
without moving it. Also: the till's actions change the bill on the server,
the page works by keyboard, and without a token it shows a sign-in, not
buttons that cannot work.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from bills_support import make_bill, tray
from test_browser import chromium, run_in_own_thread, wait_for
from test_cashier_bills import cashier_app
from test_webrtc_support import TOKEN, serve

from edge.billing.model import Bill
from edge.billing.service import BillingService
from edge.config import SiteConfig
from edge.web.access import Keyring
from edge.web.roles import CAPABILITIES
from edge.web.tokens import TokenStore

pytestmark = pytest.mark.browser

MARK = "(el) => { el.testMark = 'kept'; }"
"""Marks a DOM node (a property, not an attribute), so a test can tell the
same node from a rebuilt copy."""

KEPT = "(el) => el.testMark === 'kept'"
FOCUS_KEPT = "() => document.activeElement && document.activeElement.testMark === 'kept'"


@asynccontextmanager
async def cashier_page(workdir: Path, *bills: Bill, token: str | None = TOKEN,
                       keyring: Keyring | None = None, config: SiteConfig | None = None,
                       ) -> AsyncIterator[tuple[BillingService, Any]]:
    """The billing service holding ``bills`` and Chromium on its page (1280x800),
    opened with ``token`` in the URL's fragment (None: without one); the
    server knows the tokens of ``keyring`` (default: :data:`TOKEN` alone)
    and runs ``config`` (default: the built-in one)."""
    service, app, views = await cashier_app(workdir, keyring or TOKEN, config)
    for bill in bills:
        service.submit(bill)
    try:
        async with serve(app) as url, chromium(workdir) as page:
            await page.goto(f"{url}/#token={token}" if token else url)
            yield service, page
    finally:
        for view in views.values():
            view.close()
        await service.close()


def _arrivals(service: BillingService, first_tray: int, count: int) -> None:
    """``count`` bills closing one after another, as a busy checkout makes them,
    each with the next tray's open bill at the checkout."""
    for i in range(count):
        tray_id = first_tray + i
        service.submit(make_bill(f"cam1-1-{tray_id}", tray_id=tray_id,
                                 closed_at=1_700_000_100.0 + 5 * i,
                                 lines=(("coffee", 0.97), ("croissant", 0.93))))
        service.tray_update("cam1", (tray("cam1", tray_id + 1, ("tea", "apple_pie")[:1 + i % 2]),))


async def _top(card: Any) -> float:
    box = await card.bounding_box()
    assert box is not None
    return float(box["y"])


def test_a_correction_in_progress_survives_ten_incoming_bills(tmp_path: Path) -> None:
    async def main() -> None:
        async with cashier_page(tmp_path, make_bill("cam1-1-3", tray_id=3)) as (service, page):
            await wait_for(page, "m.bills.events === 'open' && m.bills.shown === 1")
            card = page.locator('[data-bill-id="cam1-1-3"]')
            await card.locator(".bill-head").click()
            # a flagged line says why, never how sure
            review = card.locator('.line[data-review="true"]')
            assert "%" not in await review.inner_text()
            assert "check" in await review.locator(".reason").inner_text()

            await card.locator('.line[data-line="1"] .change').click()
            search = card.locator('[data-role="picker-query"]')
            await search.type("te")
            await search.evaluate(MARK)
            await card.evaluate(MARK)
            top = await _top(card)

            _arrivals(service, 10, 10)
            m = await wait_for(page, "m.bills.shown === 11 && m.bills.unseen === 10")
            assert m["bills"]["lastBillId"] == "cam1-1-19"
            await page.locator("#bill .tray-head", has_text="Tray 20").wait_for(timeout=5000)
            assert "tray 19" in m["bills"]["announced"]
            assert await page.evaluate(FOCUS_KEPT), "the search lost focus"
            assert await search.input_value() == "te"
            assert await card.evaluate(KEPT)  # the same node
            assert await card.locator(".bill-head").get_attribute("aria-expanded") == "true"
            assert abs(await _top(card) - top) < 1  # held still, the new ones above
            assert await page.locator('.bill-head[aria-expanded="true"]').count() == 1
            assert await page.locator("#new-pill").inner_text() == "10 new bills ↑"

            # the search still works: Tea, by keyboard
            await search.type("a")
            await page.keyboard.press("Enter")
            await wait_for(page, "m.bills.corrections === 1")
            view = await service.get("cam1-1-3")
            assert view is not None
            assert view["corrections"][-1]["class_key"] == "tea"
            assert "was Green salad" in await card.locator('.line[data-line="1"]').inner_text()
            assert await card.evaluate(KEPT)

            await page.locator("#new-pill").click()
            await wait_for(page, "m.bills.unseen === 0")
            newest = page.locator('[data-bill-id="cam1-1-19"]')
            assert await newest.get_attribute("data-fresh") == "true"  # highlighted
            assert await newest.locator(".bill-head").get_attribute("aria-expanded") == "false"

    run_in_own_thread(main)


def test_a_half_typed_void_reason_survives_arrivals_and_the_list_stays_capped(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with cashier_page(tmp_path, make_bill("cam1-1-3", tray_id=3)) as (service, page):
            await wait_for(page, "m.bills.events === 'open' && m.bills.shown === 1")
            card = page.locator('[data-bill-id="cam1-1-3"]')
            await card.locator(".bill-head").focus()
            await page.keyboard.press("v")  # void asks for a reason first
            reason = card.locator('[data-role="void-reason"]')
            await reason.wait_for(timeout=5000)
            role = await page.evaluate("() => document.activeElement.dataset.role")
            assert role == "void-reason"
            await page.keyboard.type("customer le")
            await reason.evaluate(MARK)

            _arrivals(service, 100, 55)  # more than the list keeps (50)
            await wait_for(page, "m.bills.lastBillId === 'cam1-1-154'", timeout=30)
            assert await page.evaluate(FOCUS_KEPT)
            assert await reason.input_value() == "customer le"
            # the 50 newest, and the one in use
            assert await page.locator("#bills .bill-card").count() == 51
            assert await card.count() == 1
            assert await page.locator('[data-bill-id="cam1-1-104"]').count() == 0
            assert await service.get("cam1-1-3") is not None
            view = await service.get("cam1-1-3")
            assert view is not None and view["corrections"] == []  # nothing sent yet

            await page.keyboard.press("Escape")  # the form closes, nothing is voided
            assert await reason.count() == 0
            assert await page.evaluate("() => document.activeElement.dataset.key") == "void"

    run_in_own_thread(main)


def test_keyboard_moves_opens_and_documents_its_shortcuts(tmp_path: Path) -> None:
    async def main() -> None:
        async with cashier_page(
                tmp_path, make_bill("cam1-1-3", tray_id=3),
                make_bill("cam1-1-4", tray_id=4, closed_at=1_700_000_010.0)) as (service, page):
            await wait_for(page, "m.bills.events === 'open' && m.bills.shown === 2")
            await page.keyboard.press("?")
            assert await page.locator("#keys-help").is_visible()
            assert "void the bill" in await page.locator("#keys-help").inner_text()
            await page.keyboard.press("Escape")
            assert not await page.locator("#keys-help").is_visible()

            focused = "() => document.activeElement.closest('[data-bill-id]')?.dataset.billId"
            await page.keyboard.press("j")
            assert await page.evaluate(focused) == "cam1-1-4"
            await page.keyboard.press("j")
            assert await page.evaluate(focused) == "cam1-1-3"
            await page.keyboard.press("Enter")
            card = page.locator('[data-bill-id="cam1-1-3"]')
            assert await card.locator(".bill-head").get_attribute("aria-expanded") == "true"
            await page.keyboard.press("c")  # the first line to review: apple pie
            await wait_for(page, "m.bills.corrections === 1")
            view = await service.get("cam1-1-3")
            assert view is not None
            assert view["corrections"][0]["action"] == "confirm"
            assert view["corrections"][0]["line"] == 2
            assert await page.evaluate(focused) == "cam1-1-3"  # focus stays in the card
            key = "() => document.activeElement.dataset.key"
            await page.keyboard.press("u")  # to the Undo button, nothing sent
            assert await page.evaluate(key) == "undo"
            await page.keyboard.press("h")
            assert await page.evaluate(key) == "handover"
            view = await service.get("cam1-1-3")
            assert view is not None and len(view["corrections"]) == 1
            assert not view.get("handed_over_at")
            await page.keyboard.press("k")
            assert await page.evaluate(focused) == "cam1-1-4"
            # every action is a real button, reachable by Tab
            await page.keyboard.press("k")
            await page.keyboard.press("Enter")
            await page.keyboard.press("Tab")
            assert await page.evaluate("() => document.activeElement.tagName") == "BUTTON"
            ring = await page.evaluate("""() => {
                const style = getComputedStyle(document.activeElement);
                return [style.outlineStyle, parseFloat(style.outlineWidth)];
            }""")
            assert ring[0] == "solid" and ring[1] >= 2  # a visible focus ring

    run_in_own_thread(main)


def test_without_a_token_the_page_shows_a_sign_in_not_dead_buttons(tmp_path: Path) -> None:
    async def main() -> None:
        async with cashier_page(tmp_path, make_bill("cam1-1-3", tray_id=3),
                                token=None) as (_, page):
            await wait_for(page, "m.bills.shown === 1 && m.state === 'locked'")
            assert await page.locator("#token-form").is_visible()
            card = page.locator('[data-bill-id="cam1-1-3"]')
            await card.locator(".bill-head").click()
            await card.locator(".lines").wait_for(timeout=5000)
            assert await card.locator(".bill-body-lines button").count() == 0
            assert not await page.locator("#link-menu").is_visible()

            await page.fill("#token-input", TOKEN)
            await page.click("#token-form button")
            await card.locator(".line .remove").first.wait_for(timeout=10_000)
            assert not await page.locator("#token-form").is_visible()
            assert await page.locator("#who").is_visible()
            await wait_for(page, "m.state === 'connected'")

            await page.click("#sign-out")  # no token: no picture, no buttons
            await wait_for(page, "m.state === 'locked'")
            assert await page.locator("#token-form").is_visible()
            assert await card.locator(".bill-body-lines button").count() == 0
            assert await page.evaluate("sessionStorage.getItem('dishtracker.token')") is None

    run_in_own_thread(main)


async def _quantity_then_undo(page: Any, card: Any, service: BillingService) -> None:
    """Line 0 becomes 3 of the dish, and Undo takes it back (corrections 1 and 2)."""
    await card.locator('.line[data-line="0"] .qty').click()
    await card.locator('[data-role="qty-value"]').fill("3")
    await page.keyboard.press("Enter")
    await wait_for(page, "m.bills.corrections === 1")
    view = await service.get("cam1-1-3")
    assert view is not None
    assert view["effective"]["items"][0]["quantity"] == 3
    assert "3 \u00d7 " in await card.locator('.line[data-line="0"]').inner_text()
    await card.locator(".till-actions .undo").click()
    await wait_for(page, "m.bills.corrections === 2")
    view = await service.get("cam1-1-3")
    assert view is not None and view["effective"]["items"][0]["quantity"] == 1


async def _day_summary(page: Any, stream: str) -> dict[str, str]:
    """The ``row=summary`` line of ``stream`` in the day's CSV report (the bills'
    day, 2023-11-14 UTC), fetched by the page with its token."""
    text = await page.evaluate("""async () => {
        const resp = await window.dishtrackerAuth.fetch('/api/report.csv?day=2023-11-14&tz=UTC');
        return await resp.text();
    }""")
    rows = list(csv.DictReader(io.StringIO(text)))
    return next(r for r in rows if r["stream"] == stream and r["row"] == "summary")


def test_till_actions_in_the_page_change_the_bill_on_the_server(tmp_path: Path) -> None:
    async def main() -> None:
        async with cashier_page(tmp_path, make_bill("cam1-1-3", tray_id=3),
                                make_bill("cam1-1-4", tray_id=4, closed_at=1_700_000_060.0),
                                ) as (service, page):
            await wait_for(page, "m.bills.events === 'open' && m.bills.shown === 2")
            card = page.locator('[data-bill-id="cam1-1-3"]')
            await card.locator(".bill-head").click()

            await _quantity_then_undo(page, card, service)
            await card.locator(".till-actions .void").click()
            await card.locator(".void-form button[type=submit]").click()  # no reason yet
            assert "reason" in await card.locator(".error").inner_text()
            await card.locator('[data-role="void-reason"]').fill("customer left")
            await page.keyboard.press("Enter")
            await wait_for(page, "m.bills.corrections === 3")
            view = await service.get("cam1-1-3")
            assert view is not None and view["effective"]["voided"] is True
            assert view["effective"]["void_reason"] == "customer left"
            assert await card.get_attribute("data-voided") == "true"
            await card.locator(".till-actions .undo").click()
            await wait_for(page, "m.bills.corrections === 4")
            view = await service.get("cam1-1-3")
            assert view is not None and not view["effective"]["voided"]

            await card.locator(".till-actions .handover").click()
            await wait_for(page, "m.bills.corrections === 5")
            view = await service.get("cam1-1-3")
            assert view is not None and view.get("handed_over_at")
            assert await card.locator(".tag.handed").count() == 1

            # the other bill voided by keyboard: v, the reason, Enter
            await page.locator('[data-bill-id="cam1-1-4"] .bill-head').focus()
            await page.keyboard.press("v")
            await page.keyboard.type("tray billed twice")
            await page.keyboard.press("Enter")
            await wait_for(page, "m.bills.corrections === 6")
            # all of it in the day's report: 5 correction rows, 1 void, 1 hand-over
            day = await _day_summary(page, "cam1")
            assert (day["bills"], day["handed_over"], day["voided"], day["corrections"],
                    day["revenue"]) == ("2", "1", "1", "5", "16.80")

    run_in_own_thread(main)


def test_the_page_shows_what_the_role_may_do_and_says_why_a_change_is_refused(
        tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tokens.json")
    cashier, labeller = store.create("anna", "cashier"), store.create("lena", "labeller")
    keyring = Keyring(TOKEN, store=store)

    async def main() -> None:
        async with cashier_page(tmp_path, make_bill("cam1-1-3", tray_id=3), token=cashier,
                                keyring=keyring) as (_, page):
            await wait_for(page, "m.bills.shown === 1 && m.state === 'connected'")
            await page.locator("#who-name", has_text="anna · cashier").wait_for(timeout=10_000)
            card = page.locator('[data-bill-id="cam1-1-3"]')
            await card.locator(".bill-head").click()
            for action in (".line .remove", ".till-actions .void", ".till-actions .handover"):
                assert await card.locator(action).count() >= 1, action
            # links only to the pages the role may use (a cashier: no menu)
            for link, may in (("#link-menu", "menu"), ("#link-report", "report")):
                shown = may in CAPABILITIES["cashier"]
                await page.locator(link).wait_for(state="visible" if shown else "hidden")
            assert not await page.locator("#link-menu").is_visible()

            await page.click("#sign-out")
            await page.fill("#token-input", labeller)
            await page.click("#token-form button")
            await page.locator("#who-name", has_text="lena · labeller").wait_for(timeout=10_000)
            await wait_for(page, "m.state === 'locked'")
            assert "may not watch" in await page.locator("#notice").inner_text()
            assert await card.locator(".bill-body-lines button").count() == 0
            # a 403 keeps the token and says what was refused and why
            said = await page.evaluate("""async () => {
                const auth = window.dishtrackerAuth;
                const resp = await auth.fetch('/api/bills/cam1-1-3/corrections', {
                    method: 'POST', headers: {'Content-Type': 'application/json'},
                    body: JSON.stringify({action: 'confirm', line: 0})});
                return [resp.status, await auth.refusal(resp), auth.token() !== null];
            }""")
            assert said[0] == 403
            assert said[1].startswith("Not allowed for the labeller role: ")
            assert said[2] is True
            assert not await page.locator("#token-form").is_visible()

    run_in_own_thread(main)


def test_amounts_in_the_tills_currency_and_a_disabled_dish_says_so(tmp_path: Path) -> None:
    raw = SiteConfig().model_dump(mode="json")
    raw["till"] = {**raw.get("till", {}), "currency": "CHF", "locale": "de-CH"}
    raw["menu"]["apple_pie"]["enabled"] = False
    config = SiteConfig.model_validate(raw)

    async def main() -> None:
        async with cashier_page(tmp_path, make_bill("cam1-1-3", tray_id=3),
                                config=config) as (_, page):
            await wait_for(page, "m.bills.events === 'open' && m.bills.shown === 1")
            card = page.locator('[data-bill-id="cam1-1-3"]')
            want = await page.evaluate("""(x) => new Intl.NumberFormat('de-CH',
                {style: 'currency', currency: 'CHF'}).format(x)""", 16.8)
            assert "CHF" in want
            assert await card.locator(".bill-head .total").inner_text() == want
            await card.locator(".bill-head").click()
            review = card.locator('.line[data-review="true"] .reason')
            assert "disabled" in await review.inner_text()
            await card.locator(".bill-foot .add").click()
            options = card.locator('[role="option"]')
            assert await options.count() > 5
            assert await card.locator('[role="option"][data-value="apple_pie"]').count() == 0

    run_in_own_thread(main)


LAYOUT = """() => {
    const box = (q) => document.querySelector(q).getBoundingClientRect();
    const card = document.querySelector('.bill-card[data-open="true"]');
    const targets = [...card.querySelectorAll('button')].map((b) => b.getBoundingClientRect());
    return {screen: box('.screen'), bill: box('aside.bill'), scrollWidth: document.body.scrollWidth,
            smallest: Math.min(...targets.map((r) => Math.min(r.width, r.height)))};
}"""
"""Where the video and the bill panel are, and the smallest button of the open card (px)."""


def test_side_by_side_on_the_till_stacked_with_44px_targets_on_a_tablet(tmp_path: Path) -> None:
    async def main() -> None:
        async with cashier_page(tmp_path, make_bill("cam1-1-3", tray_id=3)) as (_, page):
            await wait_for(page, "m.bills.events === 'open' && m.bills.shown === 1")
            await page.locator('[data-bill-id="cam1-1-3"] .bill-head').click()
            till = await page.evaluate(LAYOUT)
            assert till["bill"]["left"] >= till["screen"]["right"]  # side by side
            assert till["scrollWidth"] <= 1280
            await page.set_viewport_size({"width": 820, "height": 1180})
            tablet = await page.evaluate(LAYOUT)
            assert tablet["bill"]["top"] >= tablet["screen"]["bottom"]  # stacked
            assert tablet["bill"]["width"] > 700
            assert tablet["smallest"] >= 44, tablet["smallest"]
            assert tablet["scrollWidth"] <= 820

    run_in_own_thread(main)


def test_a_daemon_without_the_overlay_choice_still_gets_a_working_offer(tmp_path: Path) -> None:
    """An older daemon refuses the offer's unknown ``overlay`` field (422 naming
    it); the page offers again without it and hides the toggle. The refusal is
    played by Playwright's router, the rest is the real server."""
    async def main() -> None:
        offers: list[dict[str, Any]] = []

        async def older_daemon(route: Any) -> None:
            body = route.request.post_data_json
            offers.append(body)
            if "overlay" in body:
                await route.fulfill(status=422, json={
                    "error": "the offer is invalid: 1 problem(s)",
                    "errors": ["overlay: Extra inputs are not permitted"]})
            else:
                await route.continue_()

        async with cashier_page(tmp_path, token=None) as (_, page):
            await page.route("**/api/streams/*/webrtc", older_daemon)
            await page.fill("#token-input", TOKEN)
            await page.click("#token-form button")
            await wait_for(page, "m.state === 'connected' && m.framesDecoded > 0")
            assert [("overlay" in o) for o in offers] == [True, False]
            assert offers[0]["overlay"] == "cashier"  # the default
            assert not await page.locator("#overlay").is_visible()
            assert await page.locator(".stats").is_visible()  # whatever it draws, measured

    run_in_own_thread(main)
