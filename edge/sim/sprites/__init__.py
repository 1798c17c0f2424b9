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

Layout: :mod:`.canvas` (the supersampled pen and shape helpers),
:mod:`.vessels` (plates, bowls, mugs, glasses, bottles), :mod:`.drinks`,
:mod:`.dishes` (plated food, soups, salads), :mod:`.bakery` (cakes, bakery,
dessert cups), :mod:`.clutter`, :mod:`.surfaces` (tray, counter); this module
holds the style table that maps a menu key to its drawing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edge.sim.menu import MenuItem
from edge.sim.sprites.bakery import (
    _apple_pie,
    _bread_roll,
    _cheesecake,
    _chocolate_cake,
    _croissant,
    _fruit_cup,
    _pizza_slice,
    _pretzel,
    _yogurt,
)
from edge.sim.sprites.canvas import _SS, Image, _Pen
from edge.sim.sprites.clutter import _cutlery, _napkin, _phone, _wallet
from edge.sim.sprites.dishes import (
    _bratwurst,
    _burger,
    _fish_chips,
    _greek_salad,
    _green_salad,
    _pasta_bolognese,
    _pasta_carbonara,
    _pumpkin_soup,
    _schnitzel_fries,
    _tomato_soup,
)
from edge.sim.sprites.drinks import (
    _apple_juice,
    _beer,
    _cappuccino,
    _coffee,
    _espresso,
    _orange_juice,
    _tea,
    _water_sparkling,
    _water_still,
)
from edge.sim.sprites.site2 import _curry_rice, _donut, _ice_cream, _ramen, _sushi
from edge.sim.sprites.surfaces import TRAY_SIZE, draw_counter, draw_tray

__all__ = ["TRAY_SIZE", "draw_counter", "draw_item", "draw_tray"]

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
    # the site2 menu's new dishes (edge.sim.menu.NEW_DISHES)
    "ramen": (_ramen, _FREE),
    "sushi": (_sushi, _TILT),
    "donut": (_donut, _FREE),
    "ice_cream": (_ice_cream, _FREE),
    "curry_rice": (_curry_rice, _FREE),
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
