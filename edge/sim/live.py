"""The synthetic scene as a live camera: ``synthetic://?seed=…&fps=…&size=…``.

A source (the first pipeline stage) reads frames from :class:`SyntheticCamera`
in its decode thread exactly as it would from a network camera: frames come
paced in real time, each with its capture time, optionally stamped with a
machine-readable corner code (frame id + capture time in Unix milliseconds)
so a client can measure glass-to-glass latency from the picture alone.

URL query keys: ``seed`` (int, default 1), ``fps`` (default 20), ``size``
(``WxH``, default 640x480), ``difficulty`` (easy|standard|hard, default
standard), ``stamp`` (0|1, default 1), ``menu`` (base|site2, default base:
``site2`` adds the five dishes the shipped model never saw,
:data:`edge.sim.menu.NEW_DISHES`, at 40 % of sales).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError
from edge.sim.difficulty import LEVELS
from edge.sim.menu import MENUS
from edge.sim.scene import Scene
from edge.stamp import stamp_frame

_KEYS = {"seed", "fps", "size", "difficulty", "stamp", "menu"}


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` into ``(width, height)``.

    Raises
    ------
    ConfigError
        Not two positive integers separated by ``x``, or smaller than 160x120.
    """
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"size: expected WxH such as 640x480, got {text!r}") from None
    if w < 160 or h < 120 or w > 4096 or h > 4096 or w % 2 or h % 2:
        raise ConfigError(f"size: {w}x{h} must be even and between 160x120 and 4096x4096")
    return w, h


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """Parameters of a synthetic camera, parsed from its URL."""

    seed: int = 1
    fps: float = 20.0
    size: tuple[int, int] = (640, 480)
    difficulty: str = "standard"
    stamp: bool = True
    menu: str = "base"

    @classmethod
    def from_url(cls, url: str) -> SyntheticSpec:
        """Parse ``synthetic://?seed=…``; raises ConfigError naming the bad key."""
        parts = urlsplit(url)
        if parts.scheme != "synthetic":
            raise ConfigError(f"url: expected scheme 'synthetic://', got {url!r}")
        query = parse_qs(parts.query, keep_blank_values=True)
        unknown = set(query) - _KEYS
        if unknown:
            raise ConfigError(
                f"url: unknown key(s) {sorted(unknown)} in {url!r}; valid: {sorted(_KEYS)}"
            )
        one = {k: v[-1] for k, v in query.items()}
        try:
            seed = int(one.get("seed", 1))
            fps = float(one.get("fps", 20))
        except ValueError as err:
            raise ConfigError(f"url: seed must be an integer and fps a number ({err})") from None
        if not 1 <= fps <= 120:
            raise ConfigError(f"url: fps must be in [1, 120], got {fps}")
        difficulty = one.get("difficulty", "standard")
        if difficulty not in LEVELS:
            raise ConfigError(f"url: difficulty {difficulty!r} not one of {list(LEVELS)}")
        stamp = one.get("stamp", "1")
        if stamp not in ("0", "1"):
            raise ConfigError(f"url: stamp must be 0 or 1, got {stamp!r}")
        menu = one.get("menu", "base")
        if menu not in MENUS:
            raise ConfigError(f"url: menu {menu!r} not one of {list(MENUS)}")
        size = parse_size(one["size"]) if "size" in one else (640, 480)
        return cls(seed, fps, size, difficulty, stamp == "1", menu)


class SyntheticCamera:
    """A live camera showing the synthetic scene, paced by the wall clock.

    ``read()`` blocks until the next frame is due, like a camera driver; a
    reader that falls behind gets the frame that is due now (frames in between
    are skipped, as a live camera would drop them), and ``skipped`` counts them.
    Use from one thread.
    """

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        self.scene = Scene(
            spec.seed, fps=spec.fps, size=spec.size, difficulty=spec.difficulty,
            keep_history=False, menu=spec.menu,
        )
        self._t0: float | None = None
        self._next = 0
        self.skipped = 0

    def read(self) -> tuple[int, npt.NDArray[np.uint8], float]:
        """Wait for and render the next frame.

        Returns
        -------
        frame_id : int
            0-based frame index in the scene.
        image : np.ndarray
            ``(height, width, 3)`` uint8 BGR.
        capture_time : float
            ``time.monotonic()`` at which the frame was due.
        """
        now = time.monotonic()
        if self._t0 is None:
            self._t0 = now
        period = 1.0 / self.spec.fps
        due = self._t0 + self._next * period
        if due > now:
            time.sleep(due - now)
        else:
            late = int((now - due) / period)
            if late:
                self.skipped += late
                self._next += late
                due = self._t0 + self._next * period
        frame_id = self._next
        self._next += 1
        img, _ = self.scene.render(frame_id)
        if self.spec.stamp:
            wall_ms = int(time.time() * 1000 - (time.monotonic() - due) * 1000)
            stamp_frame(img, frame_id, wall_ms)
        return frame_id, img, due
