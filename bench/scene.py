"""Benchmark: scene calibration against the simulator's truth, and bills with its line.

    python bench/scene.py [--cache var/bench-billing] [--per-level 3]
                          [--angles 30,135,250] [--rotated-cache var/bench-scene]
                          [--dev] [--json OUT]

Part 1, geometry. ``dishtracker calibrate scene`` (:func:`calibration.scene.estimate`)
runs on 60 s sequences with known tray motion:

* the sequences ``bench/billing.py`` renders into ``--cache`` (left to right,
  held-out seeds easy 91000+, standard 92000+, hard 93000+; rendered here if
  missing), ``--per-level`` of each level;
* per level, one sequence per ``--angles`` entry with the camera turned
  (``dishtracker sim --angle``), held-out seeds 94000+ (easy), 95000+
  (standard), 96000+ (hard), rendered into ``--rotated-cache``.

Truth comes from the simulator's plans (:class:`edge.sim.scene.Scene`, no
rendering): the direction is the counter's axis in the picture; the speed is
the median, over frames with a tray moving forward (centre in the picture,
faster than :data:`calibration.motion.MIN_SPEED_PX_S`), of that frame's median
tray speed, i.e. the typical speed while moving, stops excluded
(:func:`calibration.motion.simulated_motion`).

Part 2, bills. On the left-to-right sequences, the full system
(:mod:`edge.eval.tracking`, cached detections in ``DIR/det``) runs twice: with
the hand-set checkout line (the simulator's, at 62 % of the width) and with
the calibrated line and direction; bill exact-match of both is printed.

``--dev`` uses tuning seeds (15000+ / 16000+) instead: for developing, never
for reporting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/scene.py` from a checkout
    sys.path.insert(0, str(REPO))

from bench.billing import machine  # noqa: E402
from calibration.motion import SceneMotion, simulated_motion  # noqa: E402
from calibration.scene import estimate, read_frames  # noqa: E402
from edge.config import DEFAULT_MODEL, CheckoutConfig, SiteConfig  # noqa: E402
from edge.eval.sequences import (  # noqa: E402
    CACHE_SCORE_THRESHOLD,
    DetectionCache,
    SequenceData,
    file_sha256,
    open_sequence,
)
from edge.eval.tracking import evaluate_sequence, report, system_specs  # noqa: E402
from edge.seeds import (  # noqa: E402
    BILLING_HELD_OUT,
    ROTATED_HELD_OUT,
    ROTATED_TUNING,
    SCENE_TUNING,
)
from edge.sim.scene import Scene  # noqa: E402
from edge.sim.writer import write_sequence  # noqa: E402

LEVELS = ("easy", "standard", "hard")
SECONDS = 60.0
FPS = 20.0
SIZE = (640, 480)


def _complete(out: Path) -> bool:
    return all((out / f).is_file() for f in ("video.mp4", "gt/gt.txt", "gt/trays.json",
                                               "seqinfo.ini"))


@dataclasses.dataclass(slots=True)
class Row:
    """One sequence's calibration against its truth."""

    name: str
    level: str
    seed: int
    angle: float
    true_deg: float
    true_speed: float
    motion: SceneMotion
    seconds_s: float

    @property
    def deg_error(self) -> float:
        """Absolute direction error, degrees."""
        d = math.degrees(math.atan2(self.motion.direction[1], self.motion.direction[0]))
        return abs((d - self.true_deg + 180.0) % 360.0 - 180.0)

    @property
    def speed_error(self) -> float:
        """Signed speed error relative to the truth, percent."""
        return 100.0 * (self.motion.speed_px_s / self.true_speed - 1.0)


def calibrate(path: Path, level: str, seed: int, angle: float) -> Row:
    """Run scene calibration on one sequence directory and compare with the truth."""
    seq = open_sequence(path)
    start = time.perf_counter()
    motion, _ = estimate(read_frames(str(path / "video.mp4"), SECONDS + 1))
    took = time.perf_counter() - start
    scene = Scene(seed, fps=seq.fps, size=(seq.width, seq.height), difficulty=level,
                  angle_deg=angle)
    true_deg, true_speed = simulated_motion(scene, seq.n_frames)
    return Row(path.name, level, seed, angle, true_deg, true_speed, motion, took)


def geometry_table(rows: list[Row]) -> str:
    """Markdown table: one row per sequence, then the worst error per level."""
    lines = ["| sequence | level | angle ° | true dir ° | dir error ° | true px/s | measured "
             "px/s | speed error % | moving frames | line |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        (x1, y1), (x2, y2) = r.motion.line
        lines.append(
            f"| {r.name} | {r.level} | {r.angle:g} | {r.true_deg:.1f} | {r.deg_error:.2f} "
            f"| {r.true_speed:.1f} | {r.motion.speed_px_s:.1f} | {r.speed_error:+.1f} "
            f"| {r.motion.moving_frames}/{r.motion.frames} "
            f"| ({x1:.0f},{y1:.0f})-({x2:.0f},{y2:.0f}) |")
    lines += ["", "| level | sequences | max dir error ° | max abs speed error % |",
              "|---|---:|---:|---:|"]
    for level in LEVELS:
        sel = [r for r in rows if r.level == level]
        if sel:
            lines.append(f"| {level} | {len(sel)} | {max(r.deg_error for r in sel):.2f} "
                         f"| {max(abs(r.speed_error) for r in sel):.1f} |")
    return "\n".join(lines)


def bills(seq: SequenceData, checkout: CheckoutConfig, sha: str) -> dict[str, Any]:
    """The full system's pooled report on ``seq`` with ``checkout`` as its line."""
    site = SiteConfig()
    specs, _ = system_specs(site, ())
    cached = DetectionCache(seq.path / "det").load(seq, sha, CACHE_SCORE_THRESHOLD)
    if cached is None:
        raise SystemExit(f"{seq.path}: no cached detections of the shipped model; run "
                         f"bench/billing.py --cache {seq.path.parent} first")
    moved = dataclasses.replace(seq, checkout=checkout)
    results, _ = evaluate_sequence(moved, specs, site, cached[1], detections=cached[0],
                                   progress=False)
    return {"seq": moved, "results": results}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("var/bench-billing"),
                    help="bench/billing.py's sequences with cached detections")
    ap.add_argument("--rotated-cache", type=Path, default=Path("var/bench-scene"))
    ap.add_argument("--per-level", type=int, default=3)
    ap.add_argument("--levels", default=",".join(LEVELS))
    ap.add_argument("--angles", default="30,135,250",
                    help="camera angles of the rotated sequences, degrees (empty: none)")
    ap.add_argument("--no-bills", action="store_true", help="skip the billing check")
    ap.add_argument("--dev", action="store_true", help="tuning seeds, not held-out ones")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    args.levels = [lv for lv in args.levels.split(",") if lv]
    if any(lv not in LEVELS for lv in args.levels) or not 1 <= args.per_level <= 10:
        ap.error(f"--levels must be a subset of {LEVELS}; --per-level in 1..10")
    args.angles = [float(a) for a in args.angles.split(",") if a.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print its tables."""
    args = _parse(argv)
    command = "python bench/scene.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    base = SCENE_TUNING if args.dev else BILLING_HELD_OUT
    rbase = ROTATED_TUNING if args.dev else ROTATED_HELD_OUT
    if args.dev:
        print("DEV SEEDS (tuning set): these figures are not held-out results")
    jobs: list[tuple[Path, str, int, float]] = []
    for level in args.levels:
        jobs += [(args.cache / f"{level}-{base[level] + i}-{SECONDS:g}s", level, base[level] + i,
                  0.0) for i in range(args.per_level)]
        jobs += [(args.rotated_cache / f"{level}-{rbase[level] + k}-a{angle:g}-{SECONDS:g}s",
                  level, rbase[level] + k, angle) for k, angle in enumerate(args.angles)]
    start = time.perf_counter()
    rows = []
    for path, level, seed, angle in tqdm(jobs, desc="bench scene", unit="seq"):
        if not _complete(path):
            write_sequence(path, seed=seed, seconds=SECONDS, fps=FPS, size=SIZE,
                           difficulty=level, angle_deg=angle)
        rows.append(calibrate(path, level, seed, angle))
    print("## Direction and speed\n")
    print(geometry_table(rows))
    doc: dict[str, Any] = {"command": command, "machine": machine(), "rows": [
        {"sequence": r.name, "level": r.level, "seed": r.seed, "angle": r.angle,
         "true_deg": r.true_deg, "true_speed_px_s": r.true_speed,
         "direction": r.motion.direction, "speed_px_s": r.motion.speed_px_s,
         "deg_error": r.deg_error, "speed_error_pct": r.speed_error,
         "line": r.motion.line, "region": r.motion.region, "calibrate_s": r.seconds_s}
        for r in rows]}

    if not args.no_bills:
        sha = file_sha256(DEFAULT_MODEL)
        specs, note = system_specs(SiteConfig(), ())
        print("\n## Bills: hand-set checkout line vs calibrated\n")
        print("| level | sequences | expected bills | exact % hand-set | exact % calibrated "
              "| line x hand-set | line x calibrated (mean) |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        doc["bills"] = {}
        for level in args.levels:
            sel = [r for r in rows if r.level == level and r.angle == 0.0]
            hand, calib = [], []
            for r in tqdm(sel, desc=f"bills {level}", unit="seq", leave=False):
                seq = open_sequence(args.cache / r.name)
                a = bills(seq, seq.checkout, sha)
                b = bills(seq, CheckoutConfig(line=r.motion.line, direction=r.motion.direction,
                                              hysteresis_px=seq.checkout.hysteresis_px), sha)
                hand.append((a["seq"], a["results"]))
                calib.append((b["seq"], b["results"]))
            if not sel:
                continue
            rh, rc = report(hand, specs, note), report(calib, specs, note)
            x_hand = hand[0][0].checkout.line[0][0] if hand[0][0].checkout.line else float("nan")
            x_cal = float(np.mean([(r.motion.line[0][0] + r.motion.line[1][0]) / 2 for r in sel]))
            print(f"| {level} | {len(sel)} | {rh['bills_expected']} "
                  f"| {100 * rh['bill_exact_match']:.2f} | {100 * rc['bill_exact_match']:.2f} "
                  f"| {x_hand:.1f} | {x_cal:.1f} |")
            doc["bills"][level] = {"hand_set": rh, "calibrated": rc}
    elapsed = time.perf_counter() - start
    print(f"\n{len(rows)} sequences in {elapsed:.0f} s; command: {command}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1, default=str))
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
