"""Norfair's ``TrackedObject.hit`` without its per-point bookkeeping, for whole-box detections.

Norfair stays the association engine; this only makes its per-match update
cheaper. ``TrackedObject.hit`` builds score masks, an ``H`` matrix from
``np.diag`` and ``np.hstack`` and three more masks on every call, about two
thirds of what the dish tracker costs per frame (``bench/tracking.py``). For
a detection without per-point scores every point counts as detected, and all
of that reduces to "every sensor measured": the filter update with ``H=None``
(Norfair's own filters read that as the identity) and, once, the first-sighting
reset of the velocity. :class:`FastHitObject` does exactly that and hands any
other case (per-point scores, past detections kept, a filter of another
kind) to Norfair's own ``hit``.

Reaches into Norfair's private ``Tracker._obj_factory`` (norfair 2.2-2.3);
:func:`use_fast_hit` leaves a tracker as it is when that is missing, and
``tests/test_fast_hit.py`` checks the state against Norfair's ``hit`` after
every update.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from norfair import Tracker as NfTracker  # type: ignore[attr-defined]
from norfair import tracker as nf_tracker
from norfair.filter import NoFilter, OptimizedKalmanFilter

_FILTERS = (NoFilter, OptimizedKalmanFilter)
"""Filters whose ``update(z, None, None)`` equals ``update(z, None, identity H)``."""

_Factory: Any = getattr(nf_tracker, "_TrackedObjectFactory", None)


class FastHitObject(nf_tracker.TrackedObject):
    """A Norfair ``TrackedObject`` whose :meth:`hit` is cheap for whole-box detections."""

    def hit(self, detection: Any, period: int = 1) -> None:
        """Update with a matched detection (Norfair's ``hit``, same state after it)."""
        obj: Any = self  # Norfair is untyped
        if (detection.scores is not None or obj.past_detections_length
                or not isinstance(obj.filter, _FILTERS)):
            super().hit(detection, period)
            return
        obj.last_detection = detection
        obj.hit_counter = min(obj.hit_counter + 2 * period, obj.hit_counter_max)
        if obj.is_initializing and obj.hit_counter > obj.initialization_delay:
            obj.is_initializing = False
            obj._acquire_ids()
        counter = obj.point_hit_counter
        counter += 2 * period
        np.clip(counter, 0, obj.pointwise_hit_counter_max, out=counter)
        z = detection.absolute_points.reshape(-1, 1)
        filt: Any = obj.filter  # (not the type the isinstance above narrowed to)
        filt.update(z, None, None)
        seen = obj.detected_at_least_once_points
        if not seen.all():  # first sighting of some points: their position, no velocity
            fresh = np.repeat(~seen, obj.dim_points)
            filt.x[: obj.dim_z][fresh] = z[fresh]
            filt.x[obj.dim_z:][fresh] = 0
            obj.detected_at_least_once_points = np.ones_like(seen)


if _Factory is not None:
    class _FastHitFactory(_Factory):  # type: ignore[misc]
        """Norfair's object factory (ids, counters), making :class:`FastHitObject`."""

        def create(self, **kwargs: Any) -> FastHitObject:
            # Norfair passes everything by keyword; the object takes what its own
            # factory would give it (this Norfair's TrackedObject signature)
            return FastHitObject(obj_factory=self, **kwargs)


def use_fast_hit(tracker: NfTracker) -> bool:
    """Make ``tracker`` create :class:`FastHitObject` s; False (unchanged) when this
    Norfair has no object factory to replace or the tracker already has objects."""
    factory = getattr(tracker, "_obj_factory", None)
    if _Factory is None or type(factory) is not _Factory or tracker.tracked_objects:
        return False
    tracker._obj_factory = _FastHitFactory()
    return True
