"""Give the heap's free memory back to the operating system, so RSS stays flat for months.

Why: glibc's allocator raises its mmap threshold each time a large block that
came from ``mmap`` is freed (the "dynamic mmap threshold"). After the first
video frames and codec buffers have come and gone, blocks of 0.1-32 MiB -
frames of 460 KiB, encoder buffers of several MiB - come from the heap
instead, and a heap hands freed memory back only from its top. Every time
a stream's WebRTC encoder is made and dropped (a cashier's page opening and
closing), these blocks land elsewhere and the heap keeps the holes: RSS rose
by 0.6 MiB per viewer join in ``bench/soak.py`` while Python's own objects
stayed flat (``docs/RELIABILITY.md``, "Soak"). ``malloc_trim(0)`` returns
every free page of every arena (``madvise``), not only the top; calling it
every ten seconds keeps RSS where the live data is.

Other allocators (musl, jemalloc via ``LD_PRELOAD``) have no ``malloc_trim``
in the C library this process loaded; there :func:`trim_heap` does nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import time
from collections.abc import Callable

import structlog

log = structlog.get_logger()

TRIM_INTERVAL_ENV = "DISHTRACKER_HEAP_TRIM_S"
"""Seconds between trims (default :data:`DEFAULT_INTERVAL_S`); 0 turns trimming off."""

DEFAULT_INTERVAL_S = 10.0


def _malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim``, or None (not glibc)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)  # the libc this process already runs on
        fn = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _malloc_trim()


def trim_available() -> bool:
    """Whether this process's C library can trim its heap (glibc)."""
    return _TRIM is not None


def trim_heap() -> bool:
    """Return the free pages of every malloc arena to the OS; True if any were.

    Blocking (a few milliseconds on a daemon of 500 MiB; ctypes releases the
    GIL): call it from a worker thread, as :class:`HeapTrimmer` does.
    """
    return bool(_TRIM(0)) if _TRIM is not None else False


def interval_from_env(default: float = DEFAULT_INTERVAL_S) -> float:
    """The trim interval from ``DISHTRACKER_HEAP_TRIM_S``; ``default`` when unset.

    Raises
    ------
    ValueError
        The variable is not a number >= 0.
    """
    raw = os.environ.get(TRIM_INTERVAL_ENV, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{TRIM_INTERVAL_ENV}={raw!r}: expected seconds "
                         "(a number >= 0; 0 turns heap trimming off)") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{TRIM_INTERVAL_ENV}={raw!r}: expected a finite number >= 0")
    return value


class HeapTrimmer:
    """Trims the heap every ``interval_s`` seconds in a worker thread.

    Parameters
    ----------
    interval_s : float
        Seconds between trims; 0 makes :meth:`start` a no-op.
    observe : callable, optional
        Called with each trim's wall time in seconds (a metric).
    """

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S,
                 observe: Callable[[float], None] | None = None) -> None:
        self.interval_s = interval_s
        self._observe = observe
        self.trims = 0
        """Trims done so far."""
        self.last_seconds = 0.0
        """Wall time of the last trim."""
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether :meth:`start` starts anything (an interval and glibc)."""
        return self.interval_s > 0 and trim_available()

    def start(self) -> None:
        """Start trimming (idempotent; nothing without glibc or with interval 0)."""
        if self._task is None and self.enabled:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="heap-trim")
            log.info("heap_trim_started", interval_s=self.interval_s)

    async def close(self) -> None:
        """Stop trimming (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval_s)
            start = time.perf_counter()
            try:
                await loop.run_in_executor(None, trim_heap)
            except Exception:  # never worth stopping the daemon for; say so once
                log.exception("heap_trim_failed")
                return
            self.trims += 1
            self.last_seconds = time.perf_counter() - start
            if self._observe is not None:
                self._observe(self.last_seconds)
