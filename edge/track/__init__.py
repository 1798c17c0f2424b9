"""Tracking stage: detections of one stream become tracks with stable ids.

In the daemon only this package imports Norfair, and only
:mod:`edge.track.norfair_adapter` touches its state. :class:`Tracker` is the
protocol of the generic trackers (:mod:`edge.track.norfair_tracker`); the
tray-aware tracker
(:mod:`edge.track.tray_tracker`) reports trays and their dishes to billing
(:mod:`edge.billing.biller`), which knows nothing of Norfair.
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
