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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.track.views import ViewSet

CLEAREST_VIEWS = 5  # top scores kept per class and dish
RUNNER_UP_SHARE = 0.25  # above this share of the vote the clearest views decide
FIXED_TRAY_MOTION = 0.5  # box sizes a tray must slide under a detection to judge it fixed
FIXED_SHARE = 0.25  # ... which then moved less than this share of the tray's slide

Box = npt.NDArray[np.float64]
"""``(4,)`` float64 ``x1 y1 x2 y2``."""

Point = npt.NDArray[np.float64]
"""``(2,)`` float64 ``x y``, pixels."""

XY = tuple[float, float]
"""``x y``, pixels."""


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
    # hand cut up drift apart when the dish frame was unsure); None: rel_box.
    # With places recorded (billing.noise_guard) head_box is set at birth
    head_box: Box | None = None
    tail_box: Box | None = None
    # the stream's detected frames (its looks) at the first and the last matched
    # detection: how long the evidence lasted, whatever the detection rate
    first_look: int = 0
    last_look: int = 0
    # where its first and last matched detections were in the picture, and where
    # its tray's dish frame was then (None: never seen on a tray)
    seen_first: tuple[XY, XY] | None = None
    seen_last: tuple[XY, XY] | None = None
    # matched detections per picture cell and class (None: places not
    # recorded), what edge.track.spots reads
    cells: dict[tuple[int, int, int], int] | None = None
    # the longest span of one of the records merged into this one (0: not merged)
    piece_span: int = 0
    # (hits, spot-memory version, verdict) of the last spot check
    spot_verdict: tuple[int, int, bool] | None = None
    # a few diverse, sharp looks at it (None: none taken: no embeddings)
    views: ViewSet | None = None

    @property
    def span(self) -> int:
        """Frames from the first matched detection to the last, both included (0
        before the first): how long the evidence lasted."""
        return self.last_seq - self.first_seq + 1 if self.hits else 0

    @property
    def density(self) -> float:
        """Matched detections per detected frame from the first to the last (0-1):
        a dish in view is seen in most of them, false detections that recur at
        one place now and then in few."""
        return self.hits / (self.last_look - self.first_look + 1) if self.hits else 0.0


    @property
    def longest(self) -> int:
        """The longest :attr:`span` of one record merged into this one (its own
        span if none was)."""
        return self.piece_span or self.span

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

    def vote(self, cls: int, score: float, seq: int, look: int) -> None:
        """Count one matched detection of class ``cls`` (out-of-range classes add
        a hit but no vote) in frame ``seq``, the stream's ``look``-th detected frame."""
        if 0 <= cls < len(self.votes):
            self.votes[cls] += score * score
            self.add_best(cls, score)
        if self.hits == 0:
            self.first_look = look
        self.hits += 1
        self.last_seq = seq
        self.last_look = look

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
        self._merge_looks(other)
        self.votes += other.votes
        self.hits += other.hits
        self.first_seq = min(self.first_seq, other.first_seq)
        for cls, top in other.best.items():
            for score in top:
                self.add_best(cls, score)
        self._merge_views(other)

    def _merge_views(self, other: DishRecord) -> None:
        """Keep the best views of both (new sets: records copied for merging
        share theirs with the originals)."""
        if other.views is not None:
            self.views = (other.views.merged(None) if self.views is None
                          else self.views.merged(other.views))

    def absorb(self, other: DishRecord) -> None:
        """Add ``other``'s votes, hits, lifetime and clearest views (and take its
        place on the tray if it was seen more)."""
        if other.first_seq < self.first_seq:
            self.head_box = other.head().copy()
        if other.last_seq > self.last_seq:
            self.tail_box = other.tail().copy()
        if other.hits > self.hits:
            self.rel_box = other.rel_box.copy()
        self.piece_span = max(self.piece_span, other.longest)
        self._merge_looks(other)
        self.votes += other.votes
        self.hits += other.hits
        self.first_seq = min(self.first_seq, other.first_seq)
        self.last_seq = max(self.last_seq, other.last_seq)
        for cls, top in other.best.items():
            for score in top:
                self.add_best(cls, score)
        self._merge_views(other)

    def seen_at(self, picture: Sequence[float] | Point, origin: Sequence[float] | Point) -> None:
        """Record where this frame's matched detection was (centre, picture pixels)
        and where its tray's dish frame was."""
        here = ((float(picture[0]), float(picture[1])), (float(origin[0]), float(origin[1])))
        if self.seen_first is None:
            self.seen_first = here
        self.seen_last = here

    def seen_in(self, cell: tuple[int, int, int]) -> None:
        """Count this frame's matched detection: ``(column, row, class)`` of its
        picture cell."""
        if self.cells is None:
            self.cells = {}
        self.cells[cell] = self.cells.get(cell, 0) + 1

    def fixed_in_picture(self) -> bool:
        """Whether its detections stayed put in the picture while its tray slid
        under them (at least :data:`FIXED_TRAY_MOTION` box sizes): a spot where
        the detector fires on whatever passes (a logo, a reflection), not a
        dish on the tray."""
        if self.seen_first is None or self.seen_last is None:
            return False
        b = self.rel_box
        size = max(float(b[2] - b[0]), float(b[3] - b[1]), 1.0)
        (p0, o0), (p1, o1) = self.seen_first, self.seen_last
        tray = math.hypot(float(o1[0] - o0[0]), float(o1[1] - o0[1]))
        if tray < FIXED_TRAY_MOTION * size:
            return False
        return math.hypot(float(p1[0] - p0[0]), float(p1[1] - p0[1])) < FIXED_SHARE * tray

    def _merge_looks(self, other: DishRecord) -> None:
        if not other.hits:
            return
        if other.cells:
            cells = self.cells if self.cells is not None else {}
            for k, n in other.cells.items():
                cells[k] = cells.get(k, 0) + n
            self.cells = cells
        if not self.hits:
            self.first_look, self.last_look = other.first_look, other.last_look
            self.seen_first, self.seen_last = other.seen_first, other.seen_last
            return
        if other.first_look < self.first_look and other.seen_first is not None:
            self.seen_first = other.seen_first
        if other.last_look > self.last_look and other.seen_last is not None:
            self.seen_last = other.seen_last
        self.first_look = min(self.first_look, other.first_look)
        self.last_look = max(self.last_look, other.last_look)
