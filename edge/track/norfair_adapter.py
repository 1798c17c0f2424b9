"""The one place that touches Norfair's state (tracking stage).

Norfair is the association engine of every tracker in :mod:`edge.track`:
its public API (``Tracker``, ``Detection``, filters, ``update``) is used
where it is needed, but everything that reads or writes a ``TrackedObject``'s
internals or Norfair's private parts lives here, so a Norfair upgrade
changes this file and ``tests/test_norfair_adapter.py`` only.

Written against Norfair 2.3 and its maintained fork ``norfair-enough`` 2.4
(same ``import norfair``); each function names the upstream behaviour it
corrects:

* :class:`Norfair23Object`: ``norfair-enough`` 2.4 keeps copies of matched
  detections and sets a track's hit counter to its maximum at
  initialisation; Norfair 2.3's behaviour is kept.
* :class:`FastHitObject` / :func:`use_fast_hit`: Norfair's
  ``TrackedObject.hit`` builds score masks, an ``H`` matrix from ``np.diag``
  and ``np.hstack`` and three more masks on every call, about two thirds of
  what the dish tracker costs per frame (``bench/tracking.py``). For a
  detection without per-point scores every point counts as detected, and all
  of that reduces to "every sensor measured": the filter update with
  ``H=None`` (Norfair's own filters read that as the identity) and, once, the
  first-sighting reset of the velocity. Any other case (per-point scores,
  past detections kept, a filter of another kind) goes to Norfair's own
  ``hit``. It replaces the private ``Tracker._obj_factory``; when that is
  missing the tracker is left as it is.
* :func:`clear_reid_countdowns`: Norfair 2.3 starts an object's re-id
  countdown when its hit counter reaches 0 and removes the object when the
  countdown ends, even if it was matched again in between.
* :func:`quiet_box_warnings`: ``norfair-enough`` logs a warning on every IoU
  call that sees a box whose corners crossed (a Kalman prediction of a
  shrinking box): per frame, in the daemon's log. The trackers cope with such
  boxes; the warning is dropped.
* :func:`retune`: Norfair takes its thresholds once, at construction; a
  live settings change writes them where the tracker and its objects keep them.
* :func:`end`, :func:`drop`, :func:`is_gone`: Norfair has no call to end a
  track; a track is forgotten at the next update once its counters are
  negative.
* :func:`move`, :func:`seen_without_detection`, :func:`hold`: the tray-motion
  model measures a tray through its dishes (a rigid group) and keeps a dish
  alive as long as its tray: both write the filter state and hit counters
  that Norfair otherwise only changes on a detection.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from norfair import Tracker as NfTracker
from norfair import tracker as nf_tracker
from norfair.filter import NoFilter, OptimizedKalmanFilter

NfObject = Any
"""A Norfair ``TrackedObject`` (Norfair is untyped)."""

_FILTERS = (NoFilter, OptimizedKalmanFilter)
"""Filters whose ``update(z, None, None)`` equals ``update(z, None, identity H)``."""

_Factory: Any = getattr(nf_tracker, "_TrackedObjectFactory", None)


class Norfair23Object(nf_tracker.TrackedObject):
    """A Norfair ``TrackedObject`` that behaves as in Norfair 2.3 on ``norfair-enough`` too.

    ``norfair-enough`` 2.4 changed two things the tray-motion model depends
    on: it keeps a *copy* of the matched detection (in ``__init__``, ``hit``
    and ``merge``: a track then cannot tell which of this frame's detections
    it took), and ``hit`` sets the hit counter to its maximum when a track is
    initialised (a track then outlives a missed tray by seconds, where 2.3
    gave it about as many frames as it had been seen). Both are put back to
    2.3's behaviour here, so tracks and bills are the same on either package
    (``tests/test_norfair_adapter.py`` checks that the installed Norfair still
    needs this).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last_detection = kwargs["initial_detection"]

    def merge(self, tracked_object: Any) -> None:
        """Take over a re-identified track's state (Norfair's ``merge``)."""
        # norfair-enough 2.4.3 leaves TrackedObject.merge unannotated
        super().merge(tracked_object)  # type: ignore[no-untyped-call]
        self.last_detection = tracked_object.last_detection

    def hit(self, detection: Any, period: int = 1) -> None:
        """Update with a matched detection (Norfair 2.3's ``hit``)."""
        obj: Any = self  # Norfair is untyped
        before = obj.hit_counter
        super().hit(detection, period)
        obj.hit_counter = min(before + 2 * period, obj.hit_counter_max)
        obj.last_detection = detection


class FastHitObject(Norfair23Object):
    """A :class:`Norfair23Object` whose :meth:`hit` is cheap for whole-box detections."""

    def hit(self, detection: Any, period: int = 1) -> None:
        """Update with a matched detection (same state as :meth:`Norfair23Object.hit`)."""
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
        # Norfair's clip to [0, max] (tracker_step takes counters below 0), as two
        # ufuncs: numpy 2's np.clip costs five times as much on two points
        np.maximum(counter, 0, out=counter)
        np.minimum(counter, obj.pointwise_hit_counter_max, out=counter)
        z = detection.absolute_points.reshape(-1, 1)
        filt: Any = obj.filter  # (not the type the isinstance above narrowed to)
        filt.update(z, None, None)
        seen = obj.detected_at_least_once_points
        if not seen.all():  # first sighting of some points: their position, no velocity
            fresh = np.repeat(~seen, obj.dim_points)
            filt.x[: obj.dim_z][fresh] = z[fresh]
            filt.x[obj.dim_z:][fresh] = 0
            obj.detected_at_least_once_points = np.ones_like(seen)
        now = getattr(obj, "_point_matched_in_current_frame", None)  # norfair-enough 2.4
        if now is not None:
            now[...] = True  # every point measured (drives live_points)


if _Factory is not None:
    # _Factory is Any (a private class looked up at run time): subclassing Any is [misc]
    class _ObjectFactory(_Factory):  # type: ignore[misc]
        """Norfair's object factory (ids, counters), making objects of our class."""

        def __init__(self, kind: type[Norfair23Object]) -> None:
            super().__init__()
            self.kind = kind

        def create(self, **kwargs: Any) -> Norfair23Object:
            # Norfair passes everything by keyword; the object takes what its own
            # factory would give it (this Norfair's TrackedObject signature)
            return self.kind(obj_factory=self, **kwargs)


def use_fast_hit(tracker: NfTracker, *, fast: bool = True) -> bool:
    """Make ``tracker`` create :class:`FastHitObject` s (``fast`` False:
    :class:`Norfair23Object` s); False (unchanged) when this Norfair has no object
    factory to replace or the tracker already has objects."""
    factory = getattr(tracker, "_obj_factory", None)
    quiet_box_warnings()
    if _Factory is None or type(factory) is not _Factory or tracker.tracked_objects:
        return False
    tracker._obj_factory = _ObjectFactory(FastHitObject if fast else Norfair23Object)
    return True


class _NoCrossedBoxWarning(logging.Filter):
    """Drops Norfair's "Incorrect bounding boxes" warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Incorrect bounding boxes")


def quiet_box_warnings() -> None:
    """Drop Norfair's per-call warning about boxes whose corners crossed (once
    per process; every tracker that uses Norfair's IoU calls this)."""
    log = logging.getLogger("norfair.distances")
    if not any(isinstance(f, _NoCrossedBoxWarning) for f in log.filters):
        log.addFilter(_NoCrossedBoxWarning())


# ---------------------------------------------------------------- track state


def matched(obj: NfObject, detections: list[Any]) -> bool:
    """Whether ``obj`` took one of ``detections`` (this frame's) in the last update."""
    last = obj.last_detection
    return last is not None and any(last is d for d in detections)


def matched_index(obj: NfObject, ids: set[int]) -> bool:
    """Whether ``obj``'s last matched detection is one whose ``id()`` is in ``ids``."""
    last = obj.last_detection
    return last is not None and id(last) in ids


def clear_reid_countdowns(tracker: NfTracker) -> None:
    """Norfair 2.3 starts an object's re-id countdown when its hit counter reaches
    0 and removes the object when the countdown ends, even if it was matched
    again in between (a match at hit counter 0 is still a match): an object
    seen again is alive, so its countdown is cleared."""
    for obj in tracker.tracked_objects:
        if obj.reid_hit_counter is not None and obj.hit_counter > 0:
            obj.reid_hit_counter = None


def retune(tracker: NfTracker, *, distance_threshold: float, hit_counter_max: int,
           initialization_delay: int) -> None:
    """Give a running tracker new thresholds, its tracks kept.

    The distance threshold applies to the next match of every track; a new
    hit-counter ceiling to every track alive (a counter above it is cut
    down to it) and to new ones; the initialisation delay to tracks that are
    still initialising and to new ones.
    """
    delay = min(initialization_delay, hit_counter_max - 1)
    tracker.distance_threshold = distance_threshold
    tracker.hit_counter_max = hit_counter_max
    tracker.initialization_delay = delay
    for obj in tracker.tracked_objects:
        obj.hit_counter_max = hit_counter_max
        obj.hit_counter = min(obj.hit_counter, hit_counter_max)
        if obj.is_initializing:
            obj.initialization_delay = delay


def end(obj: NfObject) -> None:
    """End ``obj`` for good: Norfair forgets it at the next update and never
    re-identifies it."""
    obj.hit_counter = -1
    obj.reid_hit_counter = -1


def drop(obj: NfObject) -> None:
    """Let Norfair forget ``obj`` (a tracker without re-identification)."""
    obj.hit_counter = -1


def is_gone(tracker: NfTracker, obj: NfObject) -> bool:
    """Whether ``obj`` has left ``tracker`` for good (removed, or ended by :func:`end`)."""
    return obj not in tracker.tracked_objects or (
        obj.hit_counter < 0 and obj.reid_hit_counter is not None and obj.reid_hit_counter < 0)


def position(obj: NfObject) -> npt.NDArray[np.float64]:
    """``(4,)`` float64 ``x1 y1 x2 y2``: the filter's estimate of a box object."""
    return np.asarray(obj.estimate, np.float64).reshape(4)


def move(obj: NfObject, box: npt.NDArray[np.float64]) -> None:
    """Put a box object's filter at ``box`` (``(4,)``), keeping its velocity."""
    obj.filter.x[:4] = box.reshape(-1, 1)


def seen_without_detection(obj: NfObject, period: int) -> None:
    """Count a frame in which ``obj`` was measured by other means (a tray seen
    through its dishes) as a match: Norfair's hit counter rule, and alive
    again means not counting down to removal."""
    obj.hit_counter = min(obj.hit_counter + 2 * period, obj.hit_counter_max)
    if obj.hit_counter > 0:
        obj.reid_hit_counter = None


def hold(obj: NfObject, floor: int) -> None:
    """Keep ``obj``'s hit counter at least ``floor`` (it lives while its owner does)."""
    obj.hit_counter = max(obj.hit_counter, floor)


def visible(obj: NfObject) -> bool:
    """An initialised track whose hit counter is positive (Norfair would return it)."""
    return obj.id is not None and bool(obj.hit_counter_is_positive)


def birth_tag(obj: NfObject, index: int) -> Any:
    """``data[index]`` of the detection that started ``obj``, kept on the object
    (Norfair keeps only the last detection): the lane a dish track was born in.
    None when it has no detection."""
    tag = getattr(obj, "_edge_birth_tag", None)
    if tag is None:
        tag = obj.last_detection.data[index] if obj.last_detection is not None else -1
        obj._edge_birth_tag = tag
    return tag
