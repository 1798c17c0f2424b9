"""The bills API and its event stream on a real aiohttp server (127.0.0.1) and real SQLite.

Bills are made in the test and handed to the real
:class:`~edge.billing.service.BillingService` through ``submit``, as the
stream runners do; the journal file lives in ``tmp_path``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient, TestServer
from bills_support import MENU, SseReader, jpeg, make_bill, tray
from test_http_api import MemoryDaemon
from test_webrtc_support import AUTH, TOKEN

from edge.billing.events import Event, EventHub, SubscriptionClosed
from edge.billing.journal import Journal
from edge.billing.service import BillingService
from edge.config import SiteConfig
from edge.metrics import Metrics
from edge.web.app import make_app
from edge.web.bills import MAX_CORRECTION_BYTES, add_bill_routes

Client = TestClient[Any, Any]


@asynccontextmanager
async def _serve(tmp_path: Path, *, heartbeat_s: float = 15.0
                 ) -> AsyncIterator[tuple[Client, BillingService]]:
    metrics = Metrics()
    service = BillingService(tmp_path / "var" / "journal.sqlite3", metrics,
                             retry_initial_s=0.05, retry_max_s=0.2, tray_interval_s=0.05)
    await service.open()
    daemon = MemoryDaemon(SiteConfig())
    daemon.metrics = metrics
    app = make_app(daemon, config_path=None, token=TOKEN, readiness_checks=[service.readiness])
    add_bill_routes(app, service, menu=lambda: daemon.config.menu, heartbeat_s=heartbeat_s)
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0),
                              headers=AUTH) as client:
            yield client, service
    finally:
        await service.close()


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _run(scenario: Callable[[], Any]) -> None:
    asyncio.run(scenario())


def test_bills_are_listed_paged_filtered_and_fetched(tmp_path: Path) -> None:
    async def main() -> None:
        async with _serve(tmp_path) as (client, service):
            image = jpeg(1)
            for i in range(5):
                stream = "cam2" if i == 3 else "cam1"
                service.submit(make_bill(f"{stream}-1-{i}", stream=stream, tray_id=i,
                                         closed_at=1_700_000_000.0 + 60 * i,
                                         snapshot=image if i == 0 else None))
            await _until(lambda: service.pending == 0)

            resp = await client.get("/api/bills", params={"limit": "2"})
            assert resp.status == 200
            page = await resp.json()
            assert [b["bill_id"] for b in page["bills"]] == ["cam1-1-4", "cam2-1-3"]
            assert page["last_seq"] == 5 and page["journal"] == {"fault": None, "pending": 0}
            resp = await client.get("/api/bills", params={"limit": "2",
                                                          "before": page["next_before"]})
            assert [b["bill_id"] for b in (await resp.json())["bills"]] == ["cam1-1-2",
                                                                             "cam1-1-1"]
            resp = await client.get("/api/bills", params={"stream": "cam2"})
            assert [b["bill_id"] for b in (await resp.json())["bills"]] == ["cam2-1-3"]
            # 2023-11-14T22:13:20Z is 1_700_000_000
            resp = await client.get("/api/bills", params={"since": "2023-11-14T22:14:20Z",
                                                          "until": "1700000180"})
            body = await resp.json()
            assert [b["bill_id"] for b in body["bills"]] == ["cam1-1-2", "cam1-1-1"]
            assert body["next_before"] is None

            for params, field in (({"limit": "0"}, "limit"), ({"limit": "x"}, "limit"),
                                  ({"limit": "201"}, "limit"), ({"since": "yesterday"}, "since"),
                                  ({"stream": "a/b"}, "stream"), ({"before": "-3"}, "before"),
                                  ({"limt": "3"}, "limt")):
                resp = await client.get("/api/bills", params=params)
                assert resp.status == 422, params
                errors = (await resp.json())["errors"]
                assert errors[0].startswith(f"{field}: "), errors

            resp = await client.get("/api/bills/cam1-1-0")
            bill = await resp.json()
            assert bill["seq"] == 1 and bill["has_snapshot"] is True
            assert bill["effective"]["needs_review"] is True
            resp = await client.get("/api/bills/cam1-1-0/snapshot.jpg")
            assert resp.status == 200 and resp.content_type == "image/jpeg"
            assert await resp.read() == image
            resp = await client.get("/api/bills/cam1-1-1/snapshot.jpg")
            assert (resp.status, await resp.json()) == (
                404, {"error": "bill 'cam1-1-1' has no snapshot"})
            resp = await client.get("/api/bills/nope")
            assert (resp.status, await resp.json()) == (404, {"error": "no bill 'nope'"})
            resp = await client.get("/api/menu")
            items = (await resp.json())["items"]
            assert {i["key"] for i in items} == set(MENU)
            assert next(i for i in items if i["key"] == "cutlery")["billable"] is False

    _run(main)


def test_corrections_round_trip_through_the_api(tmp_path: Path) -> None:
    async def main() -> None:
        async with _serve(tmp_path) as (client, service):
            service.submit(make_bill("cam1-1-1"))
            await _until(lambda: service.pending == 0)
            url = "/api/bills/cam1-1-1/corrections"
            resp = await client.post(url, json={"action": "confirm", "line": 2})
            assert resp.status == 200
            resp = await client.post(url, json={"action": "change", "line": 0,
                                                "class_key": "burger"})
            resp = await client.post(url, json={"action": "add", "class_key": "beer"})
            view = await resp.json()
            eff = view["effective"]
            assert [(ln["key"], ln["status"]) for ln in eff["items"]] == [
                ("burger", "changed"), ("green_salad", "detected"), ("apple_pie", "confirmed"),
                ("beer", "added")]
            assert eff["total"] == round(sum(MENU[k].price for k in (
                "burger", "green_salad", "apple_pie", "beer")), 2)
            assert eff["needs_review"] is False
            resp = await client.post(url, json={"action": "remove", "line": 3})
            fetched = await (await client.get("/api/bills/cam1-1-1")).json()
            assert fetched == await resp.json()
            assert [c["action"] for c in fetched["corrections"]] == [
                "confirm", "change", "add", "remove"]
            assert fetched["items"] == make_bill("cam1-1-1").to_json()["items"]  # untouched

            resp = await client.post(url, data=b"{not json")
            assert resp.status == 400 and "not valid JSON" in (await resp.json())["error"]
            resp = await client.post(url, data=b"x" * (MAX_CORRECTION_BYTES + 1))
            assert resp.status == 413 and "error" in await resp.json()

            async def chunks() -> AsyncIterator[bytes]:
                for _ in range(8):
                    yield b" " * 4096

            resp = await client.post(url, data=chunks())  # chunked: no Content-Length
            assert resp.status == 413
            for body, error in (
                    ({"action": "change", "line": 1, "class_key": "caviar"},
                     "class_key: 'caviar' is not on the menu"),
                    ({"action": "confirm", "line": 9}, "line: no line 9 on this bill"),
                    ({"action": "remove", "line": 3}, "line: line 3 was removed"),
                    ({"action": "change", "line": 1}, "class_key: Field required"),
                    ([1, 2], "(root): expected a JSON object, got list"),
                    ({"line": 1}, "action: Field required")):
                resp = await client.post(url, json=body)
                assert resp.status == 422, body
                errors = (await resp.json())["errors"]
                assert any(e.startswith(error) for e in errors), errors
            resp = await client.post("/api/bills/nope/corrections",
                                     json={"action": "confirm", "line": 0})
            assert (resp.status, await resp.json()) == (404, {"error": "no bill 'nope'"})

    _run(main)


def test_event_stream_delivers_committed_bills_trays_and_replays_after_reconnect(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with _serve(tmp_path, heartbeat_s=0.2) as (client, service):
            resp = await client.get("/api/events")
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream"
            events = SseReader(resp)
            first = await events.next()
            assert (first.event, first.data) == ("journal", {"fault": None, "pending": 0})
            assert events.retry_ms == 2000

            service.submit(make_bill("cam1-1-1"))
            ev = await events.next_of("bill")
            assert ev.id == "1" and ev.data["bill_id"] == "cam1-1-1"
            assert ev.data["effective"]["total"] == make_bill("cam1-1-1").total

            service.tray_update("cam1", (tray("cam1", 7, ("coffee", "croissant")),))
            ev = await events.next_of("tray")
            assert ev.id is None
            assert ev.data["stream_id"] == "cam1"
            assert [i["key"] for i in ev.data["trays"][0]["items"]] == ["coffee", "croissant"]

            await client.post("/api/bills/cam1-1-1/corrections",
                              json={"action": "confirm", "line": 2})
            ev = await events.next_of("bill_corrected")
            assert ev.id is None and ev.data["effective"]["needs_review"] is False

            await events.quiet(0.5)
            assert events.comments >= 2  # heartbeats while idle
            resp.close()  # the client goes away: the server notices at its next write
            await _until(lambda: service.hub.subscribers == 0, 3)
            assert service.metrics.value("dishtracker_sse_subscribers") == 0

            for i in (2, 3):
                service.submit(make_bill(f"cam1-1-{i}"))
            await _until(lambda: service.pending == 0)
            # what EventSource does on reconnect: Last-Event-ID of the last bill it got
            resp = await client.get("/api/events", headers={"Last-Event-ID": "1"})
            events = SseReader(resp)
            replayed = [await events.next_of("bill"), await events.next_of("bill")]
            assert [(e.id, e.data["bill_id"]) for e in replayed] == [("2", "cam1-1-2"),
                                                                    ("3", "cam1-1-3")]
            # the latest tray state of every stream is there for a new subscriber
            assert (await events.next_of("tray")).data["trays"][0]["tray_id"] == 7
            service.submit(make_bill("cam1-1-4"))
            assert (await events.next_of("bill")).id == "4"  # live, no duplicates
            resp.close()
            resp = await client.get("/api/events", params={"after": "x"})
            assert resp.status == 422

    _run(main)


def test_shutdown_ends_open_event_streams_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        async with _serve(tmp_path) as (client, _):
            resp = await client.get("/api/events")
            events = SseReader(resp)
            await events.next()
            started = time.monotonic()
            await client.server.close()  # the server shuts down with a stream open
            assert time.monotonic() - started < 2.0
            with pytest.raises(EOFError):  # and the client sees its end
                await events.next(1.0)

    _run(main)


def test_commit_failure_keeps_bills_pending_in_order_until_space_returns(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with _serve(tmp_path) as (client, service):
            resp = await client.get("/api/events")
            events = SseReader(resp)
            await events.next_of("journal")
            await service.limit_journal_size(1)  # as if the disk were full
            submitted = [make_bill("cam1-1-1", snapshot=bytes(64 * 1024)),
                         make_bill("cam2-1-2", stream="cam2"), make_bill("cam1-1-3")]
            for bill in submitted:
                service.submit(bill)
            ev = await events.next_of("journal")
            assert "database or disk is full" in ev.data["fault"]
            assert not service.healthy
            resp = await client.get("/readyz")
            body = await resp.json()
            assert resp.status == 503 and body["ready"] is False
            assert any("database or disk is full" in r for r in body["reasons"])
            await asyncio.sleep(0.3)  # several retries
            assert service.pending == 3
            assert service.metrics.value("dishtracker_bills_pending") == 3
            assert service.metrics.value("dishtracker_journal_errors_total", op="commit") >= 2
            page = await (await client.get("/api/bills")).json()
            assert page["bills"] == [] and page["journal"]["pending"] == 3

            await service.limit_journal_size(None)  # space is back
            seen = [await events.next() for _ in range(len(submitted) + 1)]
            got = [e for e in seen if e.event == "bill"]
            assert [e.data["bill_id"] for e in got] == [b.bill_id for b in submitted]
            assert [e.id for e in got] == ["1", "2", "3"]
            assert [e.data["fault"] for e in seen if e.event == "journal"] == [None]
            assert service.healthy and service.pending == 0
            resp = await client.get("/readyz")
            assert (resp.status, await resp.json()) == (200, {"ready": True, "reasons": []})
            assert service.metrics.value("dishtracker_bills_committed_total",
                                         stream="cam1") == 2
            resp.close()

    _run(main)


def test_close_commits_pending_bills_and_logs_what_it_cannot(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"

    async def main() -> None:
        service = BillingService(path, Metrics())
        await service.open()
        for i in range(3):
            service.submit(make_bill(f"cam1-1-{i}"))
        await service.close()  # at once: the queue is drained first

        service = BillingService(path, Metrics(), retry_initial_s=0.05)
        await service.open()
        await service.limit_journal_size(1)
        service.submit(make_bill("cam1-1-9", snapshot=bytes(64 * 1024)))
        with structlog.testing.capture_logs() as logs:
            await service.close(timeout_s=0.3)
        lost = [e for e in logs if e["event"] == "bills_not_committed"]
        assert lost and lost[0]["bills"][0]["bill_id"] == "cam1-1-9"
        service.submit(make_bill("cam1-1-10"))  # after close: logged, not queued
        assert service.pending == 1

    asyncio.run(main())
    with Journal(path) as journal:
        assert [b["bill_id"] for b in journal.after(0, 10)] == ["cam1-1-0", "cam1-1-1",
                                                               "cam1-1-2"]


def test_a_slow_subscriber_is_disconnected_and_trays_keep_only_the_latest() -> None:
    async def main() -> None:
        hub = EventHub(max_pending=2, max_subscribers=2)
        slow, fast = hub.subscribe(), hub.subscribe()
        assert slow is not None and fast is not None
        assert hub.subscribe() is None  # over max_subscribers
        with structlog.testing.capture_logs() as logs:
            for i in range(1, 5):
                hub.publish(Event.of("bill", {"n": i}, i))
                assert (await fast.get()).id == str(i)
        assert [e["event"] for e in logs] == ["sse_subscriber_dropped"]  # at the third
        assert "fell 2 events behind" in logs[0]["reason"]
        assert hub.subscribers == 1
        with pytest.raises(SubscriptionClosed, match="fell 2 events behind"):
            await slow.get()
        for n in range(5):
            hub.publish_tray("cam1", Event.of("tray", {"n": n}))
        hub.publish_tray("cam2", Event.of("tray", {"n": 9}))
        assert [json.loads((await fast.get()).data)["n"] for _ in range(2)] == [4, 9]
        hub.close()
        with pytest.raises(SubscriptionClosed, match="shutting down"):
            await fast.get()

    asyncio.run(main())
