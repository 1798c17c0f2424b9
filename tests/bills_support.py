"""Bills for the journal, bills API and cashier page tests, and an SSE reader.

Bills are built directly (not by the tracker): these tests are about what
happens to a bill once it is closed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import ClientResponse

from edge.billing.model import Bill, BillItem, TrayState, round_money
from edge.config import SiteConfig
from edge.frames import View

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


def views(seed: int, count: int = 3, dim: int = 128) -> tuple[View, ...]:
    """``count`` views of one dish: unit embeddings near one random direction
    (cosine about 0.99 to it) and random 48x48 crops."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=dim).astype(np.float32)
    centre /= np.linalg.norm(centre)
    out = []
    for k in range(count):
        e = centre + 0.015 * rng.normal(size=dim).astype(np.float32)
        out.append(View(e / np.linalg.norm(e), rng.integers(0, 255, (48, 48, 3), np.uint8),
                        k, 100.0))
    return tuple(out)


def with_views(bill: Bill, seed: int = 0, model_id: str = "m1") -> Bill:
    """``bill`` with views for each of its lines, made by model ``model_id``."""
    return dataclasses.replace(bill, model_id=model_id,
                               views=tuple(views(seed * 100 + n) for n in range(len(bill.items))))


WRITER = Path(__file__).with_name("journal_writer.py")


def kill_writer(path: Path, prefix: str, rng: random.Random, *mode: str,
                longest: float = 0.3) -> list[str]:
    """Run ``journal_writer.py JOURNAL PREFIX [MODE]``, SIGKILL it after a random
    0.02-``longest`` s, and return the lines it printed whole (what it
    acknowledged)."""
    proc = subprocess.Popen([sys.executable, str(WRITER), str(path), prefix, *mode],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read() if proc.stderr else ""
        time.sleep(rng.uniform(0.02, longest))
    finally:
        proc.send_signal(signal.SIGKILL)
        # read through the same buffered reader as readline(): communicate() reads
        # the raw pipe and would miss lines readline() already buffered
        out = proc.stdout.read()
        proc.stdout.close()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # a line cut by the kill has no newline: that bill may or may not be in
    return [line for line in out.split("\n")[:-1] if line]
