"""The end-of-day report on a real server and journal: the numbers of seeded bills
(a plain one, a quantity, a voided, a corrected and handed-over one, one of the
next day), the CSV, the query errors and the token.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from bills_support import LINES, MENU, make_bill
from test_browser import chromium, run_in_own_thread
from test_webrtc_support import TOKEN
from till_support import Till, serve

from edge.billing.daybook import summarise
from edge.billing.journal import Journal
from edge.config import SiteConfig, TillConfig
from edge.web.report import CSV_COLUMNS, day_bounds

P = [MENU[k].price for k, _ in LINES]
BURGER = MENU["burger"].price
DAY = 1_700_000_000.0  # 2023-11-14T22:13:20Z
QUERY = {"day": "2023-11-14", "tz": "UTC"}


def _money(x: float) -> float:
    return round(x, 2)


async def _seed(till: Till) -> None:
    """cam1: a plain bill, a bill with 3 salads and its flagged line confirmed;
    cam2: a voided bill, a corrected and handed-over one; cam1: one the next day."""
    await till.bill("cam1-1-1", closed_at=DAY)
    await till.bill("cam1-1-2", tray_id=2, closed_at=DAY + 60)
    await till.correct("cam1-1-2", {"action": "quantity", "line": 1, "quantity": 3})
    await till.correct("cam1-1-2", {"action": "confirm", "line": 2})
    await till.bill("cam2-1-3", stream="cam2", tray_id=3, closed_at=DAY + 120)
    await till.correct("cam2-1-3", {"action": "void", "reason": "staff meal"})
    await till.bill("cam2-1-4", stream="cam2", tray_id=4, closed_at=DAY + 180)
    await till.correct("cam2-1-4", {"action": "change", "line": 0, "class_key": "burger"})
    resp = await till.client.post("/api/bills/cam2-1-4/handover")
    assert resp.status == 200
    await till.bill("cam1-1-5", tray_id=5, closed_at=DAY + 7200)  # 2023-11-15 in UTC


def _dishes(part: dict[str, Any]) -> dict[str, tuple[int, float]]:
    return {d["key"]: (d["count"], d["revenue"]) for d in part["dishes"]}


def test_the_report_sums_effective_bills_per_stream_and_in_all(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as till:
            await _seed(till)
            resp = await till.client.get("/api/report", params=QUERY)
            assert resp.status == 200
            report = await resp.json()
            assert (report["day"], report["tz"], report["currency"]) == ("2023-11-14", "UTC",
                                                                         "EUR")
            assert report["until"] - report["since"] == 86400
            cam1, cam2 = report["streams"]
            assert (cam1["stream_id"], cam2["stream_id"]) == ("cam1", "cam2")
            assert {k: cam1[k] for k in ("bills", "handed_over", "voided", "corrections",
                                         "needed_review", "reviewed")} == {
                "bills": 2, "handed_over": 0, "voided": 0, "corrections": 2,
                "needed_review": 2, "reviewed": 1}
            assert cam1["revenue"] == _money(sum(P) + P[0] + 3 * P[1] + P[2])
            assert _dishes(cam1) == {"schnitzel_fries": (2, _money(2 * P[0])),
                                     "green_salad": (4, _money(4 * P[1])),
                                     "apple_pie": (2, _money(2 * P[2]))}
            assert cam1["count"] == 8
            assert {k: cam2[k] for k in ("bills", "handed_over", "voided", "corrections",
                                         "needed_review", "reviewed")} == {
                "bills": 2, "handed_over": 1, "voided": 1, "corrections": 2,
                "needed_review": 2, "reviewed": 1}
            assert cam2["revenue"] == _money(BURGER + P[1] + P[2])  # the void one adds 0
            assert _dishes(cam2) == {"burger": (1, BURGER), "green_salad": (1, P[1]),
                                     "apple_pie": (1, P[2])}
            total = report["total"]
            assert total["bills"] == 4 and total["voided"] == 1 and total["handed_over"] == 1
            assert total["revenue"] == _money(cam1["revenue"] + cam2["revenue"])
            assert _dishes(total)["green_salad"] == (5, _money(5 * P[1]))

            one = await (await till.client.get("/api/report", params={
                **QUERY, "stream": "cam2"})).json()
            assert [s["stream_id"] for s in one["streams"]] == ["cam2"]
            assert one["total"]["revenue"] == cam2["revenue"]
            nextday = await (await till.client.get("/api/report", params={
                "day": "2023-11-15", "tz": "UTC"})).json()
            assert nextday["total"]["bills"] == 1
            # the same instant is still 2023-11-14 in New York: the next-day bill counts there
            ny = await (await till.client.get("/api/report", params={
                "day": "2023-11-14", "tz": "America/New_York"})).json()
            assert ny["total"]["bills"] == 5

    asyncio.run(main())


def test_the_csv_has_a_row_per_dish_per_stream_and_summary_rows(tmp_path: Path) -> None:
    async def main() -> None:
        config = SiteConfig(till=TillConfig(currency="CHF", locale="de-CH"))
        async with serve(tmp_path, config=config) as till:
            await _seed(till)
            resp = await till.client.get("/api/report.csv", params=QUERY)
            assert resp.status == 200 and resp.content_type == "text/csv"
            assert resp.headers["Content-Disposition"] == (
                'attachment; filename="report-2023-11-14.csv"')
            text = await resp.text()
            report = await (await till.client.get("/api/report", params=QUERY)).json()
        rows = list(csv.DictReader(io.StringIO(text)))
        assert list(rows[0]) == list(CSV_COLUMNS)
        assert {r["currency"] for r in rows} == {"CHF"}
        dish_rows = [(r["stream"], r["key"], int(r["count"]), r["revenue"])
                     for r in rows if r["row"] == "dish"]
        expected = [(part.get("stream_id", "all"), d["key"], d["count"], f"{d['revenue']:.2f}")
                    for part in (*report["streams"], report["total"]) for d in part["dishes"]]
        assert dish_rows == expected
        summaries = {r["stream"]: r for r in rows if r["row"] == "summary"}
        assert list(summaries) == ["cam1", "cam2", "all"]
        assert summaries["all"]["revenue"] == f"{report['total']['revenue']:.2f}"
        assert (summaries["cam2"]["voided"], summaries["cam2"]["handed_over"],
                summaries["all"]["bills"]) == ("1", "1", "4")
        assert all("," not in r["revenue"] and "." in r["revenue"] for r in rows)

    asyncio.run(main())


def test_report_queries_are_checked_and_the_report_needs_the_token(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as till:
            for params, field in (({"day": "2023-13-01"}, "day"), ({"day": "today"}, "day"),
                                  ({"tz": "Mars/Olympus"}, "tz"), ({"stream": "a/b"}, "stream"),
                                  ({"days": "1"}, "days")):
                resp = await till.client.get("/api/report", params=params)
                assert resp.status == 422, params
                assert (await resp.json())["errors"][0].startswith(f"{field}: ")
            resp = await till.client.get("/api/report?day=2023-11-14&day=2023-11-15")
            assert resp.status == 422
            for path in ("/api/report", "/api/report.csv"):
                resp = await till.client.get(path, headers={"Authorization": ""})
                assert resp.status == 401, path
            resp = await till.client.get("/api/report")  # today, the box's time zone
            assert resp.status == 200
            assert (await resp.json())["day"] == date.today().isoformat()

    asyncio.run(main())


def test_a_day_is_23_or_25_hours_across_daylight_saving() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    since, until = day_bounds(date(2023, 10, 29), berlin)
    assert until - since == 25 * 3600
    since, until = day_bounds(date(2023, 3, 26), berlin)
    assert until - since == 23 * 3600


async def until_js(page: Any, expression: str, timeout: float = 20.0) -> None:
    """Poll the page until the JavaScript ``expression`` is true (``page.evaluate``:
    ``wait_for_function`` compiles its predicate in the page, which the CSP forbids)."""
    deadline = time.monotonic() + timeout
    while not await page.evaluate(f"() => Boolean({expression})"):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        await asyncio.sleep(0.1)


@pytest.mark.browser
def test_the_report_and_menu_pages_show_and_change_what_the_server_has(
        tmp_path: Path) -> None:
    async def main() -> None:
        config = SiteConfig(till=TillConfig(currency="EUR", locale="de-DE"))
        async with serve(tmp_path, config=config) as till, chromium(tmp_path) as page:
            now = time.time()
            await till.bill("cam1-1-1", closed_at=now)
            await till.bill("cam1-1-2", tray_id=2, closed_at=now)
            await till.correct("cam1-1-2", {"action": "quantity", "line": 0, "quantity": 2})
            base = str(till.client.make_url("/"))
            await page.goto(f"{base}report.html#token={TOKEN}")
            await until_js(page, "window.dishtrackerReport.last !== null")
            revenue = await page.locator("#total-revenue").inner_text()
            expected = round(2 * sum(P) + P[0], 2)
            assert revenue.replace("\u00a0", " ") == f"{expected:.2f} €".replace(".", ","), revenue
            assert await page.locator("#dish-rows tr").count() == 3
            row = page.locator('#dish-rows tr[data-key="schnitzel_fries"] td')
            assert await row.nth(1).inner_text() == "3"

            await page.goto(f"{base}menu.html")  # the token stays for the tab
            burger = page.locator('#rows tr[data-key="burger"]')
            await burger.wait_for()
            await burger.locator(".price-input").fill("-1")
            await burger.locator(".save").click()
            error = burger.locator('[data-error="price"]')
            await until_js(page,
                "document.querySelector('#rows tr[data-key=\"burger\"] [data-error=\"price\"]')"
                ".textContent.length > 0")
            assert "greater than or equal to 0" in await error.inner_text()
            await burger.locator(".price-input").fill("9.5")
            await burger.locator(".save").click()
            await until_js(page, "document.getElementById('status').dataset.kind === 'ok'")
            assert till.daemon.config.menu["burger"].price == 9.5
            await page.locator('#add-form input[name="key"]').fill("soup")
            await page.locator('#add-form input[name="price"]').fill("4")
            await page.locator('#add-form button[type="submit"]').click()
            await until_js(page,
                "document.querySelector('#add-form [data-error=\"name\"]').textContent.length > 0")
            assert "soup" not in till.daemon.config.menu

    run_in_own_thread(main)


def test_a_day_of_more_bills_than_one_read_is_summed_whole(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        for i in range(1203):  # _PAGE is 500: three reads
            stream = f"cam{1 + i % 2}"
            journal.commit(make_bill(f"{stream}-1-{i}", stream=stream, tray_id=i,
                                     closed_at=DAY + i))
        bills = journal.between(DAY, DAY + 86400)
        assert [b["tray_id"] for b in bills] == list(range(1203))
        assert len(journal.between(DAY, DAY + 86400, "cam2")) == 601
        assert len(journal.between(DAY + 100, DAY + 200)) == 100
    streams, total = summarise(bills)
    assert total.bills == 1203 and streams["cam1"].bills == 602
    assert total.to_json()["revenue"] == _money(1203 * sum(P))


@pytest.mark.browser
def test_a_cashier_token_sees_no_menu_page(tmp_path: Path) -> None:
    """Issue 17: a cashier's token gets a note on /menu.html, not the editor
    (its routes answer 403 too: tests/test_menu_api.py)."""
    from test_webrtc_support import write_token_file

    from edge.config import ServerConfig, StorageConfig
    from edge.web.access import load_keyring
    from edge.web.tokens import TOKENS_FILE, TokenStore

    storage = tmp_path / "var"
    storage.mkdir(mode=0o700)
    write_token_file(storage / "token")
    cashier = TokenStore(storage / TOKENS_FILE).create("till-1", "cashier")
    keyring = load_keyring(ServerConfig(), StorageConfig(dir=storage))[1]

    async def main() -> None:
        async with serve(tmp_path, token=keyring) as till, chromium(tmp_path) as page:
            base = str(till.client.make_url("/"))
            await page.goto(f"{base}menu.html#token={cashier}")
            await until_js(page, "!document.getElementById('role-note').hidden")
            assert "for managers" in await page.locator("#role-note").inner_text()
            assert not await page.locator("[data-managers]").first.is_visible()
            assert not await page.locator("#add-form").is_visible()

    run_in_own_thread(main)
