"""Frame selection against uniform and random sampling: distinct dish views covered.

Renders simulator sequences (the billing bench's tuning seeds,
:data:`edge.seeds.BILLING_TUNING`, standard and hard levels; never a held-out
seed), runs ``calibrate select`` once per sequence (the greedy order, so the
first K of it is the selection at K) and counts, for the frames each method
picks at the same K, the distinct pairs of (class, pose-bin) among the
ground truth's dishes seen in those frames.

Pose-bin of a dish in a frame, from the ground truth:

* **slot**: its box centre relative to its tray's box centre, in thirds of
  the tray box's width and height (3 x 3; ``gt.txt`` boxes, tray from
  ``trays.json``);
* **place**: its tray's centre along the counter in quarters of the picture
  (entering, two middle, leaving: clipped and shaded differently);
* **rotation**: the tray's rotation from the scene's plan (same seed), binned
  at -3, -1, 1, 3 degrees (5 bins).

Visibility (``gt.txt``): >= 0.9 full, >= 0.5 partly hidden, else hidden; the
``+vis`` column counts (class, pose-bin, visibility-bin) triples. Dishes less
than 10 % visible do not count as seen.

    .venv/bin/python bench/frame_selection.py --k 10 20 40
"""

from __future__ import annotations

import sys
from pathlib import Path

# run as a script, this folder comes first on sys.path, and this file's name
# would shadow the standard library's ``select`` (subprocess imports it)
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterable, Sequence  # noqa: E402

import numpy as np  # noqa: E402

from calibration.numbered_frames import NumberedFrames  # noqa: E402
from calibration.select import open_detector, select_frames  # noqa: E402
from edge.catalogue import TRAY_ID  # noqa: E402
from edge.groundtruth import BoxRecord, by_frame, read_mot, read_trays  # noqa: E402
from edge.seeds import BILLING_TUNING, level_seeds, refuse_held_out  # noqa: E402
from edge.sim.menu import menu_dish_ids  # noqa: E402
from edge.sim.scene import Scene  # noqa: E402
from edge.sim.writer import write_sequence  # noqa: E402

Pair = tuple[int, ...]
ROT_EDGES = np.radians([-3.0, -1.0, 1.0, 3.0])
MIN_VISIBLE = 0.1


def cpu_name() -> str:
    """The CPU's model name and count, from ``lscpu``."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs"


class Truth:
    """The (class, pose-bin, visibility-bin) keys of each frame of one sequence."""

    def __init__(self, seq: Path, seed: int, level: str) -> None:
        records = read_mot(seq / "gt" / "gt.txt")
        trays, meta = read_trays(seq / "gt" / "trays.json")
        self.frames = int(meta["frames"])
        width = float(meta["width"])
        tray_of = {item.dish_id: t.tray_id for t in trays for item in t.items}
        menu = str(meta.get("menu", "base"))  # site2 sequences: its new dishes count too
        dish_ids = set(menu_dish_ids(menu))
        scene = Scene(seed, fps=float(meta["fps"]), size=(int(width), int(meta["height"])),
                      difficulty=level, menu=menu)
        scene.plan_until(self.frames)
        plans = {p.tray_id: p for p in scene.plans}
        self.keys: dict[int, set[Pair]] = {}
        for frame, rows in by_frame(records).items():
            boxes = {r.track_id: r for r in rows if r.class_id == TRAY_ID}
            keys = self.keys.setdefault(frame, set())
            for r in rows:
                tid = tray_of.get(r.track_id)
                if r.class_id not in dish_ids or tid not in boxes or r.visibility < MIN_VISIBLE:
                    continue
                keys.add((r.class_id, *self._pose(r, boxes[tid], plans[tid].pose(frame - 1)[2],
                                                  width), self._vis(r.visibility)))

    @staticmethod
    def _pose(dish: BoxRecord, tray: BoxRecord, theta: float, width: float) -> Pair:
        dx = (dish.x + dish.w / 2 - tray.x - tray.w / 2) / max(tray.w, 1.0)
        dy = (dish.y + dish.h / 2 - tray.y - tray.h / 2) / max(tray.h, 1.0)
        slot = (int(np.digitize(dx, [-1 / 6, 1 / 6])), int(np.digitize(dy, [-1 / 6, 1 / 6])))
        place = min(int((tray.x + tray.w / 2) / width * 4), 3)
        return (*slot, place, int(np.digitize(theta, ROT_EDGES)))

    @staticmethod
    def _vis(v: float) -> int:
        return 2 if v >= 0.9 else 1 if v >= 0.5 else 0

    def covered(self, frames: Iterable[int]) -> tuple[int, int]:
        """Distinct (class, pose-bin) pairs and (class, pose-bin, visibility) triples."""
        triples = set().union(*(self.keys.get(f, set()) for f in frames))
        return len({t[:-1] for t in triples}), len(triples)


def render(seeds: Sequence[int], level: str, seconds: float, root: Path) -> list[Path]:
    """Render the sequences not yet under ``root``."""
    refuse_held_out(seeds, "the frame-selection bench")
    out = []
    for seed in seeds:
        seq = root / f"{level}_{seed}"
        if not (seq / "gt" / "trays.json").is_file():
            write_sequence(seq, seed=seed, seconds=seconds, difficulty=level)
        out.append(seq)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument("--sequences", type=int, default=2, help="per level")
    parser.add_argument("--levels", nargs="+", default=["standard", "hard"])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--random-draws", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path("runs/select"))
    args = parser.parse_args(argv)
    detector = open_detector(Path("edge/models/dishnet.onnx"), 2, 0.25)
    rows: dict[str, dict[int, list[tuple[int, int]]]] = {"select": {}, "uniform": {},
                                                          "random": {}}
    totals: list[tuple[int, int]] = []
    started = time.monotonic()
    for level in args.levels:
        seeds = list(level_seeds(BILLING_TUNING, level, args.sequences))
        for seed, seq in zip(seeds, render(seeds, level, args.seconds, args.root), strict=True):
            truth = Truth(seq, seed, level)
            totals.append(truth.covered(range(1, truth.frames + 1)))
            doc = select_frames(NumberedFrames(str(seq)), detector, max(args.k), progress=False)
            rng = np.random.default_rng(seed)
            for k in args.k:
                rows["select"].setdefault(k, []).append(truth.covered(doc["order"][:k]))
                uniform = np.linspace(1, truth.frames, k).round().astype(int)
                rows["uniform"].setdefault(k, []).append(truth.covered(uniform.tolist()))
                draws = [truth.covered(rng.choice(truth.frames, k, replace=False) + 1)
                         for _ in range(args.random_draws)]
                rows["random"].setdefault(k, []).append(
                    (round(float(np.mean([d[0] for d in draws]))),
                     round(float(np.mean([d[1] for d in draws])))))
            print(f"{seq.name}: {doc['frames_read']} frames, {doc['skipped']}", flush=True)
    detector.close()
    n_seq = len(totals)
    print(f"\n{n_seq} sequences ({', '.join(args.levels)}; {args.seconds:.0f} s each), "
          f"{cpu_name()}, {time.monotonic() - started:.0f} s")
    print(f"all frames: {sum(t[0] for t in totals)} (class, pose-bin) pairs, "
          f"{sum(t[1] for t in totals)} with visibility (summed over sequences)\n")
    print("| K per sequence | method | (class, pose-bin) pairs | +vis | share of all pairs |")
    print("|---|---|---|---|---|")
    all_pairs = sum(t[0] for t in totals)
    for k in args.k:
        for method in ("select", "uniform", "random"):
            pairs = sum(p for p, _ in rows[method][k])
            triples = sum(t for _, t in rows[method][k])
            name = {"select": "calibrate select", "uniform": "uniform",
                    "random": f"random (mean of {args.random_draws})"}[method]
            print(f"| {k} | {name} | {pairs} | {triples} | {pairs / all_pairs:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
