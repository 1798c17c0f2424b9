"""Benchmark: cost of drawing the video overlay per frame, cashier and engineer.

    python bench/annotate.py [--overlay cashier engineer] [--frames 2000] [--tracks 20]
                             [--cpu N] [--json OUT]

A 640x480 frame of the synthetic counter (stamped, as a live source stamps it)
with ``--tracks`` tracks: trays with open bills and dishes on them, in a
crowded layout that shifts a little every frame (labels have to be placed
anew each time). Each overlay draws the same frames, in alternating order,
on one pinned core (``--cpu``, default the first one allowed). Prints a
markdown table in ms per frame: median, 95th percentile and mean.

The target is the engineer overlay's cost (about 1 ms at 640x480 with 20
tracks): the cashier overlay should stay near it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/annotate.py` from a checkout
    sys.path.insert(0, str(REPO))

from edge.billing.biller import make_menu  # noqa: E402
from edge.billing.menu import Menu  # noqa: E402
from edge.config import SiteConfig  # noqa: E402
from edge.frames import Frame, Track, TrackedFrame  # noqa: E402
from edge.labels import LabelMemory  # noqa: E402
from edge.overlay import OVERLAYS, OverlayName, render  # noqa: E402
from edge.sim.live import SyntheticCamera, SyntheticSpec  # noqa: E402
from edge.sim.menu import CLASS_NAMES, DISH_IDS, TRAY_ID  # noqa: E402

WIDTH, HEIGHT = 640, 480
WARMUP = 50

Draw = Callable[[TrackedFrame], npt.NDArray[np.uint8]]


Bills = tuple[tuple[int, int, float], ...]


def crowded_tracks(seq: int, n_tracks: int) -> tuple[tuple[Track, ...], Bills]:
    """Trays of five dishes side by side, ``n_tracks`` tracks in all, shifted by ``seq``.

    Returns the tracks and the open bills ``(tray_id, items, total)``.
    """
    tracks: list[Track] = []
    bills = []
    shift = float(seq % 40)
    tray = 0
    while len(tracks) < n_tracks:
        tray += 1
        tx, ty = 10.0 + shift + 210.0 * ((tray - 1) % 3), 60.0 + 200.0 * ((tray - 1) // 3)
        tracks.append(Track(tray, (tx, ty, tx + 200.0, ty + 170.0), TRAY_ID, "tray", 1.0, 9,
                            True, tray))
        bills.append((tray, 5, 12.4 + tray))
        for d in range(5):
            if len(tracks) >= n_tracks:
                break
            cls = DISH_IDS[(tray * 5 + d) % len(DISH_IDS)]
            dx, dy = tx + 8.0 + 62.0 * (d % 3), ty + 20.0 + 75.0 * (d // 3)
            tracks.append(Track(100 * tray + d, (dx, dy, dx + 56.0, dy + 56.0), cls,
                                CLASS_NAMES[cls], 0.9 if d else 0.4, 9, d != 4, tray))
    return tuple(tracks), tuple(bills)


def overlays(names: Sequence[str]) -> dict[str, Draw]:
    """The overlays to time, each as a function of the tracked frame (as the
    WebRTC track draws them: :func:`edge.overlay.render`, with a label memory)."""
    menu = make_menu(SiteConfig(), CLASS_NAMES)
    out: dict[str, Draw] = {}
    for name in names:
        if name not in OVERLAYS:
            raise SystemExit(f"unknown overlay {name!r}: one of {OVERLAYS}")
        out[name] = functools.partial(_draw, name, menu=menu, memory=LabelMemory())
    return out


def _draw(name: OverlayName, tf: TrackedFrame, menu: Menu,
          memory: LabelMemory) -> npt.NDArray[np.uint8]:
    return render(name, tf, menu, CLASS_NAMES, fps=20.0, latency_ms=42.0, memory=memory)


def run(names: Sequence[str], frames: int, n_tracks: int) -> dict[str, dict[str, float]]:
    """Time every overlay on the same ``frames`` frames; ms per frame."""
    camera = SyntheticCamera(SyntheticSpec(seed=5, fps=20.0, size=(WIDTH, HEIGHT)))
    _, image, capture = camera.read()
    draws = overlays(names)
    times: dict[str, list[float]] = {n: [] for n in draws}
    order = list(draws)
    for seq in range(frames + WARMUP):
        tracks, bills = crowded_tracks(seq, n_tracks)
        tf = TrackedFrame(Frame("cam1", seq, image, capture), None, tracks, bills=bills,
                          checkout_line=((400.0, 0.0), (400.0, 480.0)))
        order.reverse()  # alternate which overlay goes first
        for name in order:
            t0 = time.perf_counter()
            draws[name](tf)
            dt = time.perf_counter() - t0
            if seq >= WARMUP:
                times[name].append(dt * 1000.0)
    return {n: {"median_ms": float(np.median(t)), "p95_ms": float(np.percentile(t, 95)),
                "mean_ms": float(np.mean(t))} for n, t in times.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench and print its table; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--overlay", nargs="+", default=["cashier", "engineer"])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--tracks", type=int, default=20)
    ap.add_argument("--cpu", type=int, default=None, help="core to pin to")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    cpu = args.cpu if args.cpu is not None else min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    import cv2  # noqa: PLC0415

    cv2.setNumThreads(1)
    result = run(args.overlay, args.frames, args.tracks)
    print(f"$ python bench/annotate.py {shlex.join(argv if argv is not None else sys.argv[1:])}")
    print(f"{platform.processor() or platform.machine()}, core {cpu}, {args.frames} frames, "
          f"{args.tracks} tracks, {WIDTH}x{HEIGHT}")
    print("| overlay | median ms | p95 ms | mean ms |\n|---|---|---|---|")
    for name, r in result.items():
        print(f"| {name} | {r['median_ms']:.3f} | {r['p95_ms']:.3f} | {r['mean_ms']:.3f} |")
    if args.json is not None:
        payload: dict[str, Any] = {"frames": args.frames, "tracks": args.tracks,
                                   "result": result}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
