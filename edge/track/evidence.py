"""Class evidence of one dish over its whole life (tracking stage, per tray).

A dish's class is never one detection's guess: every matched detection adds
its score squared to the dish's vote for its class (the clearest views count
most), and the few highest scores per class are kept. When a look-alike
holds a real share of the vote (blur and hands make a cappuccino look like a
latte for a while), the class whose clearest views scored higher decides.

:class:`DishRecord` is the lifetime record of one dish track on a tray (or
loose, on no tray): its evidence, its detections and its place in tray
coordinates. Records of one dish cut into fragments are merged by
:mod:`edge.track.fragments`; billing reads the outcome as
:class:`edge.frames.DishEvidence`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

CLEAREST_VIEWS = 5  # top scores kept per class and dish
RUNNER_UP_SHARE = 0.25  # above this share of the vote the clearest views decide

Box = npt.NDArray[np.float64]
"""``(4,)`` float64 ``x1 y1 x2 y2``."""


def centre(box: Box) -> npt.NDArray[np.float64]:
    """``(2,)`` centre of an ``x1 y1 x2 y2`` box."""
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


def shift4(d: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """A 2-D offset ``d`` as the ``(4,)`` offset of a box's two corners."""
    return np.array([d[0], d[1], d[0], d[1]])


@dataclass
class DishRecord:
    """Lifetime record of one dish track.

    Parameters
    ----------
    gid : int
        The dish's track id in its stream (0 until the track is initialised).
    votes : np.ndarray
        ``(n_classes,)`` sum of squared detection scores per class.
    hits : int
        Detections matched to the track.
    first_seq, last_seq : int
        Frames of its first and last matched detection.
    rel_box : np.ndarray
        ``(4,)`` its box in its tray's coordinates (in the picture when loose).
    """

    gid: int
    votes: npt.NDArray[np.float64]
    hits: int = 0
    first_seq: int = 0
    last_seq: int = 0
    rel_box: Box = field(default_factory=lambda: np.zeros(4))
    alive: bool = True
    adopted: bool = False  # a loose record already handed to a tray
    from_loose: bool = False  # a copy of a loose record (its place on the tray is rough)
    best: dict[int, list[float]] = field(default_factory=dict)  # class -> top scores
    # where a merged record was first and last seen (fragments of a dish that a
    # hand cut up drift apart when the dish frame was unsure); None: rel_box
    head_box: Box | None = None
    tail_box: Box | None = None

    def head(self) -> Box:
        """The box of this record's earliest fragment (its own box if unmerged)."""
        return self.rel_box if self.head_box is None else self.head_box

    def tail(self) -> Box:
        """The box of this record's latest fragment (its own box if unmerged)."""
        return self.rel_box if self.tail_box is None else self.tail_box

    def add_best(self, cls: int, score: float) -> None:
        """Keep the :data:`CLEAREST_VIEWS` highest scores of ``cls``."""
        top = self.best.setdefault(cls, [])
        top.append(score)
        if len(top) > CLEAREST_VIEWS:
            top.remove(min(top))

    def vote(self, cls: int, score: float, seq: int) -> None:
        """Count one matched detection of class ``cls`` (out-of-range classes add
        a hit but no vote) in frame ``seq``."""
        if 0 <= cls < len(self.votes):
            self.votes[cls] += score * score
            self.add_best(cls, score)
        self.hits += 1
        self.last_seq = seq

    def decide(self) -> tuple[int, float]:
        """``(class, share of the vote)``. When the runner-up holds at least
        :data:`RUNNER_UP_SHARE` of the vote (a look-alike pair under blur and
        hands), the class whose clearest views scored higher wins."""
        total = float(self.votes.sum())
        order = np.argsort(-self.votes)
        a = int(order[0])
        if len(order) > 1:
            b = int(order[1])
            if (self.votes[b] >= RUNNER_UP_SHARE * total and self.best.get(b)
                    and np.mean(self.best[b]) > np.mean(self.best.get(a, [0.0]))):
                a = b
        return a, (float(self.votes[a]) / total if total > 0 else 0.0)

    def take_votes(self, other: DishRecord) -> None:
        """Add ``other``'s votes, hits, first frame and clearest views (a track
        that continues ``other``)."""
        self.votes += other.votes
        self.hits += other.hits
        self.first_seq = min(self.first_seq, other.first_seq)
        for cls, top in other.best.items():
            for score in top:
                self.add_best(cls, score)

    def absorb(self, other: DishRecord) -> None:
        """Add ``other``'s votes, hits, lifetime and clearest views (and take its
        place on the tray if it was seen more)."""
        if other.first_seq < self.first_seq:
            self.head_box = other.head().copy()
        if other.last_seq > self.last_seq:
            self.tail_box = other.tail().copy()
        if other.hits > self.hits:
            self.rel_box = other.rel_box.copy()
        self.votes += other.votes
        self.hits += other.hits
        self.first_seq = min(self.first_seq, other.first_seq)
        self.last_seq = max(self.last_seq, other.last_seq)
        for cls, top in other.best.items():
            for score in top:
                self.add_best(cls, score)
