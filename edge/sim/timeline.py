"""Plans of the synthetic scene: what each tray carries and how it moves.

Pure planning, no pixels: a :class:`TrayPlan` holds a tray's items (placed in
tray coordinates), its trajectory (centre and rotation for every frame of its
life) and the hands that touch it. :mod:`edge.sim.scene` renders the plans.

Coordinates: image pixels, x to the right along the counter (the direction
trays travel), y down. Tray coordinates: pixels of the tray's own canvas, origin
at the tray centre, unrotated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.sim.difficulty import Difficulty
from edge.sim.menu import (
    CLUTTER_IDS,
    DISH_IDS,
    ITEMS,
    LOOKALIKE_PAIRS,
    Kind,
    menu_dish_ids,
    menu_frequencies,
    sales_frequencies,
)

TRAY_SIZE = (260.0, 190.0)  # px at the 640x480 reference view
TRAY_RIM = 14.0  # px; items stay inside the rim
REACH_FRAMES_S = 0.2  # seconds a hand takes to reach in or pull out


@dataclass(slots=True)
class ItemPlan:
    """An object on a tray."""

    object_id: int
    class_id: int
    local_xy: tuple[float, float]  # centre in tray coordinates, px
    radius: float  # px, for placement and the footprint
    seed: int  # sprite seed


@dataclass(slots=True)
class HandPlan:
    """A hand over a tray, from ``start`` to ``end`` (absolute frame indices, inclusive).

    ``target`` is an index into the tray's items (an occluding hand) or ``None``
    (a hand pushing the tray at its trailing rim).
    """

    start: int
    end: int
    target: int | None
    from_bottom: bool
    size: float  # palm radius, px
    skin: tuple[int, int, int]
    sleeve: tuple[int, int, int]
    wobble: float  # phase of the small hand movement


@dataclass(slots=True)
class TrayPlan:
    """One tray's life in the scene."""

    tray_id: int
    seed: int
    start: int  # first frame index (0-based) of the trajectory
    xs: npt.NDArray[np.float64]  # (n,) centre x per frame, px
    ys: npt.NDArray[np.float64]  # (n,) centre y per frame, px
    thetas: npt.NDArray[np.float64]  # (n,) rotation per frame, radians
    items: list[ItemPlan]
    hands: list[HandPlan] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)

    @property
    def end(self) -> int:
        """Last frame index of the trajectory (inclusive)."""
        return self.start + len(self.xs) - 1

    def pose(self, frame: int) -> tuple[float, float, float]:
        """Centre x, y (px) and rotation (rad) at absolute frame ``frame``."""
        i = frame - self.start
        return float(self.xs[i]), float(self.ys[i]), float(self.thetas[i])

    def speed(self, frame: int) -> float:
        """Horizontal speed at ``frame`` in px/frame (signed)."""
        i = frame - self.start
        if len(self.xs) < 2:
            return 0.0
        j = min(max(i, 1), len(self.xs) - 1)
        return float(self.xs[j] - self.xs[j - 1])


_SKINS = [(150, 180, 225), (120, 150, 200), (90, 120, 170), (70, 95, 140), (60, 80, 110)]
_SLEEVES = [(40, 40, 40), (160, 60, 30), (50, 50, 150), (200, 200, 200), (40, 110, 60)]


def choose_classes(rng: np.random.Generator, level: Difficulty, balanced: bool,
                   menu: str = "base") -> list[int]:
    """Draw the dishes of one tray (1-6) and, with the level's probability, clutter.

    With ``balanced`` every dish class is equally likely (training data); else
    dishes follow the long-tailed sales frequencies. A tray holds both members
    of a look-alike pair only when the level's ``p_lookalike`` draw says so.
    ``menu`` picks the dishes on offer (:data:`edge.sim.menu.MENUS`).
    """
    n = int(rng.choice([1, 2, 3, 4, 5, 6], p=[0.14, 0.24, 0.26, 0.18, 0.11, 0.07]))
    if menu == "base":  # the original draw, so base-menu seeds render as before
        dish_ids = DISH_IDS
        freqs = np.full(len(DISH_IDS), 1.0 / len(DISH_IDS)) if balanced else sales_frequencies()
    else:
        dish_ids = menu_dish_ids(menu)
        freqs = menu_frequencies(menu, balanced=balanced)
    dishes: list[int] = []
    if rng.random() < level.p_lookalike:
        a, b = LOOKALIKE_PAIRS[int(rng.integers(len(LOOKALIKE_PAIRS)))]
        dishes = [a, b]
        n = max(n, 2)
    partner = {a: b for a, b in LOOKALIKE_PAIRS} | {b: a for a, b in LOOKALIKE_PAIRS}
    forbidden = {partner[c] for c in dishes if c in partner}
    while len(dishes) < n:
        c = int(dish_ids[int(rng.choice(len(dish_ids), p=freqs))])
        if c in forbidden:
            continue
        dishes.append(c)
        if c in partner and partner[c] not in dishes:
            forbidden.add(partner[c])
    clutter: list[int] = []
    if rng.random() < level.p_clutter:
        k = 1 if rng.random() < 0.7 else 2
        clutter = [int(c) for c in rng.choice(CLUTTER_IDS, size=k, replace=False)]
    return dishes + clutter


def place_items(
    classes: list[int], scale: float, rng: np.random.Generator
) -> list[tuple[int, tuple[float, float], float]]:
    """Place items without overlap inside the tray rim, biggest first.

    Returns ``(class_id, (x, y) tray coordinates px, radius px)``; items that do
    not fit after many tries are dropped (at most a few on a crowded tray).
    """
    half_w = (TRAY_SIZE[0] / 2 - TRAY_RIM) * scale
    half_h = (TRAY_SIZE[1] / 2 - TRAY_RIM) * scale
    order = sorted(classes, key=lambda c: -ITEMS[c].size_px)
    placed: list[tuple[int, tuple[float, float], float]] = []
    for c in order:
        r = ITEMS[c].size_px * scale / 2
        for _ in range(200):
            x = float(rng.uniform(-half_w + r, half_w - r))
            y = float(rng.uniform(-half_h + r, half_h - r))
            if all(math.hypot(x - px, y - py) > r + pr + 3 * scale for _, (px, py), pr in placed):
                placed.append((c, (x, y), r))
                break
    return placed


def speed_profile(  # noqa: PLR0917  # the simulator's knobs, passed in one call site
    rng: np.random.Generator, level: Difficulty, n: int, fps: float, tray_len: float,
    allow_pullback: bool,
) -> npt.NDArray[np.float64]:
    """Commanded horizontal speed per frame (px/frame), ``(n,)``.

    Steady levels draw one speed; stop-and-go levels alternate moving
    (0.5-2.5 s) and standing (0.3-2 s) segments. Speeds change through a first
    order lag (about 0.25 s) because nobody jerks a tray full of soup.
    """
    to_px = tray_len / fps
    cmd = np.empty(n)
    if not level.stop_and_go:
        cmd[:] = rng.uniform(level.min_speed, level.max_speed) * to_px
    else:
        i = 0
        moving = True
        while i < n:
            # at least one frame: below ~3 fps a segment rounds to 0 frames, which
            # left cmd[i] as np.empty's garbage (NaN poses, a crashed source)
            if moving:
                length = max(int(rng.uniform(0.5, 2.5) * fps), 1)
                v = rng.uniform(level.min_speed, level.max_speed) * to_px
            else:
                length = max(int(rng.uniform(0.3, 2.0) * fps), 1)
                v = 0.0
            cmd[i : i + length] = v
            i += length
            moving = not moving
    if allow_pullback:
        at = int(rng.uniform(1.5, 3.5) * fps)
        length = int(rng.uniform(0.5, 1.2) * fps)
        cmd[at : at + length] = -rng.uniform(0.3, 0.8) * to_px
    out = np.empty(n)
    alpha = 1.0 - math.exp(-1.0 / (0.25 * fps))
    v = cmd[0]
    for i in range(n):
        v += alpha * (cmd[i] - v)
        out[i] = v
    return out


def plan_tray(
    *, tray_id: int, first_object_id: int, seed: int, start: int, level: Difficulty,
    fps: float, width: int, height: int, checkout_x: float,
    leader: TrayPlan | None, balanced: bool, menu: str = "base",
) -> TrayPlan:
    """Plan one tray entering at the left edge at frame ``start``.

    ``leader`` is the tray in front: this one never comes closer than a small
    gap behind it (a following customer waits).
    """
    rng = np.random.default_rng(seed)
    scale = width / 640.0
    tray_len = TRAY_SIZE[0] * scale
    classes = choose_classes(rng, level, balanced, menu)
    placed = place_items(classes, scale, rng)
    items = [
        ItemPlan(first_object_id + k, c, xy, r, int(rng.integers(2**31)))
        for k, (c, xy, r) in enumerate(placed)
    ]
    pullback = rng.random() < level.p_pullback
    max_frames = int(120 * fps)
    cmd = speed_profile(rng, level, max_frames, fps, tray_len, pullback)
    lane_y = height / 2 + rng.normal(0, 10 * scale)
    drift_amp = rng.uniform(0, 8 * scale)
    drift_period = rng.uniform(4, 12) * fps
    theta0 = math.radians(rng.uniform(-level.max_rotation_deg, level.max_rotation_deg) / 2)
    theta_drift = math.radians(rng.uniform(-level.max_rotation_deg, level.max_rotation_deg) / 2)
    gap = tray_len + 25 * scale
    x = -tray_len / 2 - 2.0
    exit_x = width + tray_len / 2 + 2.0
    xs: list[float] = []
    for i in range(max_frames):
        f = start + i
        x_next = x + cmd[i]
        if leader is not None and leader.start <= f <= leader.end:
            x_next = min(x_next, leader.pose(f)[0] - gap)
        if pullback and x_next > checkout_x - 0.6 * tray_len and cmd[i] < 0:
            x_next = x  # pull-backs happen before the line only
        x = max(x_next, -tray_len / 2 - 2.0)
        xs.append(x)
        if x > exit_x:
            break
    n = len(xs)
    t = np.arange(n)
    ys = lane_y + drift_amp * np.sin(2 * np.pi * t / drift_period)
    progress = np.clip((np.asarray(xs) + tray_len / 2) / (width + tray_len), 0, 1)
    thetas = theta0 + theta_drift * progress
    plan = TrayPlan(tray_id, seed, start, np.asarray(xs), ys, thetas, items)
    if pullback and np.any(np.diff(plan.xs) < -0.5):
        plan.tags.add("pulled_back")
    if any(it.class_id in CLUTTER_IDS for it in items):
        plan.tags.add("clutter")
    pair_sets = [set(p) for p in LOOKALIKE_PAIRS]
    ids = {it.class_id for it in items}
    if any(p <= ids for p in pair_sets):
        plan.tags.add("lookalike")
    _plan_hands(plan, rng, level, fps, width, scale)
    return plan


def _plan_hands(  # noqa: PLR0917  # private: one call site, every argument named there
    plan: TrayPlan, rng: np.random.Generator, level: Difficulty, fps: float, width: int,
    scale: float,
) -> None:
    """Add an occluding hand (with the level's probability) and maybe a pushing hand."""
    reach = round(REACH_FRAMES_S * fps)
    dishes = [k for k, it in enumerate(plan.items) if ITEMS[it.class_id].kind is Kind.DISH]
    if dishes and rng.random() < level.p_occluded:
        k = int(rng.choice(dishes))
        target = plan.items[k]
        # frames where the whole target is inside the picture
        cx = plan.xs + target.local_xy[0]
        inside = np.nonzero((cx - target.radius > 4) & (cx + target.radius < width - 4))[0]
        dur = round(rng.uniform(*level.occlusion_s) * fps)
        if len(inside) > dur + 2 * reach:
            first = int(inside[0]) + reach
            last = int(inside[-1]) - reach - dur
            s = int(rng.integers(first, max(first, last) + 1))
            plan.hands.append(
                HandPlan(
                    start=plan.start + s - reach, end=plan.start + s + dur + reach, target=k,
                    from_bottom=bool(rng.random() < 0.6),
                    size=max(target.radius * 1.25, 24 * scale),
                    skin=_SKINS[int(rng.integers(len(_SKINS)))],
                    sleeve=_SLEEVES[int(rng.integers(len(_SLEEVES)))],
                    wobble=float(rng.uniform(0, 2 * np.pi)),
                )
            )
            plan.tags.add("occluded")
    if rng.random() < level.p_push_hand:
        n = len(plan.xs)
        s = int(rng.integers(0, max(1, n // 2)))
        length = int(rng.uniform(1.0, 3.0) * fps)
        plan.hands.append(
            HandPlan(
                start=plan.start + s, end=plan.start + min(n - 1, s + length), target=None,
                from_bottom=bool(rng.random() < 0.5), size=22 * scale,
                skin=_SKINS[int(rng.integers(len(_SKINS)))],
                sleeve=_SLEEVES[int(rng.integers(len(_SLEEVES)))],
                wobble=float(rng.uniform(0, 2 * np.pi)),
            )
        )
