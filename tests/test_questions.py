"""The question queue: which closed bills ask, in which order, how many, and when they leave.

Bills are built directly (the open-set decision that fills their unknown and
doubtful lines is :mod:`edge.learn.openset`'s); the frames are real JPEGs.
The answers are replayed by the corrections' own code
(:func:`edge.billing.corrections.effective`), as the journal gives them to
the correction listener. The HTTP side and the workspace are
``tests/test_questions_api.py``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bills_support import item, jpeg

from edge.billing.corrections import effective
from edge.billing.model import UNKNOWN_KEY, UNKNOWN_NAME, Bill, BillItem, Proposal
from edge.label.asked import with_asked
from edge.label.store import LabelStore, Proposals
from edge.learn.questions import QuestionQueue, ask, jpeg_size, question_id

FRAME = jpeg(7, size=(320, 240))
BOX = (40.0, 50.0, 120.0, 140.0)


def proposals(*pairs: tuple[str, float]) -> tuple[Proposal, ...]:
    return tuple(Proposal(k, k.replace("_", " "), 4.5, s) for k, s in pairs)


def unknown(track_id: int, best: float = 0.3) -> BillItem:
    """An unknown dish whose best proposal has ``best`` evidence."""
    return BillItem(class_id=-1, key=UNKNOWN_KEY, name=UNKNOWN_NAME, price=0.0,
                    confidence=0.6, track_id=track_id, needs_review=True, unknown=True,
                    proposals=proposals(("apple_pie", best), ("green_salad", best / 2)),
                    source="unknown")


def disagreeing(track_id: int, best: float = 0.5) -> BillItem:
    """A line the site's examples named against the detector."""
    known = item("green_salad", 0.9, track_id)
    return BillItem(class_id=known.class_id, key=known.key, name=known.name,
                    price=known.price, confidence=0.9, track_id=track_id,
                    needs_review=False, proposals=proposals(("green_salad", best),
                                                            ("apple_pie", best - 0.1)),
                    source="examples")


def low_margin(track_id: int, best: float = 0.5) -> BillItem:
    """A detector's line whose best two dishes lie close."""
    known = item("apple_pie", 0.55, track_id)
    return BillItem(class_id=known.class_id, key=known.key, name=known.name,
                    price=known.price, confidence=0.55, track_id=track_id, needs_review=True,
                    proposals=proposals(("apple_pie", best), ("green_salad", best - 0.02)))


def bill(n: int, *lines: BillItem, frame: bytes | None = FRAME,
         closed_at: float | None = None) -> Bill:
    """Bill ``cam1-1-n``, closed at ``1.7e9 + n`` unless told, its lines in view."""
    items = lines or (item("schnitzel_fries", 0.97, 10),)
    return Bill(bill_id=f"cam1-1-{n}", stream_id="cam1", tray_id=n, opened_at=0.0,
                closed_at=1_700_000_000.0 + n if closed_at is None else closed_at,
                frame_seq=100 + n, items=items, total=0.0,
                needs_review=any(i.needs_review for i in items), reason="crossed",
                tray_box=(0.0, 0.0, 300.0, 200.0),
                line_boxes=tuple(BOX for _ in items), frame_jpeg=frame)


def view(b: Bill, corrections: list[dict[str, Any]]) -> dict[str, Any]:
    """The bill as the correction listener gets it (``effective`` replayed)."""
    numbered = [{"id": i + 1, **c} for i, c in enumerate(corrections)]
    return {"bill_id": b.bill_id,
            "effective": effective([i.to_json() for i in b.items], numbered)}


def test_a_bill_with_an_unknown_line_asks_about_it_with_its_box_and_proposals() -> None:
    b = bill(1, item("schnitzel_fries", 0.97, 10), unknown(11))
    q = ask(b)
    assert q is not None
    assert q.id == question_id(b.bill_id) and len(q.id) == 16
    assert (q.stream_id, q.bill_id, q.frame_seq) == ("cam1", "cam1-1-1", 101)
    assert (q.width, q.height) == (320, 240) and q.jpeg == FRAME
    assert [(a.line, a.reason, a.box) for a in q.lines] == [(1, "unknown", BOX)]
    body = q.to_json()
    assert "jpeg" not in body and body["reason"] == "unknown"
    assert [p["key"] for p in body["lines"][0]["proposals"]] == ["apple_pie", "green_salad"]


def test_bills_without_a_frame_or_a_doubtful_line_ask_nothing() -> None:
    assert ask(bill(1, unknown(11), frame=None)) is None  # no frame, no question
    assert ask(bill(2)) is None  # every line sure
    plain_review = item("apple_pie", 0.52, 12)  # below confirm_below, no proposals
    assert plain_review.needs_review and ask(bill(3, plain_review)) is None
    assert ask(bill(4, unknown(11), frame=b"not a jpeg")) is None
    reasons = [a.reason for a in ask(bill(5, low_margin(1), disagreeing(2))).lines]  # type: ignore[union-attr]
    assert reasons == ["low_margin", "disagree"]


def test_questions_come_unknown_first_then_disagree_then_low_margin() -> None:
    queue = QuestionQueue(10)
    queue.offer(bill(1, low_margin(1, 0.5)))
    queue.offer(bill(2, disagreeing(1, 0.5)))
    queue.offer(bill(3, unknown(1, 0.6)))
    queue.offer(bill(4, unknown(1, 0.2)))  # weaker proposals: more worth a label
    queue.offer(bill(5, unknown(1, 0.61)))  # the same step as bill 3's, newer
    queue.offer(bill(6, low_margin(1, 0.5), unknown(2, 0.9)))  # ranks as its unknown line
    order = [q.bill_id.rsplit("-", 1)[1] for q in queue.questions()]
    assert order == ["4", "5", "3", "6", "2", "1"]
    assert [q.bill_id for q in queue.questions(2)] == ["cam1-1-4", "cam1-1-5"]


def test_a_full_queue_drops_its_lowest_question_never_a_new_unknown() -> None:
    queue = QuestionQueue(3)
    for n in (1, 2, 3):
        assert queue.offer(bill(n, low_margin(1, 0.5))) is not None
    assert queue.offer(bill(4, low_margin(1, 0.5), closed_at=0.0)) is None  # older, equal
    assert queue.offer(bill(5, unknown(1, 0.9))) is not None  # displaces the oldest low margin
    assert {q.bill_id for q in queue.questions()} == {"cam1-1-2", "cam1-1-3", "cam1-1-5"}
    assert queue.offer(bill(6, low_margin(1, 0.5))) is not None  # newer: displaces bill 2
    assert len(queue) == 3
    assert queue.get(question_id("cam1-1-2")) is None
    assert queue.offer(bill(6, unknown(1))) is None  # a bill asks once


def test_answered_lines_leave_and_the_question_with_them() -> None:
    queue = QuestionQueue(10)
    b = bill(1, unknown(10), item("schnitzel_fries", 0.97, 11), low_margin(12))
    q = queue.offer(b)
    assert q is not None and [a.line for a in q.lines] == [0, 2]
    queue.answered(view(b, [{"action": "quantity", "line": 2, "quantity": 2}]))
    assert [a.line for a in queue.questions()[0].lines] == [0, 2]  # still open
    queue.answered(view(b, [{"action": "change", "line": 0, "class_key": "apple_pie",
                             "name": "Apple pie", "price": 3.2}]))
    assert [a.line for a in queue.questions()[0].lines] == [2]
    queue.answered(view(b, [{"action": "change", "line": 0, "class_key": "apple_pie",
                             "name": "Apple pie", "price": 3.2},
                            {"action": "confirm", "line": 2}]))
    assert queue.questions() == [] and queue.get(q.id) is None
    queue.answered(view(b, []))  # a bill without a question: nothing happens

    voided = bill(2, unknown(10), low_margin(11))
    queue.offer(voided)
    queue.answered(view(voided, [{"action": "void", "reason": "test tray"}]))
    assert len(queue) == 0
    removed = bill(3, unknown(10))
    queue.offer(removed)
    queue.answered(view(removed, [{"action": "remove", "line": 0}]))
    assert len(queue) == 0


def test_the_workspace_takes_a_question_once() -> None:
    queue = QuestionQueue(5)
    q = queue.offer(bill(1, unknown(1)))
    assert q is not None
    assert queue.take(q.id) == q
    assert queue.take(q.id) is None and len(queue) == 0
    with pytest.raises(ValueError, match="at least 1"):
        QuestionQueue(0)


def test_jpeg_size_reads_the_frame_header_without_decoding() -> None:
    assert jpeg_size(jpeg(1, size=(1280, 720))) == (1280, 720)
    assert jpeg_size(FRAME) == (320, 240)
    for bad in (b"", b"\xff\xd8", b"\x89PNG\r\n", FRAME[:20]):
        assert jpeg_size(bad) is None


def test_asked_lines_go_on_the_detectors_boxes_or_beside_them() -> None:
    emb = np.eye(2, 4, dtype=np.float32)
    detected = Proposals(1, "m", [{"box": [40.0, 50.0, 118.0, 141.0], "class": "yogurt",
                                   "score": 0.6},
                                  {"box": [200.0, 20.0, 260.0, 90.0], "class": "coffee",
                                   "score": 0.8}], emb)
    lines: list[dict[str, Any]] = [
        {"line": 0, "box": [41.0, 49.0, 120.0, 140.0], "reason": "unknown",
         "key": "unknown", "proposals": [{"key": "yogurt", "score": 0.3}]},
        {"line": 2, "box": [10.0, 150.0, 60.0, 500.0], "reason": "low_margin",
         "key": "apple_pie", "proposals": [{"key": "apple_pie", "score": 0.5}]},
        {"line": 3, "box": None, "reason": "unknown", "key": "unknown", "proposals": []}]
    out = with_asked(detected, lines, (320, 240))
    assert out.boxes[0]["asked"] == {"line": 0, "reason": "unknown",
                                     "proposals": [{"class": "yogurt", "score": 0.3}]}
    assert out.boxes[0]["box"] == [40.0, 50.0, 118.0, 141.0]  # the detector's box stays
    assert "asked" not in out.boxes[1]
    assert out.boxes[2]["box"] == [10.0, 150.0, 60.0, 240.0]  # clipped to the frame
    assert out.boxes[2]["class"] == "" and out.boxes[2]["asked"]["line"] == 2
    assert len(out.boxes) == 3
    assert out.embeddings is not None and out.embeddings.shape == (3, 4)
    assert not out.embeddings[2].any()


def test_a_schema_1_workspace_gets_the_questions_table(tmp_path: Path) -> None:
    LabelStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "labels.sqlite3")
    conn.execute("DROP TABLE questions")
    conn.execute("DELETE FROM schema_version")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.commit()
    conn.close()
    store = LabelStore(tmp_path)
    q = ask(bill(1, unknown(1)))
    assert q is not None
    (store.frames_dir / "x.jpg").write_bytes(q.jpeg)
    assert store.add_question("ab" * 32, "x.jpg", (320, 240), question=q.to_json()) == (1, True)
    assert store.add_question("cd" * 32, "x.jpg", (320, 240), question=q.to_json()) == (1, False)
    asked = store.question(1)
    assert asked is not None and asked["bill_id"] == "cam1-1-1"
    assert store.frame(1) is not None and store.frame(1).passes == 1  # type: ignore[union-attr]
    store.close()
