"""Text labels on a picture: readable, beside what they name, clear of the dishes and of each other.

Used by the cashier's overlay (:mod:`edge.overlay`) and the bill photo
(:mod:`edge.billing.photo`). A label that covers a dish hides what the
cashier is checking, and two labels on top of each other are read as one, so
:func:`place_labels` places them greedily, most important first: each takes
the first free spot among candidates beside its box (above it, below it, then
left and right of it, then rows further out), free meaning inside the picture
and overlapping neither its own box, nor a label placed before it, nor any
keep-out box (every dish); where none of those touching the box is free, the
free one nearest to it, and where nothing is free (a picture full of dishes)
the candidate with the least overlap. A label away from its box gets a
leader line (:func:`draw_labels`).

OpenCV's Hershey fonts draw ASCII only, and ``cv2.putText`` shows a ``?`` for
anything else: :func:`display_text` folds accents (``Käse`` -> ``Kase``,
``Spätzle`` -> ``Spatzle``), spells out the letters that do not decompose
(``ß`` -> ``ss``, ``Ø`` -> ``O``) and falls back to a given ASCII name where
too little of a text survives (a name in Greek or Chinese script).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache

import cv2
import numpy as np
import numpy.typing as npt

Rect = tuple[int, int, int, int]
"""``x1, y1, x2, y2`` in pixels, ``x2`` and ``y2`` exclusive."""

FONT = cv2.FONT_HERSHEY_SIMPLEX
SCALE_AT_640 = 0.55
"""Font scale at 640 px wide: capitals 15 px, 19 px with descenders, on a plate 24-27 px
high (scaled with the picture's width)."""
PAD = 4
PLATE = (28, 28, 28)
"""BGR of a label's dark plate: white text on it reads on any counter."""

# letters NFKD leaves alone, spelled as an ASCII keyboard would (dashes, quotes,
# the dotless i, the middle dot and the multiplication sign escaped: they look like ASCII)
_SPELLED = str.maketrans({
    "ß": "ss", "ẞ": "SS", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O",
    "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th",
    "\u0131": "i", "\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'",
    "\u201c": '"', "\u201d": '"', "\u00b7": "-", "\u00d7": "x", "€": "EUR", "£": "GBP",
})
_MIN_KEPT = 0.6  # share of a name's letters that must survive folding, else the fallback


@cache
def display_text(text: str, fallback: str = "") -> str:
    """``text`` as the Hershey fonts can draw it (ASCII), never with ``?`` boxes.

    Parameters
    ----------
    text : str
        Any Unicode text (a menu name).
    fallback : str
        Shown instead when less than 60 % of ``text``'s letters survive the
        folding (a name in a non-Latin script); ``_`` become spaces. Empty:
        keep what survives.

    Returns
    -------
    str
        Printable ASCII only.
    """
    folded = unicodedata.normalize("NFKD", text.translate(_SPELLED))
    kept = "".join(c for c in folded if " " <= c <= "~")
    letters = sum(1 for c in text if c.isalnum())
    kept_letters = sum(1 for c in kept if c.isalnum())
    if fallback and letters and kept_letters < _MIN_KEPT * letters:
        return display_text(fallback.replace("_", " "))
    return " ".join(kept.split())


TRAY_LINE_PX = 3
"""Outline width of a tray (and of a flagged dish) on the overlay and the bill photo."""
DISH_LINE_PX = 2
"""Outline width of a dish."""


def clip_box(box: Sequence[float], width: int, height: int) -> Rect:
    """``box`` in whole pixels, clipped to a ``width`` x ``height`` picture (at
    least one pixel wide and high)."""
    x1, y1, x2, y2 = (round(v) for v in box)
    return (max(0, min(x1, width - 1)), max(0, min(y1, height - 1)),
            max(1, min(x2, width)), max(1, min(y2, height)))


def font_scale(width: int) -> float:
    """Font scale for a picture ``width`` pixels wide (same size on screen at any width)."""
    return SCALE_AT_640 * max(width, 320) / 640.0


# bounded: tray plates carry running totals, so texts keep coming for as long as
# the daemon runs
@lru_cache(maxsize=2048)
def _metrics(text: str, scale: float) -> tuple[int, int, int]:
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    return tw, th, base


def label_size(text: str, scale: float) -> tuple[int, int]:
    """``(width, height)`` of the plate of ``text`` at ``scale``, pixels."""
    tw, th, base = _metrics(text, scale)
    return tw + 2 * PAD, th + base + 2 * PAD


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one label went.

    Attributes
    ----------
    rect : Rect
        The label's plate, inside the picture.
    target : Rect
        The box it names.
    moved : bool
        The plate does not touch its box: draw a leader line.
    clear : bool
        The plate overlaps no other label and no keep-out box.
    """

    rect: Rect
    target: Rect
    moved: bool
    clear: bool


# A candidate corner is a linear function of (x1, y1, x2, y2, w, h, 1): the target
# box and the plate's size. Rows of these coefficients give every label's
# candidates in one matrix product.
_X1, _Y1, _X2, _Y2, _W, _H, _ONE = np.eye(7)


@cache
def _coefficients(rings: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(k, 7)`` coefficients of the candidates' x and y, nearest first: 8 against
    the box (above, below, right, left), then ``rings`` rows further out, each a
    plate height (plus 2 px) apart."""
    above, below = _Y1 - _H, _Y2
    near = [(_X1, above), (_X2 - _W, above), (_X1, below), (_X2 - _W, below),
            (_X2, _Y1), (_X1 - _W, _Y1), (_X2, _Y2 - _H), (_X1 - _W, _Y2 - _H)]
    far = []
    for k in range(1, rings + 1):
        d = k * (_H + 2 * _ONE)
        for x in (_X1, (_X1 + _X2 - _W) / 2, _X2 - _W, _X1 - d, _X2 - _W + d):
            far += [(x, above - d), (x, below + d)]
        far += [(_X2 + d, _Y1), (_X1 - _W - d, _Y1), (_X2 + d, _Y2 - _H),
                (_X1 - _W - d, _Y2 - _H)]
    rows = near + far
    return np.array([x for x, _ in rows]), np.array([y for _, y in rows])


def _area(x: npt.NDArray[np.int64], y: npt.NDArray[np.int64], w: int, h: int,
          rects: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Area a ``w`` x ``h`` plate at each corner ``(x, y)`` (``(k,)`` each) shares
    with ``rects`` (``(m, 4)``), summed: ``(k,)``."""
    ix = np.minimum(x[:, None] + w, rects[:, 2]) - np.maximum(x[:, None], rects[:, 0])
    iy = np.minimum(y[:, None] + h, rects[:, 3]) - np.maximum(y[:, None], rects[:, 1])
    area: npt.NDArray[np.int64] = (np.maximum(ix, 0) * np.maximum(iy, 0)).sum(axis=1)
    return area


_NEAR = 8  # candidates that touch the box


def place_labels(sizes: Sequence[tuple[int, int]], targets: Sequence[Rect],
                 keep_out: Sequence[Rect], width: int, height: int, *,
                 rings: int = 4, prefer: Sequence[tuple[int, int] | None] = ()
                 ) -> list[Placement]:
    """Place one label per target, in the order given (most important first).

    Parameters
    ----------
    sizes : sequence of (int, int)
        ``(width, height)`` of each label's plate, pixels.
    targets : sequence of Rect
        The box each label names, pixels (may reach past the picture).
    keep_out : sequence of Rect
        Boxes no label may cover (the dishes).
    width, height : int
        Picture size, pixels.
    rings : int
        Rows of candidates beyond the ones touching the box, each a plate
        height further out.
    prefer : sequence of (int, int) or None, optional
        Per label, where its plate's top-left corner was in the previous
        frame, relative to its box's top-left corner (:class:`LabelMemory`):
        taken again while it is free and against the box, or when no spot
        against the box is free. A label then stays put instead of hopping
        between equally good spots as the boxes move.

    Returns
    -------
    list of Placement
        One per label, in the order given.
    """
    n = len(sizes)
    if not n:
        return []
    # Numpy calls cost microseconds whatever their size here, and most labels
    # take a candidate against their box: those are tried for every label at
    # once against the keep-out boxes, then in plain Python against the labels
    # placed before; only a label with none free gets all its candidates
    # scored (one numpy pass), and the first free or least covered wins.
    wh = np.minimum(np.array(sizes, np.int64).reshape(-1, 2), (width, height))
    params = np.concatenate([np.array(targets, np.float64).reshape(-1, 4), wh,
                             np.ones((n, 1))], axis=1)
    cx, cy = _coefficients(rings)
    xs = np.floor(params @ cx.T).astype(np.int64)
    ys = np.floor(params @ cy.T).astype(np.int64)
    np.minimum(np.maximum(xs, 0, out=xs), (width - wh[:, :1]), out=xs)
    np.minimum(np.maximum(ys, 0, out=ys), (height - wh[:, 1:]), out=ys)
    blocked = np.array(keep_out, np.int64).reshape(-1, 4)
    near_x, near_y = xs[:, :_NEAR, None], ys[:, :_NEAR, None]
    hit = ((near_x < blocked[:, 2]) & (blocked[:, 0] < near_x + wh[:, None, :1])
           & (near_y < blocked[:, 3]) & (blocked[:, 1] < near_y + wh[:, None, 1:]))
    own = np.array(targets, np.int64).reshape(-1, 4)  # nor its own box (moved into view)
    nx, ny = near_x[..., 0], near_y[..., 0]
    covers = ((nx < own[:, 2:3]) & (own[:, 0:1] < nx + wh[:, :1])
              & (ny < own[:, 3:4]) & (own[:, 1:2] < ny + wh[:, 1:]))
    free = (~(hit.any(axis=2) | covers)).tolist()
    corners = np.stack([xs[:, :_NEAR], ys[:, :_NEAR]], axis=-1).tolist()
    # how far each candidate is from its box, pixels (x and y gaps added)
    gap = (np.maximum(np.maximum(own[:, :1] - (xs + wh[:, :1]), xs - own[:, 2:3]), 0)
           + np.maximum(np.maximum(own[:, 1:2] - (ys + wh[:, 1:]), ys - own[:, 3:4]), 0))
    # keep-out boxes, then each label's plate as it is placed (slot m: the label's
    # own box while its candidates are scored)
    placed = np.empty((len(blocked) + n + 1, 4), np.int64)
    placed[: len(blocked)] = blocked
    m = len(blocked)
    rects: list[Rect] = []
    out = []
    for i, (w, h) in enumerate(wh.tolist()):
        offset = prefer[i] if i < len(prefer) else None
        last = (None if offset is None else
                _again(offset, targets[i], (w, h), (width, height), [*keep_out, *rects]))
        rect = last if last is not None and _touches(last, targets[i]) else None
        if rect is None:
            rect = _first_free(corners[i], free[i], w, h, rects) or last
        clear = rect is not None
        if rect is None:  # the free candidate nearest its box, else the least covered
            placed[m] = own[i]
            cost = _area(xs[i], ys[i], w, h, placed[: m + 1])
            k = int(np.argmin(cost * (width + height) + gap[i]))
            clear = not cost[k]
            x, y = int(xs[i, k]), int(ys[i, k])
            rect = (x, y, x + w, y + h)
        placed[m] = rect
        m += 1
        rects.append(rect)
        out.append(Placement(rect, targets[i], moved=not _touches(rect, targets[i]),
                             clear=clear))
    return out


def _again(offset: tuple[int, int] | None, target: Rect, size: tuple[int, int],
           bounds: tuple[int, int], others: list[Rect]) -> Rect | None:
    """The plate at ``offset`` from its box's top-left corner, moved into the picture, if
    it covers neither its box nor any of ``others``."""
    if offset is None:
        return None
    (w, h), (width, height) = size, bounds
    x = min(max(target[0] + offset[0], 0), width - w)
    y = min(max(target[1] + offset[1], 0), height - h)
    rect = (x, y, x + w, y + h)
    if any(_overlaps(rect, r) for r in (target, *others)):
        return None
    return rect


def _overlaps(a: Rect, b: Rect) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _first_free(corners: list[list[int]], free: list[bool], w: int, h: int,
                rects: list[Rect]) -> Rect | None:
    """The first candidate clear of the keep-out boxes (``free``) and of ``rects``."""
    for (x, y), ok in zip(corners, free, strict=True):
        if ok and all(x + w <= r[0] or r[2] <= x or y + h <= r[1] or r[3] <= y
                      for r in rects):
            return (x, y, x + w, y + h)
    return None


def _touches(a: Rect, b: Rect, gap: int = 2) -> bool:
    return (a[0] <= b[2] + gap and b[0] <= a[2] + gap
            and a[1] <= b[3] + gap and b[1] <= a[3] + gap)


def _nearest(rect: Rect, p: tuple[int, int]) -> tuple[int, int]:
    return (min(max(p[0], rect[0]), rect[2] - 1), min(max(p[1], rect[1]), rect[3] - 1))


class LabelMemory:
    """Where each label went in the previous frame, relative to its box.

    Held per video track (one viewer's picture after another), handed to
    :func:`place_labels` as ``prefer`` and updated from its result; keys are
    whatever names a label across frames (a track). Forgets labels not placed
    in the last frame.
    """

    def __init__(self) -> None:
        self._offsets: dict[object, tuple[int, int]] = {}

    def prefer(self, keys: Sequence[object]) -> list[tuple[int, int] | None]:
        """The previous offsets of the labels ``keys`` (None for a new label)."""
        return [self._offsets.get(k) for k in keys]

    def remember(self, keys: Sequence[object], placements: Sequence[Placement]) -> None:
        """Keep where the labels ``keys`` went this frame, forgetting all others."""
        self._offsets = {k: (p.rect[0] - p.target[0], p.rect[1] - p.target[1])
                         for k, p in zip(keys, placements, strict=True)}


@dataclass(frozen=True, slots=True)
class Style:
    """How one label is drawn: plate and text colours (BGR), an optional strip
    on its left edge (the colour of what it names)."""

    plate: tuple[int, int, int] = PLATE
    text: tuple[int, int, int] = (255, 255, 255)
    strip: tuple[int, int, int] | None = None


def draw_labels(img: npt.NDArray[np.uint8], texts: Sequence[str],
                placements: Sequence[Placement], styles: Sequence[Style],
                scale: float) -> None:
    """Draw placed labels onto ``img`` in place: leader lines first, then the plates.

    Parameters
    ----------
    img : np.ndarray
        ``(H, W, 3)`` uint8 BGR.
    texts, placements, styles : sequences
        One per label; the texts ASCII (see :func:`display_text`).
    scale : float
        Font scale the plates were sized with (:func:`label_size`).
    """
    for p, style in zip(placements, styles, strict=True):
        if p.moved:
            t = p.target
            centre = ((p.rect[0] + p.rect[2]) // 2, (p.rect[1] + p.rect[3]) // 2)
            a = _nearest(p.rect, ((t[0] + t[2]) // 2, (t[1] + t[3]) // 2))
            b = _nearest(t, centre)
            cv2.line(img, a, b, PLATE, 3, cv2.LINE_AA)
            cv2.line(img, a, b, style.strip or style.plate, 1, cv2.LINE_AA)
    for text, p, style in zip(texts, placements, styles, strict=True):
        x1, y1, x2, y2 = p.rect
        cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), style.plate, cv2.FILLED)
        if style.strip is not None:
            cv2.rectangle(img, (x1, y1), (x1 + 2, y2 - 1), style.strip, cv2.FILLED)
        th = _metrics(text, scale)[1]
        cv2.putText(img, text, (x1 + PAD, y1 + PAD + th), FONT, scale, style.text, 1,
                    cv2.LINE_AA)
