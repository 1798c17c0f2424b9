"""Detector noise of our own: documented, seeded perturbations of a sequence's detections.

Sits beside the pipeline, between ``detect`` and ``track``: the robustness
bench (``bench/robustness.py``) takes a sequence's detections (a detector's
cached output or the ground truth, :mod:`edge.eval.tape`), perturbs them
along separate axes and gives them to every system under test. A bill must
not depend on how one detector errs, so each axis is one way detectors err,
with one level parameter, and does exactly what its docstring says.

An axis is a small frozen object with ``apply(episode, rng) -> episode``;
:class:`Noise` composes several. It applies them in one fixed order
(:data:`AXES`' order, whatever order they were given in) and gives each its
own ``numpy.random.Generator`` seeded from ``(seed..., axis name, nth of that
name)``, so an axis draws the same noise alone or combined with others, and
the same seed gives the same detections on every machine. Draws do not depend
on the level where that can be arranged (a row is dropped when its uniform
draw is below the rate), so a higher level perturbs a superset of a lower one.

The order, and why: objects are first added to the ground truth (``twins``),
then real objects' boxes are removed (``hand_cover``, ``dish_misses``,
``tray_misses``, ``tray_dropouts``), reshaped (``motion_blur``, ``jitter``)
and relabelled (``lookalike_flicker``, ``random_flicker``); then false boxes
are invented (``bursts``, ``bursts_anywhere``, ``fixed_spots``,
``hand_carried``), which those axes therefore leave alone; last the whole
picture shakes (``shakes``), moving every box, invented ones included.

What the ground truth cannot give: the simulator's hands are not in
``gt/gt.txt``. A *hand event* here is a stretch in which a dish on a tray is
less than half visible while wholly inside the picture -- the simulator's
occluding hand (the same rule tags trays ``occluded`` in ``gt/trays.json``).
Hands that push a tray at its rim leave no trace in the ground truth and are
not hand events. Invented boxes score like the source's own dish boxes
(:attr:`Episode.score_pool`), take a random dish class and the size of a
random ground-truth dish box. Trays an axis aimed at are tagged in
``seq.trays`` (``noise_twin``, ``noise_hand_cover``, ``noise_hand_carried``) so
wrong bills can be traced to their cause.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge.eval.noise.distortions import (
    Jitter,
    LookalikeFlicker,
    MotionBlur,
    RandomFlicker,
    Shakes,
)
from edge.eval.noise.episode import Axis, Episode
from edge.eval.noise.losses import DishMisses, HandCover, TrayDropouts, TrayMisses
from edge.eval.noise.phantoms import Bursts, BurstsAnywhere, FixedSpots, HandCarried, hand_events
from edge.eval.noise.twins import Twins

AXES: dict[str, Callable[[float], Axis]] = {
    "twins": Twins,
    "hand_cover": HandCover,
    "dish_misses": DishMisses,
    "tray_misses": TrayMisses,
    "tray_dropouts": TrayDropouts,
    "motion_blur": MotionBlur,
    "jitter": Jitter,
    "lookalike_flicker": LookalikeFlicker,
    "random_flicker": RandomFlicker,
    "bursts": Bursts,
    "bursts_anywhere": BurstsAnywhere,
    "fixed_spots": lambda level: FixedSpots(round(level)),
    "hand_carried": HandCarried,
    "shakes": Shakes,
}
"""Every axis by name, built from its level, in the order :class:`Noise` applies them."""


def axis(name: str, level: float) -> Axis:
    """The axis ``name`` at ``level``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the valid ones) or a level out of range.
    """
    if name not in AXES:
        raise ValueError(f"unknown noise axis {name!r}; valid: {', '.join(AXES)}")
    return AXES[name](level)


@dataclass(frozen=True, slots=True)
class Noise:
    """Several axes, applied in :data:`AXES`' order, each with its own generator.

    Parameters
    ----------
    axes : sequence of Axis
        The axes (any order; none: the detections pass unchanged).
    """

    axes: tuple[Axis, ...] = field(default=())

    def __post_init__(self) -> None:
        order = list(AXES)
        object.__setattr__(self, "axes", tuple(sorted(self.axes,
                                                      key=lambda a: order.index(a.name))))

    @property
    def label(self) -> str:
        """``name=level, ...`` or ``none``."""
        return ", ".join(a.label for a in self.axes) or "none"

    def apply(self, ep: Episode, seed: int | Sequence[int]) -> Episode:
        """``ep`` with every axis applied; the same ``seed`` gives the same result.

        Parameters
        ----------
        ep : Episode
            The sequence and its detections.
        seed : int or sequence of int
            E.g. ``(run seed, simulator seed of the sequence)``.
        """
        base = [seed] if isinstance(seed, int) else list(seed)
        seen: dict[str, int] = {}
        for a in self.axes:
            nth = seen[a.name] = seen.get(a.name, -1) + 1
            ep = a.apply(ep, np.random.default_rng([*base, zlib.crc32(a.name.encode()), nth]))
        return ep


__all__ = ["AXES", "Axis", "Bursts", "BurstsAnywhere", "DishMisses", "Episode", "FixedSpots",
           "HandCarried", "HandCover", "Jitter", "LookalikeFlicker", "MotionBlur", "Noise",
           "RandomFlicker", "Shakes", "TrayDropouts", "TrayMisses", "Twins", "axis",
           "hand_events"]
