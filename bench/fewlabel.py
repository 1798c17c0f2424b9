"""Few-label curve: AP of a site's new dishes against labelled frames per class.

    python bench/fewlabel.py --data data/fewlabel/site2 [--budgets 1,5,20,50] \
        [--epochs 8] [--out runs/fewlabel] [--json OUT]

The dataset is the ``site2`` menu (the shipped 33 classes plus 5 dishes the
shipped model never saw: ``edge.sim.menu.NEW_DISHES``), made with::

    dishtracker calibrate dataset --menu site2 --out data/fewlabel/site2 \
        --train-seeds 21000-21023 --val-seeds 22000-22001 --test-seeds 90200-90209 \
        --every 20 --jobs 2

For each budget K the bench picks, from the ``train`` split (the pool of
unlabelled site frames), frames until each new dish appears in K of them
(a seeded order, so the sets nest), labels them fully (every object in a
picked frame, as a person would), and fine-tunes the shipped model with
``dishtracker calibrate train --init edge/models/dishnet.onnx`` (new classes
get fresh classifier rows; stem and first 3 blocks frozen, the factorized
head, a fixed number of epochs over at least ``--epoch-images`` images).
Every model is scored on the held-out ``test`` split (seeds 90200-90209,
never used for training, selection or tuning): AP@0.5 of each new dish and
mAP@0.5 of the base dishes (forgetting). The same labelled frames also seed
``calibrate propose`` with the *shipped* model on 300 other pool frames:
top-1 / top-3 accuracy of its proposals for the new dishes, i.e. how much
of the next labelling round a person only has to confirm.

Runs resume: a budget whose report exists is not repeated, and training
resumes from its last checkpoint.
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

from bench.onboard_eval import new_dish_scores  # noqa: E402
from calibration.propose import (  # noqa: E402
    Embedder,
    build_support,
    propose,
    score_proposals,
    unlabelled_images,
)
from edge.config import DEFAULT_MODEL  # noqa: E402
from edge.detect import load_detector  # noqa: E402
from edge.eval.cli_detector import evaluate  # noqa: E402
from edge.eval.datasets import open_dataset  # noqa: E402
from edge.eval.detection import DetectionEvaluator  # noqa: E402
from edge.sim.menu import DISH_IDS, NEW_DISHES, menu_items  # noqa: E402

NEW = [m.key for m in NEW_DISHES]


def pick_frames(pool: dict[str, Any], budget: int, seed: int = 0) -> list[int]:
    """Indices of ``pool['images']`` so that each new dish is in ``budget`` of them."""
    names = {c["id"]: c["name"] for c in pool["categories"]}
    per_image: dict[int, set[str]] = {}
    for a in pool["annotations"]:
        if not a.get("ignore", 0) and names[a["category_id"]] in NEW:
            per_image.setdefault(a["image_id"], set()).add(names[a["category_id"]])
    count = dict.fromkeys(NEW, 0)
    chosen = []
    for i in np.random.default_rng(seed).permutation(len(pool["images"])):
        has = per_image.get(pool["images"][i]["id"], set())
        if any(count[c] < budget for c in has):
            chosen.append(int(i))
            for c in has:
                count[c] += 1
        if all(v >= budget for v in count.values()):
            break
    return sorted(chosen)


def write_subset(pool_dir: Path, pool: dict[str, Any], picked: list[int], out: Path) -> None:
    """A COCO root at ``out`` whose train split is ``picked``; val is the pool's val."""
    images = [dict(pool["images"][i]) for i in picked]
    ids = {im["id"] for im in images}
    for im in images:
        im["file_name"] = str((pool_dir / "train" / im["file_name"]).resolve())
    doc = {"images": images, "categories": pool["categories"],
           "annotations": [a for a in pool["annotations"] if a["image_id"] in ids]}
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "train" / "annotations.json").write_text(json.dumps(doc))
    val = out / "val"
    if not val.exists():
        val.symlink_to((pool_dir / "val").resolve())


def score_model(model: Path, test: Path, threads: int) -> dict[str, Any]:
    """AP@0.5 per new dish and base dishes mAP@0.5 on the held-out split."""
    names = tuple(m.key for m in menu_items("site2"))
    detector = load_detector(model, threads=threads, score_threshold=0.01)
    try:
        evaluator = DetectionEvaluator(names, dish_ids=DISH_IDS)
        evaluate(detector, open_dataset(test, num_classes=len(names)), evaluator, progress=False)
    finally:
        detector.close()
    summary = evaluator.summary()
    return {**new_dish_scores(summary), "n_images": summary["n_images"]}



def proposal_round(embedder: Embedder, pool: dict[str, Any], picked: list[int], *, data: Path,
                   work: Path, count: int) -> dict[str, float]:
    """Proposals of the shipped model for ``count`` pool frames not in ``picked``, with the
    picked (labelled) frames as support; their accuracy on the new dishes."""
    support = build_support(embedder, work / "data" / "train", progress=False)
    rest = [i for i in range(len(pool["images"])) if i not in set(picked)]
    chosen = sorted(np.random.default_rng(1).choice(rest, size=min(count, len(rest)),
                                                    replace=False).tolist())
    images = [dict(pool["images"][i], file_name=str(
        (data / "train" / pool["images"][i]["file_name"]).resolve())) for i in chosen]
    ids = {im["id"] for im in images}
    unl = work / "unlabelled"
    unl.mkdir(parents=True, exist_ok=True)
    (unl / "annotations.json").write_text(json.dumps({
        "images": images, "categories": pool["categories"],
        "annotations": [a for a in pool["annotations"] if a["image_id"] in ids]}))
    doc = propose(embedder, support, unlabelled_images(unl), progress=False)
    return score_proposals(doc, unl, classes=NEW)


def main() -> None:  # noqa: PLR0915 - one linear script
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="site2 COCO root")
    ap.add_argument("--budgets", default="1,5,20,50")
    ap.add_argument("--replay", type=Path, default=None,
                    help="split of the base classes mixed into training (calibrate train "
                         "--replay), e.g. the shipped model's training split")
    ap.add_argument("--plain-budgets", default="1",
                    help="budgets also trained without --replay, to show forgetting")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--epoch-images", type=int, default=320)
    ap.add_argument("--propose-images", type=int, default=300)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/fewlabel"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    pool = json.loads((args.data / "train" / "annotations.json").read_text())
    test = args.data / "test"
    rows: list[dict[str, Any]] = []
    base = args.out / "base.json"
    if not base.exists():
        args.out.mkdir(parents=True, exist_ok=True)
        base.write_text(json.dumps(score_model(DEFAULT_MODEL, test, args.threads)))
    rows.append({"budget": 0, "frames": 0, **json.loads(base.read_text())})
    embedder = Embedder(DEFAULT_MODEL, threads=args.threads)
    runs = [(int(b), args.replay) for b in args.budgets.split(",")]
    if args.replay is not None and args.plain_budgets:
        runs += [(int(b), None) for b in args.plain_budgets.split(",")]
    for budget, replay in runs:
        work = args.out / f"k{budget}-{'replay' if replay else 'plain'}"
        report = work / "report.json"
        if report.exists():
            rows.append(json.loads(report.read_text()))
            continue
        picked = pick_frames(pool, budget)
        write_subset(args.data, pool, picked, work / "data")
        started = time.monotonic()
        cmd = [sys.executable, "-m", "edge.cli", "calibrate", "train",
               "--data", str(work / "data"), "--out", str(work / "run"),
               "--init", str(DEFAULT_MODEL), "--head", "factorized", "--freeze-blocks", "3",
               "--epochs", str(args.epochs), "--half-cycle-epochs", "1",
               "--epoch-images", str(max(args.epoch_images, len(picked))),
               "--backbone-lr-scale", "0.3", "--threads", str(args.threads),
               "--val-max-images", "60", "--model-version", f"site2-k{budget}"]
        if replay is not None:
            cmd += ["--replay", str(replay), "--replay-share", "0.5"]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        train_s = time.monotonic() - started
        scores = score_model(work / "run" / "model.onnx", test, args.threads)
        prop = proposal_round(embedder, pool, picked, data=args.data, work=work,
                              count=args.propose_images)
        steps = [json.loads(line)["steps"] for line in
                 (work / "run" / "history.jsonl").read_text().splitlines()]
        row = {"budget": budget, "replay": replay is not None, "frames": len(picked),
               "steps": int(sum(steps)),
               "train_min": round(train_s / 60, 1), **scores, "proposals": prop}
        report.write_text(json.dumps(row, indent=1))
        rows.append(row)
    embedder.close()
    print(f"\nFew-label curve: new dishes {', '.join(NEW)}; held-out seeds of {test} "
          f"({rows[0]['n_images']} frames)")
    head = (f"{'K/class':>7} {'replay':>6} {'frames':>6} {'steps':>5} {'min':>5} {'new mAP50':>9} "
            + " ".join(f"{c[:9]:>9}" for c in NEW) + f" {'base dish':>9} {'prop top1':>9} "
            f"{'top3':>6}")
    print(head)
    for r in rows:
        p = r.get("proposals", {})
        print(f"{r['budget']:>7} {'yes' if r.get('replay') else 'no':>6} {r['frames']:>6} "
              f"{r.get('steps', 0):>5} "
              f"{r.get('train_min', 0):>5} {r['new_map50']:>9.3f} "
              + " ".join(f"{r['new_ap50'][c]:>9.3f}" for c in NEW)
              + f" {r['base_dishes_map50']:>9.3f} "
              + (f"{p['top1']:>9.3f} {p['top3']:>6.3f}" if p else f"{'-':>9} {'-':>6}"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
