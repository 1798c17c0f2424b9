"""Hand-offs between stages: a latest-value slot and a bounded blocking queue.

Live video may drop frames, so stages pass frames through a
:class:`LatestSlot`: a producer never waits, a newer value replaces an older
one that nobody took, and the replaced value is counted as a drop with its
cause. File sources must not drop (deterministic runs), so they use
:class:`BlockingSlot`, where the producer waits for room instead.

Both accept values from a thread (decode threads) or from the event loop and
are read with ``await get()`` on the loop that created them.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class SlotClosed(Exception):
    """The slot was closed; no more values will come."""


class LatestSlot(Generic[T]):
    """Holds at most one value; ``put`` replaces, ``get`` waits for a new one.

    Parameters
    ----------
    loop : asyncio.AbstractEventLoop
        The loop on which ``get`` is awaited.
    on_drop : callable, optional
        Called (on the producer's thread) once per value replaced before it
        was taken; the pipeline counts it in its drop metric.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 on_drop: Callable[[], None] | None = None) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._value: T | None = None
        self._has = False
        self._closed = False
        self._event = asyncio.Event()
        self._on_drop = on_drop

    def put(self, value: T) -> None:
        """Store ``value`` (from any thread); never blocks."""
        with self._lock:
            if self._closed:
                return
            dropped = self._has
            self._value, self._has = value, True
        if dropped and self._on_drop is not None:
            self._on_drop()
        self._wake()

    def _wake(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._event.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)

    async def get(self) -> T:
        """Wait for a value not yet taken and take it.

        Raises
        ------
        SlotClosed
            The slot was closed and holds nothing.
        """
        while True:
            with self._lock:
                if self._has:
                    value, self._value, self._has = self._value, None, False
                    self._event.clear()
                    return value  # type: ignore[return-value]  # _has guarantees a T
                if self._closed:
                    raise SlotClosed
                self._event.clear()
            await self._event.wait()

    def peek(self) -> T | None:
        """The value waiting, if any, without taking it."""
        with self._lock:
            return self._value if self._has else None

    def close(self) -> None:
        """No more values; waiting readers get :class:`SlotClosed` once empty."""
        with self._lock:
            self._closed = True
        self._wake()


class BlockingSlot(Generic[T]):
    """A bounded FIFO whose producer (a thread) waits for room: nothing is dropped.

    ``put`` must not be called on the event loop's thread (it blocks).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, maxsize: int = 2) -> None:
        self._loop = loop
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._maxsize = maxsize
        self._closed = False
        self._event = asyncio.Event()

    def put(self, value: T, timeout: float | None = None) -> bool:
        """Append ``value``, waiting for room; False if closed or timed out."""
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._closed or len(self._items) < self._maxsize, timeout
            ) or self._closed:
                return False
            self._items.append(value)
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)
        return True

    async def get(self) -> T:
        """Take the oldest value, waiting for one; raises SlotClosed at the end."""
        while True:
            with self._cond:
                if self._items:
                    value = self._items.popleft()
                    self._cond.notify_all()
                    return value
                if self._closed:
                    raise SlotClosed
                self._event.clear()
            await self._event.wait()

    def close(self) -> None:
        """Wake everyone; the producer's next put returns False."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._event.set)
