"""The ``site2`` menu's new dishes: food the shipped model never saw.

Where it sits: the simulator's sprite package; each function here is one
class of :data:`edge.sim.menu.NEW_DISHES`, listed in the style table of
:mod:`edge.sim.sprites`. They exist for the few-label fine-tuning benchmark
(``bench/fewlabel.py``): a new site's menu, learnt from a handful of frames.
Colours are BGR.
"""

from __future__ import annotations

import math

import cv2

from edge.sim.sprites.canvas import _blob, _Pen, _rounded_rect, _scatter, _shade, _spot
from edge.sim.sprites.vessels import _bowl, _ceramic, _plate


def _ramen(p: _Pen) -> None:
    _bowl(p, p.jit((60, 120, 175), 8))  # brown broth
    for _ in range(12):  # noodles: pale wavy arcs
        c = p.rng.uniform(-0.3, 0.3, 2)
        r = p.rng.uniform(0.15, 0.3)
        start = p.rng.uniform(0, 360)
        p.ellipse(float(c[0]), float(c[1]), r, r * 0.7, p.jit((150, 215, 240), 8),
                  angle=p.rng.uniform(0, 180), width=0.03, arc=(start, start + 200))
    for du in (-0.12, 0.12):  # half an egg: white ring, orange yolk
        p.ellipse(0.3 + du, -0.3, 0.13, 0.17, (235, 240, 245))
        p.disc(0.3 + du, -0.3, 0.08, p.jit((30, 140, 240), 6))
    p.poly(_rounded_rect(-0.6, -0.5, -0.25, 0.05, 0.03), p.jit((40, 50, 35), 4))  # nori
    _scatter(p, 14, 0.5, 0.03, [(60, 190, 90), (90, 210, 120)])  # spring onion
    p.poly(_blob(0.15, 0.35, 0.2, 0.14, p.rng, rough=0.1), p.jit((130, 160, 215), 6))  # pork


def _sushi(p: _Pen) -> None:
    wood = p.jit((70, 130, 175), 10)
    board = _rounded_rect(-1.0, -0.62, 1.0, 0.62, 0.08)
    p.poly(board, wood, solid=True)
    p.line([*board, board[0]], _shade(wood, 0.75), 0.03)
    for k in range(4):  # grain
        v = -0.45 + 0.3 * k
        p.line([(-0.95, v), (0.95, v + 0.02)], _shade(wood, 0.9), 0.015)
    for i in range(3):  # maki: black ring, white rice, coloured filling
        u = -0.62 + 0.3 * i
        p.disc(u, -0.25, 0.14, (30, 35, 30))
        p.disc(u, -0.25, 0.11, (235, 240, 242))
        p.disc(u, -0.25, 0.045, p.jit((60, 80, 230) if i % 2 else (80, 170, 90), 8))
    for i in range(3):  # nigiri: rice block with salmon slice
        u = -0.55 + 0.38 * i
        p.ellipse(u, 0.28, 0.16, 0.1, (228, 236, 240))
        p.ellipse(u, 0.26, 0.15, 0.08, p.jit((90, 140, 245), 8))
        for s in (-0.06, 0.0, 0.06):
            p.line([(u + s - 0.02, 0.2), (u + s + 0.02, 0.32)], (190, 215, 250), 0.012)
    p.poly(_blob(0.65, 0.0, 0.16, 0.12, p.rng, rough=0.25), p.jit((70, 185, 120), 8))  # wasabi
    p.poly(_blob(0.65, 0.35, 0.15, 0.1, p.rng, rough=0.25), p.jit((150, 180, 235), 8))  # ginger


def _donut(p: _Pen) -> None:
    dough = p.jit((60, 140, 205), 8)
    p.disc(0, 0, 1.0, _shade(dough, 0.8), solid=True)
    p.disc(0, 0, 0.95, dough)
    glaze = p.jit((175, 110, 235) if p.rng.random() < 0.5 else (60, 80, 120), 10)
    p.poly(_blob(0, 0, 0.82, 0.82, p.rng, rough=0.08, n=28), glaze)
    p.disc(0, 0, 0.3, _shade(dough, 0.85))
    cv2.circle(p.alpha, p.xy(0, 0), p.n(0.24), 0, -1, cv2.LINE_AA)  # the hole: see-through
    sprinkles = [(230, 120, 40), (60, 200, 240), (90, 200, 90), (245, 245, 245), (60, 60, 220)]
    for _ in range(26):
        u, v = _spot(p, 0.75)
        if math.hypot(u, v) < 0.36:
            continue
        a = p.rng.uniform(0, math.pi)
        du, dv = 0.05 * math.cos(a), 0.05 * math.sin(a)
        p.line([(u - du, v - dv), (u + du, v + dv)],
               sprinkles[int(p.rng.integers(len(sprinkles)))], 0.03)


def _ice_cream(p: _Pen) -> None:
    cup = p.jit((200, 170, 120), 20)  # paper cup
    p.disc(0, 0, 1.0, cup, solid=True)
    p.ring(0, 0, 0.95, _shade(cup, 0.8), 0.05)
    p.disc(0, 0, 0.86, _shade(cup, 0.7))
    flavours = [(205, 225, 250), (60, 90, 140), (160, 140, 245), (120, 215, 170)]
    picks = p.rng.choice(len(flavours), size=2, replace=False)
    for (u, v), k in zip(((-0.25, -0.12), (0.28, 0.15)), picks, strict=True):
        col = p.jit(flavours[int(k)], 8)
        p.poly(_blob(u, v, 0.42, 0.4, p.rng, rough=0.12), _shade(col, 0.85))
        p.poly(_blob(u - 0.03, v - 0.03, 0.36, 0.34, p.rng, rough=0.12), col)
    p.poly([(0.05, -0.6), (0.55, -0.45), (0.5, -0.3), (0.0, -0.45)], p.jit((90, 180, 225), 8))
    p.line([(0.1, -0.52), (0.5, -0.4)], (60, 140, 190), 0.02)  # wafer


def _curry_rice(p: _Pen) -> None:
    _plate(p)
    p.poly(_blob(-0.22, 0.0, 0.4, 0.5, p.rng, rough=0.12), (232, 238, 240))  # rice
    _scatter(p, 30, 0.35, 0.02, [(215, 225, 230)], at=(-0.22, 0.0))
    curry = p.jit((30, 150, 215), 8)  # yellow-orange curry
    p.poly(_blob(0.25, 0.0, 0.4, 0.5, p.rng, rough=0.18), curry)
    for _ in range(8):  # chunks of potato, carrot, meat
        u, v = _spot(p, 0.28)
        col = [(90, 190, 230), (30, 110, 230), (50, 80, 120)][int(p.rng.integers(3))]
        p.ellipse(0.25 + u, v, 0.06, 0.045, p.jit(col, 10), angle=p.rng.uniform(0, 180))
    p.ellipse(0.55, -0.45, 0.08, 0.05, _shade(_ceramic(p), 0.9))
