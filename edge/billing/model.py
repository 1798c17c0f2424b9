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

from edge.frames import Detections, Frame, Track

REVIEW_REASONS: dict[str, str] = {
    "hidden_at_line": "part of the tray was hidden (a hand?) when it crossed the line: "
                      "dishes under it may be missing",
    "stream_changed": "the camera's settings changed while this tray was in view: it was "
                      "billed with what had been seen so far, and may be billed again",
}
"""Reasons a whole bill needs review (``Bill.review``) and what the cashier is told."""


@dataclass(frozen=True, slots=True)
class BillItem:
    """One line of a bill: one physical dish.

    Parameters
    ----------
    class_id : int
        Detector class id.
    key : str
        Detector class name (the menu's key).
    name : str
        Name shown to the cashier (from the site menu).
    price : float
        Unit price from the site menu.
    confidence : float
        Share of the dish's lifetime class vote its class holds, 0-1.
    track_id : int
        The dish's track id in its stream.
    needs_review : bool
        True if ``confidence`` is below ``billing.confirm_below``.
    """

    class_id: int
    key: str
    name: str
    price: float
    confidence: float
    track_id: int
    needs_review: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"class_id": self.class_id, "key": self.key, "name": self.name,
                "price": self.price, "confidence": round(self.confidence, 4),
                "track_id": self.track_id, "needs_review": self.needs_review}


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

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (without the snapshot)."""
        return {"bill_id": self.bill_id, "stream_id": self.stream_id, "tray_id": self.tray_id,
                "opened_at": self.opened_at, "closed_at": self.closed_at,
                "frame_seq": self.frame_seq, "items": [i.to_json() for i in self.items],
                "total": self.total, "needs_review": self.needs_review, "reason": self.reason,
                "tray_box": list(self.tray_box), "review": list(self.review),
                "has_snapshot": self.snapshot_jpeg is not None,
                "model": {"id": self.model_id, "version": self.model_version}}


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
