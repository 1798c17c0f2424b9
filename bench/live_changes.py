"""Benchmark: live config changes and restarts lose no tray and repeat no tray number.

    python bench/live_changes.py [--seed 21] [--seconds 180] [--difficulty standard]
                                 [--size 640x480] [--json OUT]

One synthetic stream (``synthetic://?seed=…``, rendered frame by frame, not
paced) is detected once with the shipped model (ONNX Runtime, one thread),
then billed three times by the full system on the same detections:

- **baseline**: no change;
- **changes**: three price changes (at 25 %, 45 % and 65 % of the run: the
  first dish billed so far, a second one, then the first again) and one
  tracker change (at 55 %: ``tracker.hit_counter_max`` 15 -> 18,
  ``tracker.iou_threshold`` 0.2 -> 0.22), applied as ``PUT /api/config``
  applies them to a running stream (:meth:`edge.billing.biller.TrayBiller.retune`,
  what :meth:`edge.pipeline.StreamRunner.apply_site` calls);
- **restarts**: the daemon restarted twice (at a third and two thirds of the
  run): bills go to a real journal; each start makes a new tracker whose first
  tray number is one past the journal's highest for the stream, as
  :class:`edge.pipeline.StreamRunner` does. Trays in view at a restart are
  not expected to be billed (a restart loses what was in memory); the check
  is that no tray number repeats.

Prints a table: trays billed, trays billed alike (same tray number, same
dishes) in the changes run and the baseline, lines priced by the menu in
force when their bill closed, and tray numbers repeated across restarts.
PASS needs the changes run to bill exactly the baseline's trays, every line
at the price in force, and no repeated tray number.

Seeds 90000-99999 are refused: they are the held-out evaluation set.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.billing.biller import TrayBiller, make_biller
from edge.billing.journal import Journal
from edge.billing.model import Bill
from edge.config import DEFAULT_MODEL, SiteConfig, StreamConfig
from edge.detect.contract import read_model_info
from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.frames import Detections, Frame
from edge.hostinfo import cpu_model
from edge.seeds import refuse_held_out
from edge.sim.live import parse_size
from edge.sim.scene import Scene

PRICE_AT = (0.25, 0.45, 0.65)
TRACKER_AT = 0.55
RESTARTS_AT = (1 / 3, 2 / 3)


def detect_run(seed: int, seconds: float, fps: int, size: tuple[int, int], difficulty: str,
               *, threshold: float) -> tuple[list[Frame], list[Detections]]:
    """Render and detect the run once; the frames keep their pictures (the
    tracker's optical flow reads them)."""
    scene = Scene(seed, fps=fps, size=size, difficulty=difficulty, keep_history=False)
    detector = OnnxRuntimeDetector(DEFAULT_MODEL, threads=1, score_threshold=threshold)
    n = int(seconds * fps)
    frames, dets = [], []
    t0 = time.monotonic()
    for i in range(n):
        image, _ = scene.render(i)
        dets.append(detector.detect([image])[0])
        frames.append(Frame("cam1", i, image, i / fps))
        if (i + 1) % max(1, n // 10) == 0:
            print(f"  rendered and detected {i + 1}/{n} frames "
                  f"({time.monotonic() - t0:.0f} s)", file=sys.stderr, flush=True)
    detector.close()
    return frames, dets


def _priced(site: SiteConfig, key: str, factor: float) -> SiteConfig:
    menu = dict(site.menu)
    menu[key] = menu[key].model_copy(update={"price": round(menu[key].price * factor, 2)})
    return site.model_copy(update={"menu": menu})


def _biller(site: SiteConfig, names: Sequence[str], size: tuple[int, int],
            first_tray_id: int = 1) -> TrayBiller:
    return make_biller(StreamConfig(id="cam1", url="synthetic://"), site, names, *size,
                       run_id="bench", clock_offset=0.0, snapshots=False,
                       first_tray_id=first_tray_id)


def bill_baseline(frames: list[Frame], dets: list[Detections], names: Sequence[str],
                  size: tuple[int, int]) -> list[Bill]:
    biller = _biller(SiteConfig(), names, size)
    return [b for f, d in zip(frames, dets, strict=True) for b in biller.update(f, d).closed]


def bill_with_changes(frames: list[Frame], dets: list[Detections], names: Sequence[str],
                      size: tuple[int, int]) -> tuple[list[tuple[Bill, SiteConfig]], list[str]]:
    """Bills with the menu in force when each closed, and the changes made."""
    site = SiteConfig()
    biller = _biller(site, names, size)
    n = len(frames)
    at = {int(p * n): "price" for p in PRICE_AT} | {int(TRACKER_AT * n): "tracker"}
    out: list[tuple[Bill, SiteConfig]] = []
    made: list[str] = []
    for i, (f, d) in enumerate(zip(frames, dets, strict=True)):
        kind = at.get(i)
        if kind == "price":  # the first dish billed; a second one; the first again
            billed = [it.key for b, _ in out for it in b.items] or ["coffee"]
            key = billed[0] if len(made) != 1 else next(
                (k for k in billed if k != billed[0]), billed[0])
            site = _priced(site, key, 1.25)
            made.append(f"frame {i}: {key} price -> {site.menu[key].price}")
            biller.retune(site, names)
        elif kind == "tracker":
            site = site.model_copy(update={"tracker": site.tracker.model_copy(
                update={"hit_counter_max": 18, "iou_threshold": 0.22})})
            made.append(f"frame {i}: tracker hit_counter_max 15 -> 18, iou_threshold "
                        "0.2 -> 0.22")
            biller.retune(site, names)
        out += [(b, site) for b in biller.update(f, d).closed]
    return out, made


def bill_with_restarts(frames: list[Frame], dets: list[Detections], names: Sequence[str],
                       size: tuple[int, int], journal_path: Path) -> list[int]:
    """Tray numbers of every bill in the journal after two restarts."""
    n = len(frames)
    cuts = [0, *(int(p * n) for p in RESTARTS_AT), n]
    for start, end in itertools.pairwise(cuts):
        journal = Journal(journal_path)
        try:
            first = 1 + journal.last_tray_ids().get("cam1", 0)
            biller = _biller(SiteConfig(), names, size, first_tray_id=first)
            biller.run_id = f"bench{start}"
            for f, d in zip(frames[start:end], dets[start:end], strict=True):
                for bill in biller.update(f, d).closed:
                    journal.commit(bill)
        finally:
            journal.close()
    journal = Journal(journal_path)
    try:
        return [int(b["tray_id"]) for b in journal.after(0, 100000)]
    finally:
        journal.close()


def _lines(bill: Bill) -> tuple[str, ...]:
    return tuple(sorted(i.key for i in bill.items))


def compare(base: list[Bill], changed: list[tuple[Bill, SiteConfig]]) -> dict[str, Any]:
    """Tray-by-tray comparison of the changes run with the baseline."""
    a = {b.tray_id: _lines(b) for b in base}
    b = {bill.tray_id: _lines(bill) for bill, _ in changed}
    alike = sum(1 for t, lines in a.items() if b.get(t) == lines)
    lines = [(item, site) for bill, site in changed for item in bill.items]
    priced = sum(1 for item, site in lines
                 if abs(item.price - site.menu[item.key].price) < 1e-9)
    return {"trays_baseline": len(a), "trays_changes": len(b), "trays_alike": alike,
            "only_baseline": sorted(set(a) - set(b)), "only_changes": sorted(set(b) - set(a)),
            "differ": sorted(t for t in set(a) & set(b) if a[t] != b[t]),
            "lines": len(lines), "lines_priced_in_force": priced}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=21)
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--fps", type=int, default=20)
    p.add_argument("--size", default="640x480")
    p.add_argument("--difficulty", default="standard", choices=("easy", "standard", "hard"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    refuse_held_out([args.seed], "the live-changes bench")
    size = parse_size(args.size)
    site = SiteConfig()
    t0 = time.monotonic()
    frames, dets = detect_run(args.seed, args.seconds, args.fps, size, args.difficulty,
                              threshold=site.detector.score_threshold)
    names = read_model_info(DEFAULT_MODEL).class_names
    base = bill_baseline(frames, dets, names, size)
    changed, made = bill_with_changes(frames, dets, names, size)
    with tempfile.TemporaryDirectory() as tmp:
        trays = bill_with_restarts(frames, dets, names, size, Path(tmp) / "journal.sqlite3")
    result = compare(base, changed)
    repeated = sorted({t for t in trays if trays.count(t) > 1})
    result |= {"restart_bills": len(trays), "restart_repeated": repeated, "changes": made,
               "seed": args.seed, "seconds": args.seconds, "difficulty": args.difficulty,
               "cpu": cpu_model(), "wall_s": round(time.monotonic() - t0, 1)}
    ok = (result["trays_alike"] == result["trays_baseline"] == result["trays_changes"]
          and result["lines_priced_in_force"] == result["lines"] and not repeated)
    result["verdict"] = "PASS" if ok else "FAIL"
    print(f"# live changes: seed {args.seed}, {args.seconds:.0f} s at {args.fps} fps, "
          f"{args.difficulty}, {result['cpu']}")
    print("`" + shlex.join(["python", "bench/live_changes.py", *(argv or sys.argv[1:])]) + "`\n")
    for line in made:
        print(f"- {line}")
    print("\n| check | value |\n|---|---|")
    print(f"| trays billed, baseline / with changes | {result['trays_baseline']} / "
          f"{result['trays_changes']} |")
    print(f"| trays billed alike (number and dishes) | {result['trays_alike']} |")
    print(f"| lines at the price in force | {result['lines_priced_in_force']} / "
          f"{result['lines']} |")
    print(f"| bills over two restarts / tray numbers repeated | {len(trays)} / "
          f"{len(repeated)} |")
    print(f"\n{result['verdict']}: changes bill the baseline's trays, at the prices in "
          f"force; no tray number repeats across restarts")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
