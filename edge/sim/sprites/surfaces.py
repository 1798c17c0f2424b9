"""The surfaces under the items: the cafeteria tray and the counter top.

Where it sits: the simulator's sprite package. The scene draws the counter
once as the background and one tray per tray object; items are warped on top.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from edge.sim.sprites.canvas import Color, Image, _Pen, _rounded_rect, _shade

TRAY_SIZE = (260, 190)  # tray width, height in pixels at scale 1


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
    r2: npt.NDArray[np.float32] = xs * xs + ys * ys
    img = img * (1.0 - 0.08 * r2)
    img += rng.normal(0, 1.5, img.shape[:2]).astype(np.float32)[:, :, None]
    return np.clip(img, 0, 255).astype(np.uint8)
