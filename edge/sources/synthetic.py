"""The synthetic checkout camera as a pipeline source (``synthetic://?seed=…``).

source (this module) -> :class:`edge.frames.Frame` -> detect. Wraps
:class:`edge.sim.live.SyntheticCamera` in the same thread model as a network
camera: a ``decode-<stream id>`` thread reads paced frames and puts them into a
:class:`edge.slot.LatestSlot`. Frames the camera skipped because the thread
fell behind count as ``camera`` drops. ``pts`` is the scene's frame id and
``time_base`` one frame period, so ground truth lines up with delivered frames
even when some were skipped.
"""

from __future__ import annotations

import asyncio
from fractions import Fraction

from edge.config import StreamConfig
from edge.metrics import Metrics
from edge.sim.live import SyntheticCamera, SyntheticSpec
from edge.sources.base import Source, SourceState


def synthetic_spec(url: str) -> SyntheticSpec:
    """The camera a ``synthetic://?seed=…&fps=…&size=WxH…`` URL describes.

    Raises
    ------
    ConfigError
        Naming the bad query key and what would be valid (``url: …``).
    """
    return SyntheticSpec.from_url(url)


class SyntheticSource(Source):
    """A live source rendering the synthetic scene.

    Parameters
    ----------
    config : StreamConfig
        The stream; its ``url`` is ``synthetic://?seed=…&fps=…&size=WxH…``.
    metrics : Metrics
        Counters and gauges of the daemon.
    loop : asyncio.AbstractEventLoop
        Loop of ``frames.get()``.

    Raises
    ------
    ConfigError
        If the URL's query is invalid (raised here, before any thread starts).
    """

    def __init__(self, config: StreamConfig, metrics: Metrics,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.spec = synthetic_spec(config.url)
        super().__init__(config, metrics, loop, kind="synthetic", live=True)
        self.time_base = 1 / Fraction(self.spec.fps).limit_denominator(1000)

    def _serve(self) -> None:
        self._set_state(SourceState.CONNECTING)
        camera = SyntheticCamera(self.spec)
        skipped = 0
        while not self._should_stop():
            frame_id, image, due = camera.read()
            self._count_camera_drops(camera.skipped - skipped)
            skipped = camera.skipped
            if not self._deliver(image, due, frame_id, self.time_base):
                return
