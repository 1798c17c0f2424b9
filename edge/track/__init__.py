"""Tracking stage: detections of one stream become tracks with stable ids.

Only this package imports Norfair. The tray-aware motion model and billing
(a later stage) plug in behind the same :class:`Tracker` protocol.
"""

from __future__ import annotations

from typing import Protocol

from edge.frames import Detections, Frame, Track


class Tracker(Protocol):
    """Per-stream tracker: synchronous, called once per frame in frame order."""

    def update(self, frame: Frame, detections: Detections | None) -> tuple[Track, ...]:
        """Advance one frame; ``detections`` is None when the frame was not detected."""
        ...

    @property
    def live_tracks(self) -> int:
        """Number of tracks alive now."""
        ...
