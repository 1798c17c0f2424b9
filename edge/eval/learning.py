"""Learning on the job, measured: one service over many sequences, a scripted cashier.

``dishtracker eval learning`` (:mod:`edge.eval.cli_learning`) plays simulator
sequences in order as **one service**: one journal, one example index, one
:class:`~edge.learn.openset.Learner` carry over from sequence to sequence
(each sequence is its own stream and tracker, as after a camera restart). The
full system bills; a **scripted cashier** who knows the ground truth reviews
every closed bill at once and corrects a wrong one through the journal's
correction path, the same as ``POST /api/bills/{id}/corrections``
(:meth:`edge.billing.journal.Journal.add_correction`), one action per changed,
added or removed line (a bill for no tray, or a second bill for one tray, is
voided). The examples the corrections make are read back and put into the
index as the daemon does (:mod:`edge.learn.service`), so the next tray
benefits.

The cashier matches a bill to its tray by the tray's box at closing (as
:mod:`edge.eval.bills`), and the bill's lines to the tray's dishes by their
boxes in that frame (``Bill.line_boxes``), then by dish, so a correction
teaches the views of the right dish.

Counted per tray that should have been billed (``expected``, as
:mod:`edge.eval.bills` defines it): exact or not at its checkout, and how
many corrections each new dish (a menu entry the model has no class for)
had received by then.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from edge.billing.biller import make_biller
from edge.billing.corrections import parse_correction
from edge.billing.journal import Journal
from edge.billing.model import Bill
from edge.config import SiteConfig
from edge.eval.bills import BOX_SEARCH_S, END_GRACE_S, MIN_BILL_IOU, _nearest_box
from edge.eval.sequences import SequenceData, video_frames
from edge.eval.tracking import above_score, frame_time_base, stream_for, tray_boxes
from edge.frames import Detections, Frame
from edge.geometry import box_iou
from edge.groundtruth import TrayRecord
from edge.learn.examples import ExampleIndex
from edge.learn.openset import Learner
from edge.learn.service import to_example

Box = tuple[float, float, float, float]
DetectionsFor = Callable[[SequenceData], Iterable[tuple[np.ndarray, Detections | None]]]
"""Yields, per frame of a sequence in order, the decoded image and its detections."""

WINDOW_S = 300.0
"""Service time per window of exact match (5 minutes)."""
MIN_LINE_IOU = 0.2
"""A bill line's box must overlap its dish's ground-truth box this much."""
MODEL_ID = "eval"
"""The registry id the evaluation's bills and examples carry."""


@dataclass(slots=True)
class TrayOutcome:
    """One tray that should have been billed."""

    sequence: str
    tray_id: int
    at_s: float  # service time of its checkout
    exact: bool
    keys: tuple[str, ...]  # its dishes
    new: dict[str, int]  # its new dishes -> corrections of that dish before its bill


@dataclass(slots=True)
class NewDishSight:
    """A new dish on a closed bill before any correction taught it."""

    dish: str
    flagged: bool  # its line is unknown or needs review
    billed_as: str | None  # the key of its line (None: no line)


@dataclass(slots=True)
class Service:
    """The state one evaluation carries over its sequences."""

    site: SiteConfig
    class_names: tuple[str, ...]
    journal: Journal
    new_keys: frozenset[str]
    learner: Learner | None  # None: learning off (the detector names every line)
    corrections: Counter[str] = field(default_factory=Counter)  # per new dish
    actions: int = 0
    clock_s: float = 0.0
    trays: list[TrayOutcome] = field(default_factory=list)
    sights: list[NewDishSight] = field(default_factory=list)
    bills: int = 0
    voided: int = 0
    stamps: dict[str, dict[str, int]] = field(default_factory=dict)  # bill -> corrections then
    played: int = 0  # sequences played so far (bill ids stay unique when one repeats)


def play(service: Service, seq: SequenceData, frames: Iterable[tuple[np.ndarray,
                                                                     Detections | None]],
         *, progress: bool | None = None) -> None:
    """Bill ``seq`` with the service's learner; the cashier corrects each bill at once."""
    stream = stream_for(seq)
    namer = service.learner.name if service.learner is not None else None
    biller = make_biller(stream, service.site, service.class_names, seq.width, seq.height,
                         run_id=f"{service.played}.{seq.name}", clock_offset=service.clock_s,
                         snapshots=False,
                         namer=namer)
    # snapshots off: no photo, but the views and line boxes are what teach
    trays = list(seq.trays or ())
    cashier = SequenceTruth.of(seq)
    time_base = frame_time_base(seq.fps)
    min_score = service.site.detector.score_threshold
    with tqdm(total=seq.n_frames, desc=f"learn {seq.name}", unit="frame",
              disable=None if progress is None else not progress) as bar:
        for k, (image, det) in enumerate(frames, 1):
            frame = Frame(stream.id, k - 1, image, (k - 1) / seq.fps, k - 1, time_base)
            step = biller.update(frame, above_score(det, min_score))
            for bill in step.closed:
                _review(service, cashier, dataclasses.replace(bill, model_id=MODEL_ID))
            bar.update(1)
            if k >= seq.n_frames:
                break
    grace = round(END_GRACE_S * seq.fps)
    for t in trays:
        if t.checkout_frame is None or t.checkout_frame > seq.n_frames - grace:
            continue
        mine = cashier.billed.get(t.tray_id, [])
        keys = tuple(sorted(i.key for i in t.items))
        exact = (len(mine) == 1
                 and Counter(i.key for i in mine[0].items) == Counter(keys))
        at = service.clock_s + (t.checkout_frame - 1) / seq.fps
        new = _corrections_at(service, mine, keys)
        service.trays.append(TrayOutcome(seq.name, t.tray_id, at, exact, keys, new))
    service.clock_s += seq.n_frames / seq.fps
    service.played += 1


def _corrections_at(service: Service, mine: list[Bill], keys: Sequence[str]) -> dict[str, int]:
    """Corrections each new dish of the tray had when its bill closed (now, for
    a tray never billed)."""
    counts = service.stamps.get(mine[0].bill_id) if mine else None
    if counts is None:
        counts = dict(service.corrections)
    return {k: counts.get(k, 0) for k in keys if k in service.new_keys}


@dataclass(slots=True)
class SequenceTruth:
    """What the cashier knows of the sequence being played: its trays, their
    boxes per frame, and the bills each tray got so far."""

    seq: SequenceData
    trays: list[TrayRecord]
    boxes: Mapping[int, Mapping[int, Box]]
    billed: dict[int, list[Bill]] = field(default_factory=dict)  # tray id -> its bills

    @classmethod
    def of(cls, seq: SequenceData) -> SequenceTruth:
        """The truth of ``seq`` (its ``trays`` and ``gt``), nothing billed yet."""
        trays = list(seq.trays or ())
        return cls(seq, trays, tray_boxes(seq, [t.tray_id for t in trays]))

    def tray_of(self, bill: Bill) -> TrayRecord | None:
        """The tray whose box overlaps the bill's best at closing."""
        frame = bill.frame_seq + 1
        window = round(BOX_SEARCH_S * self.seq.fps)
        best, best_iou = None, MIN_BILL_IOU
        for t in self.trays:
            gt_box = _nearest_box(self.boxes.get(t.tray_id, {}), frame, window)
            if gt_box is not None:
                iou = float(box_iou([bill.tray_box], [gt_box])[0, 0])
                if iou >= best_iou:
                    best, best_iou = t, iou
        return best


def _review(service: Service, play_: SequenceTruth, bill: Bill) -> None:
    """Journal ``bill`` and correct it as a cashier who knows the ground truth."""
    service.journal.commit(bill)
    service.bills += 1
    tray = play_.tray_of(bill)
    if tray is None or tray.tray_id in play_.billed:  # a phantom tray, or a second bill
        if tray is not None:
            play_.billed[tray.tray_id].append(bill)
        _act(service, bill.bill_id, {"action": "void", "reason": "no such tray"})
        service.voided += 1
        return
    stamped = dict(service.corrections)
    play_.billed[tray.tray_id] = [bill]
    service.stamps[bill.bill_id] = stamped
    pairs = match_lines(play_.seq, bill, tray)
    expected = {d.dish_id: d.key for d in tray.items}
    for dish_id, key in expected.items():  # new dishes no correction has taught yet
        if key in service.new_keys and stamped.get(key, 0) == 0:
            line = pairs.get(dish_id)
            item = None if line is None else bill.items[line]
            service.sights.append(NewDishSight(
                key, item is not None and (item.unknown or item.needs_review),
                None if item is None else item.key))
    _correct(service, bill, pairs, expected)
    if service.learner is not None:  # as edge.learn.service does after a correction
        rows = service.journal.examples_of_bill(bill.bill_id)
        service.learner.index.update(add=[to_example(r) for r in rows if not r.removed],
                                     remove=[r.uid for r in rows if r.removed])


def _correct(service: Service, bill: Bill, pairs: Mapping[int, int | None],
             expected: Mapping[int, str]) -> None:
    """One action per changed, removed and added line."""
    for body in cashier_actions(bill, pairs, expected):
        _act(service, bill.bill_id, body)
        if body["action"] in ("change", "add"):
            _count(service, body["class_key"])


def cashier_actions(bill: Bill, pairs: Mapping[int, int | None],
                    expected: Mapping[int, str]) -> list[dict[str, Any]]:
    """The corrections (bodies of ``POST /api/bills/{id}/corrections``) that make
    ``bill`` right: one ``change`` per paired line of another dish, one
    ``remove`` per line paired with no dish, one ``add`` per dish without a line.

    Parameters
    ----------
    pairs : mapping
        ``{dish_id: line or None}`` (:func:`match_lines`).
    expected : mapping
        ``{dish_id: menu key}`` of the tray's dishes.
    """
    out: list[dict[str, Any]] = []
    for dish_id, line in pairs.items():
        if line is not None and bill.items[line].key != expected[dish_id]:
            out.append({"action": "change", "line": line, "class_key": expected[dish_id]})
    matched = {ln for ln in pairs.values() if ln is not None}
    out += [{"action": "remove", "line": line} for line in range(len(bill.items))
            if line not in matched]
    out += [{"action": "add", "class_key": key} for dish_id, key in expected.items()
            if pairs.get(dish_id) is None]
    return out


def _count(service: Service, key: str) -> None:
    if key in service.new_keys:
        service.corrections[key] += 1


def _act(service: Service, bill_id: str, body: dict[str, Any]) -> None:
    menu = service.site.menu
    assert service.journal.add_correction(bill_id, parse_correction(body), menu,
                                          actor="scripted-cashier") is not None
    service.actions += 1


def match_lines(seq: SequenceData, bill: Bill, tray: TrayRecord) -> dict[int, int | None]:
    """``{dish_id: line or None}`` for the tray's dishes: by box overlap at the
    closing frame (``bill.frame_seq``, 0-based; ``bill.line_boxes``), then the
    lines left by key, then a wrong line left to the nearest dish left."""
    frame = bill.frame_seq + 1
    window = round(BOX_SEARCH_S * seq.fps)
    dishes = list(tray.items)
    gt: dict[int, Box] = {}
    for d in dishes:
        rows = {f: (r.x, r.y, r.x + r.w, r.y + r.h)
                for f in range(frame - window, frame + window + 1)
                for r in seq.gt.get(f, ()) if r.track_id == d.dish_id}
        b = _nearest_box(rows, frame, window)
        if b is not None:
            gt[d.dish_id] = b
    out: dict[int, int | None] = {d.dish_id: None for d in dishes}
    lines = [i for i, b in enumerate(bill.line_boxes) if b is not None]
    ids = [d.dish_id for d in dishes if d.dish_id in gt]
    used: set[int] = set()
    if lines and ids:
        iou = box_iou(np.array([bill.line_boxes[i] for i in lines], np.float64),
                      np.array([gt[i] for i in ids], np.float64))
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols, strict=True):
            if iou[r, c] >= MIN_LINE_IOU:
                out[ids[c]] = lines[r]
                used.add(lines[r])
    for d in dishes:  # the rest by key: a line out of view names its dish
        if out[d.dish_id] is None:
            for i, item in enumerate(bill.items):
                if i not in used and item.key == d.key:
                    out[d.dish_id] = i
                    used.add(i)
                    break
    # a wrong line the boxes did not pair (out of view, or its box drifted) is the
    # nearest dish left: a cashier changes it rather than removing it and adding one
    left = [d for d in dishes if out[d.dish_id] is None]
    spare = [i for i in range(len(bill.items)) if i not in used]
    while left and spare:
        d, i = min(((d, i) for d in left for i in spare),
                   key=lambda di: _gap(gt.get(di[0].dish_id), bill.line_boxes[di[1]]))
        if _gap(gt.get(d.dish_id), bill.line_boxes[i]) > MAX_GAP and (len(left) > 1
                                                                      or len(spare) > 1):
            break
        out[d.dish_id] = i
        left.remove(d)
        spare.remove(i)
    return out


MAX_GAP = 1.5
"""A leftover line pairs with a leftover dish whose box centre is at most this
many of the dish's sizes away (or when each is the only one left)."""


def _gap(a: Box | None, b: Box | None) -> float:
    """Distance of two boxes' centres in units of ``a``'s size (inf: one unseen)."""
    if a is None or b is None:
        return float("inf")
    size = max(a[2] - a[0], a[3] - a[1], 1.0)
    return float(np.hypot((a[0] + a[2] - b[0] - b[2]) / 2, (a[1] + a[3] - b[1] - b[3]) / 2)
                 / size)


def summary(service: Service, *, after: int = 5) -> dict[str, Any]:
    """The report's figures (see :mod:`edge.eval.cli_learning`)."""
    trays = service.trays

    def rate(pred: Callable[[TrayOutcome], bool]) -> tuple[float | None, int]:
        chosen = [t for t in trays if pred(t)]
        return (sum(t.exact for t in chosen) / len(chosen) if chosen else None), len(chosen)

    def taught(n: int) -> Callable[[TrayOutcome], bool]:
        return lambda t: all(c >= n for c in t.new.values())

    exact, n_exact = rate(taught(after))
    exact1, n_exact1 = rate(taught(1))
    known, n_known = rate(lambda t: not t.new)
    overall, n_all = rate(lambda t: True)
    sights = service.sights
    windows = []
    if trays:
        last = max(t.at_s for t in trays)
        for w in range(int(last // WINDOW_S) + 1):
            inside = [t for t in trays if w * WINDOW_S <= t.at_s < (w + 1) * WINDOW_S]
            if inside:
                windows.append({"start_s": w * WINDOW_S, "trays": len(inside),
                                "exact_match": sum(t.exact for t in inside) / len(inside)})
    unknown_seen = [s for s in sights if s.billed_as is not None]
    return {
        "exact_match": exact, "exact_match_trays": n_exact, "after_corrections": after,
        "exact_match_after_1": exact1, "exact_match_after_1_trays": n_exact1,
        "exact_match_known_only": known, "known_only_trays": n_known,
        "exact_match_all": overall, "trays": n_all,
        "unknown_flag_rate": (sum(s.flagged for s in sights) / len(sights)) if sights else None,
        "unknown_false_accept": (sum(not s.flagged for s in unknown_seen) / len(sights)
                                 if sights else None),
        "unknown_sightings": len(sights),
        "unknown_missed_entirely": sum(s.billed_as is None for s in sights),
        "corrections_per_new_dish": dict(sorted(service.corrections.items())),
        "cashier_actions": service.actions, "bills": service.bills, "voided": service.voided,
        "windows": windows,
        "wrong_by_dish": dict(Counter(k for t in trays if not t.exact and taught(after)(t)
                                      for k in set(t.keys)).most_common()),
        "wrong": [dataclasses.asdict(t) for t in trays if not t.exact][:50],
    }


def open_journal(path: Path) -> Journal:
    """A fresh journal for one evaluation (an old file at ``path`` is replaced)."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return Journal(path)


def learner_for(site: SiteConfig, bank: Any | None, class_names: Sequence[str]) -> Learner:
    """The learner one evaluation uses (examples of :data:`MODEL_ID`)."""
    learner = Learner(site.learning, ExampleIndex(site.learning.examples_per_class))
    learner.use_model(MODEL_ID, bank, tuple(class_names))
    return learner


def decoded(seq: SequenceData, detections: Iterable[Detections | None]
            ) -> Iterable[tuple[np.ndarray, Detections | None]]:
    """Pair the decoded frames of ``seq`` with ``detections`` (one per frame)."""
    return zip(video_frames(seq), detections, strict=False)
