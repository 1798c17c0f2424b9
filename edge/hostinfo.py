"""What machine this is, for the figures benches print (beside the pipeline)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


CPU_FLAGS_OF_NOTE = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "f16c", "fma")
"""The CPU flags that decide how fast inference and video are (INT8 dot products:
``avx512_vnni``/``avx_vnni``; AMX; half floats)."""


def cpu_flags() -> list[str]:
    """Which of :data:`CPU_FLAGS_OF_NOTE` this CPU has (``/proc/cpuinfo``; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in CPU_FLAGS_OF_NOTE if f in have]
    except OSError:
        pass
    return []
