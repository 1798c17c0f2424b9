"""Clutter on a tray that is never billed: cutlery, napkins, phones and wallets.

Where it sits: the simulator's sprite package; each function here is one
menu class's drawing, listed in the style table of :mod:`edge.sim.sprites`.
"""

from __future__ import annotations

import numpy as np

from edge.sim.sprites.canvas import Color, _Pen, _rounded_rect, _scatter, _shade

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
