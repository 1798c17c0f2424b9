"""What holds food and drink: plates, bowls, mugs, glasses and bottles.

Where it sits: the simulator's sprite package. The drink and dish drawings
(:mod:`.drinks`, :mod:`.dishes`, :mod:`.bakery`) start from one of these
vessels, so look-alike pairs share the vessel and differ only in the food.
"""

from __future__ import annotations

import math

from edge.sim.sprites.canvas import Color, _Pen, _shade

WHITE: Color = (242, 244, 245)
CREAM: Color = (205, 228, 240)


def _ceramic(p: _Pen) -> Color:
    return p.jit(WHITE if p.rng.random() < 0.7 else CREAM, 6)


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
