"""Fragment merging: the records of one dish become one (tracking stage, per tray).

A hand over a dish, blur, or a tray entering the picture can cut one dish's
track into several: a track that died under a hand and its successor at the
same place, a duplicate box of a look-alike class, a few askew detections
beside it (a ghost), a piece seen while the tray came in and its place on
the tray was unsure, a dish tracked loose before its tray was seen. Before a
tray's dishes are read (live bill, closing), :func:`merge_fragments` folds
such records into the oldest, so a dish counts once.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from edge.geometry import box_iou
from edge.track.evidence import DishRecord, centre

MERGE_IOU = 0.35  # fragments of one dish overlap this much in tray coordinates
FRAGMENT_DISTANCE = 1.5  # a same-class successor within this many dish sizes is a fragment
EARLY_FRAGMENT_SHARE = 0.4  # of a tray's width: how far an early fragment may sit
HANDOFF_OVERLAP = 4  # frames a same-class successor may overlap the track it continues
# (4: a dish frame slipped under a coffee, its old and new track both matched 4
# frames; with twins on 30 % of dishes the tuning grid bills as with 2)
HANDOVER_FRAMES = 5  # a loose track may outlive the tray track that took its dish over by this
GHOST_SHARE = 4  # a record with under a quarter of a same-class neighbour's hits ...
GHOST_DISTANCE = 1.5  # ... within this many dish sizes of it is that dish seen askew

Drift = Callable[[int], npt.NDArray[np.float64]]
"""``seq -> (2,)``: a tray's dishes' cumulative move on it by frame ``seq``."""


def merge_fragments(dishes: list[DishRecord], tray_width: float,
                    drift: Drift | None = None) -> list[DishRecord]:
    """Merge records of one dish, keeping the oldest id.

    Two records are one dish if they sit at the same place on the tray (IoU
    :data:`MERGE_IOU` in tray coordinates: a duplicate or a fragment), or if
    they vote for the same class, were detected in disjoint spans of frames
    (one ended before the other began: a track that died under a hand and its
    successor) and their centres are closer than the larger dish's size (a hand
    that covers part of a dish shifts its box). A record with few detections
    beside a same-class record seen far more is that dish too: within 1.5 dish
    sizes at any time (a ghost), or within :data:`EARLY_FRAGMENT_SHARE` of the
    tray's width if it ended before the other began (seen while the tray came
    in, cut by the picture's edge and blurred, when the dish frame was unsure).

    Parameters
    ----------
    dishes : list of DishRecord
        A tray's records (boxes in tray coordinates, pixels); not modified.
    tray_width : float
        The tray's width, pixels.
    drift : callable, optional
        ``seq -> (2,)``: how far the tray's dishes seen meanwhile had moved on
        it by frame ``seq`` (:attr:`edge.track.trays.Tray.drift`). A successor
        is then also measured from where its predecessor would be now, had it
        moved with them: a dish hidden while its tray's dish frame slipped
        reappears that far away.

    Returns
    -------
    list of DishRecord
        New records, one per dish, in order of their ids.
    """
    dishes = sorted(dishes, key=lambda r: r.gid)
    merged: list[DishRecord] = []
    for rec in dishes:
        target = None
        if merged:
            iou = box_iou(rec.rel_box[None], np.stack([m.rel_box for m in merged]))[0]
            j = int(iou.argmax())
            target = (merged[j] if iou[j] >= MERGE_IOU
                      else _successor_of(rec, merged, tray_width, drift))
        if target is None:
            target = DishRecord(rec.gid, np.zeros_like(rec.votes), 0, rec.first_seq,
                                rec.last_seq, rec.rel_box.copy(), rec.alive,
                                from_loose=rec.from_loose, head_box=rec.head().copy(),
                                tail_box=rec.tail().copy())
            merged.append(target)
        target.absorb(rec)
    return merged


def _successor_of(rec: DishRecord, merged: list[DishRecord], tray_width: float,
                  drift: Drift | None = None) -> DishRecord | None:
    """The record ``rec`` continues (same class, disjoint in time, closer than a
    dish's size) or is a ghost of (same class, a small fraction of its
    detections, within 1.5 sizes), if any."""
    if rec.votes.sum() <= 0:
        return None
    cls = rec.decide()[0]
    c = centre(rec.rel_box)
    best, out = math.inf, None
    for m in merged:
        if m.votes.sum() <= 0 or m.decide()[0] != cls:
            continue
        size = max(m.rel_box[2] - m.rel_box[0], m.rel_box[3] - m.rel_box[1],
                   rec.rel_box[2] - rec.rel_box[0], rec.rel_box[3] - rec.rel_box[1])
        d = float(np.linalg.norm(c - centre(m.rel_box)))
        after, before = m.last_seq < rec.first_seq, rec.last_seq < m.first_seq
        disjoint = after or before
        # a successor continues where the chain was last seen, not where it was seen most
        d_chain = (float(np.linalg.norm(centre(rec.head()) - centre(m.tail()))) if after
                   else float(np.linalg.norm(centre(rec.tail()) - centre(m.head()))) if before
                   else math.inf)
        if drift is not None and not disjoint:
            # (with the drift log) a track that took over from another of its
            # class up to HANDOFF_OVERLAP frames before that one ended: a dish
            # whose box a hand cut to a part of it, or whose dish frame slipped
            older, newer = (m, rec) if m.first_seq <= rec.first_seq else (rec, m)
            overlap = older.last_seq - newer.first_seq + 1
            if overlap <= HANDOFF_OVERLAP and newer.last_seq > older.last_seq:
                after, disjoint = older is m, True
                d_chain = float(np.linalg.norm(centre(newer.head()) - centre(older.tail())))
        if drift is not None and disjoint:
            older, newer = (m, rec) if after else (rec, m)
            slip = drift(newer.first_seq) - drift(older.last_seq)
            d_chain = min(d_chain, float(np.linalg.norm(
                centre(newer.head()) - centre(older.tail()) - slip)))
        few, many = (rec, m) if rec.hits < m.hits else (m, rec)
        # (a dish seen before its tray, adopted from the loose tracker, is no
        # ghost: the tray track that continued it took its votes)
        minor = few.hits * GHOST_SHARE < many.hits and not few.from_loose
        # a ghost: a few detections beside a dish of its class seen all along
        ghost = minor and d < GHOST_DISTANCE * size
        early = minor and few.last_seq < many.first_seq and d < EARLY_FRAGMENT_SHARE * tray_width
        # a dish seen before its tray, tracked loose until a tray track took it
        # over a few frames later (two trackers, two coordinate frames: no overlap)
        first, second = (m, rec) if m.first_seq < rec.first_seq else (rec, m)
        if (first.from_loose and not second.from_loose
                and 0 <= first.last_seq - second.first_seq <= HANDOVER_FRAMES):
            d_chain = float(np.linalg.norm(centre(first.tail()) - centre(second.head())))
            disjoint = True
        if disjoint and d_chain < FRAGMENT_DISTANCE * size and min(d, d_chain) < best:
            best, out = min(d, d_chain), m
        elif (ghost or early) and d < best:
            best, out = d, m
    return out


def since_switch(dishes: list[DishRecord], min_hits: int) -> list[DishRecord]:
    """A tray's dishes, less those of another tray its track carried before
    (``billing.noise_guard``). When none of the dishes seen up to some frame
    was seen after it and others were seen from then on, the track went
    over to the next tray there (the two overlapped while the first was
    missed): the dishes before are that other tray's, billed with the
    track it has since. A dish is counted here once seen ``min_hits`` times."""
    solid = [r for r in dishes if r.hits >= min_hits]
    for t in sorted({r.first_seq for r in solid}, reverse=True):
        if any(r.first_seq < t for r in solid) and all(
                r.last_seq < t for r in solid if r.first_seq < t):
            return [r for r in dishes if r.last_seq >= t]
    return dishes
