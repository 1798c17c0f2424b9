"""Sources that FFmpeg reads through PyAV: RTSP, HTTP, UDP, V4L2 and files.

source (this module) -> :class:`edge.frames.Frame` -> detect. The decode
thread opens the input described by an :class:`~edge.sources.av_input.AvInput`,
demuxes the first video stream, decodes it to BGR and delivers every picture.
Everything that can go wrong with a camera is handled here, in the thread:

- corrupt packets and frames (``av.error.InvalidDataError`` …) are skipped
  and counted in ``decode_errors``;
- a read that blocks longer than ``stall_timeout_s`` is abandoned by PyAV's
  interrupt callback (``av.open(timeout=…)``) and by FFmpeg's own socket
  ``timeout``; packets that arrive without a decodable frame for that long
  count as a stall too. The container is then closed *on this thread*:
  closing it from another thread while ``av_read_frame`` runs would free
  memory under FFmpeg's feet;
- a lost connection is retried after an exponential backoff with full
  jitter, counted in ``reconnects``; an input that cannot be opened or has no
  video stream is ``failed`` with the reason and retried as well (files
  slowly: they may appear later).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import av
import av.error
import numpy as np
import numpy.typing as npt
from av.codec.context import Flags
from av.container import InputContainer
from av.packet import Packet
from av.video.stream import VideoStream

from edge.config import StreamConfig
from edge.metrics import Metrics
from edge.sources.av_input import AvInput, av_input
from edge.sources.backoff import Backoff
from edge.sources.base import Source, SourceState
from edge.sources.credentials import mask_url

# Demuxer errors in a row (without a frame between them) after which the
# input is treated as lost rather than as a few bad bytes.
_MAX_BAD_READS = 8
# FFmpeg's "tty" demuxer turns any text file into a video of its characters.
_NOT_VIDEO_FORMATS = frozenset({"tty"})
_FIRST = frozenset({SourceState.STARTING})


class _OpenError(Exception):
    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


@dataclass(slots=True)
class _Pass:
    """What one connection (or one pass over a file) ended with."""

    end: str  # "eof", "lost" or "stopped"
    reason: str = ""
    stalled: bool = False
    frames: int = 0


@dataclass(slots=True)
class _Progress:
    """Book-keeping of one connection, on the decode thread."""

    connected_at: float
    last_frame: float
    frames: int = 0
    bad_reads: int = 0
    first_pts: int | None = None
    last_pts: int | None = None
    step: int = 0

    def see(self, pts: int) -> None:
        if self.first_pts is None:
            self.first_pts = pts
        if self.last_pts is not None and pts > self.last_pts:
            self.step = pts - self.last_pts
        self.last_pts = pts


def _why(err: BaseException) -> str:
    """An FFmpeg error's reason without the URL (which may hold a password)."""
    text = getattr(err, "strerror", None)
    return str(text) if text else type(err).__name__


class AvSource(Source):
    """A stream read with PyAV in the decode thread.

    Parameters
    ----------
    config : StreamConfig
        The stream.
    metrics : Metrics
        Counters and gauges of the daemon.
    loop : asyncio.AbstractEventLoop
        Loop of ``frames.get()``.
    spec : AvInput, optional
        How to open the input; built from ``config`` by default.
    """

    def __init__(self, config: StreamConfig, metrics: Metrics, loop: asyncio.AbstractEventLoop,
                 spec: AvInput | None = None) -> None:
        self.input = spec if spec is not None else av_input(config)
        super().__init__(config, metrics, loop, kind=self.input.kind, live=self.input.live)
        self._pts_offset = 0

    def _serve(self) -> None:
        cfg = self.config
        if self.live:
            backoff = Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s,
                              healthy_s=max(5.0, cfg.reconnect_max_s))
        else:
            # A missing file rarely appears within seconds: retry, but slowly.
            backoff = Backoff(cfg.reconnect_max_s, 6 * cfg.reconnect_max_s)
        retry = False
        while not self._should_stop():
            if retry:
                self._count_reconnect()
            # Retries keep the state that explains them (failed, reconnecting):
            # one log line per outage, not one per attempt.
            self._set_state(SourceState.CONNECTING, only_from=_FIRST)
            try:
                container, stream = self._open()
            except _OpenError as err:
                failed = err.permanent or not self.live or self.delivered == 0
                self._set_state(SourceState.FAILED if failed else SourceState.RECONNECTING,
                                err.reason)
                step = "retry"
            else:
                try:
                    result = self._read(container, stream, backoff)
                finally:
                    with contextlib.suppress(av.error.FFmpegError):  # e.g. a failed TEARDOWN
                        container.close()
                step = self._next_step(result)
            if step == "stop":
                return
            retry = step == "retry"
            if retry and self._sleep(backoff.next_delay()):
                return

    def _next_step(self, result: _Pass) -> str:
        """After a connection or pass: ``stop``, ``reopen`` (a looping file) or ``retry``."""
        if result.end == "stopped":
            return "stop"
        if self.live:
            if result.stalled:
                self._set_state(SourceState.STALLED, result.reason)
            self._set_state(SourceState.RECONNECTING, result.reason)
            return "retry"
        if result.frames == 0:
            self._set_state(SourceState.FAILED, result.reason or "no decodable video frames")
            return "retry"
        if not self.config.loop:
            self._set_state(SourceState.ENDED, result.reason or None)
            return "stop"
        return "reopen"

    def _open(self) -> tuple[InputContainer, VideoStream]:
        """Open the input and pick its first video stream; raises _OpenError."""
        spec = self.input
        where = mask_url(self.config.url)
        try:
            container = av.open(spec.target, format=spec.format, options=dict(spec.options),
                                timeout=(spec.open_timeout_s, spec.read_timeout_s))
        except av.error.ExitError:
            raise _OpenError(f"{where}: no answer within {spec.open_timeout_s:g} s") from None
        except av.error.FileNotFoundError:
            raise _OpenError(f"{where}: no such file") from None
        except av.error.InvalidDataError as err:
            if self.live:  # also what FFmpeg's RTSP client says when a reply times out
                raise _OpenError(f"{where}: cannot open: {_why(err)}") from None
            raise _OpenError(f"{where}: not a video file FFmpeg can read ({_why(err)})",
                              permanent=True) from None
        except (av.error.FFmpegError, OSError) as err:
            raise _OpenError(f"{where}: cannot open: {_why(err)}") from None
        if not isinstance(container, InputContainer):  # av.open("r") always gives one
            container.close()
            raise _OpenError(f"{where}: opened for writing", permanent=True)
        found = ""
        if container.format.name in _NOT_VIDEO_FORMATS:
            found = "text"
        elif not container.streams.video:
            found = ", ".join(sorted({s.type for s in container.streams})) or "nothing"
        if found:
            container.close()
            raise _OpenError(f"{where}: no video stream (found: {found})", permanent=True)
        stream = container.streams.video[0]
        if self.live:
            stream.codec_context.flags |= Flags.low_delay
        return container, stream

    def _read(self, container: InputContainer, stream: VideoStream, backoff: Backoff) -> _Pass:
        """Demux, decode and deliver until the input ends, fails or the source stops."""
        now = time.monotonic()
        progress = _Progress(connected_at=now, last_frame=now)
        packets: Iterator[Packet[VideoStream]] = container.demux(stream)
        try:
            while not self._should_stop():
                try:
                    packet = next(packets)
                except StopIteration:
                    return self._end_of_input(progress)
                except av.error.FFmpegError as err:
                    lost = self._read_error(err, progress)
                    if lost is not None:
                        return lost
                    packets = container.demux(stream)  # go on after the bad bytes
                    continue
                if not self._decode(packet, progress, backoff):
                    break
                silent = time.monotonic() - progress.last_frame
                if self.live and silent > self.config.stall_timeout_s:
                    return _Pass("lost", f"no frame for {silent:.1f} s", stalled=True,
                                 frames=progress.frames)
        finally:
            close = getattr(packets, "close", None)
            if close is not None:
                close()
        return _Pass("stopped", frames=progress.frames)

    def _read_error(self, err: av.error.FFmpegError, progress: _Progress) -> _Pass | None:
        """Classify a demuxer error; None means: skip the bad bytes and read on."""
        if isinstance(err, av.error.ExitError):  # PyAV's read timeout fired
            silent = time.monotonic() - progress.last_frame
            return _Pass("lost", f"no data for {silent:.1f} s", stalled=True,
                         frames=progress.frames)
        end = "lost" if self.live else "eof"
        if isinstance(err, av.error.InvalidDataError):
            self._count_decode_error()
            progress.bad_reads += 1
            if progress.bad_reads <= _MAX_BAD_READS:
                return None
            return _Pass(end, f"unreadable input: {_why(err)}", frames=progress.frames)
        return _Pass(end, f"read failed: {_why(err)}", frames=progress.frames)

    def _decode(self, packet: Packet[VideoStream], progress: _Progress, backoff: Backoff) -> bool:
        """Decode one packet and deliver its pictures; False if the source is stopping."""
        try:
            pictures = packet.decode()
        except av.error.FFmpegError:
            self._count_decode_error()
            return True
        for picture in pictures:
            captured = time.monotonic()
            image = cast("npt.NDArray[np.uint8]", picture.to_ndarray(format="bgr24"))
            pts = picture.pts
            if pts is not None:
                progress.see(pts)
                pts += self._pts_offset
            if not self._deliver(image, captured, pts, picture.time_base):
                return False
            progress.frames += 1
            progress.bad_reads = 0
            progress.last_frame = captured
            backoff.note_running(captured - progress.connected_at)
        return True

    def _end_of_input(self, progress: _Progress) -> _Pass:
        if progress.first_pts is not None and progress.last_pts is not None:
            # A looping file keeps its pts increasing from one pass to the next.
            self._pts_offset += progress.last_pts - progress.first_pts + progress.step
        reason = "connection closed by the sender" if self.live else ""
        return _Pass("eof", reason, frames=progress.frames)
