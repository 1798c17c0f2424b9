"""The box's questions: the closed frames most worth a label, for the labelling workspace.

Where it sits: on the loop back of the data flow (``bill ─▶ journal ─▶ …``,
then ``corrections, labels ─▶ examples``). The stream runners offer every
closed bill (:meth:`QuestionQueue.offer`); a bill asks a question when one
of its lines is **unknown** (:mod:`edge.learn.openset` found the dish far
from everything known) or **doubtful**, and it carries the raw closing frame
(``Bill.frame_jpeg``, set only then). A doubtful line is one the open-set
decision gave proposals without naming it unknown: ``disagree`` when the
site's examples named it against the detector (``source == "examples"``),
``low_margin`` when it needs review (its best two classes lie close).
A line without proposals asks nothing: the cashier confirms it as before.

**Priority**, most worth a label first: the reason (``unknown`` before
``disagree`` before ``low_margin``), then the evidence for the best proposal
in steps of :data:`SCORE_STEP` (weaker first: the box is less sure of it),
then the newer frame (a menu changes weekly; the light of the morning is not
the evening's). A question ranks as its most worth line.

**Bound**: at most ``max_items`` questions (``learning.max_questions``).
When full, a new question takes the place of the lowest-ranked one if it
ranks above it, and is dropped otherwise; so a new unknown dish always
displaces an older low-margin question, and between equals the newer stays.
Only the JPEG is kept (no decoded pixels): at 1280x720 about 100 kB a frame,
20 MB for the default 200.

**Answered** questions leave: when a correction of the bill (the billing
service's correction listener, :func:`attach`) removes, changes, or
confirms a line, that line asks no more; a voided bill, or a question
without lines left, leaves the queue. The labelling workspace takes a
question when it imports it (:meth:`QuestionQueue.take`). An undone
correction does not bring the question back (its frame is gone with it).

The queue lives in memory, on the event loop only (no locks): a restart
starts with no questions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from edge.billing.model import Bill, BillItem, Proposal

REASONS = ("unknown", "disagree", "low_margin")
"""Why a line asks, most worth a label first."""

SCORE_STEP = 0.1
"""Proposal evidence within one step counts as equal: the newer frame ranks first."""

Box = tuple[float, float, float, float]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class AskedLine:
    """One line of a bill the box asks about.

    Attributes
    ----------
    line : int
        The line's number on its bill (``0 … n-1``, as corrections name it).
    box : tuple of 4 float or None
        ``x1 y1 x2 y2`` of the dish in the closing frame, source pixels
        (None: it was not in view then).
    reason : str
        One of :data:`REASONS`.
    key : str
        What the line was billed as (``"unknown"`` for an unknown dish).
    proposals : tuple of Proposal
        Up to three menu entries it may be, best first.
    """

    line: int
    box: Box | None
    reason: str
    key: str
    proposals: tuple[Proposal, ...]

    @property
    def rank(self) -> tuple[int, int]:
        """``(reason, score step)``: smaller is more worth a label."""
        best = self.proposals[0].score if self.proposals else 0.0
        # rounded first: 0.6 / 0.1 is 5.999…, and 0.6 belongs with 0.61
        return REASONS.index(self.reason), math.floor(round(max(best, 0.0) / SCORE_STEP, 6))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"line": self.line, "box": None if self.box is None else list(self.box),
                "reason": self.reason, "key": self.key,
                "proposals": [p.to_json() for p in self.proposals]}


@dataclass(frozen=True, slots=True)
class Question:
    """A closed frame worth a label, with the lines it asks about.

    Attributes
    ----------
    id : str
        Stable id (16 hex digits of the SHA-256 of ``bill_id``): the same
        bill asks the same question across restarts.
    stream_id, bill_id : str
        Where the frame comes from.
    closed_at : float
        Unix seconds the bill closed (when the frame was seen).
    frame_seq : int
        The source frame number of the closing frame.
    width, height : int
        Size of the frame, pixels.
    jpeg : bytes
        The frame as the camera saw it (no marks).
    lines : tuple of AskedLine
        The lines it asks about, in line order.
    """

    id: str
    stream_id: str
    bill_id: str
    closed_at: float
    frame_seq: int
    width: int
    height: int
    jpeg: bytes
    lines: tuple[AskedLine, ...]

    @property
    def priority(self) -> tuple[int, int, float]:
        """Sort key: smaller is more worth a label (see the module's text)."""
        reason, step = min(line.rank for line in self.lines)
        return reason, step, -self.closed_at

    @property
    def reason(self) -> str:
        """The reason of its most worth line."""
        return REASONS[self.priority[0]]

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict, without the JPEG."""
        return {"id": self.id, "stream_id": self.stream_id, "bill_id": self.bill_id,
                "closed_at": self.closed_at, "frame_seq": self.frame_seq,
                "width": self.width, "height": self.height, "reason": self.reason,
                "lines": [line.to_json() for line in self.lines]}


def question_id(bill_id: str) -> str:
    """The id of the question a bill asks."""
    return hashlib.sha256(bill_id.encode("utf-8")).hexdigest()[:16]


def reason_of(item: BillItem) -> str | None:
    """Why a bill line asks (one of :data:`REASONS`), or None when it does not."""
    if item.unknown:
        return "unknown"
    if not item.proposals:
        return None
    if item.source == "examples":
        return "disagree"
    return "low_margin" if item.needs_review else None


def ask(bill: Bill) -> Question | None:
    """The question ``bill`` asks, or None (no line asks, or no readable frame)."""
    if bill.frame_jpeg is None:
        return None
    lines = []
    for i, item in enumerate(bill.items):
        reason = reason_of(item)
        if reason is None:
            continue
        box = bill.line_boxes[i] if i < len(bill.line_boxes) else None
        lines.append(AskedLine(i, box, reason, item.key, item.proposals))
    if not lines:
        return None
    size = jpeg_size(bill.frame_jpeg)
    if size is None:
        log.warning("question_frame_unreadable", bill_id=bill.bill_id,
                    bytes=len(bill.frame_jpeg))
        return None
    return Question(question_id(bill.bill_id), bill.stream_id, bill.bill_id, bill.closed_at,
                    bill.frame_seq, size[0], size[1], bill.frame_jpeg, tuple(lines))


class QuestionQueue:
    """The bounded queue of questions (see the module's text). Event loop only.

    Parameters
    ----------
    max_items : int
        Questions kept at most (``learning.max_questions``), at least 1.
    """

    def __init__(self, max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        self.max_items = max_items
        self._by_id: dict[str, Question] = {}
        self._by_bill: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def offer(self, bill: Bill) -> Question | None:
        """Queue the question a closed bill asks; the question, or None when the bill
        asks none, asks it already, or ranks below every question of a full queue."""
        if bill.bill_id in self._by_bill:
            return None
        question = ask(bill)
        if question is None:
            return None
        if len(self._by_id) >= self.max_items:
            worst = max(self._by_id.values(), key=lambda q: q.priority)
            if question.priority >= worst.priority:
                return None
            self._remove(worst.id)
        self._by_id[question.id] = question
        self._by_bill[question.bill_id] = question.id
        return question

    def questions(self, limit: int | None = None) -> list[Question]:
        """The open questions, most worth a label first (at most ``limit``)."""
        ranked = sorted(self._by_id.values(), key=lambda q: q.priority)
        return ranked if limit is None else ranked[:limit]

    def get(self, qid: str) -> Question | None:
        """The open question ``qid``, or None."""
        return self._by_id.get(qid)

    def take(self, qid: str) -> Question | None:
        """Remove question ``qid`` (the labelling workspace took it); it, or None."""
        return self._remove(qid)

    def answered(self, view: Mapping[str, Any]) -> None:
        """Drop what a correction answered (``view``: the bill as the journal returns
        it, with ``effective``; the billing service's correction listener)."""
        qid = self._by_bill.get(str(view.get("bill_id")))
        if qid is None:
            return
        question = self._by_id[qid]
        effective = view.get("effective") or {}
        still = {ln.get("line") for ln in effective.get("items", ())
                 if ln.get("status") == "detected"}
        lines = tuple(a for a in question.lines if a.line in still)
        if effective.get("voided") or not lines:
            self._remove(qid)
        elif len(lines) < len(question.lines):
            self._by_id[qid] = dataclasses.replace(question, lines=lines)

    def _remove(self, qid: str) -> Question | None:
        question = self._by_id.pop(qid, None)
        if question is not None:
            self._by_bill.pop(question.bill_id, None)
        return question


class CorrectionSource(Protocol):
    """What :func:`attach` needs of :class:`edge.billing.service.BillingService`."""

    def add_correction_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener(bill view)`` on the loop after each stored correction."""


def attach(service: CorrectionSource, queue: QuestionQueue) -> None:
    """Let the cashier's corrections answer ``queue``'s questions."""
    service.add_correction_listener(queue.answered)


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # frame headers; DHT, JPG, DAC are not
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # TEM, RSTn, SOI: no length field


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a JPEG from its frame header, without decoding it;
    None when ``data`` is not a JPEG with one before its first scan."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        if marker in _SOF:
            if i + 9 > n:
                return None
            height = int.from_bytes(data[i + 5:i + 7], "big")
            width = int.from_bytes(data[i + 7:i + 9], "big")
            return (width, height) if width and height else None
        if marker == 0xDA:  # start of scan: no frame header came
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None
