"""Shadow mode: a candidate model's own tracking and billing beside the serving one.

``serving batch ─▶ candidate (its own thread, rate-limited) ─▶ ShadowStream (a copy
of the stream's tracking and billing) ─▶ ShadowBook ◀─ the serving bills, the
cashier's corrections``

A :class:`ShadowStream` per stream takes the candidate's detections (late ones
land on a later frame, moved along the shadow's own tracks, as on the serving
path) and closes shadow bills, which are never journaled. The
:class:`ShadowBook` pairs each shadow bill with the serving bill of the same
tray (same stream, closed within ``rollout.match_window_s``) and counts:

- ``agree``: both bills carry the same dishes;
- ``differ``: they carry different dishes;
- ``missed``: a serving bill the candidate had no bill for;
- ``extra``: a shadow bill without a serving one.

Where the two differ and the cashier corrected the serving bill, the
corrected bill says who was right (``corrections``). Bills of trays that were
already in view when the shadow started on their stream (at the start, or
when the shadow moved on to that stream) are left out (the shadow saw only
part of them).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.billing.biller import TrayBiller, make_biller
from edge.billing.model import Bill
from edge.config import SiteConfig, StreamConfig
from edge.frames import Detections, Frame
from edge.metrics import Metrics
from edge.track.lag import LagCompensator

WARMUP_S = 2.0
"""Bills of trays first seen this soon after the shadow started are not compared."""
LATENCY_SAMPLES = 2000
"""Most recent candidate call times kept for the latency figures."""
DIFFER_KEPT = 2000
"""Most recent differing bills kept for the cashier's verdict (a shadow may run for days)."""

Dishes = collections.Counter[str]


def dishes(keys: Iterable[str]) -> Dishes:
    """A bill's dishes as a multiset of menu keys."""
    return collections.Counter(keys)


@dataclass(slots=True)
class _Waiting:
    bill: Bill
    dishes: Dishes
    side: str  # "serving" | "shadow"


class ShadowBook:
    """The comparison of one candidate's bills with the serving model's.

    Parameters
    ----------
    model_id : str
        The candidate's registry id (the label of its metrics).
    new_classes : sequence of str
        Classes the candidate knows and the serving model does not.
    window_s : float
        Two bills of one stream closed this close in time are the same tray.
    metrics : Metrics
        ``dishtracker_shadow_*``.
    started_at : float, optional
        Unix seconds the shadow started (default: now).
    """

    def __init__(self, model_id: str, new_classes: Sequence[str], window_s: float,
                 metrics: Metrics, started_at: float | None = None) -> None:
        self.model_id = model_id
        self.new_classes = tuple(new_classes)
        self.window_s = window_s
        self.metrics = metrics
        self.started_at = time.time() if started_at is None else started_at
        self.counts = {"agree": 0, "differ": 0, "missed": 0, "extra": 0}
        self.bills = 0
        self.new_class_lines = 0
        self.errors = 0
        self.detected = 0  # frames the candidate detected
        self.times: collections.deque[float] = collections.deque(maxlen=LATENCY_SAMPLES)
        self._waiting: dict[str, list[_Waiting]] = {}
        self._stream_started: dict[str, float] = {}  # the shadow moved on to a stream then
        # serving bill id -> (serving dishes, shadow dishes) where they differ
        self._differ: dict[str, tuple[Dishes, Dishes]] = {}
        self._verdicts: dict[str, str] = {}

    def stream_started(self, stream_id: str, at: float | None = None) -> None:
        """The shadow starts on ``stream_id`` at ``at`` (Unix seconds, default now):
        its trays in view then are not compared; its unpaired bills are dropped."""
        self._stream_started[stream_id] = time.time() if at is None else at
        self._waiting.pop(stream_id, None)

    def serving_bill(self, bill: Bill) -> None:
        """A bill the serving model closed (journaled)."""
        self._arrive(bill, "serving")

    def shadow_bill(self, bill: Bill) -> None:
        """A bill the candidate's shadow closed (never journaled)."""
        self.bills += 1
        self.metrics.shadow_bills.labels(self.model_id).inc()
        new = set(self.new_classes)
        self.new_class_lines += sum(1 for i in bill.items if i.key in new)
        self._arrive(bill, "shadow")

    def _arrive(self, bill: Bill, side: str) -> None:
        self.expire(bill.closed_at)
        started = max(self.started_at, self._stream_started.get(bill.stream_id, 0.0))
        if bill.opened_at < started + WARMUP_S:
            return  # in view before the shadow saw it whole
        waiting = self._waiting.setdefault(bill.stream_id, [])
        other = [w for w in waiting if w.side != side
                 and abs(w.bill.closed_at - bill.closed_at) <= self.window_s]
        mine = dishes(i.key for i in bill.items)
        if not other:
            waiting.append(_Waiting(bill, mine, side))
            return
        match = min(other, key=lambda w: abs(w.bill.closed_at - bill.closed_at))
        waiting.remove(match)
        if side == "shadow":
            serving_bill, served, shadow = match.bill, match.dishes, mine
        else:
            serving_bill, served, shadow = bill, mine, match.dishes
        if served == shadow:
            self._count("agree")
        else:
            self._count("differ")
            self._differ[serving_bill.bill_id] = (served, shadow)
            if len(self._differ) > DIFFER_KEPT:
                del self._differ[next(iter(self._differ))]

    def expire(self, now: float) -> None:
        """Count the bills left unpaired for longer than the window."""
        for waiting in self._waiting.values():
            for w in [w for w in waiting if now - w.bill.closed_at > self.window_s]:
                waiting.remove(w)
                self._count("missed" if w.side == "serving" else "extra")

    def _count(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self.metrics.shadow_compared.labels(self.model_id, outcome).inc()
        agreement = self.agreement()
        if agreement is not None:
            self.metrics.shadow_agreement.labels(self.model_id).set(agreement)

    def correction(self, bill_id: str, effective: Mapping[str, Any]) -> None:
        """The cashier's view of a serving bill (``effective`` of the journal's
        bill view): where the two models differed, who was right."""
        pair = self._differ.get(bill_id)
        if pair is None:
            return
        served, shadow = pair
        lines = [] if effective.get("void") else effective.get("items", [])
        truth = dishes(str(i.get("key")) for i in lines)
        self._verdicts[bill_id] = ("candidate_right" if truth == shadow
                                   else "serving_right" if truth == served else "neither")

    def agreement(self) -> float | None:
        """Share of compared bills the two models agree on (None: none compared)."""
        compared = sum(self.counts.values())
        return None if compared == 0 else self.counts["agree"] / compared

    def stats(self) -> dict[str, Any]:
        """JSON-ready figures (``GET /api/models``, the models page, the fleet's gates)."""
        verdicts = collections.Counter(self._verdicts.values())
        times = np.array(self.times) * 1000.0
        agreement = self.agreement()
        return {
            "since": self.started_at, "bills": self.bills,
            "compared": sum(self.counts.values()), **self.counts,
            "agreement": None if agreement is None else round(agreement, 4),
            "corrections": {k: verdicts.get(k, 0)
                            for k in ("candidate_right", "serving_right", "neither")},
            "new_classes": list(self.new_classes), "new_class_lines": self.new_class_lines,
            "detected_frames": self.detected, "errors": self.errors,
            "latency_ms": None if not len(times) else {
                "p50": round(float(np.percentile(times, 50)), 2),
                "p95": round(float(np.percentile(times, 95)), 2)},
        }


class ShadowStream:
    """A copy of one stream's tracking and billing, fed the candidate's detections.

    The stream loop calls :meth:`update` with every frame after the serving
    tracker; the worker hands the candidate's detections to :meth:`offer`.
    """

    def __init__(self, stream: StreamConfig, site: SiteConfig, class_names: Sequence[str],
                 book: ShadowBook) -> None:
        self.stream = stream
        self.site = site
        self.class_names = tuple(class_names)
        self.book = book
        self.biller: TrayBiller | None = None
        self.lag = LagCompensator()
        self._pending: tuple[int, Detections] | None = None
        book.stream_started(stream.id)

    def offer(self, frame: Frame, detections: Detections) -> None:
        """The candidate's detections of ``frame`` (applied at the next update)."""
        self._pending = (frame.seq, detections)
        self.book.detected += 1

    def update(self, frame: Frame) -> tuple[Bill, ...]:
        """Advance the shadow one frame; its closed bills (also given to the book)."""
        h, w = frame.image.shape[:2]
        if self.biller is None or (self.biller.tracker.width, self.biller.tracker.height) != (w, h):
            self.biller = make_biller(self.stream, self.site, self.class_names, w, h,
                                      snapshots=False)
        detections = None
        if self._pending is not None and self._pending[0] <= frame.seq:
            seq, detections = self._pending
            self._pending = None
            if seq != frame.seq:
                detections = self.lag.shift(detections, seq, frame.seq)
        step = self.biller.update(frame, detections)
        self.lag.record(frame.seq, step.tracks)
        for bill in step.closed:
            self.book.shadow_bill(bill)
        return step.closed
