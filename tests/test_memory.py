"""Heap trimming (edge.memory): the glibc call really returns memory, and the daemon's timer."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from edge import memory

pytestmark = pytest.mark.skipif(not memory.trim_available(),
                                reason="the C library has no malloc_trim (not glibc)")

# 64 MiB in 64 KiB blocks (below glibc's mmap threshold, so from the heap), all
# freed but the last: the heap's top stays in use, so free() alone cannot give the
# pages back and RSS stays up - the shape of the soak's growth. trim_heap() must
# return them.
_HOLES = textwrap.dedent("""
    import ctypes, sys
    from edge.memory import trim_heap
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    size = 64 * 1024
    blocks = [libc.malloc(size) for _ in range(1024)]
    for b in blocks:
        ctypes.memset(b, 1, size)
    full = rss()
    for b in blocks[:-1]:
        libc.free(b)
    freed = rss()
    released = trim_heap()
    print(full, freed, rss(), released)
""")


def test_trim_returns_freed_heap_pages_that_free_alone_keeps() -> None:
    out = subprocess.run([sys.executable, "-c", _HOLES], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    full, freed, trimmed = (float(v) for v in out[:3])
    assert out[3] == "True"
    assert freed > full - 8, "free() alone returned the blocks: the test shows nothing"
    assert trimmed < freed - 48, f"trim gave back only {freed - trimmed:.1f} of 64 MiB"


@pytest.mark.parametrize(("raw", "expected"), [("", 10.0), ("  ", 10.0), ("0", 0.0),
                                               ("12.5", 12.5)])
def test_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch, raw: str,
                                       expected: float) -> None:
    monkeypatch.setenv(memory.TRIM_INTERVAL_ENV, raw)
    assert memory.interval_from_env() == expected


@pytest.mark.parametrize("raw", ["abc", "-1", "nan", "inf"])
def test_a_bad_interval_is_refused_with_the_variable_named(monkeypatch: pytest.MonkeyPatch,
                                                           raw: str) -> None:
    monkeypatch.setenv(memory.TRIM_INTERVAL_ENV, raw)
    with pytest.raises(ValueError, match=memory.TRIM_INTERVAL_ENV):
        memory.interval_from_env()


def test_trimmer_trims_on_its_interval_and_stops() -> None:
    asyncio.run(_trims_and_stops())


async def _trims_and_stops() -> None:
    seen: list[float] = []
    trimmer = memory.HeapTrimmer(0.02, observe=seen.append)
    trimmer.start()
    trimmer.start()  # idempotent
    for _ in range(200):
        if trimmer.trims >= 2:
            break
        await asyncio.sleep(0.01)
    await trimmer.close()
    done = trimmer.trims
    assert done >= 2 and len(seen) == done and all(0 <= t < 5 for t in seen)
    await asyncio.sleep(0.06)
    assert trimmer.trims == done
    await trimmer.close()  # idempotent


def test_interval_zero_turns_trimming_off() -> None:
    asyncio.run(_off())


async def _off() -> None:
    trimmer = memory.HeapTrimmer(0)
    assert not trimmer.enabled
    trimmer.start()
    await asyncio.sleep(0.02)
    assert trimmer.trims == 0
    await trimmer.close()
