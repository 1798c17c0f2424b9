"""A few diverse, sharp views of each dish track: what it looked like over its life.

Tracking stage (:mod:`edge.track.tray_tracker`), for learning on the job: a
track that a cashier names later (a correction, an unknown dish) hands its
views on as labelled examples. A view is the detector's embedding of the dish
in one frame (``Detections.embeddings``, unit vectors) and a small crop of the
picture there (so an example can be embedded again by another model).

A track keeps at most :data:`VIEWS_PER_TRACK`. A new look is offered every
:data:`VIEW_EVERY` detected frames; it is kept only if it adds something:

* **diverse**: its embedding is not within :data:`SAME_VIEW_COS` (cosine) of
  a view kept (a dish standing still gives one view, not four copies); when
  the set is full it replaces the most redundant view (the one nearest to
  another) if it is itself less redundant;
* **sharp**: its crop's sharpness (variance of the Laplacian) is at least
  :data:`SHARP_SHARE` of the sharpest view kept (motion blur and a hand's
  shadow lose detail); a sharper newcomer evicts views below that share.

Only a look that passes the cheap embedding test is cropped, so a dish costs
a few dot products per offer.

Every look offered also adds to the track's running sum of embeddings: its
*appearance* (:meth:`ViewSet.appearance`, the mean direction of all of them)
is what the open-set decision compares with known classes and the site's
examples (:mod:`edge.learn.openset`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
import numpy.typing as npt

from edge.frames import View

VIEWS_PER_TRACK = 4
VIEW_EVERY = 5  # detected frames between offers (at 20 Hz: four a second)
CROP_PX = 48  # a view's crop is CROP_PX x CROP_PX BGR
SAME_VIEW_COS = 0.97
SHARP_SHARE = 0.5
MIN_CROP_PX = 8  # a box smaller than this (clipped at the picture's edge) gives no view

FloatArray = npt.NDArray[np.float32]
Image = npt.NDArray[np.uint8]


def crop_view(image: Image, box: Sequence[float]) -> Image | None:
    """The box's picture resized to ``CROP_PX`` square (None: too small in view)."""
    h, w = image.shape[:2]
    x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
    x2, y2 = min(w, int(np.ceil(box[2]))), min(h, int(np.ceil(box[3])))
    if x2 - x1 < MIN_CROP_PX or y2 - y1 < MIN_CROP_PX:
        return None
    crop: Image = cv2.resize(image[y1:y2, x1:x2], (CROP_PX, CROP_PX),
                             interpolation=cv2.INTER_AREA).astype(np.uint8, copy=False)
    return crop


def sharpness(crop: Image) -> float:
    """Variance of the Laplacian of the crop's grey levels: low when blurred."""
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


class ViewSet:
    """The views one dish track keeps (see the module docstring)."""

    __slots__ = ("looks", "total", "views")

    def __init__(self, views: Sequence[View] = ()) -> None:
        self.views: list[View] = list(views)
        self.total: FloatArray | None = None  # sum of every look's embedding
        self.looks = 0

    def __len__(self) -> int:
        return len(self.views)

    def appearance(self) -> FloatArray | None:
        """The mean direction of every look offered (a unit vector; None before
        the first, or when they cancel out)."""
        if self.total is None:
            return None
        n = float(np.linalg.norm(self.total))
        if n < 1e-6:
            return None
        out: FloatArray = (self.total / n).astype(np.float32)
        return out

    def offer(self, embedding: FloatArray, seq: int, crop: Callable[[], Image | None]) -> bool:
        """Consider one look; True if it was kept. ``crop`` makes its picture
        (called only when the embedding adds something)."""
        self.total = embedding.astype(np.float32) if self.total is None else self.total + embedding
        self.looks += 1
        if self.views and float(self._cos(embedding).max()) >= SAME_VIEW_COS:
            return False
        picture = crop()
        if picture is None:
            return False
        view = View(embedding, picture, seq, sharpness(picture))
        return self.add(view)

    def add(self, view: View) -> bool:
        """Keep ``view`` if it is sharp and diverse enough; True if kept."""
        best = max((v.sharpness for v in self.views), default=0.0)
        if view.sharpness < SHARP_SHARE * best:
            return False
        if view.sharpness * SHARP_SHARE > best:  # much sharper: drop the blurred ones
            self.views = [v for v in self.views if v.sharpness >= SHARP_SHARE * view.sharpness]
        if len(self.views) < VIEWS_PER_TRACK:
            self.views.append(view)
            return True
        kept = np.stack([v.embedding for v in self.views])
        gram = kept @ kept.T
        np.fill_diagonal(gram, -1.0)
        redundancy = gram.max(axis=1)  # each kept view's nearest other
        worst = int(redundancy.argmax())
        others = np.delete(kept, worst, axis=0)
        if float((others @ view.embedding).max()) >= float(redundancy[worst]):
            return False  # it would not make the set more diverse
        self.views[worst] = view
        return True

    def merged(self, other: ViewSet | None) -> ViewSet:
        """A new set holding the best of both (neither is changed)."""
        out = ViewSet(self.views)
        out.total, out.looks = self.total, self.looks
        if other is not None and other.total is not None:
            out.total = other.total if out.total is None else out.total + other.total
            out.looks += other.looks
        if other is None or not other.views:
            return out
        for view in sorted(other.views, key=lambda v: -v.sharpness):
            if not out.views or float(out._cos(view.embedding).max()) < SAME_VIEW_COS:
                out.add(view)
        return out

    def _cos(self, embedding: FloatArray) -> FloatArray:
        kept = np.stack([v.embedding for v in self.views])
        cos: FloatArray = kept @ embedding
        return cos
