"""Bills for the journal, bills API and cashier page tests, and an SSE reader.

Bills are built directly (not by the tracker): these tests are about what
happens to a bill once it is closed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiohttp import ClientResponse

from edge.billing.model import Bill, BillItem, TrayState, round_money
from edge.config import SiteConfig

MENU = SiteConfig().menu

# (class key, confidence): the third line is below billing.confirm_below (0.75)
LINES = (("schnitzel_fries", 0.97), ("green_salad", 0.91), ("apple_pie", 0.52))


def item(key: str, confidence: float, track_id: int) -> BillItem:
    """A bill line priced from the default menu."""
    entry = MENU[key]
    return BillItem(class_id=list(MENU).index(key), key=key, name=entry.name,
                    price=entry.price, confidence=confidence, track_id=track_id,
                    needs_review=confidence < 0.75)


def jpeg(seed: int = 0, size: tuple[int, int] = (160, 120)) -> bytes:
    """A small real JPEG."""
    import cv2  # not at import time: tests/journal_writer.py starts faster without it

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", image)
    assert ok
    return bytes(buf)


def make_bill(bill_id: str, *, stream: str = "cam1", tray_id: int = 1,
              closed_at: float = 1_700_000_000.0,
              lines: tuple[tuple[str, float], ...] = LINES,
              snapshot: bytes | None = None) -> Bill:
    """A closed bill of ``lines`` (class key, confidence)."""
    items = tuple(item(k, c, 10 + i) for i, (k, c) in enumerate(lines))
    return Bill(bill_id=bill_id, stream_id=stream, tray_id=tray_id, opened_at=closed_at - 6.5,
                closed_at=closed_at, frame_seq=1234, items=items,
                total=round_money(sum(i.price for i in items)),
                needs_review=any(i.needs_review for i in items), reason="crossed",
                tray_box=(100.0, 80.0, 420.0, 330.0), snapshot_jpeg=snapshot)


def tray(stream: str, tray_id: int, keys: tuple[str, ...]) -> TrayState:
    """An open tray holding ``keys``."""
    items = tuple(item(k, 0.9, 50 + i) for i, k in enumerate(keys))
    return TrayState(stream_id=stream, tray_id=tray_id, box=(10.0, 20.0, 300.0, 240.0),
                     items=items, total=round_money(sum(i.price for i in items)))


@dataclass
class SseEvent:
    """One parsed server-sent event."""

    event: str
    data: Any
    id: str | None


class SseReader:
    """Reads ``text/event-stream`` from an aiohttp response; counts comments."""

    def __init__(self, resp: ClientResponse) -> None:
        self.resp = resp
        self.comments = 0
        self.retry_ms: int | None = None

    async def next(self, timeout: float = 5.0) -> SseEvent:
        """The next event (comments and ``retry`` lines are counted, not returned)."""
        fields: dict[str, str] = {}
        data: list[str] = []
        while True:
            raw = await asyncio.wait_for(self.resp.content.readline(), timeout)
            if not raw:
                raise EOFError("event stream ended")
            line = raw.decode().rstrip("\n")
            if not line:
                if data or fields.get("event"):
                    return SseEvent(fields.get("event", "message"),
                                    json.loads("\n".join(data)), fields.get("id"))
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "data":
                data.append(value)
            elif name == "retry":
                self.retry_ms = int(value)
            else:
                fields[name] = value

    async def quiet(self, seconds: float) -> None:
        """Read for ``seconds``; fails on anything but comments and blank lines."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                raw = await asyncio.wait_for(self.resp.content.readline(), left)
            except asyncio.TimeoutError:
                return
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                self.comments += 1
            elif line:
                raise AssertionError(f"unexpected event line {line!r}")

    async def next_of(self, kind: str, timeout: float = 5.0) -> SseEvent:
        """The next event named ``kind``, skipping others."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ev = await self.next(max(0.01, deadline - loop.time()))
            if ev.event == kind:
                return ev
