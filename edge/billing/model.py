"""What billing produces and consumes: bills, their lines, live tray state.

These are the contracts between the tray-aware tracker (:mod:`edge.track`),
the journal (:mod:`edge.billing.journal`), the HTTP/SSE interfaces
(:mod:`edge.web.bills`) and the evaluation (:mod:`edge.eval.tracking`).

Money is a float in the site's currency, rounded to cents when summed.
Times are Unix seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from edge.frames import Detections, Frame, Track, View

REVIEW_REASONS: dict[str, str] = {
    "hidden_at_line": "part of the tray was hidden (a hand?) when it crossed the line: "
                      "dishes under it may be missing",
    "stream_changed": "the camera's settings changed while this tray was in view: it was "
                      "billed with what had been seen so far, and may be billed again",
    "unknown_dish": "a dish on this tray looks like none the box knows: pick it from the "
                    "proposals or the menu",
}
"""Reasons a whole bill needs review (``Bill.review``) and what the cashier is told."""


UNKNOWN_KEY = "unknown"
"""The key of an unknown item's line (never a menu key: the config refuses it)."""
UNKNOWN_NAME = "Unknown dish"


@dataclass(frozen=True, slots=True)
class Proposal:
    """A menu entry an unknown or doubtful line may be, best first on the line.

    ``score`` is the open-set decision's evidence for it, 0-1
    (:mod:`edge.learn.openset`)."""

    key: str
    name: str
    price: float
    score: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"key": self.key, "name": self.name, "price": self.price,
                "score": round(self.score, 4)}


@dataclass(frozen=True, slots=True)
class BillItem:
    """One line of a bill: one physical dish.

    Parameters
    ----------
    class_id : int
        Detector class id; -1 for an unknown item and for a menu entry the
        model has no class for (named by the site's examples).
    key : str
        The menu's key: the detector's class name, a menu entry learnt from
        examples, or :data:`UNKNOWN_KEY`.
    name : str
        Name shown to the cashier (from the site menu).
    price : float
        Unit price from the site menu.
    confidence : float
        Share of the dish's lifetime class vote its class holds, 0-1.
    track_id : int
        The dish's track id in its stream.
    needs_review : bool
        True if ``confidence`` is below ``billing.confirm_below``, and for an
        unknown item.
    unknown : bool
        The dish looks like nothing the box knows (:mod:`edge.learn.openset`):
        price 0 until the cashier picks the dish; the bill needs review.
    proposals : tuple of Proposal
        Up to three menu entries it may be, best first (unknown and doubtful
        lines; empty otherwise).
    source : str
        What named it: ``"detector"`` (the model's class evidence),
        ``"examples"`` (the site's examples outvoted the detector or named a
        dish the model has no class for) or ``"unknown"``.
    """

    class_id: int
    key: str
    name: str
    price: float
    confidence: float
    track_id: int
    needs_review: bool
    unknown: bool = False
    proposals: tuple[Proposal, ...] = ()
    source: str = "detector"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"class_id": self.class_id, "key": self.key, "name": self.name,
                "price": self.price, "confidence": round(self.confidence, 4),
                "track_id": self.track_id, "needs_review": self.needs_review,
                "unknown": self.unknown, "proposals": [p.to_json() for p in self.proposals],
                "source": self.source}


@dataclass(frozen=True, slots=True)
class Bill:
    """The bill of one tray, closed once.

    Parameters
    ----------
    bill_id : str
        Stable id, unique across restarts: ``{stream}-{run}-{tray_id}`` where
        ``run`` identifies the tracker's life (its start time in ms). Writing
        the same bill twice is a no-op (idempotent).
    stream_id : str
        Stream the tray was seen on.
    tray_id : int
        The tray's track id.
    opened_at, closed_at : float
        Unix seconds the tray was first seen and its bill closed.
    frame_seq : int
        Source frame number at which the bill closed.
    items : tuple of BillItem
        One per billable dish, in track order.
    total : float
        Sum of the item prices, rounded to cents.
    needs_review : bool
        True if any line needs the cashier's confirmation or the bill has a
        ``review`` reason.
    reason : str
        ``"crossed"`` (the tray crossed the checkout line), ``"left_view"``
        (its track ended past the line without a clean crossing) or
        ``"stream_changed"`` (closed early: its stream's tracker had to go).
    tray_box : tuple of 4 float
        ``x1 y1 x2 y2`` of the tray at closing, source pixels.
    snapshot_jpeg : bytes or None
        JPEG of the frame at closing (None when no image was available).
    review : tuple of str
        Why the whole bill needs the cashier's review, beyond its lines (see
        :data:`REVIEW_REASONS`); empty for most bills.
    model_id, model_version : str
        The model that served when the bill closed: its registry id
        (:mod:`edge.rollout.store`) and ``model_version``.
    views : tuple of tuple of View
        Per line (same order as ``items``), the dish's views
        (:mod:`edge.track.views`): what a correction of that line teaches
        (:mod:`edge.learn`). Journaled beside the bill, never in its JSON.
    line_boxes : tuple of (tuple of 4 float or None)
        Per line, the dish's box in the closing frame (None: not in view then).
    frame_jpeg : bytes or None
        The closing frame as the camera saw it (no marks), only when a line is
        unknown or doubtful: a question for the labelling workspace
        (:mod:`edge.learn.questions`). Never journaled.
    """

    bill_id: str
    stream_id: str
    tray_id: int
    opened_at: float
    closed_at: float
    frame_seq: int
    items: tuple[BillItem, ...]
    total: float
    needs_review: bool
    reason: str
    tray_box: tuple[float, float, float, float]
    snapshot_jpeg: bytes | None = None
    review: tuple[str, ...] = ()
    model_id: str = ""
    model_version: str = ""
    views: tuple[tuple[View, ...], ...] = ()
    line_boxes: tuple[tuple[float, float, float, float] | None, ...] = ()
    frame_jpeg: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (without the snapshot)."""
        return {"bill_id": self.bill_id, "stream_id": self.stream_id, "tray_id": self.tray_id,
                "opened_at": self.opened_at, "closed_at": self.closed_at,
                "frame_seq": self.frame_seq, "items": [i.to_json() for i in self.items],
                "total": self.total, "needs_review": self.needs_review, "reason": self.reason,
                "tray_box": list(self.tray_box), "review": list(self.review),
                "has_snapshot": self.snapshot_jpeg is not None,
                "model": {"id": self.model_id, "version": self.model_version},
                "line_boxes": [None if b is None else list(b) for b in self.line_boxes]}


@dataclass(frozen=True, slots=True)
class TrayState:
    """A tray in view whose bill is still open (for the live bill on the page)."""

    stream_id: str
    tray_id: int
    box: tuple[float, float, float, float]
    items: tuple[BillItem, ...]
    total: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"stream_id": self.stream_id, "tray_id": self.tray_id, "box": list(self.box),
                "items": [i.to_json() for i in self.items], "total": self.total}


@dataclass(frozen=True, slots=True)
class BillerStep:
    """What one frame of a :class:`Biller` produced."""

    tracks: tuple[Track, ...]
    trays: tuple[TrayState, ...]
    closed: tuple[Bill, ...]


class Biller(Protocol):
    """Tracks one stream and closes tray bills (the full system and every
    evaluation baseline implement this)."""

    def update(self, frame: Frame, detections: Detections | None) -> BillerStep:
        """Advance one frame; ``detections`` is None for frames not detected."""
        ...


def round_money(x: float) -> float:
    """Round to cents."""
    return round(x + 0.0, 2)
