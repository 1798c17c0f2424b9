"""Training on imperfect labels: clean labels, degraded labels trained naively, and
degraded labels trained with ``calibrate train``'s remedies (calibration/noisy.py).

    python bench/imperfect_labels.py --data data/imperfect/site2 --replay data/replay/train \
        [--budget 20] [--missing 0.3] [--wrong 0.1] [--split val] [--repeats 1] \
        [--out runs/imperfect] [--json OUT]

The dataset is the ``site2`` menu (the shipped classes plus five dishes the
shipped model never saw), made with::

    dishtracker calibrate dataset --menu site2 --out data/imperfect/site2 \
        --train-seeds 21000-21023 --val-seeds 22000-22005 --test-seeds 90200-90209 \
        --every 20 --jobs 2
    dishtracker calibrate dataset --out data/replay --train-seeds 1000-1019 \
        --val-seeds "" --test-seeds "" --jobs 2

The labelled frames are those of ``bench/fewlabel.py`` at ``--budget`` frames
per new dish (every object labelled). The degraded copy of their labels
drops ``--missing`` of all boxes (trays and dishes, chosen at random; the
frames are not marked complete, as in a COCO file from any tool) and gives
``--wrong`` of the dish boxes (counted before the drop, chosen among the
kept ones) another dish of the menu, uniformly. The replay split (known
classes, half of each epoch) stays clean. Three runs on the same frames with
the same budget (``--epochs`` of ``--epoch-images``):

* ``clean``: the true labels, ``calibrate train`` as ``bench/fewlabel.py`` runs it;
* ``naive``: the degraded labels, trained the same way (missing objects are
  background, every label is trusted);
* ``remedies``: the degraded labels with ``--unlabelled proposals
  --noisy-labels drop``.

``--split val`` (seeds 22000-22005) is the validation set the remedies were
tuned on; ``--split test`` (held-out seeds 90200-90209, the few-label bench's
test split) is run once per decision and needs ``--held-out``. Each run
reports new-dish and base-dish mAP@0.5, training minutes, and for the
remedies how many of the wrong labels it doubted (recall) and how many of
its doubts were wrong labels (precision), and how many missing boxes an
ignore region covered. ``--repeats N`` repeats everything with other
degradation and training seeds. Runs resume: a run whose report exists is
not repeated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.fewlabel import NEW, pick_frames, score_model, write_subset  # noqa: E402
from edge.config import DEFAULT_MODEL  # noqa: E402
from edge.fsutil import write_atomic  # noqa: E402
from edge.geometry import box_iou  # noqa: E402

RUNS = {
    "clean": ("clean", ()),
    "naive": ("degraded", ()),
    "remedies": ("degraded", ("--unlabelled", "proposals", "--noisy-labels", "drop")),
}
TRAY = 0


def degrade(doc: dict[str, Any], *, missing: float, wrong: float, seed: int
            ) -> tuple[dict[str, Any], dict[str, Any]]:
    """A copy of a COCO document with boxes dropped and dish classes changed.

    Returns
    -------
    tuple of dict
        The degraded document, and what was done: ``dropped`` and
        ``relabelled`` (annotation id → the wrong class id) annotation ids.
    """
    rng = np.random.default_rng(seed)
    labelled = [a for a in doc["annotations"] if not a.get("ignore", 0)]
    dishes = [a for a in labelled if a["category_id"] != TRAY]
    dropped = {int(i) for i in rng.choice([a["id"] for a in labelled],
                                          size=round(missing * len(labelled)), replace=False)}
    kept_dishes = [a["id"] for a in dishes if a["id"] not in dropped]
    chosen = rng.choice(kept_dishes, size=min(round(wrong * len(dishes)), len(kept_dishes)),
                        replace=False)
    dish_ids = [c["id"] for c in doc["categories"] if c["id"] != TRAY]
    by_id = {a["id"]: a for a in doc["annotations"]}
    relabelled = {}
    for i in chosen:
        others = [c for c in dish_ids if c != by_id[int(i)]["category_id"]]
        relabelled[int(i)] = int(rng.choice(others))
    annotations = []
    for a in doc["annotations"]:
        if a["id"] in dropped:
            continue
        annotations.append(dict(a, category_id=relabelled.get(a["id"], a["category_id"])))
    return (dict(doc, annotations=annotations),
            {"dropped": sorted(dropped), "relabelled": relabelled,
             "labelled": len(labelled), "dishes": len(dishes)})


def doubt_scores(run: Path, doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Precision and recall of the run's doubted labels against the labels made wrong,
    and the share of dropped boxes an ignore region covered."""
    files = {im["id"]: im["file_name"] for im in doc["images"]}
    by_id = {a["id"]: a for a in doc["annotations"]}

    def xyxy(a: dict[str, Any]) -> list[float]:
        x, y, w, h = a["bbox"]
        return [x, y, x + w, y + h]

    def matches(path: str, box: list[float], ann: dict[str, Any]) -> bool:
        if path != files[ann["image_id"]]:
            return False
        return bool(box_iou(np.array([box], np.float32),
                            np.array([xyxy(ann)], np.float32))[0, 0] > 0.9)

    out: dict[str, Any] = {}
    trust = run / "label_trust.json"
    if trust.exists():
        doubted = json.loads(trust.read_text())["doubted"]
        wrong = [by_id[int(i)] for i in changes["relabelled"]]
        hits = sum(any(matches(d["path"], d["box"], a) for a in wrong) for d in doubted)
        caught = sum(any(matches(d["path"], d["box"], a) for d in doubted) for a in wrong)
        out.update(doubted=len(doubted), doubt_precision=hits / max(len(doubted), 1),
                   wrong_caught=caught / max(len(wrong), 1))
    proposals = run / "proposals.json"
    if proposals.exists():
        found = json.loads(proposals.read_text())["frames"]
        missing = [by_id[i] for i in changes["dropped"]]
        covered = 0
        for a in missing:
            boxes = np.array([b[:4] for b in found.get(files[a["image_id"]], [])],
                             np.float32).reshape(-1, 4)
            covered += bool(len(boxes)) and float(
                box_iou(boxes, np.array([xyxy(a)], np.float32)).max()) >= 0.5
        out.update(ignore_boxes=sum(len(v) for v in found.values()),
                   missing_covered=covered / max(len(missing), 1))
    return out


def train(work: Path, flags: tuple[str, ...], args: argparse.Namespace, seed: int,
          frames: int) -> float:
    """``calibrate train`` as bench/fewlabel.py runs it; returns wall minutes."""
    started = time.monotonic()
    cmd = [sys.executable, "-m", "edge.cli", "calibrate", "train",
           "--data", str(work / "data"), "--out", str(work / "run"),
           "--init", str(DEFAULT_MODEL), "--head", "factorized", "--freeze-blocks", "3",
           "--epochs", str(args.epochs), "--half-cycle-epochs", "1",
           "--epoch-images", str(max(args.epoch_images, frames)),
           "--backbone-lr-scale", "0.3", "--threads", str(args.threads),
           "--val-max-images", "60", "--seed", str(seed),
           "--replay", str(args.replay), "--replay-share", "0.5", *flags]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return (time.monotonic() - started) / 60


def run_one(args: argparse.Namespace, pool: dict[str, Any], picked: list[int], name: str,
            repeat: int) -> dict[str, Any]:
    """Label, train and score one run (or read its report)."""
    labels, flags = RUNS[name]
    work = args.out / f"r{repeat}" / name
    report = work / f"report-{args.split}.json"
    if report.exists():
        row: dict[str, Any] = json.loads(report.read_text())
        return row
    write_subset(args.data, pool, picked, work / "data")
    path = work / "data" / "train" / "annotations.json"
    truth = json.loads(path.read_text())
    changes: dict[str, Any] = {"dropped": [], "relabelled": {}}
    if labels == "degraded":
        doc, changes = degrade(truth, missing=args.missing, wrong=args.wrong, seed=repeat)
        write_atomic(path, json.dumps(doc).encode(), mode=0o644)
        write_atomic(work / "degradation.json", json.dumps(changes).encode(), mode=0o644)
    minutes = None  # trained by an earlier run
    if not (work / "run" / "model.onnx").exists():
        minutes = round(train(work, flags, args, repeat, len(picked)), 1)
    scores = score_model(work / "run" / "model.onnx", args.data / args.split, args.threads)
    row = {"run": name, "repeat": repeat, "frames": len(picked),
           "boxes_dropped": len(changes["dropped"]),
           "labels_wrong": len(changes["relabelled"]), "train_min": minutes,
           "split": args.split, **scores, **doubt_scores(work / "run", truth, changes)}
    write_atomic(report, json.dumps(row, indent=1).encode(), mode=0o644)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="site2 COCO root")
    ap.add_argument("--replay", type=Path, required=True, help="COCO split of the known classes")
    ap.add_argument("--budget", type=int, default=20, help="labelled frames per new dish")
    ap.add_argument("--missing", type=float, default=0.3, help="share of boxes left out")
    ap.add_argument("--wrong", type=float, default=0.1, help="share of dish boxes mislabelled")
    ap.add_argument("--runs", default=",".join(RUNS), help=f"of {', '.join(RUNS)}")
    ap.add_argument("--split", choices=["val", "test"], default="val")
    ap.add_argument("--held-out", action="store_true",
                    help="required with --split test (held-out seeds: once per decision)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--epoch-images", type=int, default=320)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/imperfect"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.split == "test" and not args.held_out:
        ap.error("--split test scores on held-out seeds: pass --held-out (once per decision)")
    pool = json.loads((args.data / "train" / "annotations.json").read_text())
    picked = pick_frames(pool, args.budget)
    rows = [run_one(args, pool, picked, name, repeat)
            for repeat in range(args.repeats) for name in args.runs.split(",")]
    print(f"\nImperfect labels: {len(picked)} frames ({args.budget} per new dish), "
          f"{args.missing:.0%} of boxes missing, {args.wrong:.0%} of dishes mislabelled; "
          f"scored on {args.data / args.split} ({rows[0]['n_images']} frames)")
    print(f"{'run':>9} {'rep':>3} {'min':>5} {'new mAP50':>9} "
          + " ".join(f"{c[:9]:>9}" for c in NEW)
          + f" {'base dish':>9} {'doubted':>7} {'prec':>5} {'caught':>6} {'covered':>7}")
    for r in rows:
        print(f"{r['run']:>9} {r['repeat']:>3} {r['train_min'] or '-':>5} {r['new_map50']:>9.3f} "
              + " ".join(f"{r['new_ap50'][c]:>9.3f}" for c in NEW)
              + f" {r['base_dishes_map50']:>9.3f} {r.get('doubted', '-'):>7} "
              + f"{r.get('doubt_precision', float('nan')):>5.2f} "
              + f"{r.get('wrong_caught', float('nan')):>6.2f} "
              + f"{r.get('missing_covered', float('nan')):>7.2f}")
    for name in RUNS:
        mine = [r["new_map50"] for r in rows if r["run"] == name]
        if mine:
            print(f"{name:>9}: mean new-dish mAP@0.5 {np.mean(mine):.3f} over {len(mine)}")
    means = {name: float(np.mean([r["new_map50"] for r in rows if r["run"] == name]))
             for name in RUNS if any(r["run"] == name for r in rows)}
    if {"clean", "naive", "remedies"} <= set(means):
        loss, naive = means["clean"] - means["remedies"], means["clean"] - means["naive"]
        print(f"{'PASS' if loss <= 0.02 else 'FAIL'}  remedies within 2 points of clean labels "
              f"(they lose {100 * loss:.1f})")
        print(f"{'PASS' if loss < naive else 'FAIL'}  remedies lose less than naive training "
              f"({100 * loss:.1f} against {100 * naive:.1f} points)")
    if args.json:
        write_atomic(args.json, json.dumps(rows, indent=1).encode(), mode=0o644)


if __name__ == "__main__":
    main()
