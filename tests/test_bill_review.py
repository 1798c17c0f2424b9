"""A bill's own review reasons (``Bill.review``) from the journal to the cashier's card.

The journal stores them (schema version 3; an older journal upgrades in place
and its bills read back with none), the API and the fleet outbox carry them,
the effective bill keeps them and counts them in ``needs_review`` until the
cashier first corrects the bill, and the page shows their text.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from bills_support import MENU, make_bill
from test_bills_api import _run, _serve, _until
from test_browser import chromium, run_in_own_thread, wait_for
from test_cashier_bills import cashier_app
from test_webrtc_support import TOKEN, serve

from edge.billing.corrections import effective, parse_correction
from edge.billing.journal import _MIGRATIONS, _SCHEMA, APPLICATION_ID, SCHEMA_VERSION, Journal
from edge.billing.model import REVIEW_REASONS, Bill

HIDDEN = "hidden_at_line"
SURE = (("schnitzel_fries", 0.97), ("green_salad", 0.91))  # no line needs review


def _hidden(bill_id: str, **kw: Any) -> Bill:
    """A bill whose lines are all sure but whose tray was hidden at the line."""
    return dataclasses.replace(make_bill(bill_id, lines=SURE, **kw), review=(HIDDEN,),
                               needs_review=True)


def _correct(journal: Journal, bill_id: str, body: dict[str, object]) -> dict[str, Any]:
    view = journal.add_correction(bill_id, parse_correction(body), MENU)
    assert view is not None
    return view


def test_review_reasons_round_trip_through_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    bill = _hidden("cam1-1-1")
    with Journal(path) as journal:
        journal.commit(bill)
        journal.commit(make_bill("cam1-1-2", lines=SURE))
    with Journal(path) as journal:  # reopened: read from the file
        view = journal.get("cam1-1-1")
        assert view is not None
        assert {k: view[k] for k in bill.to_json()} == bill.to_json()
        assert view["review"] == [HIDDEN] and view["review_text"] == [REVIEW_REASONS[HIDDEN]]
        assert view["needs_review"] is True
        assert view["effective"]["needs_review"] is True
        assert view["effective"]["review"] == [HIDDEN]
        plain = journal.get("cam1-1-2")
        assert plain is not None
        assert (plain["review"], plain["review_text"]) == ([], [])
        assert plain["effective"]["needs_review"] is False
        listed = {b["bill_id"]: b["review"] for b in journal.list_bills().bills}
        assert listed == {"cam1-1-1": [HIDDEN], "cam1-1-2": []}
        assert [b["review"] for b in journal.after(0, 10)] == [[HIDDEN], []]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT review_json FROM bills ORDER BY seq").fetchall() == [
            (json.dumps([HIDDEN]),), ("[]",)]


def _version_2_journal(path: Path) -> None:
    """A journal as version 2 wrote it: its statements, one bill, one correction."""
    db = sqlite3.connect(path, isolation_level=None)
    for statement in (*_SCHEMA, *_MIGRATIONS[2]):
        db.execute(statement)
    db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    db.execute("INSERT INTO schema_version (version) VALUES (2)")
    bill = make_bill("cam1-1-1")  # its third line needs review
    db.execute(
        "INSERT INTO bills (bill_id, stream_id, tray_id, opened_at, closed_at, frame_seq, "
        "total, needs_review, reason, items_json, tray_box_json, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (bill.bill_id, bill.stream_id, bill.tray_id, bill.opened_at, bill.closed_at,
         bill.frame_seq, bill.total, 1, bill.reason,
         json.dumps([i.to_json() for i in bill.items]), json.dumps(list(bill.tray_box)),
         bill.closed_at + 0.1))
    db.execute("INSERT INTO corrections (bill_id, created_at, body_json) VALUES (?, ?, ?)",
               (bill.bill_id, bill.closed_at + 5, json.dumps({"action": "confirm", "line": 1})))
    db.close()


def test_a_version_2_journal_upgrades_in_place_and_keeps_its_bills(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    _version_2_journal(path)
    assert SCHEMA_VERSION >= 3
    with Journal(path) as journal:
        old = journal.get("cam1-1-1")
        assert old is not None
        assert old["review"] == [] and old["review_text"] == []
        assert old["items"] == make_bill("cam1-1-1").to_json()["items"]
        assert [c["action"] for c in old["corrections"]] == ["confirm"]
        assert old["effective"]["review"] == []
        assert old["effective"]["needs_review"] is True  # line 2 is still unconfirmed
        journal.commit(_hidden("cam1-1-2"))
        view = _correct(journal, "cam1-1-1", {"action": "confirm", "line": 2})
        assert view["effective"]["needs_review"] is False
        assert [b["review"] for b in journal.list_bills().bills] == [[HIDDEN], []]
        assert journal.integrity_check() == "ok"
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [
            (2,), (SCHEMA_VERSION,)]
        assert db.execute("SELECT count(*) FROM bills").fetchone() == (2,)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE bills SET review_json = '[]'")
    with Journal(path) as journal:  # opening again migrates nothing
        assert journal.last_seq() == 2


def test_any_correction_counts_as_the_bill_reviewed() -> None:
    items = [i.to_json() for i in _hidden("x").items]
    untouched = effective(items, [], review=[HIDDEN])
    assert untouched["needs_review"] is True and untouched["review"] == [HIDDEN]
    for body in ({"action": "confirm", "line": 0},
                 {"action": "add", "class_key": "tea", "name": "Tea", "price": 2.5},
                 {"action": "remove", "line": 1}):
        after = effective(items, [body], review=[HIDDEN])
        assert after["needs_review"] is False, body
        assert after["review"] == [HIDDEN] and after["corrected"] is True
    # a line of its own still holds the bill in review after the reason is answered
    unsure = [i.to_json() for i in make_bill("y").items]
    assert effective(unsure, [{"action": "confirm", "line": 0}],
                     review=[HIDDEN])["needs_review"] is True


def test_bills_without_reasons_are_unchanged() -> None:
    for lines in (SURE, (("apple_pie", 0.52),)):
        items = [i.to_json() for i in make_bill("z", lines=lines).items]
        for fixes in ([], [{"action": "confirm", "line": 0}]):
            with_default = effective(items, fixes)
            assert with_default == effective(items, fixes, review=())
            assert with_default["review"] == []
            assert with_default["needs_review"] is any(
                ln["needs_review"] for ln in with_default["items"])


def test_the_outbox_carries_the_reasons_of_bills_and_corrections(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite3", outbox=True) as journal:
        journal.commit(_hidden("cam1-1-1"))
        _correct(journal, "cam1-1-1", {"action": "confirm", "line": 0})
        bill_row, fix_row = journal.outbox_pending(10)
    bill = json.loads(bill_row.payload)["bill"]
    assert bill["review"] == [HIDDEN] and bill["needs_review"] is True
    eff = json.loads(fix_row.payload)["effective"]
    assert eff["review"] == [HIDDEN] and eff["needs_review"] is False
    assert (bill_row.kind, fix_row.kind) == ("bill", "correction")


def test_the_api_returns_the_reasons_until_the_cashier_acts(tmp_path: Path) -> None:
    async def main() -> None:
        async with _serve(tmp_path) as (client, service):
            service.submit(_hidden("cam1-1-1"))
            await _until(lambda: service.pending == 0)
            page = await (await client.get("/api/bills")).json()
            listed = page["bills"][0]
            assert listed["review"] == [HIDDEN]
            assert listed["review_text"] == [REVIEW_REASONS[HIDDEN]]
            assert listed["effective"]["needs_review"] is True
            resp = await client.post("/api/bills/cam1-1-1/corrections",
                                     json={"action": "confirm", "line": 1})
            assert resp.status == 200
            view = await resp.json()
            assert view["review"] == [HIDDEN] and view["needs_review"] is True  # as detected
            assert view["effective"]["review"] == [HIDDEN]
            assert view["effective"]["needs_review"] is False
            assert await (await client.get("/api/bills/cam1-1-1")).json() == view

    _run(main)


def review_card_story(workdir: Path, screenshot: Path | None = None) -> None:
    """The cashier sees a sure-lined bill flagged for review, with the reason, and
    answers it with a confirm; optionally shoot the page (PNG, 1280x800)."""
    async def main() -> None:
        service, app, views = await cashier_app(workdir)
        service.submit(make_bill("cam1-1-2", tray_id=2, closed_at=1_700_000_000.0,
                                 lines=(("coffee", 0.98), ("croissant", 0.95))))
        service.submit(_hidden("cam1-1-5", tray_id=5, closed_at=1_700_000_060.0))
        try:
            async with serve(app) as url, chromium(workdir) as page:
                await page.goto(f"{url}/#token={TOKEN}")
                await wait_for(page, "m.bills.shown === 2 && m.bills.lastBillId === 'cam1-1-5'")
                card = page.locator('[data-bill-id="cam1-1-5"]')
                assert await card.get_attribute("data-review") == "true"
                assert await card.locator(".tag.review").inner_text() == "Review"
                await card.locator(".bill-head").click()  # a new bill comes in folded
                assert await card.locator('.line[data-review="true"]').count() == 0
                reason = card.locator(f'.review-reason[data-reason="{HIDDEN}"]')
                assert await reason.text_content() == REVIEW_REASONS[HIDDEN]
                assert await reason.get_attribute("data-open") == "true"
                plain = page.locator('[data-bill-id="cam1-1-2"]')
                assert await plain.get_attribute("data-review") == "false"
                if screenshot is not None:
                    screenshot.parent.mkdir(parents=True, exist_ok=True)
                    await page.screenshot(path=str(screenshot))

                assert await card.locator(".confirm").count() == 2  # sure lines too, for now
                assert await plain.locator(".confirm").count() == 0
                await card.locator('.line[data-line="1"] .confirm').click()
                await wait_for(page, "m.bills.corrections === 1")
                assert await card.locator(".confirm").count() == 0
                assert await card.get_attribute("data-review") == "false"
                assert await card.locator(".tag.corrected").count() == 1
                assert await reason.get_attribute("data-open") == "false"
        finally:
            for v in views.values():
                v.close()
            await service.close()

    run_in_own_thread(main)


@pytest.mark.browser
def test_cashier_sees_why_a_sure_bill_needs_review(tmp_path: Path) -> None:
    shot = tmp_path / "review_card.png"
    review_card_story(tmp_path, shot)
    assert shot.read_bytes().startswith(b"\x89PNG")
