"""Test media for the source tests: small H.264 clips written with PyAV, and damaged copies.

Each frame shows a white square on black whose left edge is at
``SQUARE_STEP * i`` pixels in frame ``i``, so a test can tell from the
decoded picture which frame it got.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import wave
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

from edge.frames import Frame
from edge.slot import SlotClosed
from edge.sources import Source

SQUARE_STEP = 5
SQUARE = 40


def square_x(image: npt.NDArray[np.uint8]) -> int:
    """Left edge of the white square in pixels (-1 if there is none)."""
    cols = np.flatnonzero(image[..., 1].max(axis=0) > 128)
    return int(cols[0]) if cols.size else -1


def write_clip(path: Path, frames: int = 40, fps: int = 20, size: tuple[int, int] = (320, 240),
               faststart: bool = True) -> list[int]:
    """Write an H.264 mp4 of a square moving right; return each packet's byte offset.

    ``faststart`` puts the index (``moov``) before the data, as streaming
    encoders do, so a truncated file still opens.
    """
    w, h = size
    with av.open(str(path), "w", options={"movflags": "faststart"} if faststart else {}) as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "10"}
        for i in range(frames):
            img = np.zeros((h, w, 3), np.uint8)
            x = (SQUARE_STEP * i) % (w - SQUARE)
            img[h // 2 - SQUARE // 2:h // 2 + SQUARE // 2, x:x + SQUARE] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(path)) as container:
        return [p.pos for p in container.demux(video=0) if p.size]


def truncate(src: Path, dst: Path, keep: float) -> None:
    """Copy the first ``keep`` share (0-1) of ``src``'s bytes to ``dst``."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])


def smash(src: Path, dst: Path, offsets: list[int], nbytes: int = 64) -> None:
    """Copy ``src`` to ``dst`` with ``nbytes`` of 0xFF written at each offset."""
    data = bytearray(src.read_bytes())
    for off in offsets:
        data[off:off + nbytes] = b"\xff" * nbytes
    dst.write_bytes(bytes(data))


def write_wav(path: Path, seconds: float = 1.0) -> None:
    """A silent mono WAV file: a media file without a video stream."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * int(8000 * seconds))


@dataclass
class Drain:
    """Reads a source's frames on the loop and remembers when each arrived."""

    source: Source
    frames: list[Frame] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    delay_s: float = 0.0

    async def run(self) -> None:
        """Take frames until the slot closes."""
        try:
            while True:
                frame = await self.source.frames.get()
                self.frames.append(frame)
                self.arrivals.append(time.monotonic())
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
        except SlotClosed:
            return

    def missing_seqs(self) -> int:
        """Sequence numbers skipped between the frames taken (live slots drop the oldest).

        Raises AssertionError if the numbers do not strictly increase.
        """
        seqs = [f.seq for f in self.frames]
        assert all(a < b for a, b in itertools.pairwise(seqs)), "seq must increase"
        return (seqs[-1] + 1 - len(seqs)) if seqs else 0

    def max_gap_s(self, since: float = 0.0) -> float:
        """Longest time between two arrivals after ``since`` (monotonic seconds)."""
        times = [t for t in self.arrivals if t >= since]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


async def wait_for(predicate: Callable[[], bool], timeout_s: float,
                   interval_s: float = 0.02) -> float:
    """Poll ``predicate()`` until true; return the seconds it took, or raise TimeoutError."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise TimeoutError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(interval_s)
    return time.monotonic() - start
