"""Hot and cold drinks: the liquid, foam and garnish in a mug, glass or bottle.

Where it sits: the simulator's sprite package; each function here is one
menu class's drawing, listed in the style table of :mod:`edge.sim.sprites`.
"""

from __future__ import annotations

from edge.sim.sprites.canvas import _Pen, _scatter, _shade
from edge.sim.sprites.vessels import _bottle, _ceramic, _glass, _mug

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


def _water_still(p: _Pen) -> None:
    _bottle(p, cap=(205, 115, 30), label=(185, 95, 25))


def _water_sparkling(p: _Pen) -> None:
    _bottle(p, cap=(60, 170, 40), label=(55, 150, 45))
