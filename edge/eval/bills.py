"""Bill evaluation: match the bills a biller closed to the ground-truth trays.

Sits beside the pipeline, after ``bill``: :mod:`edge.eval.tracking` collects
every :class:`~edge.billing.model.Bill` of a sequence and hands them here with
``gt/trays.json`` and the trays' boxes from ``gt/gt.txt``.

Matching is spatial, at the moment the bill closed. A bill closed on frame
``frame_seq`` (0-based, so ground-truth frame ``frame_seq + 1``) names the box
its tray had then (``tray_box``); it is matched to the ground-truth tray whose
box at that frame overlaps it best (IoU >= :data:`MIN_BILL_IOU`), one bill per
tray, by Hungarian assignment on IoU. If a tray has no box on that very frame
(a bill closed because the tray *left* the view is late by the tracker's
patience), its nearest box within :data:`BOX_SEARCH_S` seconds stands in.

Why not match on time (the ground truth's ``checkout_frame``)? Trays queue
and two are often in view at once, and a tracker closes a bill a few frames
after the ground truth's first frame past the line (hysteresis): nearest-time
matching is ambiguous exactly when it matters. Trays never overlap each other,
so the tray box at closing identifies the tray without ambiguity; a bill whose
box overlaps no tray is a bill for a phantom tray, which is an error.

Classification of a sequence's trays and bills:

* **expected** trays: ``checkout_frame`` is not null and falls at least
  :data:`END_GRACE_S` before the last frame. A tray crossing in the last
  second may legitimately be billed a few frames after the sequence ends, so
  such **boundary** trays are neither required nor false: their bills are
  counted as ``ignored_bills``.
* an expected tray is **exact** when it has exactly one bill whose item
  classes form the same multiset as its expected bill; otherwise it is
  ``missing`` (no bill), ``duplicated`` (more than one bill overlaps it) or
  ``wrong_items``.
* a **false bill** is a bill that matches no expected or boundary tray: a
  phantom tray, or a tray that never reached the line (``checkout_frame``
  null).

Items are compared as multisets of class keys (the menu key, so a detector
with another class order compares by name). The matched bill's items count as
true positives up to the expected count, the rest as extra; expected items
not billed are missed; every item of a duplicate or false bill is extra.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from edge.billing.model import Bill
from edge.geometry import box_iou
from edge.groundtruth import TrayRecord

MIN_BILL_IOU = 0.3
"""A bill's tray box must overlap the tray this much (trays never overlap each
other; tray boxes clipped at the picture edge or rotated a few degrees stay far
above it)."""
BOX_SEARCH_S = 2.0
"""How far from the closing frame a tray's ground-truth box may be taken."""
END_GRACE_S = 1.0
"""Trays crossing the line this close to the end of the sequence are not required."""

Box = tuple[float, float, float, float]


@dataclass(slots=True)
class BillCounts:
    """Pooled bill and item counts of one or more sequences (add with :meth:`merge`).

    Attributes
    ----------
    expected : int
        Trays that must be billed.
    exact, missing, duplicated, wrong_items : int
        How the expected trays came out (they sum to ``expected``).
    false_bills : int
        Bills that match no expected or boundary tray.
    ignored_bills : int
        Bills of boundary trays (crossing in the last :data:`END_GRACE_S`).
    bills : int
        Bills closed in total.
    flagged : int
        Bills of expected trays that carry a review reason (``Bill.review``).
    wrong_flagged : int
        Expected trays billed once with wrong items by a bill with a review
        reason: the system said what it could not see.
    item_tp, item_fp, item_fn : int
        Items billed right, billed but not on the tray, on the tray but not billed.
    missed, extra : Counter
        ``item_fn`` and ``item_fp`` by class key.
    wrong : list of dict
        One record per tray or bill in error, for debugging.
    """

    expected: int = 0
    exact: int = 0
    missing: int = 0
    duplicated: int = 0
    wrong_items: int = 0
    false_bills: int = 0
    ignored_bills: int = 0
    bills: int = 0
    flagged: int = 0
    wrong_flagged: int = 0
    item_tp: int = 0
    item_fp: int = 0
    item_fn: int = 0
    missed: Counter[str] = field(default_factory=Counter)
    extra: Counter[str] = field(default_factory=Counter)
    wrong: list[dict[str, Any]] = field(default_factory=list)

    def merge(self, other: BillCounts) -> None:
        """Add ``other``'s counts to these (pooling, not averaging)."""
        for f in fields(self):
            mine = getattr(self, f.name)
            theirs = getattr(other, f.name)
            if isinstance(mine, int):
                setattr(self, f.name, mine + theirs)
            elif isinstance(mine, Counter):
                mine.update(theirs)
            else:
                mine.extend(theirs)

    def summary(self) -> dict[str, Any]:
        """Rates and counts.

        ``bill_exact_match`` = exact / expected; ``bill_exact_or_flagged`` =
        (exact + wrong_flagged) / expected; ``bill_error_rate`` =
        (expected - exact + false_bills) / expected; ``item_precision`` =
        tp / (tp + fp); ``item_recall`` = tp / (tp + fn). A rate whose
        denominator is 0 is None.
        """
        errors = self.expected - self.exact + self.false_bills
        return {
            "bill_exact_match": _ratio(self.exact, self.expected),
            "bill_exact_or_flagged": _ratio(self.exact + self.wrong_flagged, self.expected),
            "bill_error_rate": _ratio(errors, self.expected),
            "item_precision": _ratio(self.item_tp, self.item_tp + self.item_fp),
            "item_recall": _ratio(self.item_tp, self.item_tp + self.item_fn),
            "bills_expected": self.expected,
            "bills_exact": self.exact,
            "bills_missing": self.missing,
            "bills_duplicated": self.duplicated,
            "bills_wrong_items": self.wrong_items,
            "false_bills": self.false_bills,
            "ignored_bills": self.ignored_bills,
            "bills_closed": self.bills,
            "bills_flagged": self.flagged,
            "bills_wrong_flagged": self.wrong_flagged,
            "items": {"tp": self.item_tp, "fp": self.item_fp, "fn": self.item_fn},
            "per_class_errors": {
                k: {"missed": self.missed.get(k, 0), "extra": self.extra.get(k, 0)}
                for k in sorted(set(self.missed) | set(self.extra))
            },
            "wrong_bills": list(self.wrong),
        }


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def _nearest_box(boxes: Mapping[int, Box], frame: int, window: int) -> Box | None:
    if frame in boxes:
        return boxes[frame]
    best: tuple[int, Box] | None = None
    for f, b in boxes.items():
        d = abs(f - frame)
        if d <= window and (best is None or d < best[0]):
            best = (d, b)
    return None if best is None else best[1]


def _keys(bill: Bill) -> Counter[str]:
    return Counter(i.key for i in bill.items)


def _sorted_items(c: Counter[str]) -> list[str]:
    return sorted(c.elements())


def score_bills(
    bills: Sequence[Bill],
    trays: Sequence[TrayRecord],
    tray_boxes: Mapping[int, Mapping[int, Box]],
    *,
    n_frames: int,
    fps: float,
    sequence: str = "",
) -> BillCounts:
    """Match ``bills`` to ``trays`` and count exact bills and items.

    Parameters
    ----------
    bills : sequence of Bill
        Every bill closed on the sequence; ``frame_seq`` 0-based, ``tray_box``
        in source pixels ``x1 y1 x2 y2``.
    trays : sequence of TrayRecord
        ``gt/trays.json``.
    tray_boxes : mapping
        ``{tray_id: {frame (1-based): (x1, y1, x2, y2)}}`` from ``gt/gt.txt``.
    n_frames : int
        Frames evaluated (the sequence ran 1..n_frames).
    fps : float
        Frame rate (turns :data:`END_GRACE_S` and :data:`BOX_SEARCH_S` into frames).
    sequence : str
        Name put into the ``wrong`` records.

    Returns
    -------
    BillCounts
    """
    grace = round(END_GRACE_S * fps)
    counts = BillCounts(bills=len(bills))
    status = {t.tray_id: "never" if t.checkout_frame is None
              else "boundary" if t.checkout_frame > n_frames - grace else "expected"
              for t in trays}
    counts.expected = sum(s == "expected" for s in status.values())
    iou = _bill_tray_iou(bills, trays, tray_boxes, round(BOX_SEARCH_S * fps))
    valid = iou >= MIN_BILL_IOU
    primary: dict[int, int] = {}  # tray index -> bill index
    if valid.any():
        rows, cols = linear_sum_assignment(np.where(valid, -iou, 1.0))
        primary = {int(c): int(r) for r, c in zip(rows, cols, strict=True) if valid[r, c]}
    matched_bills = set(primary.values())
    secondary: dict[int, list[int]] = {}  # tray index -> further bills overlapping it
    for i, b in enumerate(bills):
        if i in matched_bills:
            continue
        j = int(iou[i].argmax()) if len(trays) else -1
        if j >= 0 and valid[i, j]:
            secondary.setdefault(j, []).append(i)
        else:
            _false_bill(counts, b, None, sequence, "overlaps no tray")

    for j, t in enumerate(trays):
        mine = ([primary[j]] if j in primary else []) + secondary.get(j, [])
        if status[t.tray_id] == "boundary":
            counts.ignored_bills += len(mine)
        elif status[t.tray_id] == "never":
            for i in mine:
                _false_bill(counts, bills[i], t, sequence, "tray never reached the line")
        else:
            _score_tray(counts, t, [bills[i] for i in mine], sequence)
    return counts


def _bill_tray_iou(bills: Sequence[Bill], trays: Sequence[TrayRecord],
                   tray_boxes: Mapping[int, Mapping[int, Box]],
                   window: int) -> npt.NDArray[np.float64]:
    """``(n_bills, n_trays)`` IoU of each bill's tray box with each tray's box at closing."""
    iou = np.zeros((len(bills), len(trays)))
    for i, b in enumerate(bills):
        frame = b.frame_seq + 1
        for j, t in enumerate(trays):
            gt_box = _nearest_box(tray_boxes.get(t.tray_id, {}), frame, window)
            if gt_box is not None:
                iou[i, j] = box_iou([b.tray_box], [gt_box])[0, 0]
    return iou


def _false_bill(counts: BillCounts, bill: Bill, tray: TrayRecord | None, sequence: str,
                why: str) -> None:
    billed = _keys(bill)
    counts.false_bills += 1
    counts.item_fp += sum(billed.values())
    counts.extra.update(billed)
    counts.wrong.append({
        "sequence": sequence, "error": "false_bill", "why": why,
        "tray_id": None if tray is None else tray.tray_id,
        "checkout_frame": None if tray is None else tray.checkout_frame,
        "bill_ids": [bill.bill_id], "bill_frames": [bill.frame_seq + 1],
        "expected": [], "billed": _sorted_items(billed),
        "missed": {}, "extra": dict(billed), "tags": [] if tray is None else list(tray.tags),
    })


def _score_tray(counts: BillCounts, tray: TrayRecord, mine: list[Bill], sequence: str) -> None:
    expected = Counter(i.key for i in tray.items)
    billed = _keys(mine[0]) if mine else Counter()
    tp = expected & billed
    missed = expected - tp
    extra = billed - tp
    for dup in mine[1:]:
        extra.update(_keys(dup))
    counts.item_tp += sum(tp.values())
    counts.item_fn += sum(missed.values())
    counts.item_fp += sum(extra.values())
    counts.missed.update(missed)
    counts.extra.update(extra)
    counts.flagged += sum(1 for b in mine if b.review)
    if not mine:
        error = "missing"
        counts.missing += 1
    elif len(mine) > 1:
        error = "duplicate"
        counts.duplicated += 1
    elif missed or extra:
        error = "wrong_items"
        counts.wrong_items += 1
        counts.wrong_flagged += bool(mine[0].review)
    else:
        counts.exact += 1
        return
    counts.wrong.append({
        "sequence": sequence, "error": error, "why": "",
        "tray_id": tray.tray_id, "checkout_frame": tray.checkout_frame,
        "bill_ids": [b.bill_id for b in mine], "bill_frames": [b.frame_seq + 1 for b in mine],
        "expected": _sorted_items(expected), "billed": _sorted_items(billed),
        "missed": dict(missed), "extra": dict(extra), "tags": list(tray.tags),
        "review": sorted({r for b in mine for r in b.review}),
    })
