"""Difficulty levels of the synthetic checkout scene.

A level is defined by what the ground truth can show: how many trays have a
dish under a hand and for how long, how fast trays move, how much they blur,
how often look-alike dishes share a tray and how often clutter lies on it.
The scene samples from these bounds; each sequence records the level's
parameters in ``seqinfo.ini``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edge.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Difficulty:
    """Sampling bounds of one level.

    Speeds are in tray lengths per second (a tray is 260 px long at 640x480),
    durations in seconds, blur in pixels of the rendered frame.
    """

    name: str
    p_occluded: float  # fraction of trays with one dish under a hand
    occlusion_s: tuple[float, float]  # how long that dish stays under the hand
    max_speed: float  # tray lengths / s
    min_speed: float
    stop_and_go: bool
    p_pullback: float  # fraction of trays pulled back before the checkout line
    max_blur_px: float
    p_lookalike: float  # fraction of trays with both members of a look-alike pair
    p_clutter: float  # fraction of trays with clutter on them
    max_rotation_deg: float
    p_push_hand: float  # fraction of trays pushed by a visible hand at the rim
    light_drift: float  # relative amplitude of the global lighting drift
    noise_sigma: float  # sensor noise, grey levels
    crf: int  # H.264 constant rate factor of the written video (compression artifacts)
    tray_gap_s: tuple[float, float]  # time between two trays entering the view

    def as_params(self) -> dict[str, Any]:
        """Flat ``{key: value}`` for ``seqinfo.ini``."""
        return {f"difficulty_{k}": v for k, v in asdict(self).items()}


LEVELS: dict[str, Difficulty] = {
    "easy": Difficulty(
        name="easy", p_occluded=0.10, occlusion_s=(0.3, 0.5), max_speed=0.5, min_speed=0.3,
        stop_and_go=False, p_pullback=0.0, max_blur_px=3.0, p_lookalike=0.05, p_clutter=0.05,
        max_rotation_deg=3.0, p_push_hand=0.1, light_drift=0.04, noise_sigma=2.0, crf=23,
        tray_gap_s=(5.0, 9.0),
    ),
    "standard": Difficulty(
        name="standard", p_occluded=0.30, occlusion_s=(0.3, 1.5), max_speed=1.0, min_speed=0.3,
        stop_and_go=True, p_pullback=0.0, max_blur_px=8.0, p_lookalike=0.15, p_clutter=0.20,
        max_rotation_deg=6.0, p_push_hand=0.3, light_drift=0.08, noise_sigma=3.0, crf=27,
        tray_gap_s=(3.5, 8.0),
    ),
    "hard": Difficulty(
        name="hard", p_occluded=0.60, occlusion_s=(0.5, 3.0), max_speed=1.5, min_speed=0.4,
        stop_and_go=True, p_pullback=0.05, max_blur_px=15.0, p_lookalike=0.30, p_clutter=0.40,
        max_rotation_deg=8.0, p_push_hand=0.5, light_drift=0.15, noise_sigma=5.0, crf=31,
        tray_gap_s=(2.5, 7.0),
    ),
}


def get_level(name: str) -> Difficulty:
    """Return the level called ``name``.

    Raises
    ------
    ConfigError
        ``name`` is not one of ``easy``, ``standard``, ``hard``.
    """
    try:
        return LEVELS[name]
    except KeyError:
        raise ConfigError(
            f"difficulty: unknown level {name!r}; valid: {', '.join(LEVELS)}"
        ) from None
