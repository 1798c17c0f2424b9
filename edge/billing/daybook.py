"""The end-of-day report (a till's Z report): a day's bills summed per stream and dish.

``journal ─▶ report``: :mod:`edge.web.report` reads the bills closed in a
day from the journal (each as :meth:`edge.billing.journal.Journal.get`
answers it, corrections and hand-over included) and sums them here. The
numbers are those of the effective bills, after every correction:

- ``bills``: bills closed that day; ``handed_over``: of them, handed over to
  the POS; ``voided``: of them, void.
- ``revenue``: the sum of the effective totals of the bills not void, to
  cents; ``count`` (per dish and in all): the quantities on those bills.
- ``corrections``: correction rows of those bills (undos included, and the
  corrections they undid).
- ``needed_review``: bills that closed needing review (a low-confidence line,
  a disabled dish, a hidden tray); ``reviewed``: of them, those that no
  longer need it (every flagged line confirmed, changed or removed, or the
  bill void, or a bill-level reason answered by a correction).

A dish is named as on its latest line of the day (a rename during the day
keeps one row per key).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge.billing.model import round_money


@dataclass(slots=True)
class DishSum:
    """One dish's quantity and revenue on the bills that are not void."""

    key: str
    name: str
    count: int = 0
    revenue: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"key": self.key, "name": self.name, "count": self.count,
                "revenue": round_money(self.revenue)}


@dataclass(slots=True)
class DaySum:
    """The sums of one stream's bills (or of all streams) over one day."""

    bills: int = 0
    handed_over: int = 0
    voided: int = 0
    revenue: float = 0.0
    corrections: int = 0
    needed_review: int = 0
    reviewed: int = 0
    dishes: dict[str, DishSum] = field(default_factory=dict)

    def add(self, bill: Mapping[str, Any]) -> None:
        """Count one bill (a journal view with ``effective``)."""
        eff = bill["effective"]
        self.bills += 1
        self.handed_over += bill.get("handed_over_at") is not None
        self.corrections += len(bill.get("corrections", ()))
        if bill["needs_review"]:
            self.needed_review += 1
            self.reviewed += not eff["needs_review"]
        if eff.get("voided"):
            self.voided += 1
            return
        self.revenue += float(eff["total"])
        for line in eff["items"]:
            dish = self.dishes.setdefault(line["key"], DishSum(line["key"], line["name"]))
            dish.name = line["name"]
            dish.count += int(line.get("quantity", 1))
            dish.revenue += float(line.get("line_total", line["price"]))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict; dishes by name."""
        dishes = sorted(self.dishes.values(), key=lambda d: (d.name.casefold(), d.key))
        return {"bills": self.bills, "handed_over": self.handed_over, "voided": self.voided,
                "revenue": round_money(self.revenue), "corrections": self.corrections,
                "needed_review": self.needed_review, "reviewed": self.reviewed,
                "count": sum(d.count for d in dishes),
                "dishes": [d.to_json() for d in dishes]}


def summarise(bills: Iterable[Mapping[str, Any]]) -> tuple[dict[str, DaySum], DaySum]:
    """Per-stream sums (by stream id) and the sum of all of ``bills``."""
    streams: dict[str, DaySum] = {}
    total = DaySum()
    for bill in bills:
        streams.setdefault(str(bill["stream_id"]), DaySum()).add(bill)
        total.add(bill)
    return dict(sorted(streams.items())), total
