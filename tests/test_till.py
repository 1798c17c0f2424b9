"""A till's workflow on a real server and a real journal: quantity, void, undo,
hand-over to the POS (webhook at least once, MQTT topic), and the journal's
migration to schema 4.

The POS is a real aiohttp server on 127.0.0.1 that refuses its first
requests; the journal files are real SQLite, a schema-3 one built by the
statements that built schema 3.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from bills_support import LINES, MENU, make_bill
from mqtt_broker import Broker, Recorder
from test_fleet_mqtt import _running as fleet_running
from test_fleet_mqtt import needs_broker
from till_support import Till, serve, until

from edge.billing import journal as journal_module
from edge.billing import outbox as ob
from edge.billing.corrections import parse_correction
from edge.billing.journal import SCHEMA_VERSION, Journal
from edge.config import SiteConfig, TillConfig
from edge.errors import JournalError
from edge.fleet.messages import Topics, outbox_message

PRICES = [MENU[k].price for k, _ in LINES]


def _run(coro: Any) -> None:
    asyncio.run(coro)


def test_quantity_multiplies_the_line_and_bad_quantities_name_the_field(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as till:
            view = await till.bill("cam1-1-1")
            assert [ln["quantity"] for ln in view["effective"]["items"]] == [1, 1, 1]
            assert [ln["line_total"] for ln in view["effective"]["items"]] == PRICES
            answer = await till.correct("cam1-1-1", {"action": "quantity", "line": 1,
                                                     "quantity": 3})
            line = answer["effective"]["items"][1]
            assert (line["quantity"], line["line_total"]) == (3, round(PRICES[1] * 3, 2))
            assert answer["effective"]["total"] == round(PRICES[0] + 3 * PRICES[1]
                                                         + PRICES[2], 2)
            assert answer["items"][1]["price"] == PRICES[1]  # the bill itself is untouched
            for body, field in (({"line": 1, "quantity": 0}, "quantity"),
                                ({"line": 1, "quantity": 100}, "quantity"),
                                ({"line": 1, "quantity": "2"}, "quantity"),
                                ({"line": 1, "quantity": 2.0}, "quantity"),
                                ({"line": 1, "quantity": True}, "quantity"),
                                ({"line": 1}, "quantity"),
                                ({"line": 7, "quantity": 2}, "line")):
                answer = await till.correct("cam1-1-1", {"action": "quantity", **body}, 422)
                assert answer["errors"][0].startswith(f"{field}: "), (body, answer)

    _run(main())


def test_void_zeroes_the_bill_and_only_undo_follows(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as till:
            await till.bill("cam1-1-1")
            body: dict[str, Any]
            for body in ({"action": "void"}, {"action": "void", "reason": ""},
                         {"action": "void", "reason": "x" * 201}):
                answer = await till.correct("cam1-1-1", body, 422)
                assert answer["errors"][0].startswith("reason: "), answer
            answer = await till.correct("cam1-1-1", {"action": "void",
                                                     "reason": "customer left"})
            eff = answer["effective"]
            assert (eff["voided"], eff["void_reason"], eff["total"]) == (
                True, "customer left", 0.0)
            assert len(eff["items"]) == 3 and eff["needs_review"] is False
            for body in ({"action": "confirm", "line": 2},
                         {"action": "void", "reason": "again"},
                         {"action": "add", "class_key": "beer"}):
                answer = await till.correct("cam1-1-1", body, 409)
                assert "void" in answer["error"] and answer["errors"][0].startswith(
                    "action: "), answer
            answer = await till.correct("cam1-1-1", {"action": "undo"})
            assert answer["effective"]["voided"] is False
            assert answer["effective"]["total"] == round(sum(PRICES), 2)

    _run(main())


def test_undo_walks_back_one_correction_at_a_time_and_deletes_nothing(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as till:
            await till.bill("cam1-1-1")
            answer = await till.correct("cam1-1-1", {"action": "undo"}, 409)
            assert answer["errors"] == ["action: nothing to undo: the bill has no correction "
                                        "in force"]
            steps = [{"action": "change", "line": 0, "class_key": "burger"},
                     {"action": "quantity", "line": 1, "quantity": 2},
                     {"action": "remove", "line": 2}]
            totals = [round(sum(PRICES), 2)]
            for body in steps:
                answer = await till.correct("cam1-1-1", body)
                totals.append(answer["effective"]["total"])
            ids = [c["id"] for c in answer["corrections"]]
            for back in range(3):
                answer = await till.correct("cam1-1-1", {"action": "undo"})
                undo = answer["corrections"][-1]
                assert undo["undoes"] == ids[2 - back]
                assert undo["undoes_action"] == steps[2 - back]["action"]
                assert answer["effective"]["total"] == totals[2 - back]
            eff = answer["effective"]
            assert [ln["key"] for ln in eff["items"]] == [k for k, _ in LINES]
            assert eff["undone"] == ids and eff["removed"] == []
            assert len(answer["corrections"]) == 6  # nothing deleted
            answer = await till.correct("cam1-1-1", {"action": "undo"}, 409)
            assert "nothing to undo" in answer["error"]
            # a correction after undos is undone first
            await till.correct("cam1-1-1", {"action": "remove", "line": 0})
            answer = await till.correct("cam1-1-1", {"action": "undo"})
            assert len(answer["effective"]["items"]) == 3

    _run(main())


def test_every_correction_records_its_actor(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as till:
            await till.bill("cam1-1-1")
            answer = await till.correct("cam1-1-1", {"action": "confirm", "line": 2})
            assert "actor" in answer["corrections"][0]
            view = await till.service.correct("cam1-1-1", parse_correction(
                {"action": "quantity", "line": 0, "quantity": 2}), MENU, actor="till-2")
            assert view is not None and view["corrections"][-1]["actor"] == "till-2"

    _run(main())


def test_handover_is_idempotent_and_refused_for_a_void_bill(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path, outbox=True) as till:
            await till.bill("cam1-1-1")
            await till.bill("cam1-1-2", tray_id=2)
            listed = await (await till.client.get("/api/bills")).json()
            assert [b["handed_over_at"] for b in listed["bills"]] == [None, None]
            first = await till.client.post("/api/bills/cam1-1-1/handover")
            assert first.status == 200
            view = await first.json()
            assert isinstance(view["handed_over_at"], float) and "handed_over_by" in view
            again = await till.client.post("/api/bills/cam1-1-1/handover", json={})
            assert again.status == 200
            assert (await again.json())["handed_over_at"] == view["handed_over_at"]
            rows = await till.service.outbox_pending(100)
            assert [(r.kind, r.message_id) for r in rows if r.kind == "handover"] == [
                ("handover", "cam1-1-1:handover")]
            for body, status in (({"at": 1}, 422), ([], 422)):
                resp = await till.client.post("/api/bills/cam1-1-2/handover", json=body)
                assert resp.status == status
                assert (await resp.json())["errors"][0].split(":")[0] in ("at", "(root)")
            resp = await till.client.post("/api/bills/nope/handover")
            assert resp.status == 404
            await till.correct("cam1-1-2", {"action": "void", "reason": "test tray"})
            resp = await till.client.post("/api/bills/cam1-1-2/handover")
            assert resp.status == 409 and "void" in (await resp.json())["error"]
            answer = await till.correct("cam1-1-1", {"action": "remove", "line": 0})
            assert answer["corrections"][-1]["after_handover"] is True
            rows = await till.service.outbox_pending(100)
            assert any(r.kind == "correction" and r.bill_id == "cam1-1-1" for r in rows)

    _run(main())


def test_handover_goes_to_the_mqtt_topic_handovers(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3", outbox=True) as journal:
        journal.commit(make_bill("cam1-1-1"))
        journal.handover("cam1-1-1", actor="anna")
        row = next(r for r in journal.outbox_pending(10) if r.kind == "handover")
    topics = Topics("dishtracker", "north", "box1")
    assert topics.of(row) == "dishtracker/north/box1/cam1/handovers"
    message = json.loads(outbox_message(row, topics))
    assert message["type"] == "handover" and message["message_id"] == "cam1-1-1:handover"
    assert message["handover"]["handed_over_by"] == "anna"
    assert message["bill"]["effective"]["total"] == round(sum(PRICES), 2)


class Pos:
    """A POS webhook on 127.0.0.1 that answers 503 to its first ``fail`` requests."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.requests: list[tuple[str, dict[str, Any], int]] = []

    async def handle(self, request: web.Request) -> web.Response:
        status = 503 if len(self.requests) < self.fail else 200
        self.requests.append((request.headers.get("Idempotency-Key", ""),
                              await request.json(), status))
        return web.json_response({"ok": status == 200}, status=status)

    def delivered(self) -> list[tuple[str, dict[str, Any]]]:
        return [(key, body) for key, body, status in self.requests if status == 200]


@asynccontextmanager
async def _pos(fail: int, port: int = 0) -> AsyncIterator[tuple[Pos, str]]:
    pos = Pos(fail)
    app = web.Application()
    app.router.add_post("/pos/bills", pos.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host, bound = runner.addresses[0][:2]
    try:
        yield pos, f"http://{host}:{bound}/pos/bills"
    finally:
        await runner.cleanup()


def _till_config(url: str) -> SiteConfig:
    return SiteConfig(till=TillConfig(pos_webhook_url=url))


def test_the_pos_webhook_gets_each_handover_at_least_once_despite_failures(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with _pos(fail=2) as (pos, url), serve(tmp_path, config=_till_config(url)) as till:
            await till.bill("cam1-1-1")
            resp = await till.client.post("/api/bills/cam1-1-1/handover")
            assert resp.status == 200
            await until(lambda: len(pos.delivered()) == 1)
            assert [s for _, _, s in pos.requests] == [503, 503, 200]
            assert {key for key, _, _ in pos.requests} == {"cam1-1-1"}
            key, body = pos.delivered()[0]
            assert body["type"] == "handover" and body["bill_id"] == "cam1-1-1"
            assert body["bill"]["effective"]["total"] == round(sum(PRICES), 2)
            await _pos_drained(till)
            await till.correct("cam1-1-1", {"action": "quantity", "line": 0, "quantity": 2})
            await until(lambda: len(pos.delivered()) == 2)
            key, body = pos.delivered()[1]
            assert body["type"] == "correction" and key.startswith("cam1-1-1:c")
            assert body["effective"]["items"][0]["quantity"] == 2
            await till.client.post("/api/bills/cam1-1-1/handover")  # idempotent: no resend
            await asyncio.sleep(0.3)
            assert len(pos.requests) == 4

    _run(main())


async def _pos_drained(till: Till, timeout: float = 5.0) -> None:
    """Wait until no row waits for the POS."""
    for _ in range(int(timeout / 0.02)):
        if (await till.service.outbox_depth("pos"))[0] == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("rows still wait for the POS")


def test_an_unacknowledged_handover_survives_a_restart(tmp_path: Path) -> None:
    async def main() -> None:
        async with _pos(fail=10**6) as (down, url):
            port = int(url.split(":")[2].split("/")[0])
            async with serve(tmp_path, config=_till_config(url)) as till:
                await till.bill("cam1-1-1")
                assert (await till.client.post("/api/bills/cam1-1-1/handover")).status == 200
                await until(lambda: len(down.requests) >= 2)
            assert down.delivered() == []
        # the same journal, a new daemon, the POS back on its port
        async with _pos(fail=0, port=port) as (pos, url2), \
                serve(tmp_path, config=_till_config(url2)) as till:
            await until(lambda: len(pos.delivered()) == 1)
            key, body = pos.delivered()[0]
            assert (key, body["type"]) == ("cam1-1-1", "handover")
            await _pos_drained(till)

    _run(main())


def test_no_pos_url_queues_nothing_for_the_pos(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as till:
            await till.bill("cam1-1-1")
            assert (await till.client.post("/api/bills/cam1-1-1/handover")).status == 200
            assert await till.service.outbox_depth("pos") == (0, None)

    _run(main())


def _schema_3_journal(path: Path) -> None:
    """A journal as schema 3 wrote it: 3 bills, a correction, fleet outbox rows
    (one of them sent)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    for statement in (*journal_module._SCHEMA, *journal_module._MIGRATIONS[2],
                      *journal_module._MIGRATIONS[3]):  # the statements of schema 3
        db.execute(statement)
    db.execute("INSERT INTO schema_version (version) VALUES (3)")
    for n in range(3):
        bill = make_bill(f"cam1-1-{n}", tray_id=n)
        db.execute(
            "INSERT INTO bills (bill_id, stream_id, tray_id, opened_at, closed_at, frame_seq, "
            "total, needs_review, reason, items_json, tray_box_json, review_json, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '[]', ?)",
            (bill.bill_id, bill.stream_id, bill.tray_id, bill.opened_at, bill.closed_at,
             bill.frame_seq, bill.total, int(bill.needs_review), bill.reason,
             json.dumps([i.to_json() for i in bill.items]), json.dumps(list(bill.tray_box)),
             bill.closed_at))
        db.execute("INSERT INTO outbox (kind, message_id, bill_id, stream_id, payload_json, "
                   "created_at, sent_at) VALUES ('bill', ?, ?, 'cam1', '{}', ?, ?)",
                   (bill.bill_id, bill.bill_id, bill.closed_at, 1.0 if n == 0 else None))
    db.execute("INSERT INTO corrections (bill_id, created_at, body_json) VALUES "
               "('cam1-1-1', 5.0, '{\"action\": \"remove\", \"line\": 0}')")
    db.execute("COMMIT")
    db.close()


def test_a_schema_3_journal_migrates_keeping_every_bill_and_outbox_row(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    _schema_3_journal(path)
    with Journal(path, outbox=True) as journal:
        assert journal.integrity_check() == "ok"
        page = journal.list_bills(10)
        assert sorted(b["bill_id"] for b in page.bills) == ["cam1-1-0", "cam1-1-1", "cam1-1-2"]
        assert all(b["handed_over_at"] is None for b in page.bills)
        corrected = journal.get("cam1-1-1")
        assert corrected is not None
        assert corrected["effective"]["total"] == round(sum(PRICES[1:]), 2)
        assert [r.message_id for r in journal.outbox_pending(10)] == ["cam1-1-1", "cam1-1-2"]
        handed = journal.handover("cam1-1-1", actor="anna", pos=True)
        assert handed is not None and handed["handed_over_by"] == "anna"
        assert [r.kind for r in journal.outbox_pending(10, "pos")] == ["handover"]
    db = sqlite3.connect(path)
    assert db.execute("SELECT max(version) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT id, target, sent_at FROM outbox WHERE kind = 'bill' "
                      "ORDER BY id").fetchall() == [(1, "fleet", 1.0), (2, "fleet", None),
                                                    (3, "fleet", None)]
    with pytest.raises(sqlite3.IntegrityError, match="written once"):
        db.execute("UPDATE handovers SET actor = 'eve'")
    db.close()


def test_a_failed_migration_leaves_the_schema_3_journal_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal.sqlite3"
    _schema_3_journal(path)
    broken = (*journal_module._MIGRATIONS[4], "INSERT INTO no_such_table VALUES (1)")
    monkeypatch.setitem(journal_module._MIGRATIONS, 4, broken)
    with pytest.raises(JournalError):
        Journal(path)
    db = sqlite3.connect(path)
    assert db.execute("SELECT max(version) FROM schema_version").fetchone()[0] == 3
    assert db.execute("SELECT count(*) FROM bills").fetchone()[0] == 3
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "handovers" not in tables and "outbox_v4" not in tables
    assert "target" not in {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
    db.close()
    monkeypatch.undo()
    with Journal(path) as journal:
        assert len(journal.list_bills(10).bills) == 3
    assert SCHEMA_VERSION >= 4
    assert ob.handover_message_id("b") == "b:handover"


@needs_broker
def test_a_handover_reaches_the_broker_on_the_handovers_topic(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")
    broker.start()

    async def scenario() -> None:
        with Recorder(broker.port) as rec:
            async with fleet_running(tmp_path / "journal.sqlite3", broker.port) as (
                    billing, _, metrics):
                billing.submit(make_bill("cam1-5-1", tray_id=1))
                await until(lambda: billing.pending == 0)
                view = await billing.handover("cam1-5-1", actor="anna")
                assert view is not None
                again = await billing.handover("cam1-5-1", actor="bob")
                assert again is not None and again["handed_over_by"] == "anna"
                got = await rec.until(lambda ms: any(m.topic.endswith("/handovers")
                                                     for m in ms))
                handovers = [m for m in got if m.topic == "dishtracker/test/box1/cam1/handovers"]
                assert len(handovers) == 1 and handovers[0].qos == 1
                payload = handovers[0].payload
                assert payload["message_id"] == "cam1-5-1:handover"
                assert payload["handover"]["handed_over_by"] == "anna"
                assert payload["bill"]["handed_over_at"] == view["handed_over_at"]
                await asyncio.sleep(0.3)  # a second call sent nothing more
                assert len(rec.on("/handovers")) == 1
                assert metrics.value("dishtracker_fleet_published_total", kind="handover") == 1

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()


def test_corrections_follow_a_handover_to_the_pos_after_its_row_is_pruned(
        tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        journal.commit(make_bill("cam1-1-1"))
        journal.commit(make_bill("cam1-1-2", tray_id=2))
        journal.handover("cam1-1-1", pos=True)
        journal.handover("cam1-1-2", pos=False)  # no POS URL at the time
        journal.outbox_mark_sent([r.id for r in journal.outbox_pending(10, "pos")])
        journal.outbox_prune(keep_s=-1.0)
        assert journal.outbox_pending(10, "pos") == []
        remove = parse_correction({"action": "remove", "line": 0})
        for bill_id in ("cam1-1-1", "cam1-1-2"):
            view = journal.add_correction(bill_id, remove, MENU, actor="anna")
            assert view is not None and view["corrections"][-1]["after_handover"] is True
        rows = journal.outbox_pending(10, "pos")
        assert [(r.kind, r.bill_id) for r in rows] == [("correction", "cam1-1-1")]
        assert journal.outbox_pending(10) == []  # no fleet: no fleet rows
