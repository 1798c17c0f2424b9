"""The bill photo: the frame a bill closed at, with the billed tray and its lines marked.

bill (:mod:`edge.billing.biller`) -> **photo** -> JPEG in the journal ->
``GET /api/bills/{id}/snapshot.jpg``. A cashier checks a bill against its
photo, and several trays may be in view when one closes: the billed tray is
outlined in its colour (the one it had in the live view) with its number and
total, the rest of the picture is dimmed, and each billed dish seen in the
frame is boxed and labelled with its line number and name as on the bill
(``1 Coffee``). A line whose dish is not in the frame (hidden at the closing
moment) has no box; a line that needs review is amber with ``?``. An unknown
dish's line is amber too and labelled with its number and ``?`` only
(``2 ?``): the box does not know its name, and the detector's look-alike is
exactly what it must not say; the cashier page points to it by that label.
The tray's total then ends in ``+ ?`` (what is known so far). Labels are
placed clear of the dishes (:func:`edge.labels.place_labels`).

Drawn once per bill, when the snapshot is taken; a pure function of the
frame, the tray and the lines.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from edge.billing.model import BillItem, round_money
from edge.frames import Track
from edge.labels import (
    DISH_LINE_PX,
    TRAY_LINE_PX,
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
from edge.track.tray_tracker import TRAY_KEY

DIM = 0.55
"""Brightness kept outside the billed tray."""

Box = tuple[float, float, float, float]


def dish_boxes(items: Sequence[BillItem], tracks: Sequence[Track], tray_id: int
               ) -> list[Box | None]:
    """Where each bill line's dish is in the frame, if it is seen.

    A line's dish is the track with the line's track id; failing that (the
    line's evidence merged fragments of one dish under its oldest id), an
    unused track of the same class on the same tray.

    Parameters
    ----------
    items : sequence of BillItem
        The bill's lines, in bill order.
    tracks : sequence of Track
        The tracks of the frame the bill closed at; boxes in source pixels.
    tray_id : int
        The billed tray.

    Returns
    -------
    list of (x1, y1, x2, y2) or None
        One per line, in bill order; None for a dish not found in the frame.
    """
    # dishes and trays are numbered apart: a dish may have its tray's number
    dishes = [t for t in tracks if t.tray_id == tray_id and t.class_name != TRAY_KEY]
    by_id = {t.track_id: t for t in dishes}
    used = {i.track_id for i in items if i.track_id in by_id}
    out: list[Box | None] = []
    for item in items:
        track = by_id.get(item.track_id)
        if track is None:
            track = next((t for t in dishes
                          if t.class_id == item.class_id and t.track_id not in used), None)
            if track is not None:
                used.add(track.track_id)
        out.append(None if track is None else track.box)
    return out


def tray_text(tray_id: int, items: Sequence[BillItem]) -> str:
    """The billed tray's label: ``Tray 5  12.40``, ``+ ?`` after it while a line is unknown."""
    total = f"{round_money(sum(i.price for i in items)):.2f}"
    return f"Tray {tray_id}  {total}{' + ?' if any(i.unknown for i in items) else ''}"


def line_text(n: int, item: BillItem) -> str:
    """Line ``n``'s label on its dish: ``1 Coffee``, ``1 Coffee ?`` to review, ``1 ?`` unknown."""
    if item.unknown:
        return f"{n} ?"
    name = display_text(item.name, fallback=item.key)
    return f"{n} {name} ?" if item.needs_review else f"{n} {name}"


def bill_photo(image: npt.NDArray[np.uint8], tray_id: int, tray_box: Box,
               items: Sequence[BillItem], boxes: Sequence[Box | None]) -> npt.NDArray[np.uint8]:
    """The bill's photo: ``image`` with the billed tray and its lines marked.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` uint8 BGR, the frame the bill closed at (not modified).
    tray_id : int
        The billed tray's number.
    tray_box : (x1, y1, x2, y2)
        The tray at closing, source pixels.
    items : sequence of BillItem
        The bill's lines, in bill order (line ``n`` is ``items[n - 1]``).
    boxes : sequence of box or None
        Each line's dish in the frame (:func:`dish_boxes`).

    Returns
    -------
    np.ndarray
        A new ``(H, W, 3)`` uint8 BGR image.
    """
    height, width = image.shape[:2]
    out = np.asarray(cv2.convertScaleAbs(image, alpha=DIM), np.uint8)
    tx1, ty1, tx2, ty2 = tray = clip_box(tray_box, width, height)
    out[ty1:ty2, tx1:tx2] = image[ty1:ty2, tx1:tx2]  # the billed tray at full brightness
    colour = tray_colour(tray_id)
    cv2.rectangle(out, (tx1, ty1), (tx2 - 1, ty2 - 1), colour, TRAY_LINE_PX, cv2.LINE_8)

    texts = [tray_text(tray_id, items)]
    targets = [tray]
    styles = [Style(plate=colour, text=text_colour(colour))]
    dishes: list[Rect] = []
    for n, (item, box) in enumerate(zip(items, boxes, strict=True), start=1):
        if box is None:
            continue
        rect = clip_box(box, width, height)
        dishes.append(rect)
        flagged = item.needs_review or item.unknown
        edge = AMBER if flagged else class_colour(item.class_id)
        cv2.rectangle(out, rect[:2], (rect[2] - 1, rect[3] - 1), edge,
                      TRAY_LINE_PX if flagged else DISH_LINE_PX, cv2.LINE_8)
        texts.append(line_text(n, item))
        styles.append(Style(plate=AMBER, text=(0, 0, 0)) if flagged else Style(strip=edge))
        targets.append(rect)
    scale = font_scale(width)
    placements = place_labels([label_size(t, scale) for t in texts], targets, dishes,
                              width, height)
    draw_labels(out, texts, placements, styles, scale)
    return out
