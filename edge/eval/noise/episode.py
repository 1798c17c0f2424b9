"""The state every noise axis works on, and the base class of an axis.

Part of :mod:`edge.eval.noise` (beside the pipeline, between ``detect`` and
``track``): an :class:`Episode` is a sequence, its indexed ground truth and
its detections (:mod:`edge.eval.tape`) as the axes change them; an
:class:`Axis` is one way a detector errs. The helpers here are what several
axes share: dish-sized boxes, placing a box inside another, checking a level.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from edge.catalogue import CATALOGUE, DISH_IDS, LOOKALIKE_PAIRS
from edge.eval.sequences import SequenceData
from edge.eval.tape import F64, MADE_UP, Tape, Truth
from edge.frames import Detections

POOL_MIN_SCORE = 0.3
"""Invented boxes draw their scores from the source's dish boxes at or above this
(the site's default threshold: a box below it never reaches the full system)."""
FALLBACK_SCORE = 0.45
"""Score of invented boxes when the source has no dish box above :data:`POOL_MIN_SCORE`."""

DISHES = np.asarray(DISH_IDS, np.int32)
PARTNER = np.full(len(CATALOGUE), -1, np.int32)
for _a, _b in LOOKALIKE_PAIRS:
    PARTNER[_a], PARTNER[_b] = _b, _a


@dataclass(frozen=True, slots=True)
class Episode:
    """A sequence and its detections as the axes change them.

    Attributes
    ----------
    seq : SequenceData
        The sequence; ``twins`` adds ground truth, some axes tag trays.
    truth : Truth
        ``seq``'s ground truth, indexed.
    tape : Tape
        The detections.
    score_pool : np.ndarray
        ``(k,)`` float32 scores invented boxes draw from.
    """

    seq: SequenceData
    truth: Truth
    tape: Tape
    score_pool: npt.NDArray[np.float32]

    @classmethod
    def start(cls, seq: SequenceData, tape: Tape,
              score_pool: npt.ArrayLike | None = None) -> Episode:
        """An episode of ``seq`` and ``tape``; the pool defaults to the tape's dish
        scores at or above :data:`POOL_MIN_SCORE`."""
        if score_pool is None:
            score_pool = tape.scores[np.isin(tape.classes, DISHES)
                                     & (tape.scores >= POOL_MIN_SCORE)]
        pool = np.asarray(score_pool, np.float32).reshape(-1)
        if not len(pool):
            pool = np.array([FALLBACK_SCORE], np.float32)
        return cls(seq, Truth(seq), tape, pool)

    def detections(self) -> dict[int, Detections]:
        """The tape as ``{frame: Detections}`` for the evaluator."""
        return self.tape.detections(self.seq.width, self.seq.height)

    def with_tape(self, tape: Tape) -> Episode:
        return replace(self, tape=tape)

    def invent(self, rng: np.random.Generator, frames: npt.ArrayLike, boxes: npt.ArrayLike,
                classes: npt.ArrayLike) -> Episode:
        """Add made-up boxes, scored from the pool."""
        f = np.asarray(frames, np.int64).reshape(-1)
        made = Tape.of(f, boxes, rng.choice(self.score_pool, len(f)), classes,
                       np.full(len(f), MADE_UP))
        return self.with_tape(self.tape.plus(made))

    def tagged(self, tray_ids: Iterable[int], tag: str) -> Episode:
        ids = set(tray_ids)
        if not ids or self.seq.trays is None:
            return self
        trays = [replace(t, tags=tuple(sorted({*t.tags, tag}))) if t.tray_id in ids else t
                 for t in self.seq.trays]
        return replace(self, seq=replace(self.seq, trays=trays))


def dish_sizes(truth: Truth, rng: np.random.Generator, n: int) -> F64:
    """``(n, 2)`` widths and heights of random ground-truth dish boxes, pixels."""
    rows = np.flatnonzero(truth.is_dish & (truth.visibility >= 0.5))
    if not len(rows):
        side = 0.08 * truth.width
        return np.full((n, 2), side)
    b = truth.boxes[rng.choice(rows, n)]
    return np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)


def place_inside(outer: F64, size: F64, u: F64) -> F64:
    """Top-left offsets of boxes of ``size`` placed at ``u`` (in [0, 1]^2) inside
    ``outer``'s width and height; centred where the box is the larger."""
    room = np.stack([outer[:, 2] - outer[:, 0], outer[:, 3] - outer[:, 1]], axis=1) - size
    return np.where(room >= 0, u * room, room / 2)


class Axis(ABC):
    """One way a detector errs, at one level.

    Subclasses are frozen dataclasses; ``name`` is the axis's key in
    :data:`AXES`, ``level_name`` the field that holds its level.
    """

    name: ClassVar[str]
    level_name: ClassVar[str]

    @property
    def level(self) -> float:
        """The axis's level parameter."""
        return float(getattr(self, self.level_name))

    @property
    def label(self) -> str:
        """``name=level``."""
        return f"{self.name}={self.level:g}"

    @abstractmethod
    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        """The episode with this noise added."""


def check_share(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a share in [0, 1], got {value}")
