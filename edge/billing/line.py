"""The checkout line of a stream: where a tray's bill closes.

A tray is *before* the line while its centre's signed distance (along the
travel direction) is below ``-hysteresis``, *past* it above ``+hysteresis``,
and keeps its previous side in between, so a tray jittering on the line or
pulled back a little does not flip sides. A tray crosses when it goes from
before to past; only a tray first seen before the line can cross (one born
past it, e.g. after a restart, was billed already or is leaving).
"""

from __future__ import annotations

import math

from edge.config import CheckoutConfig

BEFORE, UNKNOWN, PAST = -1, 0, 1


class CheckoutLine:
    """Geometry of one stream's checkout line.

    Parameters
    ----------
    config : CheckoutConfig
        Line (or None for a vertical line at 62 % of the width), direction and
        hysteresis.
    width, height : int
        Frame size in pixels (used for the default line).
    """

    def __init__(self, config: CheckoutConfig, width: int, height: int) -> None:
        if config.line is None:
            x = 0.62 * width
            (x1, y1), (x2, y2) = (x, 0.0), (x, float(height))
        else:
            (x1, y1), (x2, y2) = config.line
        self.points = ((float(x1), float(y1)), (float(x2), float(y2)))
        dx, dy = config.direction
        n = math.hypot(dx, dy)
        self.direction = (dx / n, dy / n)
        self.hysteresis = config.hysteresis_px
        # normal of the line, oriented along the travel direction
        lx, ly = x2 - x1, y2 - y1
        ln = math.hypot(lx, ly)
        nx, ny = -ly / ln, lx / ln
        if nx * self.direction[0] + ny * self.direction[1] < 0:
            nx, ny = -nx, -ny
        self.normal = (nx, ny)
        self._origin = (float(x1), float(y1))

    def distance(self, x: float, y: float) -> float:
        """Signed distance of ``(x, y)`` past the line (negative = before it)."""
        return (x - self._origin[0]) * self.normal[0] + (y - self._origin[1]) * self.normal[1]

    def side(self, x: float, y: float, previous: int = UNKNOWN) -> int:
        """``BEFORE``, ``PAST`` or, inside the hysteresis band, ``previous``."""
        d = self.distance(x, y)
        if d > self.hysteresis:
            return PAST
        if d < -self.hysteresis:
            return BEFORE
        return previous
