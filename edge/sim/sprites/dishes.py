"""Plated food, soups and salads: the fillings of plates and bowls.

Where it sits: the simulator's sprite package; each function here is one
menu class's drawing (or a part of one), listed in the style table of
:mod:`edge.sim.sprites`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from edge.sim.sprites.canvas import Color, _blob, _Pen, _rounded_rect, _scatter, _shade, _spot
from edge.sim.sprites.vessels import _bowl, _plate

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
