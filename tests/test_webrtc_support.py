"""A real StreamView and HTTP server for the WebRTC and browser tests (and its own test).

:class:`CameraView` plays the pipeline's part: a thread reads the stamped
:class:`~edge.sim.live.SyntheticCamera` in real time and hands every frame,
wrapped into a :class:`~edge.frames.TrackedFrame` with a few moving tracks,
to each subscriber's :class:`~edge.slot.LatestSlot`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from edge.billing.biller import make_menu
from edge.config import SiteConfig
from edge.frames import Frame, Track, TrackedFrame
from edge.sim.live import SyntheticCamera, SyntheticSpec
from edge.sim.menu import CLASS_NAMES
from edge.slot import LatestSlot, SlotClosed

STATIC_DIR = Path(__file__).resolve().parents[1] / "edge" / "web" / "static"
TOKEN = "test-token-0123456789abcdefABCDEF"
"""The bearer token the test servers expect (edge.web.access)."""
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def write_token_file(path: Path, token: str = TOKEN) -> Path:
    """A token file as the daemon accepts it (owner-only, 0600); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def fake_tracks(seq: int, width: int, height: int) -> tuple[Track, ...]:
    """Three tracks gliding left to right; the third is predicted on odd frames."""
    tracks = []
    for i, class_id in enumerate((2, 7, 11)):
        x = (40 + 6 * seq + 150 * i) % (width - 120)
        y = 120 + 90 * i
        tracks.append(Track(
            track_id=i + 1, box=(float(x), float(y), float(x + 100), float(y + 70)),
            class_id=class_id, class_name=CLASS_NAMES[class_id], confidence=0.9 - 0.1 * i,
            hits=seq + 1, detected=not (i == 2 and seq % 2),
        ))
    return tuple(tracks)


class CameraView:
    """A StreamView fed by a synthetic camera in its own thread.

    The camera renders only while someone subscribes. ``subscribe_calls``
    counts subscriptions (viewers of one stream must share one).
    """

    def __init__(self, stream_id: str = "cam1", *, fps: float = 20.0,
                 size: tuple[int, int] = (640, 480), seed: int = 1) -> None:
        self.stream_id = stream_id
        self.class_names = CLASS_NAMES
        self.menu = make_menu(SiteConfig(), CLASS_NAMES)
        self.subscribe_calls = 0
        self.slots: list[LatestSlot[TrackedFrame]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._camera = SyntheticCamera(SyntheticSpec(seed=seed, fps=fps, size=size))
        self._thread = threading.Thread(target=self._run, name=f"camera-{stream_id}",
                                        daemon=True)
        self._thread.start()

    def subscribe(self) -> LatestSlot[TrackedFrame]:
        slot: LatestSlot[TrackedFrame] = LatestSlot(asyncio.get_running_loop())
        with self._lock:
            self.slots.append(slot)
            self.subscribe_calls += 1
        return slot

    def unsubscribe(self, slot: LatestSlot[TrackedFrame]) -> None:
        with self._lock:
            if slot in self.slots:
                self.slots.remove(slot)

    def end_subscriptions(self) -> None:
        """Close every subscriber's slot, as the pipeline does when the stream stops."""
        with self._lock:
            slots, self.slots = self.slots, []
        for slot in slots:
            slot.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                slots = list(self.slots)
            if not slots:
                time.sleep(0.01)
                continue
            seq, img, capture = self._camera.read()
            height, width = img.shape[:2]
            tf = TrackedFrame(Frame(self.stream_id, seq, img, capture), None,
                              fake_tracks(seq, width, height))
            for slot in slots:
                slot.put(tf)

    def close(self) -> None:
        """Stop the camera thread (call before the event loop closes)."""
        self._stop.set()
        self._thread.join(timeout=5)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    """Run ``app`` on 127.0.0.1 on a free port; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def test_camera_view_feeds_subscribers_until_they_unsubscribe() -> None:
    async def main() -> None:
        view = CameraView(fps=50, size=(320, 240))
        try:
            slot = view.subscribe()
            first = await asyncio.wait_for(slot.get(), 5)
            second = await asyncio.wait_for(slot.get(), 5)
            assert second.frame.seq > first.frame.seq
            assert len(first.tracks) == 3
            view.unsubscribe(slot)
            slot.close()
            with pytest.raises(SlotClosed):  # at most one value left, then closed
                for _ in range(2):
                    await asyncio.wait_for(slot.get(), 1)
        finally:
            view.close()

    asyncio.run(main())
