"""Noise axes that remove real objects' boxes (part of :mod:`edge.eval.noise`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edge.catalogue import TRAY_ID
from edge.eval.noise.episode import DISHES, Axis, Episode, check_share


@dataclass(frozen=True, slots=True)
class HandCover(Axis):
    """Hands over a whole tray: on ``share`` of the trays with dishes, every box
    owned by one of its dishes or clutter is removed for one stretch of
    ``seconds`` (uniform in the range), placed uniformly in the tray's time
    in the picture. The expected bill is unchanged: a tray covered long
    enough is one no camera could bill, which the bill should say."""

    share: float
    seconds: tuple[float, float] = (0.5, 2.0)
    name: ClassVar[str] = "hand_cover"
    level_name: ClassVar[str] = "share"

    def __post_init__(self) -> None:
        check_share("hand_cover share", self.share)

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        tape = ep.tape
        drop = np.zeros(len(tape), bool)
        hit = []
        for tray in ep.seq.trays or ():
            draw, secs, u = rng.random(), rng.uniform(*self.seconds), rng.random()
            if draw >= self.share or not tray.items:
                continue
            n = max(1, round(secs * ep.seq.fps))
            start = tray.first_frame + u * max(tray.last_frame - tray.first_frame + 1 - n, 0)
            ids = [i.dish_id for i in tray.items] + list(tray.clutter_ids)
            drop |= (np.isin(tape.owner, ids) & (tape.frame >= start)
                     & (tape.frame < start + n))
            hit.append(tray.tray_id)
        return ep.with_tape(tape.keep(~drop)).tagged(hit, "noise_hand_cover")


@dataclass(frozen=True, slots=True)
class DishMisses(Axis):
    """Per-frame misses of dishes: each box of a dish class is removed with
    probability ``rate``, independently per box and frame."""

    rate: float
    name: ClassVar[str] = "dish_misses"
    level_name: ClassVar[str] = "rate"

    def __post_init__(self) -> None:
        check_share("dish_misses rate", self.rate)

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        t = ep.tape
        missed = np.isin(t.classes, DISHES) & (rng.random(len(t)) < self.rate)
        return ep.with_tape(t.keep(~missed))


@dataclass(frozen=True, slots=True)
class TrayMisses(Axis):
    """Per-frame misses of trays: each box of the tray class is removed with
    probability ``rate``, independently per box and frame."""

    rate: float
    name: ClassVar[str] = "tray_misses"
    level_name: ClassVar[str] = "rate"

    def __post_init__(self) -> None:
        check_share("tray_misses rate", self.rate)

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        t = ep.tape
        return ep.with_tape(t.keep(~((t.classes == TRAY_ID) & (rng.random(len(t)) < self.rate))))


@dataclass(frozen=True, slots=True)
class TrayDropouts(Axis):
    """Stretches of tray misses: ``frames``-long dropouts covering ``share`` of
    the trays' frames.

    ``round(share * tray frames / frames)`` dropouts are placed, where *tray
    frames* counts every frame each tray is in the ground truth. Starts are
    drawn without replacement from those (tray, frame) pairs, weighted by the
    tray's speed there plus 0.1 px/frame when ``fast`` (so dropouts fall
    mostly while trays move fast), uniformly otherwise; a start within
    ``frames`` of one already placed on the same tray is skipped. Each removes
    every box owned by that tray in ``[start, start + frames)``. (Read "10-frame
    dropouts on 15 % of frames" as 15 % of tray frames inside a dropout: starting
    one on 15 % of frames would hide trays most of the time.)
    """

    share: float
    frames: int = 10
    fast: bool = True
    name: ClassVar[str] = "tray_dropouts"
    level_name: ClassVar[str] = "share"

    def __post_init__(self) -> None:
        check_share("tray_dropouts share", self.share)
        if self.frames < 1:
            raise ValueError(f"tray_dropouts frames must be >= 1, got {self.frames}")

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        t, tape = ep.truth, ep.tape
        rows = np.flatnonzero(t.is_tray)
        wanted = round(self.share * len(rows) / self.frames)
        if not wanted:
            return ep
        weight = t.speeds(rows) + 0.1 if self.fast else np.ones(len(rows))
        order = rng.choice(rows, len(rows), replace=False, p=weight / weight.sum())
        starts: dict[int, list[int]] = {}
        drop = np.zeros(len(tape), bool)
        placed = 0
        for r in order:
            tid, f = int(t.track_id[r]), int(t.frame[r])
            if any(abs(f - s) < self.frames for s in starts.get(tid, ())):
                continue
            starts.setdefault(tid, []).append(f)
            drop |= (tape.owner == tid) & (tape.frame >= f) & (tape.frame < f + self.frames)
            placed += 1
            if placed == wanted:
                break
        return ep.with_tape(tape.keep(~drop))
