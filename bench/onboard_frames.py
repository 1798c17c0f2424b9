"""The frames ``bench/onboard.py`` labels: a site's recorded service, and K frames of it.

* **Recording** (and the evaluation sequences): ``site2`` simulator sequences
  rendered once under the bench's work folder, in parallel processes; a
  sequence whose files are all there is kept.
* **Replay**: frames of the classes the model knows, made with ``dishtracker
  calibrate dataset`` on the base menu (docs/SITE_SETUP.md, step 5).
* **select**: ``calibrate select``'s scan of each file (every ``every``-th
  frame, cached per file as ``.npz``), then one greedy choice over all files
  (:func:`calibration.select.choose_frames`).
* **uniform**: the frame at the middle of each of K equal spans of the whole
  recording's time, blurred or hand-covered as it comes, as a person taking
  one frame every so many minutes would; a frame with no dish in view is
  moved to the next one with a dish (a person skips an empty counter; every
  simulated file starts empty, and a grid of K over files of one length
  would otherwise land on a file's first frame again and again).

The picks of each file become a ``calibrate select`` folder (images and
``selection.json`` with 1-based frame numbers and the file as ``source``),
which ``dishtracker label import`` takes.
"""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from calibration.numbered_frames import NumberedFrames
from calibration.select import Scan, choose_frames, open_detector, scan, write_selection
from edge.config import DEFAULT_MODEL
from edge.groundtruth import read_mot
from edge.seeds import INDEPENDENT
from edge.sim.menu import menu_dish_ids
from edge.sim.writer import write_sequence

LEVEL = "standard"
MENU = "site2"
SAMPLINGS = ("select", "uniform")
SHOWN = 0.5
"""A dish at least this visible makes a frame worth taking for uniform sampling."""

def _say(text: str) -> None:
    print(text, flush=True)


def _complete(seq: Path) -> bool:
    return all((seq / f).is_file() for f in ("video.mp4", "gt/gt.txt", "gt/trays.json",
                                             "seqinfo.ini"))


def _render(job: tuple[int, float, Path]) -> Path:
    seed, seconds, out = job
    if not _complete(out):
        write_sequence(out, seed=seed, seconds=seconds, difficulty=LEVEL, menu=MENU)
    return out


def render(seeds: Sequence[int], seconds: float, root: Path, jobs: int) -> list[Path]:
    """The ``site2`` sequences of ``seeds`` under ``root`` (those there are kept).

    Raises
    ------
    ValueError
        A seed of :data:`edge.seeds.INDEPENDENT`: the project never renders those.
    """
    if set(seeds) & set(INDEPENDENT):
        raise ValueError(f"seeds {INDEPENDENT.start}-{INDEPENDENT.stop - 1} are never rendered")
    work = [(s, seconds, root / f"seq{s}") for s in seeds]
    todo = [w for w in work if not _complete(w[2])]
    if todo:
        _say(f"  rendering {len(todo)} of {len(work)} sequences of {seconds:g} s "
            f"({jobs} processes)")
        started = time.monotonic()
        with ProcessPoolExecutor(max(1, min(jobs, len(todo)))) as pool:
            for n, done in enumerate(pool.map(_render, todo), 1):
                if n % 10 == 0 or n == len(todo):
                    _say(f"  rendered {n}/{len(todo)} ({done.name}, "
                        f"{time.monotonic() - started:.0f} s)")
    return [w[2] for w in work]


def replay_split(work: Path, seeds: str, seconds: float, jobs: int) -> Path:
    """Frames of the known classes to replay while training (``calibrate dataset``)."""
    out = work / "replay"
    if not (out / "train" / "annotations.json").is_file():
        _say(f"  replay: calibrate dataset --train-seeds {seeds} (base menu)")
        subprocess.run([sys.executable, "-m", "edge.cli", "calibrate", "dataset",
                        "--out", str(out), "--train-seeds", seeds, "--val-seeds", "",
                        "--test-seeds", "", "--seconds", f"{seconds:g}", "--jobs", str(jobs)],
                       check=True)
    return (out / "train").resolve()


def save_scan(result: Scan, path: Path) -> None:
    """Keep a scan as ``.npz`` (written aside and renamed: no half file)."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, numbers=np.asarray(result.numbers, np.int64),
             sharp=np.asarray(result.sharp, np.float64),
             covered=np.asarray(result.covered, bool), has_tray=np.asarray(result.has_tray, bool),
             descriptors=(np.stack(result.descriptors) if result.descriptors
                          else np.zeros((0, 1), np.float32)),
             det_frame=np.asarray(result.det_frame, np.int64),
             det_track=np.asarray(result.det_track, np.int64))
    tmp.replace(path)


def load_scan(path: Path) -> Scan:
    """A scan :func:`save_scan` kept."""
    with np.load(path) as z:
        return Scan([int(v) for v in z["numbers"]], [float(v) for v in z["sharp"]],
                    [bool(v) for v in z["covered"]], [bool(v) for v in z["has_tray"]],
                    list(z["descriptors"].astype(np.float32)),
                    [int(v) for v in z["det_frame"]], [int(v) for v in z["det_track"]])


def scans(seqs: Sequence[Path], root: Path, every: int, threads: int) -> tuple[list[Scan], float]:
    """``calibrate select``'s scan of each sequence (cached); CPU seconds spent now."""
    root.mkdir(parents=True, exist_ok=True)
    todo = [s for s in seqs if not (root / f"{s.name}.npz").is_file()]
    cpu0, started = time.process_time(), time.monotonic()
    if todo:
        detector = open_detector(DEFAULT_MODEL, threads, 0.25)
        try:
            for n, seq in enumerate(todo, 1):
                save_scan(scan(NumberedFrames(str(seq)), detector, every=every,
                                progress=False), root / f"{seq.name}.npz")
                if n % 10 == 0 or n == len(todo):
                    _say(f"  scanned {n}/{len(todo)} (every {every}th frame, "
                        f"{time.monotonic() - started:.0f} s)")
        finally:
            detector.close()
    return [load_scan(root / f"{s.name}.npz") for s in seqs], time.process_time() - cpu0


def uniform_picks(lengths: Sequence[int], k: int) -> list[tuple[int, int]]:
    """``k`` frames at the middle of ``k`` equal spans of the sequences played in a row:
    ``(sequence index, 1-based frame)``."""
    total = sum(lengths)
    starts = np.cumsum([0, *lengths])
    out = []
    for i in range(k):
        at = int((i + 0.5) * total / k)
        seq = int(np.searchsorted(starts, at, side="right")) - 1
        out.append((seq, at - int(starts[seq]) + 1))
    return out


def with_a_dish(seq: Path) -> list[int]:
    """The frames of a rendered sequence where a dish is at least half visible (``gt.txt``)."""
    dishes = set(menu_dish_ids(MENU))
    return sorted({r.frame for r in read_mot(seq / "gt" / "gt.txt")
                   if r.class_id in dishes and r.visibility >= SHOWN})


def nearest_shown(frame: int, shown: Sequence[int]) -> int:
    """``frame``, or the first of ``shown`` after it, or the last before it (a person
    who takes a frame every so many minutes skips an empty counter)."""
    at = bisect.bisect_left(shown, frame)
    if at < len(shown):
        return int(shown[at])
    return int(shown[-1]) if shown else frame


def frame_count(seq: Path) -> int:
    """Frames of a rendered sequence (``trays.json``)."""
    return int(json.loads((seq / "gt" / "trays.json").read_text())["frames"])


def pick(method: str, seqs: Sequence[Path], k: int, out: Path, *, scan_root: Path,
         every: int, threads: int) -> dict[str, Any]:
    """The ``k`` frames of ``method`` (``select`` or ``uniform``) among ``seqs``, cached in
    ``out/picks.json``: ``picks`` ``[sequence folder name, 1-based frame]`` in the order
    chosen, and for ``select`` what the scan saw and its CPU seconds (``scan_root``
    keeps each file's scan)."""
    path = out / "picks.json"
    if path.is_file():
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc
    started = time.monotonic()
    doc = {"method": method, "k": k}
    if method == "select":
        found, cpu_s = scans(seqs, scan_root / f"every{every}", every, threads)
        choice = choose_frames(found, k)
        picks = choice.picks
        doc.update(every=every, scan_cpu_s=round(cpu_s, 1), frames_scanned=choice.frames_read,
                   usable=choice.usable, skipped=choice.skipped, detections=choice.detections,
                   tracks_covered=choice.tracks_covered)
    else:
        picks = list(dict.fromkeys(  # two spans may move to the same frame: count it once
            (i, nearest_shown(f, with_a_dish(seqs[i])))
            for i, f in uniform_picks([frame_count(s) for s in seqs], k)))
    doc["picks"] = [[seqs[i].name, number] for i, number in picks]
    doc["seconds"] = round(time.monotonic() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return doc


def selection_folders(doc: dict[str, Any], root: Path, out: Path) -> list[Path]:
    """One ``calibrate select`` folder per sequence with picks, in the order of each
    sequence's first pick."""
    order: dict[str, list[int]] = {}
    for name, number in doc["picks"]:
        order.setdefault(name, []).append(int(number))
    folders = []
    for name, numbers in order.items():
        folder = out / name
        if not (folder / "selection.json").is_file():
            seq = NumberedFrames(str(root / name))
            write_selection(seq, {"format": "dishtracker-selection/1", "frames": sorted(numbers),
                                  "order": numbers, "source": seq.source,
                                  "method": doc["method"]}, folder, progress=False)
        folders.append(folder)
    return folders


