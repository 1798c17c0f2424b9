"""The box's questions over HTTP, answered at the till, and taken into the labelling workspace.

``edge.daemon._web_app`` with real tokens (a manager's, a labeller's, a
cashier's), a real billing service on a journal in ``tmp_path`` whose
correction listener answers the questions (:func:`edge.learn.questions.attach`),
and a real workspace holding one selected frame of a simulator scene; the
shipped detector proposes on every frame, the question's too. Bills are
built directly and offered to the application's queue, as the pipeline
offers the bills it closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from bills_support import item
from test_http_api import MemoryDaemon
from test_label_api import SEED, write_selection
from test_label_api import Box as LabelBox
from test_webrtc_support import TOKEN, write_token_file

from edge.billing.model import UNKNOWN_KEY, UNKNOWN_NAME, Bill, BillItem, Proposal
from edge.billing.service import BillingService
from edge.catalogue import DISH_IDS
from edge.config import SiteConfig, StorageConfig
from edge.daemon import _web_app
from edge.label.importer import import_folder
from edge.label.store import LABELS_SUBDIR, LabelStore
from edge.learn.questions import QuestionQueue, attach, question_id
from edge.metrics import Metrics
from edge.sim.scene import Scene
from edge.web.access import load_keyring
from edge.web.question_routes import QUESTIONS_KEY
from edge.web.tokens import TOKENS_FILE, TokenStore
from edge.web.webrtc import WebRtcHub

FRAME_NUMBER = 84
"""The question's frame: the scene's tray with five dishes, in full view."""


@dataclass
class Box(LabelBox):
    """A running daemon application with its question queue and billing service."""

    queue: QuestionQueue
    service: BillingService


@asynccontextmanager
async def daemon(tmp_path: Path) -> AsyncIterator[Box]:
    """The daemon's application; the workspace holds one selected frame (frame 1)."""
    storage = tmp_path / "var"
    storage.mkdir(mode=0o700)
    write_token_file(storage / "token")
    store = TokenStore(storage / TOKENS_FILE)
    tokens = {"manager": TOKEN, "ana": store.create("ana", "labeller"),
              "till": store.create("till", "cashier")}
    config = SiteConfig(storage=StorageConfig(dir=storage))
    root = storage / LABELS_SUBDIR
    labels = LabelStore(root)
    import_folder(labels, write_selection(tmp_path / "selected", (60,)))
    labels.close()
    metrics = Metrics()
    service = BillingService(storage / "journal.sqlite3", metrics)
    await service.open()
    app = _web_app(MemoryDaemon(config), WebRtcHub({}, config.server, metrics),  # type: ignore[arg-type]
                   service, None, load_keyring(config.server, config.storage)[1])
    queue = app[QUESTIONS_KEY]
    attach(service, queue)
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            yield Box(client, tokens, root, str(client.make_url("/")), queue, service)
    finally:
        await service.close()


def scene_frame() -> tuple[bytes, list[tuple[float, float, float, float]]]:
    """The question's frame as JPEG, and the boxes of the dishes on it."""
    for number, image, truth in Scene(SEED, difficulty="easy").frames(FRAME_NUMBER + 1):
        if number == FRAME_NUMBER:
            ok, buf = cv2.imencode(".jpg", image)
            assert ok
            dishes = [(r.x, r.y, r.x + r.w, r.y + r.h) for r in truth
                      if r.class_id in DISH_IDS and r.visibility > 0.9]
            return bytes(buf), dishes
    raise AssertionError("the scene is shorter than expected")


def asking_bill(n: int, frame: bytes, boxes: list[tuple[float, float, float, float]]) -> Bill:
    """Bill ``cam1-1-n``: line 0 an unknown dish, line 1 sure, line 2 a low margin."""
    sure = item("schnitzel_fries", 0.97, 11)
    doubt = item("apple_pie", 0.55, 12)
    items = (
        BillItem(class_id=-1, key=UNKNOWN_KEY, name=UNKNOWN_NAME, price=0.0, confidence=0.5,
                 track_id=10, needs_review=True, unknown=True, source="unknown",
                 proposals=(Proposal("green_salad", "Green salad", 4.2, 0.41),
                            Proposal("apple_pie", "Apple pie", 3.2, 0.2))),
        sure,
        BillItem(class_id=doubt.class_id, key=doubt.key, name=doubt.name, price=doubt.price,
                 confidence=0.55, track_id=12, needs_review=True,
                 proposals=(Proposal("apple_pie", "Apple pie", 3.2, 0.5),
                            Proposal("green_salad", "Green salad", 4.2, 0.48))))
    return Bill(bill_id=f"cam1-1-{n}", stream_id="cam1", tray_id=n, opened_at=1.7e9 - 5,
                closed_at=1.7e9 + n, frame_seq=FRAME_NUMBER, items=items,
                total=round(sure.price + doubt.price, 2), needs_review=True, reason="crossed",
                tray_box=(0.0, 0.0, 100.0, 100.0), review=("unknown_dish",),
                line_boxes=(boxes[0], boxes[1], boxes[2]), frame_jpeg=frame)


async def _json(resp: Any, status: int) -> Any:
    body = await resp.json()
    assert resp.status == status, body
    return body


async def committed(service: BillingService) -> None:
    for _ in range(200):
        if service.pending == 0:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the bill was not committed")


def test_labellers_and_managers_read_the_questions_and_a_cashier_may_not(
        tmp_path: Path) -> None:
    frame, boxes = scene_frame()

    async def main() -> None:
        async with daemon(tmp_path) as box:
            client = box.client
            assert await _json(await client.get("/api/questions", headers=box.auth("ana")),
                               200) == []
            q = box.queue.offer(asking_bill(1, frame, boxes))
            assert q is not None and q.id == question_id("cam1-1-1")
            box.queue.offer(asking_bill(2, frame, boxes))
            listed = await _json(await client.get("/api/questions", headers=box.auth("ana")),
                                 200)
            assert [x["bill_id"] for x in listed] == ["cam1-1-2", "cam1-1-1"]  # newer first
            first = listed[1]
            assert first["id"] == q.id and first["reason"] == "unknown"
            assert (first["width"], first["height"]) == (q.width, q.height)
            assert [(ln["line"], ln["reason"]) for ln in first["lines"]] == [
                (0, "unknown"), (2, "low_margin")]
            assert first["lines"][0]["box"] == list(boxes[0])
            assert [p["key"] for p in first["lines"][0]["proposals"]] == ["green_salad",
                                                                           "apple_pie"]
            assert not any("jpeg" in k for k in first)
            one = await client.get("/api/questions?limit=1", headers=box.auth("manager"))
            assert [x["bill_id"] for x in await _json(one, 200)] == ["cam1-1-2"]
            for bad in ("0", "abc", "-1"):
                resp = await client.get(f"/api/questions?limit={bad}", headers=box.auth("ana"))
                assert (await _json(resp, 422))["errors"][0].startswith("limit")
            resp = await client.get("/api/questions?lmit=1", headers=box.auth("ana"))
            assert resp.status == 422

            async with client.get(f"/api/questions/{q.id}/frame",
                                  headers=box.auth("ana")) as resp:
                assert resp.status == 200 and resp.content_type == "image/jpeg"
                assert await resp.read() == frame
            resp = await client.get("/api/questions/0123456789abcdef/frame",
                                    headers=box.auth("ana"))
            assert "no open question" in (await _json(resp, 404))["error"]

            for path in ("/api/questions", f"/api/questions/{q.id}/frame"):
                resp = await client.get(path, headers=box.auth("till"))
                assert "manager or labeller" in (await _json(resp, 403))["error"]
                assert (await client.get(path)).status == 401

    asyncio.run(main())


def test_a_correction_at_the_till_answers_the_question(tmp_path: Path) -> None:
    frame, boxes = scene_frame()

    async def main() -> None:
        async with daemon(tmp_path) as box:
            client = box.client
            b = asking_bill(1, frame, boxes)
            box.service.submit(b)
            await committed(box.service)
            q = box.queue.offer(b)
            assert q is not None
            url = "/api/bills/cam1-1-1/corrections"
            resp = await client.post(url, json={"action": "change", "line": 0,
                                                "class_key": "apple_pie"},
                                     headers=box.auth("till"))
            await _json(resp, 200)
            listed = await _json(await client.get("/api/questions", headers=box.auth("ana")),
                                 200)
            assert [ln["line"] for ln in listed[0]["lines"]] == [2]  # line 0 is answered
            resp = await client.post(url, json={"action": "confirm", "line": 2},
                                     headers=box.auth("till"))
            await _json(resp, 200)
            assert await _json(await client.get("/api/questions", headers=box.auth("ana")),
                               200) == []
            resp = await client.get(f"/api/questions/{q.id}/frame", headers=box.auth("ana"))
            assert resp.status == 404

    asyncio.run(main())


def test_questions_join_the_workspace_once_with_their_boxes_and_proposals(
        tmp_path: Path) -> None:
    frame, boxes = scene_frame()
    boxes[2] = (2.0, 2.0, 40.0, 40.0)  # the dish of line 2 where the detector sees none

    async def main() -> None:
        async with daemon(tmp_path) as box:
            client = box.client
            resp = await client.post("/api/label/questions/import", json={},
                                     headers=box.auth("till"))
            assert resp.status == 403
            q = box.queue.offer(asking_bill(1, frame, boxes))
            assert q is not None
            resp = await client.post("/api/label/questions/import", json={},
                                     headers=box.auth("ana"))
            done = await _json(resp, 200)
            assert done == {"imported": 1, "frames": [2], "questions": [q.id], "open": 0}
            assert len(box.queue) == 0  # the workspace took it
            # the same bill asked again (a restart): its frame is not imported twice
            box.queue.offer(asking_bill(1, frame, boxes))
            resp = await client.post("/api/label/questions/import", json={"limit": 5},
                                     headers=box.auth("ana"))
            assert await _json(resp, 200) == {"imported": 0, "frames": [2],
                                              "questions": [q.id], "open": 0}
            status = await _json(await client.get("/api/label/status",
                                                  headers=box.auth("ana")), 200)
            assert status["frames"] == 2

            lease = await _json(await client.post("/api/label/lease", json={},
                                                  headers=box.auth("ana")), 200)
            assert lease["item"]["frame"] == 1 and lease["item"]["origin"] == "selection"
            lease = await _json(await client.post("/api/label/lease",
                                                  json={"after": 1},
                                                  headers=box.auth("ana")), 200)
            shown = lease["item"]
            assert shown["frame"] == 2 and shown["origin"] == "question"
            assert shown["question"]["bill_id"] == "cam1-1-1"
            assert shown["question"]["id"] == q.id
            assert (shown["width"], shown["height"]) == (q.width, q.height)
            asked = {b["asked"]["line"]: b for b in shown["boxes"] if b["asked"]}
            assert set(asked) == {0, 2}
            unknown = asked[0]
            assert unknown["detector"] is not None  # the detector's own box of that dish
            assert unknown["asked"]["reason"] == "unknown"
            assert "green_salad" in [c["class"] for c in unknown["candidates"]]
            missed = asked[2]
            assert missed["detector"] is None and missed["box"] == [2.0, 2.0, 40.0, 40.0]
            assert missed["candidates"][0]["class"] == "apple_pie"
            assert sum(1 for b in shown["boxes"] if b["asked"] is None) >= 2  # other dishes
            async with client.get("/api/label/frames/2/image",
                                  headers=box.auth("ana")) as resp:
                assert resp.status == 200 and await resp.read() == frame
            # the labeller labels the asked box: it counts like any other label
            labelled = [{"box": b["box"], "class": b["candidates"][0]["class"] if b["asked"]
                         is None else "linzer_torte", "proposal": b["proposal"], "rank": None}
                        for b in shown["boxes"]]
            resp = await client.put("/api/label/frames/2", headers=box.auth("ana"),
                                    json={"version": 0, "boxes": labelled, "complete": True})
            written = await _json(resp, 200)
            assert written["complete"] and written["origin"] == "question"

    asyncio.run(main())


def test_the_application_has_a_question_queue_of_the_configured_size(tmp_path: Path) -> None:
    config = SiteConfig(storage=StorageConfig(dir=tmp_path))
    config = config.model_copy(update={"learning": config.learning.model_copy(
        update={"max_questions": 7})})
    metrics = Metrics()
    app = _web_app(MemoryDaemon(config),  # type: ignore[arg-type]
                   WebRtcHub({}, config.server, metrics),
                   BillingService(tmp_path / "journal.sqlite3", metrics), None, TOKEN)
    assert isinstance(app, web.Application)
    assert app[QUESTIONS_KEY].max_items == 7
