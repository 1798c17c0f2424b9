"""What ``bench/onboard.py`` measures: the views a set of frames covers, and a model's figures.

* **Coverage** of the frames a sampling picked, from the ground truth:
  distinct (class, pose-bin) pairs among the dishes in them (pose-bin as
  ``bench/frame_selection.py`` defines it: place on the tray, place in the
  picture, tray rotation), pooled over the whole recording, and the frames
  in which each new dish is at least half visible.
* **Detector** figures on held-back ``site2`` frames: AP@0.5 of each new
  dish and mAP@0.5 of the base dishes (:class:`edge.eval.detection.DetectionEvaluator`,
  as ``bench/fewlabel.py`` scores). A fine-tuned model lists its classes in
  its own order (the base ones, then the new ones by name), so its class ids
  are mapped to the ``site2`` menu's by name first.
* **Bills** of whole held-back sequences with the model: ``dishtracker eval
  tracking`` (the full system only) with a site config whose menu has the
  new dishes, its detections cached per model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.frame_selection import Truth as PoseTruth
from edge.detect import load_detector
from edge.eval.cli_detector import evaluate
from edge.eval.datasets import SimSequence
from edge.eval.detection import DetectionEvaluator
from edge.eval.sequences import file_sha256
from edge.groundtruth import by_frame, read_mot
from edge.sim.menu import DISH_IDS, ITEMS, NEW_DISHES, menu_items

NEW = tuple(m.key for m in NEW_DISHES)
SITE2 = tuple(m.key for m in menu_items("site2"))


# ---------------------------------------------------------------- coverage


def coverage(picks: Sequence[tuple[Path, int]], level: str) -> dict[str, Any]:
    """What the frames ``picks`` (sequence folder, 1-based frame) show.

    Returns
    -------
    dict
        ``pairs`` distinct (class, pose-bin) pairs over all picks, ``new_pairs``
        those of new dishes, ``frames_with`` per new dish the picked frames
        where it is at least half visible, ``empty`` picked frames without a
        dish.
    """
    poses: dict[Path, PoseTruth] = {}
    keys: set[tuple[int, ...]] = set()
    frames_with = dict.fromkeys(NEW, 0)
    empty = 0
    for seq, frame in picks:
        if seq not in poses:
            meta = json.loads((seq / "gt" / "trays.json").read_text())
            poses[seq] = PoseTruth(seq, int(meta["seed"]), level)
        seen = {k[:-1] for k in poses[seq].keys.get(frame, set())}
        keys |= seen
        empty += not seen
        shown = {ITEMS[k[0]].key for k in poses[seq].keys.get(frame, set()) if k[-1] >= 1}
        for name in shown & set(NEW):
            frames_with[name] += 1
    new_ids = {m.id for m in NEW_DISHES}
    return {"pairs": len(keys), "new_pairs": sum(k[0] in new_ids for k in keys),
            "frames_with": frames_with, "empty": empty}


# ---------------------------------------------------------------- detector


@dataclass(frozen=True, slots=True)
class Renamed:
    """One image's detections with class ids of the ``site2`` menu."""

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int32]


class RenamingDetector:
    """A detector whose class ids are mapped to ``names``' by class name; classes
    ``names`` lacks are dropped."""

    def __init__(self, model: Path, names: Sequence[str], *, threads: int,
                 score_threshold: float = 0.01) -> None:
        self.detector = load_detector(model, threads=threads, score_threshold=score_threshold)
        index = {n: i for i, n in enumerate(names)}
        self.mapping = np.array([index.get(n, -1) for n in self.detector.info.class_names],
                                np.int32)

    def detect(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Renamed]:
        """Detect and rename, one result per image."""
        out = []
        for det in self.detector.detect(list(images)):
            ids = self.mapping[np.asarray(det.classes, np.int64)]
            keep = ids >= 0
            out.append(Renamed(np.asarray(det.boxes, np.float32)[keep],
                               np.asarray(det.scores, np.float32)[keep], ids[keep]))
        return out

    def close(self) -> None:
        """Release the session."""
        self.detector.close()


def new_dish_scores(summary: dict[str, Any]) -> dict[str, Any]:
    """AP@0.5 of each new dish (0 where none was found), their mean, and the base
    dishes' mAP@0.5, from a :meth:`DetectionEvaluator.summary`."""
    ap = {c: summary["per_class"][c]["ap50"] or 0.0 for c in NEW}
    return {"new_ap50": ap, "new_map50": float(np.mean(list(ap.values()))),
            "base_dishes_map50": summary["map50_dishes"]}


def detector_scores(model: Path, sequences: Iterable[Path], *, every: int,
                    threads: int) -> dict[str, Any]:
    """AP@0.5 of each new dish, their mean, and the base dishes' mAP@0.5 on every
    ``every``-th frame of ``sequences``."""
    detector = RenamingDetector(model, SITE2, threads=threads)
    evaluator = DetectionEvaluator(SITE2, dish_ids=DISH_IDS)
    try:
        for seq in sequences:
            evaluate(detector, SimSequence(seq, stride=every, num_classes=len(SITE2)),
                     evaluator, progress=False)
    finally:
        detector.close()
    summary = evaluator.summary()
    return {**new_dish_scores(summary), "map_images": summary["n_images"]}


# ---------------------------------------------------------------- bills


def bill_scores(model: Path, sequences: Sequence[Path], *, config: Path, cache: Path,
                out: Path, threads: int) -> dict[str, Any]:
    """Bill exact-match of the full system with ``model`` on ``sequences``
    (``dishtracker eval tracking``; detections cached under ``cache/<model hash>``).

    Raises
    ------
    subprocess.CalledProcessError
        The evaluation failed.
    """
    cmd = [sys.executable, "-m", "edge.cli", "eval", "tracking",
           "--data", *map(str, sequences), "--model", str(model), "--config", str(config),
           "--baselines", "none", "--det-cache", str(cache / file_sha256(model)[:12]),
           "--threads", str(threads), "--json", str(out), "--quiet"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    rep = json.loads(out.read_text())
    return {key: rep.get(key) for key in ("bill_exact_match", "bills_expected", "bills_exact",
                                          "bills_wrong_items", "bills_missing",
                                          "bills_duplicated", "false_bills", "item_precision",
                                          "item_recall")} | {
        "per_class_errors": {k: v for k, v in (rep.get("per_class_errors") or {}).items()
                             if k in NEW}}


def truth_by_frame(seq: Path) -> dict[int, list[tuple[tuple[float, float, float, float], str,
                                                       float]]]:
    """``{frame: [(x1, y1, x2, y2), class key, visibility]}`` of a sequence's ``gt.txt``
    (rows marked ignore left out)."""
    out: dict[int, list[tuple[tuple[float, float, float, float], str, float]]] = {}
    for frame, rows in by_frame(read_mot(seq / "gt" / "gt.txt")).items():
        out[frame] = [((r.x, r.y, r.x + r.w, r.y + r.h), ITEMS[r.class_id].key, r.visibility)
                      for r in rows if r.conf > 0]
    return out
