"""The synthetic cafeteria's menu: every class the simulator draws and the detector knows.

This is the single class table of the project's default model. Class ids are
0-based and shared by the simulator ground truth (MOTChallenge ``class``
column), the COCO export (``category_id``), the detector output and billing.

Sales frequencies are long-tailed (Zipf-like): a few dishes make most of the
sales, the rarest well under 1 %. Look-alike pairs share a vessel and differ
only slightly in the food, as in a real cafeteria (coffee / cappuccino).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np


class Kind(str, Enum):
    """What an object is to the checkout."""

    TRAY = "tray"
    DISH = "dish"  # billable
    CLUTTER = "clutter"  # on a tray, never billed


@dataclass(frozen=True, slots=True)
class MenuItem:
    """One class.

    Attributes
    ----------
    id : int
        0-based class id.
    key : str
        snake_case identifier, also the sprite style name.
    name : str
        Name shown to the cashier.
    kind : Kind
        Tray, billable dish or clutter.
    price : float
        Price in the site's currency (0 for trays and clutter).
    vessel : str
        What holds the food (plate, bowl, mug, cup, glass, bottle, none ...).
    size_px : int
        Outer diameter (or longer side) in pixels at the 640x480 reference view.
    rank : int
        Sales rank (1 = best seller) for the Zipf frequency; 0 for non-dishes.
    """

    id: int
    key: str
    name: str
    kind: Kind
    price: float
    vessel: str
    size_px: int
    rank: int = 0


_ROWS: list[tuple[str, str, Kind, float, str, int, int]] = [
    ("tray", "Tray", Kind.TRAY, 0.0, "tray", 260, 0),
    # dishes, best sellers first
    ("coffee", "Coffee", Kind.DISH, 2.20, "mug", 46, 1),
    ("water_still", "Still water", Kind.DISH, 1.80, "bottle", 38, 2),
    ("schnitzel_fries", "Schnitzel with fries", Kind.DISH, 9.50, "plate", 84, 3),
    ("bread_roll", "Bread roll", Kind.DISH, 0.90, "none", 44, 4),
    ("tomato_soup", "Tomato soup", Kind.DISH, 4.20, "bowl", 62, 5),
    ("green_salad", "Green salad", Kind.DISH, 3.90, "bowl", 64, 6),
    ("pasta_bolognese", "Pasta bolognese", Kind.DISH, 7.80, "plate", 82, 7),
    ("cappuccino", "Cappuccino", Kind.DISH, 2.90, "mug", 46, 8),
    ("beer", "Beer", Kind.DISH, 4.50, "glass", 44, 9),
    ("orange_juice", "Orange juice", Kind.DISH, 2.60, "glass", 40, 10),
    ("chocolate_cake", "Chocolate cake", Kind.DISH, 3.40, "small_plate", 54, 11),
    ("water_sparkling", "Sparkling water", Kind.DISH, 1.80, "bottle", 38, 12),
    ("pretzel", "Pretzel", Kind.DISH, 1.50, "none", 52, 13),
    ("bratwurst", "Bratwurst with bread", Kind.DISH, 5.20, "plate", 80, 14),
    ("pasta_carbonara", "Pasta carbonara", Kind.DISH, 8.20, "plate", 82, 15),
    ("apple_juice", "Apple juice", Kind.DISH, 2.60, "glass", 40, 16),
    ("pumpkin_soup", "Pumpkin soup", Kind.DISH, 4.40, "bowl", 62, 17),
    ("croissant", "Croissant", Kind.DISH, 1.60, "none", 50, 18),
    ("fruit_cup", "Fruit cup", Kind.DISH, 2.80, "cup", 48, 19),
    ("greek_salad", "Greek salad", Kind.DISH, 4.60, "bowl", 64, 20),
    ("espresso", "Espresso", Kind.DISH, 1.90, "small_cup", 36, 21),
    ("yogurt", "Yogurt", Kind.DISH, 1.70, "cup", 44, 22),
    ("cheesecake", "Cheesecake", Kind.DISH, 3.60, "small_plate", 54, 23),
    ("pizza_slice", "Pizza slice", Kind.DISH, 3.80, "small_plate", 58, 24),
    ("burger", "Burger", Kind.DISH, 8.90, "plate", 78, 25),
    ("fish_chips", "Fish and chips", Kind.DISH, 9.80, "plate", 84, 26),
    ("tea", "Tea", Kind.DISH, 2.00, "mug", 46, 27),
    ("apple_pie", "Apple pie", Kind.DISH, 3.40, "small_plate", 54, 28),
    # clutter: on trays, never billed
    ("cutlery", "Cutlery", Kind.CLUTTER, 0.0, "none", 70, 0),
    ("napkin", "Napkin", Kind.CLUTTER, 0.0, "none", 46, 0),
    ("phone", "Phone", Kind.CLUTTER, 0.0, "none", 56, 0),
    ("wallet", "Wallet", Kind.CLUTTER, 0.0, "none", 48, 0),
]

MENU: tuple[MenuItem, ...] = tuple(
    MenuItem(i, key, name, kind, price, vessel, size, rank)
    for i, (key, name, kind, price, vessel, size, rank) in enumerate(_ROWS)
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
CLASS_NAMES: tuple[str, ...] = tuple(item.key for item in MENU)
TRAY_ID: int = BY_KEY["tray"].id
DISH_IDS: tuple[int, ...] = tuple(item.id for item in MENU if item.kind is Kind.DISH)
CLUTTER_IDS: tuple[int, ...] = tuple(item.id for item in MENU if item.kind is Kind.CLUTTER)

# Same vessel, slightly different food: the hard cases for the detector.
LOOKALIKE_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (BY_KEY[a].id, BY_KEY[b].id)
    for a, b in [
        ("coffee", "cappuccino"),
        ("water_still", "water_sparkling"),
        ("tomato_soup", "pumpkin_soup"),
        ("pasta_bolognese", "pasta_carbonara"),
        ("orange_juice", "apple_juice"),
        ("chocolate_cake", "cheesecake"),
        ("green_salad", "greek_salad"),
    ]
)

ZIPF_EXPONENT = 1.3


def sales_frequencies() -> np.ndarray:
    """Probability of each dish in ``DISH_IDS`` order, Zipf over sales rank.

    Returns
    -------
    np.ndarray
        ``(len(DISH_IDS),)`` float64, sums to 1.
    """
    ranks = np.array([MENU[i].rank for i in DISH_IDS], dtype=np.float64)
    weights = ranks**-ZIPF_EXPONENT
    return weights / weights.sum()


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


def menu_frequencies(menu: str = "base", *, balanced: bool = False) -> np.ndarray:
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
