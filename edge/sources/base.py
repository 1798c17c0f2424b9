"""The first pipeline stage: what every source shares (state, thread, slot, status).

source -> :class:`edge.frames.Frame` -> detect. A source owns one named
decode thread (``decode-<stream id>``) that connects, reads and decodes, and
puts each picture into ``source.frames``: a :class:`edge.slot.LatestSlot` for
live sources (drop oldest, counted as ``decode_slot`` drops) or a
:class:`edge.slot.BlockingSlot` for files (no drops). The event loop side
(:meth:`Source.run`) only watches: it marks a silent stream ``stalled``,
publishes the ``source_up`` and ``fps`` gauges and serves :meth:`Source.status`.

Nothing here is shared between streams: each source has its own lock, stop
flag and thread, and an exception in one thread is caught, logged and retried
in that thread alone. Subclasses implement :meth:`Source._serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from enum import Enum
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt
import structlog

from edge.config import StreamConfig
from edge.frames import Frame
from edge.metrics import Metrics
from edge.slot import BlockingSlot, LatestSlot
from edge.sources.backoff import Backoff
from edge.sources.credentials import mask_text, mask_url

FrameSlot = LatestSlot[Frame] | BlockingSlot[Frame]

FPS_WINDOW_S = 2.0
WATCH_INTERVAL_S = 0.25


class SourceState(str, Enum):
    """Where a source is in its life; ``value`` is what ``status()`` reports."""

    STARTING = "starting"
    CONNECTING = "connecting"
    RUNNING = "running"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"
    STOPPED = "stopped"


_QUIET_STATES = frozenset({SourceState.STARTING, SourceState.CONNECTING})
_BAD_STATES = frozenset({SourceState.STALLED, SourceState.RECONNECTING, SourceState.FAILED})


class Source(ABC):
    """One stream's source: a decode thread feeding ``frames``.

    Parameters
    ----------
    config : StreamConfig
        The stream (id, url, timeouts, reconnect delays).
    metrics : Metrics
        Where the source counts frames, drops, decode errors and reconnects.
    loop : asyncio.AbstractEventLoop
        The loop on which ``frames.get()`` is awaited and :meth:`run` runs.
    kind : str
        What reads the stream: ``rtsp``, ``http``, ``udp``, ``v4l2``, ``file``
        or ``synthetic`` (reported by :meth:`status`).
    live : bool
        True: frames go to a :class:`LatestSlot` (drop oldest). False (files):
        a :class:`BlockingSlot` (the thread waits for the consumer).
    join_timeout_s : float
        How long :meth:`stop` waits for the thread. A thread blocked in a
        library call that cannot be interrupted (an FFmpeg connect to a host
        that never answers) is left to finish on its own after its timeout;
        it holds no shared state and delivers nothing more.

    Attributes
    ----------
    frames : LatestSlot or BlockingSlot
        ``await source.frames.get()`` gives the next :class:`Frame`; raises
        :class:`edge.slot.SlotClosed` after the source ended or stopped.
    """

    def __init__(self, config: StreamConfig, metrics: Metrics,
                 loop: asyncio.AbstractEventLoop, *, kind: str, live: bool,
                 join_timeout_s: float = 0.5) -> None:
        self.config = config
        self.kind = kind
        self.stream_id = config.id
        self.live = live
        self._loop = loop
        self._join_timeout_s = join_timeout_s
        sid = config.id
        self.frames: FrameSlot = (
            LatestSlot(loop, on_drop=metrics.drops.labels(sid, "decode_slot").inc) if live
            else BlockingSlot(loop, maxsize=2)
        )
        self._up = metrics.source_up.labels(sid)
        self._fps_gauge = metrics.fps.labels(sid)
        self._decoded = metrics.frames.labels(sid, "decode")
        self._decode_errors = metrics.decode_errors.labels(sid)
        self._reconnects = metrics.reconnects.labels(sid)
        self._camera_drops = metrics.drops.labels(sid, "camera")
        self._up.set(0)
        self._fps_gauge.set(0)
        self._log = structlog.get_logger(__name__).bind(stream=sid, stage="source")
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._done: asyncio.Event | None = None
        self._state = SourceState.STARTING
        self._last_error: str | None = None
        self._seq = 0
        self._first_frame_at: float | None = None
        self._last_frame_at: float | None = None
        self._times: deque[float] = deque()
        self._waiting_on_consumer = False

    # ---- what the loop side sees -------------------------------------------------

    @property
    def state(self) -> SourceState:
        """The current :class:`SourceState`."""
        return self._state

    @property
    def last_error(self) -> str | None:
        """The reason of the last failure, stall or disconnect (kept after recovery)."""
        return self._last_error

    @property
    def delivered(self) -> int:
        """Frames put into ``frames`` so far (the next frame's ``seq``)."""
        return self._seq

    @property
    def last_frame_age_s(self) -> float | None:
        """Seconds since the last frame was delivered; None before the first."""
        last = self._last_frame_at
        return None if last is None else time.monotonic() - last

    @property
    def fps(self) -> float:
        """Frames per second delivered over the last ~2 s (0 when silent)."""
        now = time.monotonic()
        with self._lock:
            while self._times and self._times[0] < now - FPS_WINDOW_S:
                self._times.popleft()
            n, first = len(self._times), self._first_frame_at
        if first is None or n < 2:
            return 0.0
        if now - first >= FPS_WINDOW_S:
            return n / FPS_WINDOW_S
        return (n - 1) / (now - first)

    def status(self) -> dict[str, Any]:
        """The source's health for the HTTP API (JSON-ready; credentials masked in
        ``url`` and ``last_error``, which FFmpeg may have built from the URL)."""
        age = self.last_frame_age_s
        return {
            "id": self.stream_id,
            "kind": self.kind,
            "url": mask_url(self.config.url),
            "live": self.live,
            "state": self._state.value,
            "last_error": None if self._last_error is None else mask_text(self._last_error),
            "fps": round(self.fps, 2),
            "last_frame_age_s": None if age is None else round(age, 3),
            "frames": self._seq,
        }

    # ---- lifecycle ---------------------------------------------------------------

    async def run(self) -> None:
        """Start the decode thread and watch it until it ends or :meth:`stop` is called.

        Returns normally when a non-looping file has ended or after
        :meth:`stop`; on cancellation the source is stopped first.

        Raises
        ------
        RuntimeError
            If called twice.
        """
        if self._thread is not None:
            raise RuntimeError(f"source {self.stream_id!r}: run() may be called once")
        if self._stopping.is_set():
            return
        self._done = asyncio.Event()
        self._thread = threading.Thread(target=self._thread_main, name=f"decode-{self.stream_id}",
                                        daemon=True)
        self._thread.start()
        try:
            while not self._done.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._done.wait(), WATCH_INTERVAL_S)
                self._watch()
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Make the thread exit, wait for it off the loop and close ``frames``.

        Idempotent. Returns within ``join_timeout_s`` even while the thread is
        connecting.
        """
        self._stopping.set()
        self.frames.close()
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, self._join_timeout_s)
            if thread.is_alive():
                self._log.warning("decode_thread_still_busy", waited_s=self._join_timeout_s)
        self._set_state(SourceState.STOPPED)
        self._fps_gauge.set(0)

    # ---- for subclasses (called on the decode thread) ----------------------------

    @abstractmethod
    def _serve(self) -> None:
        """Connect, read and deliver until stopped or ended; runs on the decode thread.

        Returns when :meth:`_should_stop` is true or the input ended for good
        (state ``ended``). Unexpected exceptions are caught by the caller,
        logged, and ``_serve`` is called again after a backoff delay.
        """

    def _should_stop(self) -> bool:
        return self._stopping.is_set()

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; True if the source is stopping."""
        return self._stopping.wait(seconds)

    def _deliver(self, image: npt.NDArray[np.uint8], capture_time: float,
                 pts: int | None = None, time_base: Fraction | None = None) -> bool:
        """Wrap ``image`` in a :class:`Frame` and put it into ``frames``.

        Returns
        -------
        bool
            False if the source is stopping (the frame was not delivered).
        """
        frame = Frame(self.stream_id, self._seq, image, capture_time, pts, time_base,
                      stamps=(("decode", time.monotonic()),))
        slot = self.frames
        if isinstance(slot, LatestSlot):
            slot.put(frame)
        else:
            self._waiting_on_consumer = True
            try:
                if not slot.put(frame):
                    return False
            finally:
                self._waiting_on_consumer = False
        now = time.monotonic()
        with self._lock:
            self._seq += 1
            self._last_frame_at = now
            if self._first_frame_at is None:
                self._first_frame_at = now
            self._times.append(now)
            while self._times[0] < now - FPS_WINDOW_S:
                self._times.popleft()
        self._decoded.inc()
        if self._state is not SourceState.RUNNING:
            self._set_state(SourceState.RUNNING)
        return not self._stopping.is_set()

    def _set_state(self, state: SourceState, error: str | None = None,
                   *, only_from: frozenset[SourceState] | None = None) -> bool:
        """Change state (thread-safe); log once per change. Returns True if it changed.

        ``stopped`` is final; ``only_from`` restricts the change to those states.
        """
        with self._lock:
            previous = self._state
            if previous is SourceState.STOPPED or (only_from is not None
                                                  and previous not in only_from):
                return False
            if error is not None:
                self._last_error = error
            if previous is state:
                return False
            self._state = state
        self._up.set(1 if state is SourceState.RUNNING else 0)
        log = self._log.warning if state in _BAD_STATES else self._log.info
        if state in _QUIET_STATES:
            log = self._log.debug
        extra = {} if error is None else {"error": error}
        log("source_state_changed", state=state.value, previous=previous.value,
            url=mask_url(self.config.url), **extra)
        return True

    def _count_decode_error(self) -> None:
        self._decode_errors.inc()

    def _count_reconnect(self) -> None:
        self._reconnects.inc()

    def _count_camera_drops(self, n: int) -> None:
        if n > 0:
            self._camera_drops.inc(n)

    # ---- internals ---------------------------------------------------------------

    def _thread_main(self) -> None:
        backoff = Backoff(self.config.reconnect_initial_s, self.config.reconnect_max_s)
        last_crash = ""
        try:
            while not self._stopping.is_set():
                try:
                    self._serve()
                    break
                except Exception as err:  # one stream's bug must not end the others
                    if repr(err) != last_crash:
                        self._log.exception("source_crashed", error=repr(err))
                        last_crash = repr(err)
                    self._set_state(SourceState.FAILED, f"internal error: {err!r}")
                    if self._sleep(backoff.next_delay()):
                        break
        finally:
            self.frames.close()
            self._up.set(0)
            done = self._done
            if done is not None:
                with contextlib.suppress(RuntimeError):  # the loop is already closed
                    self._loop.call_soon_threadsafe(done.set)

    def _watch(self) -> None:
        """Mark a silent running stream as stalled; refresh the fps gauge (loop side)."""
        age = self.last_frame_age_s
        if (self._state is SourceState.RUNNING and not self._waiting_on_consumer
                and age is not None and age > self.config.stall_timeout_s):
            self._set_state(SourceState.STALLED, f"no frame for {age:.1f} s",
                            only_from=frozenset({SourceState.RUNNING}))
        self._fps_gauge.set(self.fps)
