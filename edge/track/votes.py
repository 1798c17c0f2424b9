"""Class votes over a track's life.

A track's class is the confidence-weighted vote of every detection it
absorbed, not its latest detection's class: a dish seen clearly for a second
keeps its name when blur or a hand makes one frame look like its look-alike.
(Norfair's own ``label`` would instead split the track when the class flickers.)
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt


class ClassVotes:
    """Accumulates per-class scores for every live track.

    Parameters
    ----------
    num_classes : int
        Number of classes of the detector.
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self._votes: dict[int, npt.NDArray[np.float64]] = {}
        self._hits: dict[int, int] = {}

    def add(self, track_id: int, class_id: int, score: float) -> None:
        """Add one detection's vote (its score) for ``class_id``."""
        v = self._votes.get(track_id)
        if v is None:
            v = self._votes[track_id] = np.zeros(self.num_classes, np.float64)
        if 0 <= class_id < self.num_classes:
            v[class_id] += score
        self._hits[track_id] = self._hits.get(track_id, 0) + 1

    def hits(self, track_id: int) -> int:
        """Detections the track absorbed so far."""
        return self._hits.get(track_id, 0)

    def merge(self, from_id: int, to_id: int) -> None:
        """Move ``from_id``'s votes onto ``to_id`` (a track that got its final id)."""
        v = self._votes.pop(from_id, None)
        if v is None:
            return
        have = self._votes.get(to_id)
        self._votes[to_id] = v if have is None else have + v
        self._hits[to_id] = self._hits.get(to_id, 0) + self._hits.pop(from_id, 0)

    def winner(self, track_id: int) -> tuple[int, float]:
        """``(class_id, share of the vote)``; ``(-1, 0.0)`` for a track with no vote."""
        v = self._votes.get(track_id)
        if v is None or v.sum() <= 0:
            return -1, 0.0
        k = int(np.argmax(v))
        return k, float(v[k] / v.sum())

    def retain(self, live_ids: Iterable[int]) -> None:
        """Forget tracks that are no longer alive."""
        keep = set(live_ids)
        for tid in [t for t in self._votes if t not in keep]:
            del self._votes[tid]
            self._hits.pop(tid, None)

    def __len__(self) -> int:
        return len(self._votes)
