"""Spot memory: places in the picture where the detector fires on its own
(tracking stage, ``billing.noise_guard``).

A logo on the counter, a reflection or the edge of a dispenser makes a
detector fire a dish at one place in the picture, in a share of the frames,
all day, whatever passes over it. While a tray slides under such a spot the
tray's dish frame shows it (:meth:`DishRecord.fixed_in_picture`); while a
tray *stands* under it, nothing in that tray's own evidence can: the false
dish sits still on the tray like a real one. What gives it away is the
spot's past: it also fired when no tray was under it.

:class:`SpotMemory` learns spots from the detections on no tray (loose
detections): a place where they recur, at one box size, over
:data:`SPOT_SPAN` frames and at least :data:`SPOT_HITS` times is a spot. A
real dish is loose only while its tray is undetected, and then it moves with
its tray; one that lies still on no tray is never billed anyway.

A dish's detections at a spot are no evidence of the dish
(:func:`off_spot_hits`): a dish on a tray standing over a spot is still seen
elsewhere while its tray arrives and leaves, the spot never is.

Every dish record counts its matched detections per picture cell of
:data:`CELL_PX` (``DishRecord.cells``), so a spot learnt after a dish was seen
still discounts the dish's earlier detections.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge.track.evidence import DishRecord

CELL_PX = 8  # picture cells in which a dish's detections are counted, pixels
SPOT_HITS = 6  # loose detections at one place before it is a spot ...
SPOT_SPAN = 40  # ... spread over at least this many frames (a still tray lost for a
# few frames leaves its dishes loose at one place, but not for 2 s)
SPOT_RADIUS = 0.25  # a detection is at a spot within this share of the spot's size ...
SPOT_RADIUS_MIN_PX = 8.0  # ... or this many pixels (whole-picture shakes move it)
SPOT_SIZE_RATIO = 1.5  # and with a box no more than this factor larger or smaller
FORGET_FRAMES = 6000  # a place not fired at for this long is forgotten (5 min at 20 fps)
MAX_PLACES = 256  # places remembered (the least recently fired candidates go first)
SPOT_OFF_SHARE = 0.1  # a dish needs this share of its detections away from spots ...
# ... and at least this many (a spot's track takes a few look-alike detections of
# a real dish passing under it: 3 of 14 in a case on the tuning grid's point b)
SPOT_OFF_HITS = 5


class SpotMemory:
    """The spots of one stream's picture, learnt from its loose detections."""

    def __init__(self) -> None:
        self.centre = np.zeros((0, 2))
        self.size = np.zeros(0)
        self.hits = np.zeros(0, np.int64)
        self.first = np.zeros(0, np.int64)
        self.last = np.zeros(0, np.int64)
        self._spots: npt.NDArray[np.bool_] = np.zeros(0, bool)
        self.version = 0  # counts the changes of which places are spots

    def learn(self, rec: DishRecord) -> None:
        """Count the detections of a loose dish whose track ended without a tray
        found under it, if they all lay at one place: a dish on a tray not yet
        detected passes through, or its tray is found under it (a tray standing
        at the picture's edge), a spot stays."""
        if not rec.cells or rec.adopted:
            return
        keys = np.array(list(rec.cells), np.float64)[:, :2]
        n = np.array(list(rec.cells.values()), np.float64)
        points = (keys + 0.5) * CELL_PX
        c = (points * n[:, None]).sum(axis=0) / n.sum()
        s = max(float(rec.rel_box[2] - rec.rel_box[0]), float(rec.rel_box[3] - rec.rel_box[1]),
                1.0)
        if np.linalg.norm(points - c, axis=1).max() > _radius(s) + CELL_PX:
            return  # it moved
        j = self._place(c, s)
        if j is None:
            self._add(c, s, rec)
        else:
            w = min(float(self.hits[j]), 20.0)  # a running mean that settles
            self.centre[j] += (c - self.centre[j]) * rec.hits / (w + rec.hits)
            self.size[j] += (s - self.size[j]) * rec.hits / (w + rec.hits)
            self.hits[j] += rec.hits
            self.first[j] = min(int(self.first[j]), rec.first_seq)
            self.last[j] = max(int(self.last[j]), rec.last_seq)
        self._forget(rec.last_seq)
        spots = (self.hits >= SPOT_HITS) & (self.last - self.first >= SPOT_SPAN)
        if len(spots) != len(self._spots) or (spots != self._spots).any():
            self.version += 1
        self._spots = spots

    @property
    def n_spots(self) -> int:
        """Places that are spots now."""
        return int(self._spots.sum())

    def covers(self, points: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
        """``(n,)`` whether each of ``points`` (``(n, 2)``, picture pixels) lies at a spot."""
        if not self._spots.any() or not len(points):
            return np.zeros(len(points), bool)
        centre, size = self.centre[self._spots], self.size[self._spots]
        d = np.linalg.norm(points[:, None, :] - centre[None], axis=2)
        near: npt.NDArray[np.bool_] = (d <= _radius(size)[None]).any(axis=1)
        return near

    def _place(self, c: npt.NDArray[np.float64], s: float) -> int | None:
        if not len(self.size):
            return None
        d = np.linalg.norm(self.centre - c, axis=1)
        ok = ((d <= _radius(self.size))
              & (self.size <= SPOT_SIZE_RATIO * s) & (s <= SPOT_SIZE_RATIO * self.size))
        if not ok.any():
            return None
        return int(np.flatnonzero(ok)[np.argmin(d[ok])])

    def _add(self, c: npt.NDArray[np.float64], s: float, rec: DishRecord) -> None:
        self.centre = np.vstack([self.centre, c])
        self.size = np.append(self.size, s)
        self.hits = np.append(self.hits, rec.hits)
        self.first = np.append(self.first, rec.first_seq)
        self.last = np.append(self.last, rec.last_seq)

    def _forget(self, seq: int) -> None:
        keep = self.last >= seq - FORGET_FRAMES
        if keep.sum() > MAX_PLACES:  # the spots first, then the most recently fired
            spot = (self.hits >= SPOT_HITS) & (self.last - self.first >= SPOT_SPAN)
            rank = np.lexsort((-self.last, ~spot))  # spots first, recent first
            keep[:] = False
            keep[rank[:MAX_PLACES]] = True
        if not keep.all():
            self.centre, self.size = self.centre[keep], self.size[keep]
            self.hits, self.first, self.last = self.hits[keep], self.first[keep], self.last[keep]


def _radius(size: npt.ArrayLike) -> npt.NDArray[np.float64]:
    return np.maximum(SPOT_RADIUS * np.asarray(size, np.float64), SPOT_RADIUS_MIN_PX)


def cell_of(picture: Sequence[float] | npt.NDArray[np.float64], cls: int) -> tuple[int, int, int]:
    """The :data:`CELL_PX` cell of a picture point, and a detection's class there."""
    return int(picture[0] // CELL_PX), int(picture[1] // CELL_PX), int(cls)


def off_spot_hits(rec: DishRecord, memory: SpotMemory, cls: int | None = None) -> int:
    """``rec``'s matched detections (of class ``cls`` only, if given) that were not
    at a spot (all of them when its places were not recorded)."""
    if not rec.cells:
        return rec.hits
    keys = list(rec.cells)
    at = memory.covers((np.array(keys, np.float64)[:, :2] + 0.5) * CELL_PX)
    return sum(rec.cells[k] for k, on in zip(keys, at, strict=True)
               if not on and (cls is None or k[2] == cls))


def at_spots(rec: DishRecord, memory: SpotMemory, min_hits: int) -> bool:
    """Whether ``rec`` was seen as its class mostly at spots: fewer than
    ``min_hits``, :data:`SPOT_OFF_HITS` or :data:`SPOT_OFF_SHARE` of its
    detections of that class elsewhere. Other classes elsewhere are no evidence: a dish on a tray
    passing under a spot lends the spot's track a few detections of its own."""
    if not rec.cells or not memory.n_spots:
        return False
    cls = rec.decide()[0]
    own = sum(n for k, n in rec.cells.items() if k[2] == cls)
    off = off_spot_hits(rec, memory, cls)
    return off < own and off < max(min_hits, SPOT_OFF_HITS, SPOT_OFF_SHARE * own)
