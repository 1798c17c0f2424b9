"""The annotated video of one stream, as the aiortc track its viewers share.

Where it sits: pipeline -> :class:`StreamView` -> :class:`AnnotatedTrack`
(draw the cashier's or the engineer's overlay, convert to I420) -> the relay
and encoders of :mod:`edge.web.hub` -> viewers. One track per stream and
overlay, however many viewers watch it.

The track does work only while someone watches. It subscribes to the stream
when it is first read and lets go of the stream when :meth:`AnnotatedTrack.pause`
is called (the hub does so as the last viewer leaves): no frame is taken,
annotated or handed on until :meth:`AnnotatedTrack.resume`. aiortc's
``MediaRelay`` reads its source for as long as the source lives, viewers or
not, so the pause has to be here, at the source, for an idle stream to cost
nothing while the hub keeps its track and encoder for the next viewer.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import av
import cv2
import numpy as np
from aiortc import VideoStreamTrack
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError

from edge.billing.menu import Menu
from edge.frames import TrackedFrame
from edge.labels import LabelMemory
from edge.metrics import Metrics
from edge.overlay import DEFAULT_OVERLAY, OverlayName, render
from edge.slot import LatestSlot, SlotClosed

_CLOCK_RATE = 90_000  # RTP video clock; pts are 90 kHz ticks since the first frame
_FPS_WINDOW_S = 2.0


class StreamView(Protocol):
    """What the pipeline offers viewers of one stream (implemented in :mod:`edge.pipeline`)."""

    @property
    def stream_id(self) -> str:
        """Id of the stream in the site config."""

    @property
    def class_names(self) -> Sequence[str]:
        """The model's class names (keys), per class id: the engineer's overlay shows them."""

    @property
    def menu(self) -> Menu:
        """The menu in force (names, prices, what is billable), replaced on a live
        change: the cashier's overlay names dishes by it."""

    def subscribe(self) -> LatestSlot[TrackedFrame]:
        """A new slot, fed with every tracked frame from now on."""

    def unsubscribe(self, slot: LatestSlot[TrackedFrame]) -> None:
        """Stop feeding ``slot``."""


class AnnotatedTrack(VideoStreamTrack):
    """The annotated frames of one stream as an aiortc video track.

    Frames go out as fast as the pipeline delivers them, never paced by
    aiortc's ``next_timestamp`` (which assumes 30 fps and adds up to a frame
    interval of latency). ``pts`` counts 90 kHz ticks of capture time since
    the track's first frame, so RTP timestamps carry the camera's real timing.

    Parameters
    ----------
    view : StreamView
        Source of tracked frames; subscribed on the first ``recv()`` and again
        on the first ``recv()`` after each :meth:`resume`.
    metrics : Metrics, optional
        Counts ``frames{stage="annotate"}`` and observes the capture-to-annotated
        latency (``stage_latency{stage="annotate"}``).
    overlay : {"cashier", "engineer"}
        What is drawn on the frames (:func:`edge.overlay.render`).
    """

    kind = "video"

    def __init__(self, view: StreamView, metrics: Metrics | None = None, *,
                 overlay: OverlayName = DEFAULT_OVERLAY) -> None:
        super().__init__()
        self.view = view
        self.overlay: OverlayName = overlay
        self._labels = LabelMemory()  # frames are rendered one after another
        self._metrics = metrics
        self._slot: LatestSlot[TrackedFrame] | None = None
        self._watched = asyncio.Event()
        self._watched.set()
        self._t0: float | None = None
        self._last_pts = -1
        self._arrivals: deque[float] = deque()

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return not self._watched.is_set()

    def pause(self) -> None:
        """Let go of the stream until :meth:`resume`: ``recv()`` waits, takes nothing.

        A frame being annotated as this is called is dropped, not returned.
        """
        self._watched.clear()
        self._release()

    def resume(self) -> None:
        """Take frames again (from the stream's next frame on)."""
        self._watched.set()

    async def recv(self) -> av.VideoFrame:
        """Wait for the next tracked frame and return it annotated, as I420.

        While paused, waits for :meth:`resume` without taking a frame.

        Raises
        ------
        MediaStreamError
            The track was stopped or the stream's slot was closed.
        """
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self.paused:
                await self._watched.wait()  # stop() sets it too
                continue
            slot = self._slot
            if slot is None:
                slot = self._slot = self.view.subscribe()
            try:
                tf = await slot.get()
            except SlotClosed:
                if slot is not self._slot:
                    continue  # closed by pause(), not by the stream
                self.stop()
                raise MediaStreamError from None
            if slot is not self._slot:
                continue  # paused while it was on its way
            frame = await self._annotated(tf)
            if slot is self._slot:
                return frame

    async def _annotated(self, tf: TrackedFrame) -> av.VideoFrame:
        capture = tf.frame.capture_time
        fps = self._fps(capture)
        latency_ms = (time.monotonic() - capture) * 1000.0
        # Annotation plus conversion measure 1-1.5 ms: off the loop, as aiortc encodes.
        frame = await asyncio.get_running_loop().run_in_executor(
            None, self._render, tf, fps, latency_ms)
        if self._t0 is None:
            self._t0 = capture
        pts = max(round((capture - self._t0) * _CLOCK_RATE), self._last_pts + 1)
        self._last_pts = pts
        frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
        if self._metrics is not None:
            sid = self.view.stream_id
            self._metrics.frames.labels(sid, "annotate").inc()
            self._metrics.stage_latency.labels(sid, "annotate").observe(time.monotonic() - capture)
        return frame

    def _fps(self, capture: float) -> float:
        """Frames per second over the last ``_FPS_WINDOW_S`` of capture times."""
        arrivals = self._arrivals
        arrivals.append(capture)
        while arrivals[0] < capture - _FPS_WINDOW_S:
            arrivals.popleft()
        span = arrivals[-1] - arrivals[0]
        return (len(arrivals) - 1) / span if span > 0 else 0.0

    def _render(self, tf: TrackedFrame, fps: float, latency_ms: float) -> av.VideoFrame:
        view = self.view
        img = render(self.overlay, tf, view.menu, view.class_names, fps=fps,
                     latency_ms=latency_ms, memory=self._labels, unknown=tf.unknown)
        height, width = img.shape[:2]
        if height % 2 or width % 2:
            return av.VideoFrame.from_ndarray(img, format="bgr24")
        # Converting once here spares every viewer's encoder its own conversion;
        # OpenCV does it in 0.2 ms where libswscale takes 1.9 ms (640x480).
        yuv = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        return av.VideoFrame.from_ndarray(yuv, format="yuv420p")

    def _release(self) -> None:
        slot, self._slot = self._slot, None
        if slot is not None:
            self.view.unsubscribe(slot)
            slot.close()  # wakes a recv() waiting on it

    def stop(self) -> None:
        """End the track and unsubscribe from the stream (idempotent)."""
        super().stop()
        self._release()
        self._watched.set()  # wakes a paused recv(), which then raises
