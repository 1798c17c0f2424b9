"""The drawing surface shared by every sprite: a supersampled canvas and shape helpers.

Where it sits: the simulator's sprite package (``edge/sim/sprites``); the
vessel, food, clutter and surface modules all draw through :class:`_Pen` in
*unit* coordinates (1 unit = half the item's long side, ``v`` pointing down,
origin at the item's centre), and :meth:`_Pen.finish` turns the canvas into a
cropped, anti-aliased BGRA sprite.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import numpy.typing as npt

Color = tuple[int, int, int]
Image = npt.NDArray[np.uint8]
Point = tuple[float, float]

_SS = 4  # supersampling factor of small item canvases
_MARGIN = 2  # transparent border around a cropped sprite, output pixels
_PAD = 4  # canvas border before cropping, output pixels
_NOISE_SIGMA = 2.0  # grey levels of per-pixel texture noise


class _Pen:
    """A supersampled BGRA canvas addressed in unit coordinates.

    ``rot=True`` (the default) turns a shape with the instance's arrangement
    angle; ``rot=False`` keeps it fixed to the image (light glints).
    """

    __slots__ = ("alpha", "bgr", "cos", "cx", "cy", "rng", "sin", "ss", "theta", "unit")

    def __init__(
        self,
        size_px: float,
        rng: np.random.Generator,
        theta: float,
        *,
        ss: int = _SS,
        aspect: float = 1.0,
        slack: float = 1.25,
    ) -> None:
        # slack: drawings may poke a little out of the unit circle when turned.
        w = (math.ceil(size_px * slack) + 2 * _PAD) * ss
        h = (math.ceil(size_px * aspect * slack) + 2 * _PAD) * ss
        self.bgr = np.zeros((h, w, 3), np.uint8)
        self.alpha = np.zeros((h, w), np.uint8)
        self.cx, self.cy = w / 2, h / 2
        self.unit = size_px * ss / 2
        self.theta = theta
        self.cos, self.sin = math.cos(theta), math.sin(theta)
        self.rng = rng
        self.ss = ss

    def xy(self, u: float, v: float, rot: bool = True) -> tuple[int, int]:
        if rot:
            u, v = u * self.cos - v * self.sin, u * self.sin + v * self.cos
        return round(self.cx + u * self.unit), round(self.cy + v * self.unit)

    def n(self, length: float) -> int:
        """A length in units as whole canvas pixels, at least 1."""
        return max(1, round(length * self.unit))

    def jit(self, color: Color, amount: float = 8.0) -> Color:
        """``color`` with a random brightness and per-channel shift."""
        gain = self.rng.uniform(0.93, 1.07)
        shift = self.rng.normal(0.0, amount / 2, 3)
        b, g, r = (int(np.clip(c * gain + s, 0, 255)) for c, s in zip(color, shift, strict=True))
        return b, g, r

    def _paint(
        self, draw: Callable[[Image, Color, int], object], color: Color, solid: bool
    ) -> None:
        if solid:
            draw(self.alpha, (255, 255, 255), cv2.LINE_8)
            draw(self.bgr, color, cv2.LINE_8)
        else:
            draw(self.bgr, color, cv2.LINE_AA)

    def disc(
        self, u: float, v: float, r: float, color: Color, *, solid: bool = False, rot: bool = True
    ) -> None:
        centre, radius = self.xy(u, v, rot), self.n(r)
        self._paint(lambda im, col, lt: cv2.circle(im, centre, radius, col, -1, lt), color, solid)

    def ring(
        self, u: float, v: float, r: float, color: Color, width: float, *, rot: bool = True
    ) -> None:
        centre, radius, thick = self.xy(u, v, rot), self.n(r), self.n(width)
        cv2.circle(self.bgr, centre, radius, color, thick, cv2.LINE_AA)

    def ellipse(
        self,
        u: float,
        v: float,
        a: float,
        b: float,
        color: Color,
        *,
        angle: float = 0.0,
        width: float = 0.0,
        arc: tuple[float, float] = (0.0, 360.0),
        solid: bool = False,
        rot: bool = True,
    ) -> None:
        """Ellipse, semi-axes ``a``, ``b`` units, turned ``angle`` degrees; filled if width=0."""
        centre, axes = self.xy(u, v, rot), (self.n(a), self.n(b))
        deg = angle + (math.degrees(self.theta) if rot else 0.0)
        thick = -1 if width == 0 else self.n(width)
        self._paint(
            lambda im, col, lt: cv2.ellipse(im, centre, axes, deg, arc[0], arc[1], col, thick, lt),
            color,
            solid,
        )

    def poly(
        self, pts: Sequence[Point], color: Color, *, solid: bool = False, rot: bool = True
    ) -> None:
        arr = np.array([self.xy(u, v, rot) for u, v in pts], np.int32)
        self._paint(lambda im, col, lt: cv2.fillPoly(im, [arr], col, lt), color, solid)

    def line(
        self,
        pts: Sequence[Point],
        color: Color,
        width: float,
        *,
        closed: bool = False,
        solid: bool = False,
        rot: bool = True,
    ) -> None:
        arr = np.array([self.xy(u, v, rot) for u, v in pts], np.int32)
        thick = self.n(width)
        self._paint(
            lambda im, col, lt: cv2.polylines(im, [arr], closed, col, thick, lt), color, solid
        )

    def clipped(self, pts: Sequence[Point], draw: Callable[[], None]) -> None:
        """Run ``draw`` but keep its BGR changes only inside polygon ``pts``."""
        mask = np.zeros_like(self.alpha)
        cv2.fillPoly(mask, [np.array([self.xy(u, v) for u, v in pts], np.int32)], (255,))
        before = self.bgr.copy()
        draw()
        np.copyto(self.bgr, before, where=(mask == 0)[:, :, None])

    def finish(self) -> Image:
        """Box-filter down by ``ss``, add texture noise, crop; ``(h, w, 4)`` BGRA uint8."""
        size = (self.alpha.shape[1] // self.ss, self.alpha.shape[0] // self.ss)
        premul = cv2.bitwise_and(self.bgr, self.bgr, mask=self.alpha)
        bgr = cv2.resize(premul, size, interpolation=cv2.INTER_AREA).astype(np.float32)
        alpha = cv2.resize(self.alpha, size, interpolation=cv2.INTER_AREA)
        gain = 255.0 / np.maximum(alpha, 1).astype(np.float32)
        noise = self.rng.standard_normal((size[1], size[0]), dtype=np.float32) * _NOISE_SIGMA
        bgr = bgr * gain[:, :, None] + noise[:, :, None]
        out = np.dstack([np.clip(bgr, 0, 255).astype(np.uint8), alpha])
        out[alpha == 0, :3] = 0
        return _crop(out)


def _crop(bgra: Image) -> Image:
    rows = np.flatnonzero(bgra[:, :, 3].any(axis=1))
    cols = np.flatnonzero(bgra[:, :, 3].any(axis=0))
    if rows.size == 0:
        return bgra
    h, w = bgra.shape[:2]
    y0, y1 = max(0, rows[0] - _MARGIN), min(h, rows[-1] + 1 + _MARGIN)
    x0, x1 = max(0, cols[0] - _MARGIN), min(w, cols[-1] + 1 + _MARGIN)
    return np.ascontiguousarray(bgra[y0:y1, x0:x1])


def _blob(
    u: float,
    v: float,
    a: float,
    b: float,
    rng: np.random.Generator,
    *,
    rough: float = 0.08,
    n: int = 20,
) -> list[Point]:
    """Irregular closed outline around an ellipse (food that is not a circle)."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    k = 1 + rng.uniform(-rough, rough, n)
    k = (k + np.roll(k, 1) + np.roll(k, -1)) / 3
    return [
        (u + a * ki * math.cos(ti), v + b * ki * math.sin(ti)) for ti, ki in zip(t, k, strict=True)
    ]


def _wedge(apex: Point, radius: float, half_angle_deg: float, n: int = 12) -> list[Point]:
    """A pie wedge pointing left from its apex, arc on the right."""
    ts = np.radians(np.linspace(-half_angle_deg, half_angle_deg, n))
    return [apex] + [(apex[0] + radius * math.cos(t), apex[1] + radius * math.sin(t)) for t in ts]


def _scatter(
    p: _Pen,
    count: int,
    r_max: float,
    r_dot: float,
    colors: Sequence[Color],
    *,
    at: Point = (0.0, 0.0),
) -> None:
    """Small random dots (crumbs, seeds, spices) inside a disc of radius ``r_max`` around ``at``."""
    rad = r_max * np.sqrt(p.rng.uniform(0, 1, count))
    ang = p.rng.uniform(0, 2 * np.pi, count)
    pick = p.rng.integers(0, len(colors), count)
    for r, a, k in zip(rad, ang, pick, strict=True):
        p.disc(at[0] + r * math.cos(a), at[1] + r * math.sin(a), r_dot, colors[k])


def _spot(p: _Pen, r_max: float) -> Point:
    """A uniformly random point in the disc of radius ``r_max`` around the centre."""
    r, a = r_max * math.sqrt(p.rng.random()), p.rng.uniform(0, 2 * math.pi)
    return r * math.cos(a), r * math.sin(a)


def _shade(color: Color, k: float) -> Color:
    """``color`` times ``k`` (darker below 1), clipped to 0..255."""
    b, g, r = (int(np.clip(c * k, 0, 255)) for c in color)
    return b, g, r


def _rounded_rect(
    u0: float, v0: float, u1: float, v1: float, r: float, *, n: int = 6
) -> list[Point]:
    pts: list[Point] = []
    corners = (
        (u1 - r, v0 + r, -90),
        (u1 - r, v1 - r, 0),
        (u0 + r, v1 - r, 90),
        (u0 + r, v0 + r, 180),
    )
    for cu, cv, start in corners:
        for t in np.radians(np.linspace(start, start + 90, n)):
            pts.append((cu + r * math.cos(t), cv + r * math.sin(t)))
    return pts
