"""Noise axes that move, reshape or relabel boxes (part of :mod:`edge.eval.noise`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from edge.eval.noise.episode import DISHES, PARTNER, Axis, Episode, check_share


@dataclass(frozen=True, slots=True)
class MotionBlur(Axis):
    """Motion-blur widening: each box owned by a ground-truth object is stretched
    along the object's motion, by ``exposure`` times its displacement that
    frame (:meth:`Truth.velocity`), half on each side: ``|vx| * exposure / 2``
    added left and right, likewise vertically. Unmatched and invented boxes
    keep their size."""

    exposure: float
    name: ClassVar[str] = "motion_blur"
    level_name: ClassVar[str] = "exposure"

    def __post_init__(self) -> None:
        if self.exposure < 0:
            raise ValueError(f"motion_blur exposure must be >= 0 frames, got {self.exposure}")

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        tape, t = ep.tape, ep.truth
        v = np.array([t.velocity(int(o), int(f)) if o >= 0 else (0.0, 0.0)
                      for o, f in zip(tape.owner, tape.frame, strict=True)],
                     np.float64).reshape(-1, 2)
        half = np.abs(v) * self.exposure / 2
        grow = np.concatenate([-half, half], axis=1)
        return ep.with_tape(replace(tape, boxes=tape.boxes + grow))


@dataclass(frozen=True, slots=True)
class Jitter(Axis):
    """Box jitter: every box edge moves by normal noise with a standard deviation
    of ``share`` of the box's width (x1, x2) or height (y1, y2), independently;
    edges that cross are swapped back."""

    share: float
    name: ClassVar[str] = "jitter"
    level_name: ClassVar[str] = "share"

    def __post_init__(self) -> None:
        check_share("jitter share", self.share)

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        b = ep.tape.boxes
        wh = np.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
        moved = b + rng.standard_normal(b.shape) * np.tile(wh, 2) * self.share
        x = np.sort(moved[:, 0::2], axis=1)
        y = np.sort(moved[:, 1::2], axis=1)
        return ep.with_tape(replace(ep.tape, boxes=np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]],
                                                        axis=1)))


@dataclass(frozen=True, slots=True)
class LookalikeFlicker(Axis):
    """Look-alike class flicker: each box whose class has a look-alike partner
    (:data:`edge.catalogue.LOOKALIKE_PAIRS`, e.g. coffee / cappuccino) takes
    the partner's class with probability ``rate``, independently per box."""

    rate: float
    name: ClassVar[str] = "lookalike_flicker"
    level_name: ClassVar[str] = "rate"

    def __post_init__(self) -> None:
        check_share("lookalike_flicker rate", self.rate)

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        c = ep.tape.classes
        partner = PARTNER[c]
        flip = (partner >= 0) & (rng.random(len(c)) < self.rate)
        return ep.with_tape(replace(ep.tape, classes=np.where(flip, partner, c).astype(np.int32)))


@dataclass(frozen=True, slots=True)
class RandomFlicker(Axis):
    """Random class flicker: each box of a dish class takes another dish class,
    uniformly among the other dishes, with probability ``rate``."""

    rate: float
    name: ClassVar[str] = "random_flicker"
    level_name: ClassVar[str] = "rate"

    def __post_init__(self) -> None:
        check_share("random_flicker rate", self.rate)

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        c = ep.tape.classes
        k = np.searchsorted(DISHES, c)
        is_dish = (k < len(DISHES)) & (DISHES[np.minimum(k, len(DISHES) - 1)] == c)
        step = rng.integers(1, len(DISHES), len(c))
        flip = is_dish & (rng.random(len(c)) < self.rate)
        other = DISHES[(k + step) % len(DISHES)]
        return ep.with_tape(replace(ep.tape, classes=np.where(flip, other, c).astype(np.int32)))


@dataclass(frozen=True, slots=True)
class Shakes(Axis):
    """Whole-picture shakes: shakes start on ``share`` of frames and last 2-5
    frames (``frames``, uniform); in each shaken frame every box, invented ones
    included, moves by one offset of random direction and a length uniform in
    ``[px / 2, px]`` pixels."""

    px: float
    share: float = 0.02
    frames: tuple[int, int] = (2, 5)
    name: ClassVar[str] = "shakes"
    level_name: ClassVar[str] = "px"

    def __post_init__(self) -> None:
        check_share("shakes share", self.share)
        if self.px < 0:
            raise ValueError(f"shakes px must be >= 0, got {self.px}")

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        n = ep.truth.n_frames
        offset = np.zeros((n + 2, 2))
        for s in np.flatnonzero(rng.random(n) < self.share) + 1:
            for f in range(s, min(s + int(rng.integers(self.frames[0], self.frames[1] + 1)),
                                  n + 1)):
                angle, length = rng.uniform(0, 2 * np.pi), rng.uniform(self.px / 2, self.px)
                offset[f] = length * np.cos(angle), length * np.sin(angle)
        tape = ep.tape
        shift = offset[np.clip(tape.frame, 0, n + 1)]
        return ep.with_tape(replace(tape, boxes=tape.boxes + np.tile(shift, 2)))
