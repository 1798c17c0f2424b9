"""The dish catalogue: every class the default model knows, with its name and price.

Beside the pipeline rather than in it: billing takes its default menu from
here (:mod:`edge.config`), the evaluator its tray and dish classes, and the
synthetic camera (:mod:`edge.sim.menu`) adds how each class looks and how
often it sells. Class ids are 0-based and shared by the simulator's ground
truth (MOTChallenge ``class`` column), the COCO export (``category_id``), the
detector output and billing.

What a given model can see is its own ``class_names`` metadata
(:class:`edge.detect.model_info.ModelInfo`), not this table: the catalogue is
the shipped model's classes and the defaults a new site starts from.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(str, Enum):
    """What an object is to the checkout."""

    TRAY = "tray"
    DISH = "dish"  # billable
    CLUTTER = "clutter"  # on a tray, never billed


@dataclass(frozen=True, slots=True)
class CatalogueItem:
    """One class.

    Attributes
    ----------
    id : int
        0-based class id.
    key : str
        snake_case identifier: the model's class name and the menu key of the
        site config.
    name : str
        Name shown to the cashier.
    kind : Kind
        Tray, billable dish or clutter.
    price : float
        Default price in the site's currency (0 for trays and clutter).
    """

    id: int
    key: str
    name: str
    kind: Kind
    price: float


_ROWS: list[tuple[str, str, Kind, float]] = [
    ("tray", "Tray", Kind.TRAY, 0.0),
    # dishes, best sellers first
    ("coffee", "Coffee", Kind.DISH, 2.20),
    ("water_still", "Still water", Kind.DISH, 1.80),
    ("schnitzel_fries", "Schnitzel with fries", Kind.DISH, 9.50),
    ("bread_roll", "Bread roll", Kind.DISH, 0.90),
    ("tomato_soup", "Tomato soup", Kind.DISH, 4.20),
    ("green_salad", "Green salad", Kind.DISH, 3.90),
    ("pasta_bolognese", "Pasta bolognese", Kind.DISH, 7.80),
    ("cappuccino", "Cappuccino", Kind.DISH, 2.90),
    ("beer", "Beer", Kind.DISH, 4.50),
    ("orange_juice", "Orange juice", Kind.DISH, 2.60),
    ("chocolate_cake", "Chocolate cake", Kind.DISH, 3.40),
    ("water_sparkling", "Sparkling water", Kind.DISH, 1.80),
    ("pretzel", "Pretzel", Kind.DISH, 1.50),
    ("bratwurst", "Bratwurst with bread", Kind.DISH, 5.20),
    ("pasta_carbonara", "Pasta carbonara", Kind.DISH, 8.20),
    ("apple_juice", "Apple juice", Kind.DISH, 2.60),
    ("pumpkin_soup", "Pumpkin soup", Kind.DISH, 4.40),
    ("croissant", "Croissant", Kind.DISH, 1.60),
    ("fruit_cup", "Fruit cup", Kind.DISH, 2.80),
    ("greek_salad", "Greek salad", Kind.DISH, 4.60),
    ("espresso", "Espresso", Kind.DISH, 1.90),
    ("yogurt", "Yogurt", Kind.DISH, 1.70),
    ("cheesecake", "Cheesecake", Kind.DISH, 3.60),
    ("pizza_slice", "Pizza slice", Kind.DISH, 3.80),
    ("burger", "Burger", Kind.DISH, 8.90),
    ("fish_chips", "Fish and chips", Kind.DISH, 9.80),
    ("tea", "Tea", Kind.DISH, 2.00),
    ("apple_pie", "Apple pie", Kind.DISH, 3.40),
    # clutter: on trays, never billed
    ("cutlery", "Cutlery", Kind.CLUTTER, 0.0),
    ("napkin", "Napkin", Kind.CLUTTER, 0.0),
    ("phone", "Phone", Kind.CLUTTER, 0.0),
    ("wallet", "Wallet", Kind.CLUTTER, 0.0),
]

CATALOGUE: tuple[CatalogueItem, ...] = tuple(
    CatalogueItem(i, key, name, kind, price) for i, (key, name, kind, price) in enumerate(_ROWS)
)
"""The shipped model's 33 classes, indexed by class id."""
BY_KEY: dict[str, CatalogueItem] = {item.key: item for item in CATALOGUE}
CLASS_NAMES: tuple[str, ...] = tuple(item.key for item in CATALOGUE)
TRAY_ID: int = BY_KEY["tray"].id
DISH_IDS: tuple[int, ...] = tuple(item.id for item in CATALOGUE if item.kind is Kind.DISH)
CLUTTER_IDS: tuple[int, ...] = tuple(item.id for item in CATALOGUE if item.kind is Kind.CLUTTER)

# Same vessel, slightly different food: the hard cases for the detector, as in
# a real cafeteria (coffee / cappuccino).
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
