"""Messages that flow between the pipeline's stages.

source -> :class:`Frame` -> detect -> :class:`Detections` -> track ->
:class:`TrackedFrame` (the frame, its detections if it was detected, and the
live :class:`Track` s) -> annotate / bill. Plain frozen, slotted dataclasses
with validation and no behaviour beyond construction. ``TrayBill`` joins
them with the billing stage.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Detections:
    """The objects a detector found in one source image.

    Parameters
    ----------
    boxes : np.ndarray
        ``(n, 4)`` float32, ``x1, y1, x2, y2`` in **source image pixels**
        (the image given to the detector, not the network input), with
        ``0 <= x1 <= x2 <= width`` and likewise for y: the edges of pixels,
        so a box covering pixel columns 10..19 has ``x1 = 10, x2 = 20``.
    scores : np.ndarray
        ``(n,)`` float32 confidences in ``(0, 1]``.
    classes : np.ndarray
        ``(n,)`` int32 class ids, indices into the model's class names.
    embeddings : np.ndarray or None
        ``(n, D)`` float32 unit vectors, what the detector saw at each object
        (the model's ``embeddings`` output, ``docs/FORMATS.md``); None when
        the model has no such output.

    Raises
    ------
    ValueError
        If the arrays have the wrong shapes, lengths or dtypes.
    """

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int32]
    embeddings: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        n = len(self.scores)
        problems = []
        if self.boxes.shape != (n, 4) or self.boxes.dtype != np.float32:
            problems.append(f"boxes must be ({n}, 4) float32, got {self.boxes.shape} "
                            f"{self.boxes.dtype}")
        if self.scores.ndim != 1 or self.scores.dtype != np.float32:
            problems.append(f"scores must be (n,) float32, got {self.scores.shape} "
                            f"{self.scores.dtype}")
        if self.classes.shape != (n,) or self.classes.dtype != np.int32:
            problems.append(f"classes must be ({n},) int32, got {self.classes.shape} "
                            f"{self.classes.dtype}")
        e = self.embeddings
        if e is not None and (e.ndim != 2 or e.shape[0] != n or e.dtype != np.float32):
            problems.append(f"embeddings must be ({n}, D) float32, got {e.shape} {e.dtype}")
        if problems:
            raise ValueError("invalid Detections: " + "; ".join(problems))

    def subset(self, index: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Detections:
        """The detections picked by a boolean mask or an index array, embeddings too."""
        return Detections(self.boxes[index], self.scores[index], self.classes[index],
                          None if self.embeddings is None else self.embeddings[index])

    def moved(self, boxes: npt.NDArray[np.float32]) -> Detections:
        """The same detections at other ``boxes`` (``(n, 4)`` float32)."""
        return replace(self, boxes=boxes)

    @classmethod
    def empty(cls) -> Detections:
        """Return detections with no objects (``n = 0``)."""
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            classes=np.zeros((0,), np.int32),
        )

    def __len__(self) -> int:
        return len(self.scores)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded picture of one stream.

    Parameters
    ----------
    stream_id : str
        Id of the stream in the site config.
    seq : int
        0-based number of the frame among those the source delivered.
    image : np.ndarray
        ``(height, width, 3)`` uint8 BGR. Never modified after creation.
    capture_time : float
        ``time.monotonic()`` when the frame was captured (synthetic camera)
        or received and decoded (network and file sources).
    pts : int or None
        Presentation timestamp in ``time_base`` units, if the container has one.
    time_base : Fraction or None
        Unit of ``pts`` in seconds.
    stamps : tuple of (str, float)
        ``(stage, time.monotonic())`` appended by each stage as it finishes
        the frame; the pipeline turns differences into latency histograms.
    """

    stream_id: str
    seq: int
    image: npt.NDArray[np.uint8]
    capture_time: float
    pts: int | None = None
    time_base: Fraction | None = None
    stamps: tuple[tuple[str, float], ...] = ()

    def stamped(self, stage: str, when: float) -> Frame:
        """A copy with ``(stage, when)`` appended to ``stamps``."""
        return replace(self, stamps=(*self.stamps, (stage, when)))


@dataclass(frozen=True, slots=True)
class Track:
    """One tracked object in one frame.

    Parameters
    ----------
    track_id : int
        Stable id for the object's life in this stream (> 0).
    box : tuple of 4 float
        ``x1, y1, x2, y2`` in source image pixels (estimated when not detected).
    class_id : int
        The class voted over the track's whole life (not the last detection's).
    class_name : str
        Name of ``class_id`` from the model's class names.
    confidence : float
        Share of the vote the winning class holds, 0-1.
    hits : int
        Frames in which a detection updated the track.
    detected : bool
        True if a detection matched the track in this frame, False if predicted.
    tray_id : int or None
        For a dish or clutter: the track id of the tray it sits on, if any.
        For a tray: its own track id. None when not tray-aware.
    """

    track_id: int
    box: tuple[float, float, float, float]
    class_id: int
    class_name: str
    confidence: float
    hits: int
    detected: bool
    tray_id: int | None = None


@dataclass(frozen=True, slots=True)
class TrackedFrame:
    """A frame after tracking: what annotation and billing consume.

    ``detections`` is None for frames the scheduler did not send to the
    detector (the tracker predicted them). ``bills`` are the open bills of the
    trays in view as ``(tray_id, item count, total)``; ``checkout_line`` the
    stream's line (two points, pixels); ``unknown`` the track ids of dishes
    the open bills hold as unknown (:mod:`edge.learn.openset`), all for the
    overlay.
    """

    frame: Frame
    detections: Detections | None
    tracks: tuple[Track, ...]
    bills: tuple[tuple[int, int, float], ...] = ()
    checkout_line: tuple[tuple[float, float], tuple[float, float]] | None = None
    unknown: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class TrayObservation:
    """One tray as tracking sees it in one frame: the seam from tracking to billing.

    Parameters
    ----------
    tray_id : int
        The tray's track id in its stream.
    box : tuple of 4 float
        ``x1 y1 x2 y2`` of the whole tray this frame, source pixels.
    first_seen : float
        ``capture_time`` of the frame it was first seen in (the frame's clock).
    active : bool
        Tracked this frame (detected, seen through its dishes, or predicted
        while its track lives); False while lost (it may be re-identified).
    in_view : bool
        Its centre is inside the picture.
    gone : bool
        Its track ended this frame: this is its last observation.
    """

    tray_id: int
    box: tuple[float, float, float, float]
    first_seen: float
    active: bool
    in_view: bool
    gone: bool = False

    def centre(self) -> tuple[float, float]:
        """``(x, y)`` centre of :attr:`box`, pixels."""
        b = self.box
        return (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0


@dataclass(frozen=True, slots=True)
class View:
    """One look at a dish.

    Attributes
    ----------
    embedding : np.ndarray
        ``(D,)`` float32 unit vector from the detector.
    crop : np.ndarray
        ``(48, 48, 3)`` uint8 BGR picture of the dish's box
        (:data:`edge.track.views.CROP_PX`).
    seq : int
        The frame it was taken from.
    sharpness : float
        Variance of the crop's Laplacian (grey levels squared).
    """

    embedding: npt.NDArray[np.float32]
    crop: npt.NDArray[np.uint8]
    seq: int
    sharpness: float


@dataclass(frozen=True, slots=True)
class DishEvidence:
    """What tracking knows of one dish on a tray, its fragments merged.

    Parameters
    ----------
    track_id : int
        The dish's track id (the oldest of its fragments).
    class_id : int
        The class its lifetime evidence decides.
    share : float
        Share of the evidence that class holds, 0-1.
    hits : int
        Detections matched to it over its life.
    vote_mass : float
        Sum of its detections' squared scores (all classes).
    span : int
        Frames from its first detection to its last, both included: how long
        it persisted.
    density : float
        Its detections per detected frame of the stream from its first
        detection to its last (0-1).
    longest : int
        The longest span of one of its fragments alone (``span`` if it is one):
        a dish persists in one track somewhere, short false detections fused by
        fragment merging do not.
    unseen : int
        Detected frames of the stream since its last detection (0: seen in the
        last one).
    views : tuple of View
        A few diverse, sharp looks at it (:mod:`edge.track.views`); empty
        when the detector gives no embeddings.
    appearance : np.ndarray or None
        ``(D,)`` unit vector, the mean direction of its embeddings over its
        life (None without embeddings).
    """

    track_id: int
    class_id: int
    share: float
    hits: int
    vote_mass: float
    span: int = 1
    density: float = 1.0
    longest: int = 1
    unseen: int = 0
    views: tuple[View, ...] = ()
    appearance: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True, slots=True)
class TrayTracking:
    """What the tray tracker produced for one frame.

    Parameters
    ----------
    seq : int
        The frame's number.
    tracks : tuple of Track
        Trays in view and their dishes, and dishes on no tray.
    trays : tuple of TrayObservation
        Every tray the tracker holds, in the order they were first seen,
        including those lost for now and those whose track ended this frame.
    merges : tuple of (int, int)
        ``(kept, dropped)`` tray ids: two tracks found to be one tray this
        frame; the dropped one's dishes now belong to the kept one.
    """

    seq: int
    tracks: tuple[Track, ...]
    trays: tuple[TrayObservation, ...]
    merges: tuple[tuple[int, int], ...] = ()
