"""Top-down drawings of every menu class, of the tray and of the counter.

Where it sits: the simulator (``edge/sim``). The scene asks for one sprite
when an object enters the view, keeps it for the object's lifetime and warps
it onto every frame (tray motion, perspective, lighting). Drawing may cost a
few milliseconds; warping is the per-frame cost.

How an item is drawn: on a canvas ``_SS`` times the output resolution, in
*unit* coordinates (1 unit = half the item's long side, ``v`` pointing down,
origin at the item's centre). Silhouette shapes go into the alpha channel and
into BGR without anti-aliasing, so both agree pixel for pixel; details go into
BGR only, anti-aliased. The canvas is then box-filtered down with
premultiplied alpha (which anti-aliases the outline without dark fringes),
given faint sensor-like noise and cropped to the object plus a 2 px margin.

Look-alike pairs (``menu.LOOKALIKE_PAIRS``) share the vessel drawing and
differ in the hue of food covering a good part of the item, so they stay
apart at the detector's half resolution after blur and JPEG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import numpy.typing as npt

from edge.sim.menu import MenuItem

Color = tuple[int, int, int]
Image = npt.NDArray[np.uint8]
Point = tuple[float, float]

_SS = 4  # supersampling factor of small item canvases
_MARGIN = 2  # transparent border around a cropped sprite, output pixels
_PAD = 4  # canvas border before cropping, output pixels
_NOISE_SIGMA = 2.0  # grey levels of per-pixel texture noise
TRAY_SIZE = (260, 190)  # tray width, height in pixels at scale 1


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


# ----------------------------------------------------------------- vessels

WHITE: Color = (242, 244, 245)
CREAM: Color = (205, 228, 240)


def _ceramic(p: _Pen) -> Color:
    return p.jit(WHITE if p.rng.random() < 0.7 else CREAM, 6)


def _shade(color: Color, k: float) -> Color:
    """``color`` times ``k`` (darker below 1), clipped to 0..255."""
    b, g, r = (int(np.clip(c * k, 0, 255)) for c in color)
    return b, g, r


def _plate(p: _Pen, well: float = 0.7) -> None:
    base = _ceramic(p)
    p.disc(0, 0, 1.0, base, solid=True)
    p.ring(0, 0, 0.97, _shade(base, 0.85), 0.03)
    if p.rng.random() < 0.3:
        p.ring(0, 0, 0.88, p.jit((150, 90, 40), 30), 0.025)
    p.disc(0, 0, well, _shade(base, 0.95))
    p.ring(0, 0, well, _shade(base, 0.82), 0.03)
    p.ellipse(-0.25, -0.25, 0.85, 0.85, _shade(base, 1.06), width=0.04, arc=(190, 250), rot=False)


def _bowl(p: _Pen, contents: Color) -> None:
    base = _ceramic(p)
    p.disc(0, 0, 1.0, base, solid=True)
    p.ring(0, 0, 0.97, _shade(base, 0.85), 0.03)
    p.disc(0.02, 0.02, 0.88, _shade(base, 0.8), rot=False)
    p.disc(-0.02, -0.02, 0.86, _shade(base, 0.93), rot=False)
    p.disc(0.02, 0.02, 0.78, contents, rot=False)


def _mug(p: _Pen, liquid: Color) -> float:
    """Mug with a handle along +u; returns the liquid radius (centred at u=-0.22)."""
    body = (
        p.jit(WHITE, 6)
        if p.rng.random() < 0.7
        else p.jit((70, 70, 170) if p.rng.random() < 0.5 else (150, 110, 50), 20)
    )
    p.line([(0.4, 0), (0.86, 0)], body, 0.26, solid=True)
    p.disc(0.86, 0, 0.13, body, solid=True)
    p.line([(0.55, 0), (0.84, 0)], _shade(body, 0.8), 0.08)
    p.disc(-0.22, 0, 0.78, body, solid=True)
    p.ring(-0.22, 0, 0.75, _shade(body, 0.85), 0.03)
    p.disc(-0.22, 0, 0.64, _shade(body, 0.75))
    p.disc(-0.22, 0, 0.6, liquid)
    return 0.6


def _glass(p: _Pen, liquid: Color) -> None:
    rim = p.jit((222, 222, 212), 5)
    p.disc(0, 0, 1.0, rim, solid=True)
    p.ring(0, 0, 0.96, (245, 245, 240), 0.04)
    p.disc(0, 0, 0.88, _shade(liquid, 0.85))
    p.disc(0, 0, 0.82, liquid)
    p.ellipse(0, 0, 0.92, 0.92, (250, 250, 250), width=0.05, arc=(200, 250), rot=False)


def _small_plate(p: _Pen) -> None:
    _plate(p, well=0.72)


# ------------------------------------------------------------- hot drinks


def _coffee(p: _Pen) -> None:
    r = _mug(p, p.jit((22, 38, 62), 6))
    p.ring(-0.22, 0, r - 0.04, p.jit((45, 78, 120), 8), 0.06)
    p.ellipse(-0.42, -0.2, 0.18, 0.06, (70, 85, 100), angle=-35, rot=False)


def _cappuccino(p: _Pen) -> None:
    r = _mug(p, p.jit((50, 95, 150), 8))
    p.disc(-0.22, 0, r - 0.07, p.jit((178, 212, 232), 6))
    if p.rng.random() < 0.5:
        heart = [
            (-0.22 + 0.3 * x, 0.3 * y)
            for x, y in [
                (0, 0.9),
                (-0.9, -0.1),
                (-0.75, -0.75),
                (-0.3, -0.85),
                (0, -0.45),
                (0.3, -0.85),
                (0.75, -0.75),
                (0.9, -0.1),
            ]
        ]
        p.poly(heart, p.jit((95, 135, 180), 6))
    _scatter(p, 60, 0.38, 0.018, [(40, 60, 95), (55, 80, 115)], at=(-0.22, 0))


def _tea(p: _Pen) -> None:
    _mug(p, p.jit((25, 95, 175), 8))
    p.disc(-0.3, 0.05, 0.45, p.jit((40, 120, 200), 6))
    p.line([(-0.22, 0), (-0.6, -0.55), (-0.8, -0.72)], (225, 230, 235), 0.025)
    tag = [(-0.98, -0.95), (-0.68, -0.95), (-0.68, -0.62), (-0.98, -0.62)]
    p.poly(tag, p.jit((60, 170, 235), 15), solid=True)
    p.ellipse(-0.45, -0.2, 0.15, 0.05, (90, 160, 220), angle=-35, rot=False)


def _espresso(p: _Pen) -> None:
    saucer = _ceramic(p)
    p.disc(0, 0, 1.0, saucer, solid=True)
    p.ring(0, 0, 0.95, _shade(saucer, 0.85), 0.04)
    p.ring(0, 0, 0.7, _shade(saucer, 0.9), 0.04)
    cup = _shade(saucer, 1.02)
    p.line([(0.4, 0), (0.78, 0)], _shade(saucer, 0.78), 0.2)
    p.line([(0.4, 0), (0.76, 0)], cup, 0.13)
    p.disc(-0.08, 0, 0.55, _shade(saucer, 0.8))
    p.disc(-0.1, -0.02, 0.52, cup)
    p.disc(-0.1, -0.02, 0.42, p.jit((55, 105, 165), 6))
    p.ring(-0.1, -0.02, 0.4, (30, 60, 100), 0.05)
    _scatter(p, 14, 0.3, 0.03, [(80, 135, 195), (40, 80, 130)], at=(-0.1, -0.02))


# ------------------------------------------------------------ cold drinks


def _beer(p: _Pen) -> None:
    _glass(p, p.jit((20, 135, 205), 8))
    p.disc(0, 0, 0.7, p.jit((212, 234, 245), 5))
    _scatter(p, 22, 0.62, 0.04, [(190, 215, 230), (235, 245, 250)])


def _orange_juice(p: _Pen) -> None:
    _glass(p, p.jit((12, 120, 242), 6))
    _scatter(p, 30, 0.75, 0.035, [(50, 165, 250), (5, 95, 215)])


def _apple_juice(p: _Pen) -> None:
    _glass(p, p.jit((50, 195, 232), 6))
    p.disc(0, 0, 0.55, p.jit((95, 215, 240), 5))
    p.ring(0, 0, 0.55, (70, 205, 236), 0.03)
    p.ellipse(0.1, 0.1, 0.3, 0.09, (170, 235, 250), angle=40)


def _bottle(p: _Pen, cap: Color, label: Color) -> None:
    body = p.jit((228, 218, 205), 4)
    p.disc(0, 0, 1.0, body, solid=True)
    p.disc(0, 0, 0.98, p.jit(label, 8))
    p.ring(0, 0, 0.9, _shade(label, 1.35), 0.03)
    p.disc(0, 0, 0.8, body)
    for k in range(8):
        a = k * math.pi / 4
        p.line(
            [(0.5 * math.cos(a), 0.5 * math.sin(a)), (0.78 * math.cos(a), 0.78 * math.sin(a))],
            (240, 235, 228),
            0.04,
        )
    p.disc(0, 0, 0.46, (238, 236, 232))
    p.disc(0, 0, 0.4, p.jit(cap, 6))
    p.ring(0, 0, 0.38, _shade(cap, 0.7), 0.05)
    p.disc(-0.1, -0.1, 0.12, _shade(cap, 1.35), rot=False)


def _water_still(p: _Pen) -> None:
    _bottle(p, cap=(205, 115, 30), label=(185, 95, 25))


def _water_sparkling(p: _Pen) -> None:
    _bottle(p, cap=(60, 170, 40), label=(55, 150, 45))


# ------------------------------------------------------------ plated food


def _fries(
    p: _Pen, u: float, v: float, count: int, spread: float, *, color: Color = (90, 200, 240)
) -> None:
    for _ in range(count):
        cu, cv = u + p.rng.uniform(-spread, spread), v + p.rng.uniform(-spread, spread) * 0.7
        a = p.rng.uniform(0, math.pi)
        length = p.rng.uniform(0.14, 0.24)
        du, dv = length * math.cos(a), length * math.sin(a)
        col = p.jit(color, 14)
        p.line([(cu - du, cv - dv), (cu + du, cv + dv)], _shade(col, 0.8), 0.075)
        p.line([(cu - du, cv - dv), (cu + du, cv + dv)], col, 0.05)


def _lemon(p: _Pen, u: float, v: float, r: float) -> None:
    p.disc(u, v, r, (40, 200, 240))
    p.disc(u, v, r * 0.82, (130, 225, 250))
    for k in range(6):
        a = k * math.pi / 3
        p.line(
            [(u, v), (u + 0.8 * r * math.cos(a), v + 0.8 * r * math.sin(a))], (215, 245, 250), 0.015
        )


def _schnitzel_fries(p: _Pen) -> None:
    _plate(p)
    p.poly(_blob(-0.15, 0.0, 0.5, 0.38, p.rng, rough=0.12), p.jit((45, 120, 190), 8))
    p.poly(_blob(-0.15, 0.0, 0.44, 0.32, p.rng, rough=0.12), p.jit((60, 140, 205), 8))
    _scatter(p, 30, 0.32, 0.025, [(30, 90, 150), (90, 170, 225)], at=(-0.15, 0))
    _lemon(p, -0.2, -0.05, 0.14)
    _fries(p, 0.42, 0.05, 11, 0.16)


def _pasta_nest(p: _Pen, noodle: Color) -> None:
    p.disc(0, 0, 0.6, _shade(noodle, 0.9))
    for _ in range(16):
        c = p.rng.uniform(-0.25, 0.25, 2)
        r = p.rng.uniform(0.2, 0.38)
        start = p.rng.uniform(0, 360)
        p.ellipse(
            float(c[0]),
            float(c[1]),
            r,
            r * 0.8,
            p.jit(noodle, 10),
            angle=p.rng.uniform(0, 180),
            width=0.035,
            arc=(start, start + 220),
        )


def _pasta_bolognese(p: _Pen) -> None:
    _plate(p)
    _pasta_nest(p, (130, 205, 238))
    p.poly(_blob(0, 0, 0.46, 0.44, p.rng, rough=0.15), p.jit((30, 45, 160), 8))
    _scatter(p, 40, 0.4, 0.035, [(25, 35, 110), (45, 70, 175)])
    _scatter(p, 10, 0.35, 0.02, [(200, 235, 245)])
    p.ellipse(0.05, -0.1, 0.1, 0.05, (40, 130, 40), angle=30)


def _pasta_carbonara(p: _Pen) -> None:
    _plate(p)
    _pasta_nest(p, (120, 210, 240))
    p.poly(_blob(0, 0, 0.46, 0.44, p.rng, rough=0.15), p.jit((140, 215, 242), 6))
    for _ in range(14):
        u, v = p.rng.uniform(-0.38, 0.38, 2)
        p.ellipse(
            float(u), float(v), 0.07, 0.04, p.jit((80, 95, 185), 12), angle=p.rng.uniform(0, 180)
        )
    _scatter(p, 30, 0.45, 0.015, [(40, 40, 40)])


def _sausage(p: _Pen, u: float, v: float, angle: float) -> None:
    """A grilled sausage 0.76 units long through ``(u, v)``, turned ``angle`` radians."""
    du, dv = 0.38 * math.cos(angle), 0.38 * math.sin(angle)
    col = p.jit((45, 85, 160), 10)
    p.line([(u - du, v - dv), (u + du, v + dv)], _shade(col, 0.7), 0.24)
    p.line([(u - du, v - dv), (u + du, v + dv)], col, 0.19)
    nu, nv = -0.09 * math.sin(angle), 0.09 * math.cos(angle)
    for t in (-0.55, -0.2, 0.15, 0.5):
        cu, cv = u + t * du, v + t * dv
        p.line([(cu - nu, cv - nv), (cu + nu, cv + nv)], (25, 40, 80), 0.03)


def _bratwurst(p: _Pen) -> None:
    _plate(p)
    p.poly(_rounded_rect(0.02, -0.62, 0.58, -0.06, 0.14), p.jit((45, 105, 170), 8))
    p.poly(_rounded_rect(0.08, -0.56, 0.52, -0.12, 0.1), p.jit((165, 210, 235), 6))
    _scatter(p, 16, 0.18, 0.02, [(130, 180, 215)], at=(0.3, -0.34))
    _sausage(p, -0.1, 0.12, 0.25)
    _sausage(p, -0.15, 0.38, 0.15)
    p.poly(_blob(0.4, 0.3, 0.14, 0.1, p.rng, rough=0.2), p.jit((30, 185, 220), 8))


def _burger(p: _Pen) -> None:
    _plate(p)
    p.poly(_blob(-0.1, 0, 0.52, 0.52, p.rng, rough=0.1, n=24), p.jit((60, 175, 90), 12))
    p.disc(-0.1, 0, 0.46, p.jit((40, 120, 195), 8))
    p.disc(-0.13, -0.04, 0.34, p.jit((65, 150, 215), 6))
    for _ in range(18):
        su, sv = _spot(p, 0.36)
        p.ellipse(
            -0.1 + su,
            sv,
            0.035,
            0.018,
            (190, 230, 245),
            angle=p.rng.uniform(0, 180),
        )
    _fries(p, 0.55, 0.0, 7, 0.12)


def _fish_chips(p: _Pen) -> None:
    _plate(p)
    fish = _blob(-0.05, -0.15, 0.58, 0.24, p.rng, rough=0.15, n=24)
    p.poly(fish, p.jit((60, 165, 225), 8))
    _scatter(p, 25, 0.22, 0.04, [(95, 190, 235), (40, 135, 200)], at=(-0.05, -0.15))
    _fries(p, 0.0, 0.35, 10, 0.3, color=(105, 205, 235))
    p.disc(0.52, -0.3, 0.13, (235, 240, 240))
    p.disc(0.52, -0.3, 0.1, (195, 225, 230))
    p.poly(_blob(-0.45, 0.32, 0.16, 0.13, p.rng, rough=0.2), p.jit((70, 175, 110), 10))
    _lemon(p, 0.4, 0.05, 0.12)


# ----------------------------------------------------------------- soups, salads


def _tomato_soup(p: _Pen) -> None:
    _bowl(p, p.jit((35, 45, 195), 8))
    p.ellipse(0.0, 0.0, 0.3, 0.22, (215, 225, 240), width=0.04, arc=(0, 300))
    p.ellipse(0.05, 0.05, 0.15, 0.1, (215, 225, 240), width=0.03, arc=(30, 330))
    p.ellipse(-0.35, -0.25, 0.1, 0.05, (40, 150, 50), angle=40)
    p.ellipse(-0.28, -0.32, 0.09, 0.045, (40, 140, 45), angle=-20)


def _pumpkin_soup(p: _Pen) -> None:
    _bowl(p, p.jit((25, 135, 235), 8))
    _scatter(p, 8, 0.5, 0.04, [(120, 200, 245), (200, 230, 245)])
    for _ in range(7):
        su, sv = _spot(p, 0.35)
        p.ellipse(su, sv, 0.07, 0.035, (40, 90, 50), angle=p.rng.uniform(0, 180))
    p.ellipse(0, 0, 0.25, 0.25, (30, 95, 170), width=0.03, arc=(0, 270))


def _leaves(p: _Pen, count: int, r_max: float, greens: Sequence[Color]) -> None:
    for _ in range(count):
        u, v = _spot(p, r_max)
        col = p.jit(greens[int(p.rng.integers(0, len(greens)))], 12)
        ang = p.rng.uniform(0, 180)
        p.ellipse(u, v, 0.2, 0.11, col, angle=ang)
        p.ellipse(u, v, 0.16, 0.015, _shade(col, 1.25), angle=ang)


def _green_salad(p: _Pen) -> None:
    _bowl(p, (40, 120, 60))
    _leaves(p, 26, 0.62, [(60, 190, 120), (40, 150, 75), (90, 215, 160), (30, 120, 60)])
    _scatter(p, 5, 0.5, 0.05, [(70, 170, 120)])


def _greek_salad(p: _Pen) -> None:
    _bowl(p, (70, 150, 140))
    _leaves(p, 7, 0.62, [(60, 170, 110), (40, 140, 75)])
    for _ in range(3):
        su, sv = _spot(p, 0.5)
        p.ellipse(
            su,
            sv,
            0.14,
            0.1,
            (130, 50, 120),
            angle=p.rng.uniform(0, 180),
            width=0.03,
        )
    for _ in range(9):
        su, sv = _spot(p, 0.58)
        p.ellipse(
            su,
            sv,
            0.17,
            0.11,
            p.jit((40, 45, 205), 10),
            angle=p.rng.uniform(0, 180),
        )
    for _ in range(6):
        u, v = _spot(p, 0.5)
        p.disc(u, v, 0.12, (110, 190, 140))
        p.disc(u, v, 0.09, (170, 225, 200))
    for _ in range(10):
        u, v = _spot(p, 0.55)
        s, t = 0.11, p.rng.uniform(0, math.pi / 2)
        sq = [
            (u + s * math.cos(t + k * math.pi / 2), v + s * math.sin(t + k * math.pi / 2))
            for k in range(4)
        ]
        p.poly(sq, p.jit((238, 245, 246), 4))
    for _ in range(7):
        su, sv = _spot(p, 0.6)
        p.disc(su, sv, 0.075, p.jit((45, 25, 35), 5))


# ------------------------------------------------------------ cakes on small plates

_CAKE_APEX: Point = (-0.72, 0.0)
_CAKE_R = 1.3
_CAKE_HALF_ANGLE = 30.0


def _chocolate_cake(p: _Pen) -> None:
    _small_plate(p)
    p.poly(_wedge(_CAKE_APEX, _CAKE_R, _CAKE_HALF_ANGLE), p.jit((25, 42, 72), 6))
    p.poly(_wedge((-0.62, 0.0), 1.1, 25), p.jit((35, 55, 90), 6))
    _scatter(p, 18, 0.3, 0.035, [(60, 95, 140), (15, 25, 45)], at=(-0.05, 0))
    p.disc(0.34, 0, 0.13, (225, 238, 245))
    p.disc(0.34, 0, 0.07, (40, 40, 190))


def _cheesecake(p: _Pen) -> None:
    _small_plate(p)
    p.poly(_wedge(_CAKE_APEX, _CAKE_R, _CAKE_HALF_ANGLE), p.jit((70, 135, 195), 6))
    p.poly(_wedge((-0.64, 0.0), 1.14, 27), p.jit((150, 215, 242), 5))
    p.ellipse(-0.05, 0.0, 0.3, 0.18, (165, 225, 248))
    p.disc(0.3, 0.0, 0.08, (60, 50, 200))


def _apple_pie(p: _Pen) -> None:
    _small_plate(p)
    wedge = _wedge(_CAKE_APEX, _CAKE_R, _CAKE_HALF_ANGLE)
    p.poly(wedge, p.jit((110, 185, 220), 6))

    def lattice() -> None:
        strip = p.jit((45, 125, 195), 8)
        for k in np.linspace(-0.7, 1.0, 7):
            p.line([(k - 0.5, -0.6), (k + 0.5, 0.6)], strip, 0.09)
            p.line([(k - 0.5, 0.6), (k + 0.5, -0.6)], strip, 0.09)

    p.clipped(wedge, lattice)
    crust = p.jit((35, 105, 175), 6)
    p.ellipse(*_CAKE_APEX, _CAKE_R - 0.06, _CAKE_R - 0.06, crust, width=0.12, arc=(-28, 28))


def _pizza_slice(p: _Pen) -> None:
    _small_plate(p)
    wedge = _wedge((-0.75, 0.0), 1.38, 27)
    p.poly(wedge, p.jit((55, 140, 205), 6))
    inner = _wedge((-0.68, 0.0), 1.18, 23)
    p.poly(inner, p.jit((40, 70, 200), 8))

    def toppings() -> None:
        for _ in range(11):
            u, v = p.rng.uniform(-0.5, 0.45), p.rng.uniform(-0.4, 0.4)
            p.poly(_blob(u, v, 0.11, 0.08, p.rng, rough=0.3, n=10), p.jit((125, 210, 245), 8))
        for u, v in ((-0.2, -0.03), (0.15, 0.2), (0.15, -0.22)):
            p.disc(u + p.rng.uniform(-0.05, 0.05), v, 0.09, p.jit((45, 45, 165), 8))
            p.disc(u + 0.02, v - 0.02, 0.02, (30, 30, 120))

    p.clipped(inner, toppings)


# ------------------------------------------------------------- bakery, cups


def _bread_roll(p: _Pen) -> None:
    col = p.jit((60, 130, 195), 10)
    p.ellipse(0, 0, 1.0, 0.8, _shade(col, 0.85), solid=True)
    p.ellipse(-0.05, -0.05, 0.85, 0.66, col)
    p.ellipse(-0.1, -0.1, 0.55, 0.4, _shade(col, 1.15))
    p.ellipse(0, 0, 0.6, 0.08, p.jit((150, 200, 230), 6))
    p.ellipse(0, 0.02, 0.6, 0.04, (90, 150, 200))
    _scatter(p, 25, 0.7, 0.02, [(210, 225, 235)])


def _catmull(pts: Sequence[Point], steps: int = 6) -> list[Point]:
    out: list[Point] = []
    ext = [pts[0], *pts, pts[-1]]
    for i in range(1, len(ext) - 2):
        p0, p1, p2, p3 = (np.array(ext[i + k]) for k in (-1, 0, 1, 2))
        for t in np.linspace(0, 1, steps, endpoint=False):
            q = 0.5 * (
                (2 * p1)
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
            out.append((float(q[0]), float(q[1])))
    out.append(pts[-1])
    return out


# The rope's centre line: both ends on the belly, a twist in the middle.
_PRETZEL: list[Point] = [
    (0.85 * u, 0.85 * v + 0.04)
    for u, v in [
        (0.42, 0.52),
        (0.12, 0.05),
        (-0.12, -0.52),
        (-0.45, -0.82),
        (-0.8, -0.58),
        (-0.88, -0.1),
        (-0.65, 0.45),
        (0.0, 0.72),
        (0.65, 0.45),
        (0.88, -0.1),
        (0.8, -0.58),
        (0.45, -0.82),
        (0.12, -0.52),
        (-0.12, 0.05),
        (-0.42, 0.52),
    ]
]


def _pretzel(p: _Pen) -> None:
    path = _catmull(_PRETZEL)
    col = p.jit((30, 70, 140), 8)
    p.line(path, _shade(col, 0.75), 0.3, solid=True)
    for end in (path[0], path[-1]):
        p.disc(*end, 0.15, _shade(col, 0.75), solid=True)
    p.line(path, col, 0.22)
    p.line(_catmull(_PRETZEL[5:10]), p.jit((110, 170, 215), 8), 0.06)
    p.line(path, _shade(col, 1.3), 0.04)
    for i in p.rng.integers(0, len(path), 18):
        u, v = path[int(i)]
        p.disc(
            u + p.rng.uniform(-0.06, 0.06), v + p.rng.uniform(-0.06, 0.06), 0.03, (240, 245, 248)
        )


def _croissant(p: _Pen) -> None:
    base = p.jit((40, 135, 210), 8)
    segs = np.linspace(-1, 1, 7)
    order = sorted(segs, key=lambda t: -abs(t))
    for t in order:
        u, v = 0.78 * t, 0.42 * t * t - 0.2
        a, b = 0.11 + 0.2 * (1 - t * t), 0.12 + 0.26 * (1 - 0.6 * t * t)
        ang = math.degrees(math.atan2(0.84 * t, 0.78))
        p.ellipse(u, v, a, b, _shade(base, 0.7), angle=ang, solid=True)
        p.ellipse(
            u - 0.02,
            v - 0.02,
            a * 0.85,
            b * 0.85,
            _shade(base, 1.0 + 0.15 * (1 - abs(t))),
            angle=ang,
        )
    p.line(
        [(0.78 * t, 0.42 * t * t - 0.32) for t in np.linspace(-0.6, 0.6, 8)],
        _shade(base, 1.35),
        0.04,
    )


def _fruit_cup(p: _Pen) -> None:
    p.disc(0, 0, 1.0, p.jit((225, 228, 222), 4), solid=True)
    p.ring(0, 0, 0.95, (245, 245, 242), 0.05)
    p.disc(0, 0, 0.86, (170, 205, 215))
    fruits: list[tuple[str, Color]] = [
        ("cube", (70, 165, 245)),
        ("cube", (150, 220, 185)),
        ("cube", (50, 205, 240)),
        ("disc", (100, 45, 110)),
        ("disc", (80, 190, 140)),
        ("berry", (55, 45, 215)),
        ("kiwi", (60, 175, 110)),
    ]
    for _ in range(26):
        kind, col = fruits[int(p.rng.integers(0, len(fruits)))]
        u, v = _spot(p, 0.66)
        c = p.jit(col, 10)
        if kind == "cube":
            t = p.rng.uniform(0, math.pi / 2)
            p.poly(
                [
                    (
                        u + 0.16 * math.cos(t + k * math.pi / 2),
                        v + 0.16 * math.sin(t + k * math.pi / 2),
                    )
                    for k in range(4)
                ],
                c,
            )
        elif kind == "disc":
            p.disc(u, v, 0.12, c)
            p.disc(u - 0.03, v - 0.03, 0.04, _shade(c, 1.4))
        elif kind == "berry":
            p.ellipse(u, v, 0.15, 0.12, c, angle=p.rng.uniform(0, 180))
            _scatter(p, 5, 0.1, 0.012, [(120, 220, 240)], at=(u, v))
        else:
            p.disc(u, v, 0.15, c)
            p.ring(u, v, 0.08, (30, 40, 40), 0.025)
            p.disc(u, v, 0.04, (170, 225, 210))


def _yogurt(p: _Pen) -> None:
    p.disc(0, 0, 1.0, p.jit((240, 242, 242), 4), solid=True)
    p.ring(0, 0, 0.95, (205, 210, 210), 0.04)
    lids: list[Color] = [
        (190, 150, 240),
        (220, 180, 120),
        (120, 215, 245),
        (160, 90, 140),
        (215, 215, 220),
    ]
    lid = p.jit(lids[int(p.rng.integers(0, len(lids)))], 8)
    p.disc(0, 0, 0.86, lid)
    p.ellipse(0, 0, 0.8, 0.8, _shade(lid, 1.2), width=0.05, arc=(200, 260), rot=False)
    p.disc(0.05, 0.05, 0.38, (250, 250, 250))
    p.disc(0.05, 0.05, 0.18, p.jit((60, 60, 200), 20))
    p.poly([(0.62, -0.62), (0.95, -0.95), (0.8, -0.5)], _shade(lid, 0.85))


# ----------------------------------------------------------------- clutter


def _knife(p: _Pen, v: float, steel: Color) -> None:
    p.line([(-1.0, v), (-0.2, v)], steel, 0.18, solid=True)
    p.poly(
        [(-0.2, v - 0.07), (0.8, v - 0.08), (1.0, v + 0.02), (0.8, v + 0.07), (-0.2, v + 0.06)],
        steel,
        solid=True,
    )
    p.line([(-0.95, v - 0.02), (-0.25, v - 0.02)], _shade(steel, 1.2), 0.03)
    p.line([(-0.15, v + 0.04), (0.85, v + 0.04)], _shade(steel, 0.8), 0.02)


def _fork(p: _Pen, v: float, steel: Color) -> None:
    p.line([(-1.0, v), (0.35, v)], steel, 0.15, solid=True)
    p.poly(
        [(0.3, v - 0.07), (0.55, v - 0.17), (0.55, v + 0.17), (0.3, v + 0.07)], steel, solid=True
    )
    for k in (-0.135, -0.045, 0.045, 0.135):
        p.line([(0.55, v + k), (1.0, v + k)], steel, 0.045, solid=True)
    p.line([(-0.95, v - 0.02), (0.3, v - 0.02)], _shade(steel, 1.2), 0.03)


def _spoon(p: _Pen, v: float, steel: Color) -> None:
    p.line([(-1.0, v), (0.3, v)], steel, 0.15, solid=True)
    p.ellipse(0.64, v, 0.36, 0.21, steel, solid=True)
    p.ellipse(0.64, v, 0.3, 0.16, _shade(steel, 0.82))
    p.ellipse(0.56, v - 0.06, 0.12, 0.05, _shade(steel, 1.2))


def _cutlery(p: _Pen) -> None:
    steel = p.jit((192, 188, 184), 2)
    pick = int(p.rng.integers(0, 4))
    if pick == 3:
        _fork(p, -0.18, steel)
        _knife(p, 0.18, steel)
    else:
        (_knife, _fork, _spoon)[pick](p, 0.0, steel)


def _napkin(p: _Pen) -> None:
    colors: list[Color] = [
        (240, 242, 244),
        (240, 242, 244),
        (55, 55, 200),
        (190, 130, 50),
        (90, 175, 80),
        (90, 215, 240),
    ]
    col = p.jit(colors[int(p.rng.integers(0, len(colors)))], 6)
    s = 0.92  # half side; the +-8 degree tilt makes the box ~10 % larger
    p.poly([(-s, -s), (s, -s), (s, s), (-s, s)], col, solid=True)
    p.poly([(s, -s), (s, s), (-s, s)], _shade(col, 0.94))
    p.line([(-s, -s), (s, s)], _shade(col, 0.8), 0.025)
    p.line(
        [
            (-s + 0.08, -s + 0.08),
            (s - 0.08, -s + 0.08),
            (s - 0.08, s - 0.08),
            (-s + 0.08, s - 0.08),
        ],
        _shade(col, 0.9),
        0.02,
        closed=True,
    )


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


def _phone(p: _Pen) -> None:
    outline = _rounded_rect(-1.0, -0.5, 1.0, 0.5, 0.14)
    if p.rng.random() < 0.7:
        p.poly(outline, p.jit((28, 28, 30), 4), solid=True)
        screen = _rounded_rect(-0.93, -0.43, 0.93, 0.43, 0.09)
        lit = p.rng.random() < 0.4
        p.poly(screen, p.jit((150, 100, 60), 40) if lit else (42, 38, 36))
        if lit:
            for i in range(4):
                for j in range(3):
                    p.disc(-0.55 + 0.3 * i, -0.25 + 0.25 * j, 0.07, p.jit((200, 200, 200), 80))
        p.poly([(-0.3, -0.43), (0.1, -0.43), (-0.3, 0.43), (-0.7, 0.43)], (70, 68, 66))
    else:
        back: list[Color] = [(35, 35, 38), (200, 200, 205), (120, 70, 40), (170, 175, 215)]
        col = p.jit(back[int(p.rng.integers(0, len(back)))], 6)
        p.poly(outline, col, solid=True)
        p.poly(_rounded_rect(-0.9, -0.42, -0.5, -0.02, 0.08), _shade(col, 0.8))
        p.disc(-0.78, -0.3, 0.08, (20, 20, 20))
        p.disc(-0.62, -0.14, 0.08, (20, 20, 20))


def _wallet(p: _Pen) -> None:
    leathers: list[Color] = [(30, 60, 110), (28, 28, 32), (55, 105, 160), (30, 40, 90)]
    col = p.jit(leathers[int(p.rng.integers(0, len(leathers)))], 8)
    if p.rng.random() < 0.5:
        p.poly(_rounded_rect(-0.55, -0.78, 0.35, -0.5, 0.04), p.jit((160, 120, 60), 60), solid=True)
    p.poly(_rounded_rect(-1.0, -0.72, 1.0, 0.72, 0.12), col, solid=True)
    p.line([(-1.0 + 0.03, 0.0), (1.0 - 0.03, 0.0)], _shade(col, 0.75), 0.05)
    stitch = _shade(col, 1.6)
    for u in np.arange(-0.88, 0.9, 0.1):
        p.line([(u, -0.62), (u + 0.05, -0.62)], stitch, 0.02)
        p.line([(u, 0.62), (u + 0.05, 0.62)], stitch, 0.02)
    _scatter(p, 30, 0.9, 0.03, [_shade(col, 0.9), _shade(col, 1.1)])


# ------------------------------------------------------------ strategy table

_FREE = math.pi  # any orientation: round vessels, handles anywhere
_TILT = math.radians(8)  # long or square items: small tilt, either way round

_STYLES: dict[str, tuple[Callable[[_Pen], None], float]] = {
    "coffee": (_coffee, _FREE),
    "cappuccino": (_cappuccino, _FREE),
    "tea": (_tea, _FREE),
    "espresso": (_espresso, _FREE),
    "water_still": (_water_still, _FREE),
    "water_sparkling": (_water_sparkling, _FREE),
    "beer": (_beer, _FREE),
    "orange_juice": (_orange_juice, _FREE),
    "apple_juice": (_apple_juice, _FREE),
    "schnitzel_fries": (_schnitzel_fries, _FREE),
    "pasta_bolognese": (_pasta_bolognese, _FREE),
    "pasta_carbonara": (_pasta_carbonara, _FREE),
    "bratwurst": (_bratwurst, _FREE),
    "burger": (_burger, _FREE),
    "fish_chips": (_fish_chips, _FREE),
    "tomato_soup": (_tomato_soup, _FREE),
    "pumpkin_soup": (_pumpkin_soup, _FREE),
    "green_salad": (_green_salad, _FREE),
    "greek_salad": (_greek_salad, _FREE),
    "chocolate_cake": (_chocolate_cake, _FREE),
    "cheesecake": (_cheesecake, _FREE),
    "apple_pie": (_apple_pie, _FREE),
    "pizza_slice": (_pizza_slice, _FREE),
    "bread_roll": (_bread_roll, _TILT),
    "pretzel": (_pretzel, _FREE),
    "croissant": (_croissant, _TILT),
    "fruit_cup": (_fruit_cup, _FREE),
    "yogurt": (_yogurt, _FREE),
    "cutlery": (_cutlery, _TILT),
    "napkin": (_napkin, _TILT),
    "phone": (_phone, _TILT),
    "wallet": (_wallet, _TILT),
}


def draw_item(item: MenuItem, scale: float, rng: np.random.Generator) -> Image:
    """Sprite of one item seen from above.

    Parameters
    ----------
    item : MenuItem
        Class to draw; ``item.key`` selects the drawing (the tray too).
    scale : float
        Output pixels per pixel of the 640x480 reference view.
    rng : np.random.Generator
        Source of the instance's variation (arrangement angle, colour jitter,
        topping placement); the same state gives the same sprite.

    Returns
    -------
    np.ndarray
        ``(h, w, 4)`` BGRA uint8, object roughly centred, long side about
        ``item.size_px * scale`` plus a 2 px transparent margin; alpha 255 on
        the object, 0 outside, intermediate on the anti-aliased outline.

    Raises
    ------
    ValueError
        If ``scale`` is not positive or the item has no drawing.
    """
    if not scale > 0:
        msg = f"scale={scale} must be > 0"
        raise ValueError(msg)
    if item.key == "tray":
        return draw_tray(scale, rng)
    try:
        style, spin = _STYLES[item.key]
    except KeyError:
        msg = f"item.key={item.key!r} has no sprite; valid keys: {sorted(_STYLES)}"
        raise ValueError(msg) from None
    if spin >= math.pi:
        theta = float(rng.uniform(-math.pi, math.pi))
    else:
        theta = float(rng.uniform(-spin, spin)) + (math.pi if rng.random() < 0.5 else 0.0)
    size = item.size_px * scale
    # Less supersampling for big sprites: the same edge quality, a third of the time.
    pen = _Pen(size, rng, theta, ss=_SS if size < 60 else 3 if size < 160 else 2)
    style(pen)
    return pen.finish()


_TRAY_COLOURS: tuple[Color, ...] = (
    (45, 75, 115),  # brown
    (118, 118, 112),  # grey
    (60, 95, 55),  # dark green
    (140, 95, 45),  # blue
    (150, 185, 205),  # beige
    (50, 55, 140),  # red
    (48, 48, 50),  # black
)


def draw_tray(scale: float, rng: np.random.Generator) -> Image:
    """Sprite of an empty cafeteria tray seen from above.

    Parameters
    ----------
    scale : float
        Output pixels per pixel of the 640x480 reference view.
    rng : np.random.Generator
        Picks the plastic colour and the texture.

    Returns
    -------
    np.ndarray
        ``(h, w, 4)`` BGRA uint8: a ``TRAY_SIZE * scale`` (260x190 at scale 1)
        rounded rectangle with a raised rim, plus a 2 px transparent margin.
    """
    w, h = TRAY_SIZE[0] * scale, TRAY_SIZE[1] * scale
    pen = _Pen(w, rng, 0.0, ss=2, aspect=h / w, slack=1.0)
    col = pen.jit(_TRAY_COLOURS[int(rng.integers(0, len(_TRAY_COLOURS)))], 8)
    hu, hv = 1.0, h / w
    rim = 14 / TRAY_SIZE[0] * 2
    pen.poly(_rounded_rect(-hu, -hv, hu, hv, 0.14, n=10), _shade(col, 1.12), solid=True)
    pen.line(_rounded_rect(-hu, -hv, hu, hv, 0.14, n=10), _shade(col, 0.8), 0.012, closed=True)
    floor = _rounded_rect(-hu + rim, -hv + rim, hu - rim, hv - rim, 0.1, n=10)
    pen.poly([(u + 0.012, v + 0.012) for u, v in floor], _shade(col, 0.72))
    pen.poly(floor, col)
    pen.line(floor, _shade(col, 1.25), 0.008, closed=True)
    out = pen.finish()
    # The moulded surface: a faint low-frequency mottle on top of the pixel noise.
    th, tw = out.shape[:2]
    coarse = rng.standard_normal((max(2, th // 12), max(2, tw // 12)), dtype=np.float32) * 2.5
    mottle = cv2.resize(coarse, (tw, th))
    shaded = out[:, :, :3].astype(np.float32) + mottle[:, :, None]
    out[:, :, :3] = np.where(out[:, :, 3:] > 0, np.clip(shaded, 0, 255), 0).astype(np.uint8)
    return out


def draw_counter(width: int, height: int, rng: np.random.Generator) -> Image:
    """Background: a counter top seen from above.

    Parameters
    ----------
    width, height : int
        Image size in pixels.
    rng : np.random.Generator
        Picks the material (brushed steel, wood, laminate), its texture, the
        slide rail and the counter edges.

    Returns
    -------
    np.ndarray
        ``(height, width, 3)`` BGR uint8. The trays slide along x; the counter
        spans the middle, with darker floor bands beyond its front and back
        edges. Nothing round: nothing that could pass for a dish.
    """
    material = ("steel", "wood", "laminate")[int(rng.integers(0, 3))]
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    if material == "steel":
        grey = float(rng.uniform(150, 190))
        streak = cv2.blur(rng.normal(0, 50, (height, width)).astype(np.float32), (61, 1))
        lum = grey + streak + 6 * np.sin(xs / width * 3.0 + float(rng.uniform(0, 6)))
        tint = np.array([1.03, 1.0, 0.97], np.float32)
    elif material == "wood":
        # Beech to oak: light, yellowish browns (BGR).
        beech, oak = np.array([130, 178, 218], np.float32), np.array([70, 125, 175], np.float32)
        t = float(rng.uniform(0, 1))
        base = (1 - t) * beech + t * oak + rng.normal(0, 4, 3).astype(np.float32)
        warp = cv2.resize(rng.standard_normal((6, 10), dtype=np.float32), (width, height))
        freq = float(rng.uniform(0.15, 0.3))
        phase = ys + 10 * warp + 3 * np.sin(xs / 70)
        grain = 0.6 * np.sin(phase * freq) + 0.4 * np.sin(phase * freq * 2.7 + 1.0)
        streaks = cv2.blur(rng.standard_normal((height, width), dtype=np.float32), (41, 1))
        lum = 1 + 0.05 * grain + 0.25 * streaks
        img = lum[:, :, None] * base[None, None, :]
        return _counter_edges(img, rng)
    else:
        grey = float(rng.uniform(170, 215))
        lum = grey + rng.normal(0, 5, (height, width)).astype(np.float32) + 0 * xs
        tints = (
            np.array([0.95, 1.0, 1.05], np.float32),
            np.array([1.0, 1.0, 1.0], np.float32),
            np.array([0.88, 0.97, 1.04], np.float32),
        )
        tint = tints[int(rng.integers(0, 3))]
    img = lum[:, :, None] * tint[None, None, :]
    return _counter_edges(img, rng)


def _counter_edges(img: npt.NDArray[np.float32], rng: np.random.Generator) -> Image:
    """Add the slide rail, the front and back edges and lighting; to uint8."""
    height, width = img.shape[:2]
    if rng.random() < 0.6:
        # Slide rail: three steel tubes along x, bright crest, dark flanks, a shadow below.
        tube = max(3, height // 60)
        y0 = int(height * rng.uniform(0.62, 0.7))
        profile = (120 + 110 * np.cos(np.linspace(-1.3, 1.3, tube))).astype(np.float32)
        for k in range(3):
            y = y0 + k * 2 * tube
            img[y : y + tube] = profile[:, None, None]
            img[y + tube : y + tube + max(1, tube // 2)] *= 0.6
    back = int(height * rng.uniform(0.05, 0.1))
    front = int(height * rng.uniform(0.9, 0.95))
    floor = float(rng.uniform(35, 70)) * np.array(rng.uniform(0.95, 1.05, 3), np.float32)
    img[:back] = floor
    img[front:] = floor * 0.9
    img[back : back + max(2, height // 160)] = 230
    img[front - max(2, height // 160) : front] = 120
    ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None, None]
    xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :, None]
    img = img * (1.0 - 0.08 * (xs * xs + ys * ys))
    img += rng.normal(0, 1.5, img.shape[:2]).astype(np.float32)[:, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)
