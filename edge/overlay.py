"""The cashier's overlay: each tray with its running total, each dish with its menu name.

track -> :class:`~edge.frames.TrackedFrame` -> **overlay** -> WebRTC track
(:mod:`edge.web.track`). What the cashier checks a tray against is its bill,
so the picture speaks the bill's language: a tray is outlined with its number
and its bill so far (the open bill the biller keeps, ``TrackedFrame.bills``);
a dish with the name it has on the menu in force (after a live rename, the
new name; never the detector's class key); a dish the bill will flag (vote
share under ``billing.confirm_below``) or a class the menu does not price is
outlined in amber and its label ends in ``?``. A dish its open bill holds as
an **unknown item** (``BillItem.unknown``: it looks like nothing the box
knows) is named ``Unknown dish?`` in the same amber, never by the detector's
look-alike class, and drawn even when that look-alike is kept off bills (an
unseen dish the detector takes for clutter). Classes the menu keeps off
bills (``billable = false``: cutlery, napkins) are not drawn. No track ids,
scores, corner stamp or engineering header: those are the engineer's overlay
(:func:`edge.annotate.annotate`), a per-viewer choice (:data:`OVERLAYS`).

Labels never cover a dish or another label where the picture leaves room
(:func:`edge.labels.place_labels`): trays' labels first, then dishes' from the
top of the picture down; a label stays where it was in the previous frame
while that spot is free (:class:`edge.labels.LabelMemory`), so labels do not
hop about as the trays slide. Measured with ``python bench/annotate.py``
(docs/BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge.annotate import annotate, is_tray
from edge.billing.menu import Menu
from edge.billing.model import UNKNOWN_NAME
from edge.frames import Track, TrackedFrame
from edge.labels import (
    DISH_LINE_PX,
    TRAY_LINE_PX,
    LabelMemory,
    Placement,
    Rect,
    Style,
    clip_box,
    display_text,
    draw_labels,
    font_scale,
    label_size,
    place_labels,
)
from edge.palette import AMBER, class_colour, text_colour, tray_colour
from edge.stamp import stamp_area

OverlayName = Literal["cashier", "engineer"]
"""The overlays a viewer may ask for (``"overlay"`` of the WebRTC offer)."""
OVERLAYS: tuple[OverlayName, ...] = ("cashier", "engineer")
DEFAULT_OVERLAY: OverlayName = "cashier"

UNKNOWN_LABEL = display_text(f"{UNKNOWN_NAME}?")
"""What an unknown dish is called on the picture."""
NO_UNKNOWN: frozenset[int] = frozenset()



@dataclass(frozen=True, slots=True)
class Label:
    """One label of the cashier's overlay.

    Attributes
    ----------
    track : Track
        What it names (a tray or a dish).
    text : str
        What it says (ASCII, see :func:`edge.labels.display_text`).
    box : Rect
        The track's box, rounded and clipped to the picture.
    flagged : bool
        The dish needs the cashier's review (or is not on the menu).
    """

    track: Track
    text: str
    box: Rect
    flagged: bool = False

    @property
    def is_tray(self) -> bool:
        """True for a tray's label."""
        return is_tray(self.track)



def _dish_label(track: Track, menu: Menu, box: Rect, unknown: Container[int]
                ) -> Label | None:
    """The dish's label from the menu in force; None for a class kept off bills."""
    if track.track_id in unknown:
        return Label(track, UNKNOWN_LABEL, box, flagged=True)
    key = (menu.class_names[track.class_id] if 0 <= track.class_id < len(menu.class_names)
           else track.class_name)
    entry = menu.entries.get(key)
    if entry is None:  # the menu does not price it: it would be missing from the bill
        return Label(track, f"{display_text(key.replace('_', ' '))} ?", box, flagged=True)
    if not entry.billable:
        return None
    name = display_text(entry.name, fallback=key)
    if track.confidence < menu.confirm_below:
        return Label(track, f"{name} ?", box, flagged=True)
    return Label(track, name, box)


def cashier_labels(tf: TrackedFrame, menu: Menu, memory: LabelMemory | None = None,
                   unknown: Container[int] = NO_UNKNOWN) -> tuple[list[Label], list[Placement]]:
    """What the cashier's overlay writes for ``tf`` and where (the layout, without drawing).

    Parameters
    ----------
    tf : TrackedFrame
        Tracks (boxes in source image pixels) and the open bills of its trays.
    menu : Menu
        The menu in force: names, billability, ``confirm_below``.
    memory : LabelMemory, optional
        Where the labels went in the previous frame of the same video: a label
        stays there while the spot is free (updated with this frame's).
    unknown : container of int
        Track ids of the dishes the open bills hold as unknown items
        (``BillItem.unknown`` of the tray states' items); a set, looked up once
        per dish.

    Returns
    -------
    labels : list of Label
        Trays first (in track order), then dishes from the top of the picture down.
    placements : list of Placement
        Where each label's plate goes, in the same order.
    """
    height, width = tf.frame.image.shape[:2]
    scale = font_scale(width)
    bills = {tid: total for tid, _, total in tf.bills}
    trays: list[Label] = []
    dishes: list[Label] = []
    for track in tf.tracks:
        box = clip_box(track.box, width, height)
        if is_tray(track):
            total = bills.get(track.track_id)
            text = f"Tray {track.track_id}" + ("" if total is None else f"  {total:.2f}")
            trays.append(Label(track, text, box))
        else:
            label = _dish_label(track, menu, box, unknown)
            if label is not None:
                dishes.append(label)
    dishes.sort(key=lambda lb: (lb.box[1], lb.box[0]))
    labels = trays + dishes
    keys = [(lb.is_tray, lb.track.track_id) for lb in labels]
    placements = place_labels([label_size(lb.text, scale) for lb in labels],
                              [lb.box for lb in labels], [lb.box for lb in dishes],
                              width, height, prefer=memory.prefer(keys) if memory else ())
    if memory is not None:
        memory.remember(keys, placements)
    return labels, placements


def _style(label: Label) -> Style:
    if label.is_tray:
        colour = tray_colour(label.track.track_id)
        return Style(plate=colour, text=text_colour(colour))
    if label.flagged:
        return Style(plate=AMBER, text=(0, 0, 0))
    return Style(strip=class_colour(label.track.class_id))


def cashier_overlay(tf: TrackedFrame, menu: Menu, memory: LabelMemory | None = None,
                    unknown: Container[int] = NO_UNKNOWN) -> npt.NDArray[np.uint8]:
    """Draw the cashier's overlay onto a copy of ``tf``'s image.

    Trays get a 3 px outline in their colour and a plate of that colour with
    their number and bill so far; dishes a 2 px outline in their class colour
    and a dark plate with their menu name (a strip of the class colour on its
    left edge); flagged and unknown dishes an amber outline and plate, name
    ending in ``?``. Labels are placed by :func:`cashier_labels`; one moved
    away from its box is joined to it by a line. The corner stamp of a
    synthetic camera (:mod:`edge.stamp`) is painted over with the colour of
    the picture beside it.

    Parameters
    ----------
    tf : TrackedFrame
        The frame and its tracks; boxes in source image pixels.
    menu : Menu
        The menu in force (names after a live rename).
    memory : LabelMemory, optional
        Keeps labels where they were in the previous frame (:func:`cashier_labels`).
    unknown : container of int
        Track ids of the dishes held as unknown items (:func:`cashier_labels`).

    Returns
    -------
    np.ndarray
        New ``(height, width, 3)`` uint8 BGR image; ``tf.frame.image`` is not
        modified.
    """
    out: npt.NDArray[np.uint8] = tf.frame.image.copy()
    stamp = stamp_area(out)
    if stamp is not None:  # a synthetic camera's code: no business of the cashier's
        w, h = stamp
        out[:h, :w] = np.round(cv2.mean(out[:h, w : 2 * w])[:3]).astype(np.uint8)
    labels, placements = cashier_labels(tf, menu, memory, unknown)
    for lb in labels:
        x1, y1, x2, y2 = lb.box
        if lb.is_tray:
            colour, px = tray_colour(lb.track.track_id), TRAY_LINE_PX
        else:
            colour = AMBER if lb.flagged else class_colour(lb.track.class_id)
            px = TRAY_LINE_PX if lb.flagged else DISH_LINE_PX
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), colour, px, cv2.LINE_8)
    draw_labels(out, [lb.text for lb in labels], placements, [_style(lb) for lb in labels],
                font_scale(out.shape[1]))
    return out


def render(overlay: OverlayName, tf: TrackedFrame, menu: Menu, class_names: Sequence[str], *,
           fps: float, latency_ms: float | None,
           memory: LabelMemory | None = None,
           unknown: Container[int] = NO_UNKNOWN) -> npt.NDArray[np.uint8]:
    """Draw ``overlay`` onto a copy of ``tf``'s image (the cashier's or the engineer's;
    ``memory``: the cashier's labels of the previous frame of this video;
    ``unknown``: track ids of the dishes held as unknown items)."""
    if overlay == "engineer":
        return annotate(tf, fps=fps, latency_ms=latency_ms, class_names=class_names)
    return cashier_overlay(tf, menu, memory, unknown)
