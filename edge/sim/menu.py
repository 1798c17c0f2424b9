"""The synthetic cafeteria's menu: how each catalogue class looks and how often it sells.

The classes themselves, their names, default prices and look-alike pairs are
the product's catalogue (:mod:`edge.catalogue`); this module adds what only
the renderer needs: the vessel, the size at the reference view and the sales
rank. Sales frequencies are long-tailed (Zipf-like): a few dishes make most
of the sales, the rarest well under 1 %. Look-alike pairs share a vessel and
differ only slightly in the food.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.catalogue import (
    CATALOGUE,
    CLASS_NAMES,
    CLUTTER_IDS,
    DISH_IDS,
    LOOKALIKE_PAIRS,
    TRAY_ID,
    CatalogueItem,
    Kind,
)

__all__ = [  # the catalogue's names are re-exported for the renderer's callers
    "BY_KEY", "CLASS_NAMES", "CLUTTER_IDS", "DISH_IDS", "ITEMS", "LOOKALIKE_PAIRS", "MENU",
    "MENUS", "NEW_DISHES", "SITE2_NEW_SHARE", "TRAY_ID", "ZIPF_EXPONENT", "Kind", "MenuItem",
    "menu_dish_ids", "menu_frequencies", "menu_items", "sales_frequencies",
]


@dataclass(frozen=True, slots=True)
class MenuItem(CatalogueItem):
    """A catalogue class as the simulator draws it.

    Attributes
    ----------
    vessel : str
        What holds the food (plate, bowl, mug, cup, glass, bottle, none ...).
    size_px : int
        Outer diameter (or longer side) in pixels at the 640x480 reference view.
    rank : int
        Sales rank (1 = best seller) for the Zipf frequency; 0 for non-dishes.
    """

    vessel: str
    size_px: int
    rank: int = 0


# key: (vessel, size_px, sales rank), in catalogue order.
_LOOKS: dict[str, tuple[str, int, int]] = {
    "tray": ("tray", 260, 0),
    "coffee": ("mug", 46, 1),
    "water_still": ("bottle", 38, 2),
    "schnitzel_fries": ("plate", 84, 3),
    "bread_roll": ("none", 44, 4),
    "tomato_soup": ("bowl", 62, 5),
    "green_salad": ("bowl", 64, 6),
    "pasta_bolognese": ("plate", 82, 7),
    "cappuccino": ("mug", 46, 8),
    "beer": ("glass", 44, 9),
    "orange_juice": ("glass", 40, 10),
    "chocolate_cake": ("small_plate", 54, 11),
    "water_sparkling": ("bottle", 38, 12),
    "pretzel": ("none", 52, 13),
    "bratwurst": ("plate", 80, 14),
    "pasta_carbonara": ("plate", 82, 15),
    "apple_juice": ("glass", 40, 16),
    "pumpkin_soup": ("bowl", 62, 17),
    "croissant": ("none", 50, 18),
    "fruit_cup": ("cup", 48, 19),
    "greek_salad": ("bowl", 64, 20),
    "espresso": ("small_cup", 36, 21),
    "yogurt": ("cup", 44, 22),
    "cheesecake": ("small_plate", 54, 23),
    "pizza_slice": ("small_plate", 58, 24),
    "burger": ("plate", 78, 25),
    "fish_chips": ("plate", 84, 26),
    "tea": ("mug", 46, 27),
    "apple_pie": ("small_plate", 54, 28),
    "cutlery": ("none", 70, 0),
    "napkin": ("none", 46, 0),
    "phone": ("none", 56, 0),
    "wallet": ("none", 48, 0),
}

MENU: tuple[MenuItem, ...] = tuple(
    MenuItem(c.id, c.key, c.name, c.kind, c.price, *_LOOKS[c.key]) for c in CATALOGUE
)

# A second site's new dishes, which the shipped model never saw: the few-label
# fine-tuning benchmark (``bench/fewlabel.py``). Ids continue after MENU's so a
# model of the ``site2`` menu keeps every base class at its base id.
_SITE2_ROWS: list[tuple[str, str, Kind, float, str, int, int]] = [
    ("ramen", "Ramen", Kind.DISH, 8.40, "bowl", 66, 0),
    ("sushi", "Sushi plate", Kind.DISH, 9.90, "board", 80, 0),
    ("donut", "Donut", Kind.DISH, 1.80, "none", 44, 0),
    ("ice_cream", "Ice cream", Kind.DISH, 2.50, "cup", 46, 0),
    ("curry_rice", "Curry with rice", Kind.DISH, 7.60, "plate", 82, 0),
]
NEW_DISHES: tuple[MenuItem, ...] = tuple(
    MenuItem(len(MENU) + i, key, name, kind, price, vessel, size, rank)
    for i, (key, name, kind, price, vessel, size, rank) in enumerate(_SITE2_ROWS)
)
ITEMS: tuple[MenuItem, ...] = MENU + NEW_DISHES
"""Every class the simulator can draw, indexed by class id (MENU's, then NEW_DISHES)."""
MENUS: tuple[str, ...] = ("base", "site2")
"""Menu variants: ``base`` (the shipped model's 33 classes) and ``site2`` (base plus NEW_DISHES)."""
SITE2_NEW_SHARE = 0.4
"""Share of ``site2``'s sales that go to its new dishes (split evenly)."""
BY_KEY: dict[str, MenuItem] = {item.key: item for item in MENU}

ZIPF_EXPONENT = 1.3


def sales_frequencies() -> npt.NDArray[np.float64]:
    """Probability of each dish in ``DISH_IDS`` order, Zipf over sales rank.

    Returns
    -------
    np.ndarray
        ``(len(DISH_IDS),)`` float64, sums to 1.
    """
    ranks = np.array([MENU[i].rank for i in DISH_IDS], dtype=np.float64)
    weights = ranks**-ZIPF_EXPONENT
    frequencies: npt.NDArray[np.float64] = weights / weights.sum()
    return frequencies


def menu_items(menu: str = "base") -> tuple[MenuItem, ...]:
    """The classes of a menu variant, in class-id order (ids ``0..C-1``).

    Raises
    ------
    ValueError
        If ``menu`` is not one of :data:`MENUS`.
    """
    if menu == "base":
        return MENU
    if menu == "site2":
        return ITEMS
    raise ValueError(f"menu {menu!r} is unknown; valid: {list(MENUS)}")


def menu_dish_ids(menu: str = "base") -> tuple[int, ...]:
    """Billable dish ids of a menu variant."""
    return tuple(m.id for m in menu_items(menu) if m.kind is Kind.DISH)


def menu_frequencies(menu: str = "base", *, balanced: bool = False) -> npt.NDArray[np.float64]:
    """Probability of each dish of :func:`menu_dish_ids` (same order).

    ``balanced`` gives every dish the same probability (training data).
    ``site2`` keeps the base dishes' Zipf shape for ``1 - SITE2_NEW_SHARE`` of
    its sales and splits the rest evenly over its new dishes.
    """
    ids = menu_dish_ids(menu)
    if balanced:
        return np.full(len(ids), 1.0 / len(ids))
    if menu == "base":
        return sales_frequencies()
    base = sales_frequencies() * (1.0 - SITE2_NEW_SHARE)
    new = np.full(len(NEW_DISHES), SITE2_NEW_SHARE / len(NEW_DISHES))
    return np.concatenate([base, new])
