"""Noise axes that invent false boxes (part of :mod:`edge.eval.noise`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edge.eval.noise.episode import DISHES, Axis, Episode, check_share, dish_sizes, place_inside
from edge.eval.tape import Truth

HAND_GAP = 2
"""Frames of visibility inside one hand event that do not split it."""


@dataclass(frozen=True, slots=True)
class Bursts(Axis):
    """Short false-positive bursts.

    ``rate`` is the invented boxes' share of the ground-truth objects at least
    half visible (for the perfect detector, of its detections): each frame
    starts ``Binomial(n, rate / mean length)`` bursts, ``n`` being those
    objects in the frame. A burst lasts 1-3 frames (``frames``, uniform), has a
    random dish class, a random ground-truth dish box's size and a score from
    the pool per frame. With ``inside_trays`` it lies wholly inside a random
    tray in view (none in view: no burst) and moves with that tray, keeping its
    offset from the tray box's corner --
    the phantom hardest to tell from a dish; otherwise it lies anywhere in the
    picture and stays put.
    """

    rate: float
    frames: tuple[int, int] = (1, 3)
    name: ClassVar[str] = "bursts"
    level_name: ClassVar[str] = "rate"
    inside_trays: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_share(f"{self.name} rate", self.rate)

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        t = ep.truth
        n = t.n_frames
        seen = np.bincount(t.frame[t.visibility >= 0.5], minlength=n + 1)[1:n + 1]
        mean_length = (self.frames[0] + self.frames[1]) / 2
        first = np.repeat(np.arange(1, n + 1), rng.binomial(seen, self.rate / mean_length))
        k = len(first)
        length = rng.integers(self.frames[0], self.frames[1] + 1, k)
        classes = rng.choice(DISHES, k)
        size = dish_sizes(t, rng, k)
        u, pick = rng.random((k, 2)), rng.random(k)
        trays_at: dict[int, list[int]] = {}
        for r in np.flatnonzero(t.is_tray):
            trays_at.setdefault(int(t.frame[r]), []).append(int(r))
        frames: list[int] = []
        boxes: list[list[float]] = []
        cls: list[int] = []
        for i, f in enumerate(first.tolist()):
            if self.inside_trays:
                here = trays_at.get(f)
                if not here:
                    continue
                row = here[int(pick[i] * len(here))]
                tray = int(t.track_id[row])
                corner = place_inside(t.boxes[[row]], size[[i]], u[[i]])[0]
                for j in range(int(length[i])):
                    tb = t.box(tray, f + j)
                    if tb is None:
                        break
                    frames.append(f + j)
                    boxes.append([*(tb[:2] + corner), *(tb[:2] + corner + size[i])])
                    cls.append(classes[i])
            else:
                xy = u[i] * (np.array([t.width, t.height]) - size[i])
                for j in range(int(length[i])):
                    if f + j <= n:
                        frames.append(f + j)
                        boxes.append([*xy, *(xy + size[i])])
                        cls.append(classes[i])
        return ep.invent(rng, frames, boxes, cls)


@dataclass(frozen=True, slots=True)
class BurstsAnywhere(Bursts):
    """:class:`Bursts` anywhere in the picture, each staying put for its 1-3 frames."""

    name: ClassVar[str] = "bursts_anywhere"
    inside_trays: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class FixedSpots(Axis):
    """False positives fixed in the picture: ``count`` spots where the detector
    fires a dish whatever passes over them (a logo, a reflection).

    Each spot's centre is a uniform point inside a random ground-truth tray box
    of the sequence (so trays pass over it), its size a random dish box's,
    its class a random dish class; it fires in each frame with its own
    probability, uniform in ``fire`` (0.2-0.5), with a score from the pool.
    The box never moves (only :class:`Shakes` moves it with the picture).
    """

    count: int
    fire: tuple[float, float] = (0.2, 0.5)
    name: ClassVar[str] = "fixed_spots"
    level_name: ClassVar[str] = "count"

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"fixed_spots count must be >= 0, got {self.count}")

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        t = ep.truth
        trays = np.flatnonzero(t.is_tray)
        if not self.count or not len(trays):
            return ep
        where = t.boxes[rng.choice(trays, self.count)]
        centre = where[:, :2] + rng.random((self.count, 2)) * (where[:, 2:] - where[:, :2])
        size = dish_sizes(t, rng, self.count)
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
        classes = rng.choice(DISHES, self.count)
        p = rng.uniform(*self.fire, self.count)
        spot, frame = np.nonzero(rng.random((self.count, t.n_frames)) < p[:, None])
        return ep.invent(rng, frame + 1, boxes[spot], classes[spot])


def hand_events(truth: Truth) -> list[tuple[int, int, int]]:
    """The simulator's occluding hands as ``(dish id, first frame, last frame)``.

    A stretch of frames in which a dish on a tray is less than half visible
    while its box lies wholly inside the picture (gaps of up to
    :data:`HAND_GAP` frames joined). See the module docstring for why.
    """
    b = truth.boxes
    under = (truth.is_dish & (truth.visibility < 0.5) & (b[:, 0] > 0.5) & (b[:, 1] > 0.5)
             & (b[:, 2] < truth.width - 0.5) & (b[:, 3] < truth.height - 0.5))
    out = []
    for dish in sorted({int(d) for d in truth.track_id[under]} & set(truth.tray_of)):
        frames = np.sort(truth.frame[under & (truth.track_id == dish)])
        cuts = np.flatnonzero(np.diff(frames) > HAND_GAP + 1) + 1
        out += [(dish, int(run[0]), int(run[-1])) for run in np.split(frames, cuts)]
    return out


@dataclass(frozen=True, slots=True)
class HandCarried(Axis):
    """False dishes that move with a hand: on ``share`` of the hand events
    (:func:`hand_events`), a false dish box travels across the tray for the
    whole event.

    It starts on the covered dish and glides (smoothstep) to a uniform point
    inside the tray box, in tray coordinates (offset from the tray box's
    corner), with a small wobble (3 % of the tray's size), while the tray
    moves under it; random dish class, random dish box size, one score from
    the pool per frame. Hands are not in the ground truth, so this is where a
    hand holding something would be, not where a rendered hand is.
    """

    share: float
    name: ClassVar[str] = "hand_carried"
    level_name: ClassVar[str] = "share"

    def __post_init__(self) -> None:
        check_share("hand_carried share", self.share)

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        t = ep.truth
        frames, boxes, cls, hit = [], [], [], []
        for dish, first, last in hand_events(t):
            draw, c, u, phase = rng.random(), rng.choice(DISHES), rng.random(2), rng.random()
            size = dish_sizes(t, rng, 1)[0]
            tray = t.tray_of[dish]
            tb0, db0 = t.box(tray, first), t.box(dish, first)
            if draw >= self.share or tb0 is None or db0 is None:
                continue
            tray_size = tb0[2:] - tb0[:2]
            start = (db0[:2] + db0[2:]) / 2 - tb0[:2]
            end = u * tray_size
            for f in range(first, last + 1):
                tb = t.box(tray, f)
                if tb is None:
                    continue
                s = (f - first) / max(last - first, 1)
                s = s * s * (3 - 2 * s)
                wobble = 0.03 * tray_size * np.sin(2 * np.pi * (phase + f / 10 + np.array(
                    [0.0, 0.25])))
                centre = tb[:2] + start + (end - start) * s + wobble
                frames.append(f)
                boxes.append([*(centre - size / 2), *(centre + size / 2)])
                cls.append(c)
            hit.append(tray)
        return ep.invent(rng, frames, boxes, cls).tagged(hit, "noise_hand_carried")
