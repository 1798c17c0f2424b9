"""Benchmark: how fast the synthetic checkout camera renders, per difficulty level.

    python bench/sim.py [--seconds 30] [--json OUT]

Renders ``--seconds`` of each level at 640x480, 20 fps, on one thread
(OpenCV's own threads are pinned to 1 so the figure is per core), and prints
ms per frame for rendering alone and for rendering plus H.264 encoding
(``write_sequence``), and the real-time factor at 20 fps (>= 3x required).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import cv2

from edge.sim.scene import Scene
from edge.sim.writer import write_sequence


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    fps = 20.0
    n = int(args.seconds * fps)
    rows = []
    for level in ("easy", "standard", "hard"):
        scene = Scene(args.seed, difficulty=level)
        times = []
        for f in range(n):
            t0 = time.perf_counter()
            scene.render(f)
            times.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_sequence(Path(tmp) / "s", seed=args.seed, seconds=args.seconds,
                           difficulty=level)
            total = (time.perf_counter() - t0) / n
        med = statistics.median(times)
        rows.append({
            "level": level, "render_ms_p50": med * 1e3,
            "render_ms_p95": sorted(times)[int(0.95 * len(times))] * 1e3,
            "render_encode_ms_mean": total * 1e3,
            "realtime_factor_render": (1 / fps) / med,
            "realtime_factor_write": (1 / fps) / total,
        })
    print(f"machine: {_cpu()}, OpenCV threads 1, 640x480, {n} frames per level")
    print("| level | render p50 ms | render p95 ms | render+H.264 ms | x real time (render) "
          "| x real time (render+H.264) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['level']} | {r['render_ms_p50']:.2f} | {r['render_ms_p95']:.2f} | "
              f"{r['render_encode_ms_mean']:.2f} | {r['realtime_factor_render']:.1f} | "
              f"{r['realtime_factor_write']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": _cpu(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
