"""Cakes, pizza and bakery goods, and desserts in cups.

Where it sits: the simulator's sprite package; each function here is one
menu class's drawing, listed in the style table of :mod:`edge.sim.sprites`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edge.sim.sprites.canvas import Color, Point, _blob, _Pen, _scatter, _shade, _spot, _wedge
from edge.sim.sprites.vessels import _small_plate

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
