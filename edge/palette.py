"""The overlay's colours: one per class, one per tray, and the review amber.

Shared by both video overlays (:mod:`edge.annotate`, :mod:`edge.overlay`) and
the bill photo (:mod:`edge.billing.photo`), so a tray keeps its colour from
the live view to its bill's picture.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

# Golden-ratio hue steps give neighbouring ids distant hues, for any number of
# classes or trays (the palette does not depend on the model's class count).
_GOLDEN = 0.618033988749895

AMBER = (0, 176, 255)
"""BGR of what needs the cashier's review (a flagged or unknown dish)."""


@cache
def class_colour(class_id: int) -> tuple[int, int, int]:
    """Stable BGR colour of a class: the same id gets the same colour in every frame.

    Parameters
    ----------
    class_id : int
        Class id (>= 0; negative ids are folded onto positive ones).

    Returns
    -------
    tuple of 3 int
        ``(b, g, r)``, each 0-255, saturated and bright enough to show on a
        grey counter.
    """
    i = abs(class_id)
    hue = int((i * _GOLDEN) % 1.0 * 180)  # OpenCV hue is 0-179
    sat = 200 + 55 * ((i // 7) % 2)
    val = 255 - 40 * ((i // 3) % 2)
    hsv = np.array([[[hue, sat, val]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


@cache
def tray_colour(tray_id: int) -> tuple[int, int, int]:
    """Stable BGR colour of a tray (a palette apart from the class colours)."""
    hue = int(((tray_id * _GOLDEN) + 0.3) % 1.0 * 180)
    hsv = np.array([[[hue, 255, 230]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def text_colour(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads on a plate of BGR colour ``bg``."""
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)
