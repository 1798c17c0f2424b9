"""Transfer-learning table: ImageNet init vs from scratch, shallow vs deep, by label budget.

    python bench/transfer.py --data DATASET [--budgets 50,300,2000] [--steps 120] \
        [--out runs/transfer] [--json OUT]

Every run gets the same fixed training budget (``--steps`` optimizer steps of
batch 16, so the table reproduces on a 2-core CPU in well under an hour) and
is scored on the dataset's ``test`` split (held-out simulator seeds
90000-99999) with ``dishtracker eval detector``. Runs are resumable: a run
whose ``model.onnx`` and score exist is not repeated.

Configurations: init {imagenet, scratch} x fine-tuning {shallow: backbone
frozen, deep: everything trains} x label budget, plus the shipped model's
recipe (crop-level warm-up on the same labelled frames, then detection
training with the stem and first 3 blocks frozen and the factorized head).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = [
    ("imagenet", "deep", []),
    ("imagenet", "shallow", ["--freeze-backbone"]),
    ("scratch", "deep", ["--from-scratch"]),
    ("scratch", "shallow", ["--from-scratch", "--freeze-backbone"]),
    # the shipped model's recipe: crop warm-up on the same frames, then detection with the
    # stem and first 3 blocks frozen and the factorized head
    ("imagenet+warmup", "deep-3", ["--freeze-blocks", "3", "--head", "factorized"]),
]


def run(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--budgets", default="50,300,2000")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", type=Path, default=Path("runs/transfer"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--report-only", action="store_true",
                    help="print the table of the runs already finished; train nothing")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "edge.cli"]
    rows = []
    for budget in (int(b) for b in args.budgets.split(",")):
        epochs = max(1, math.ceil(args.steps * args.batch_size / budget))
        for init, mode, flags in CONFIGS:
            out = args.out / f"{init}-{mode}-{budget}"
            score = out / "eval.json"
            t0 = time.monotonic()
            if args.report_only and not score.exists():
                continue
            if not score.exists():
                if "warmup" in init:
                    warm = out / "warmup.ckpt"
                    out.mkdir(parents=True, exist_ok=True)
                    if not warm.exists():
                        run([*exe, "calibrate", "pretrain", "--data", str(args.data), "--out",
                             str(warm), "--max-images", str(budget), "--epochs",
                             str(max(2, min(20, 40000 // (budget * 5))))])
                    init_flags = [*flags, "--init", str(warm)]
                else:
                    init_flags = flags
                run([*exe, "calibrate", "train", "--data", str(args.data), "--out", str(out),
                     "--max-images", str(budget), "--epochs", str(epochs),
                     "--batch-size", str(args.batch_size), "--half-cycle-epochs",
                     f"{epochs / 2:g}", "--cycle-mode", "triangular", "--val-max-images", "10",
                     *init_flags])
                run([*exe, "eval", "detector", "--model", str(out / "model.onnx"),
                     "--data", str(args.data), "--split", "test", "--json", str(score)])
            result = json.loads(score.read_text())
            rows.append({
                "init": init, "mode": mode, "labelled_frames": budget, "epochs": epochs,
                "map50": result["map50"], "map50_dishes": result["map50_dishes"],
                "map50_95": result["map50_95"], "seconds": round(time.monotonic() - t0),
            })
    print(f"\nfixed budget: {args.steps} steps x batch {args.batch_size}; "
          "scored on the test split (held-out seeds)")
    print("| init | fine-tuning | labelled frames | mAP@0.5 (all) | mAP@0.5 (dishes) "
          "| mAP@0.5:0.95 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['init']} | {r['mode']} | {r['labelled_frames']} | {r['map50']:.3f} | "
              f"{r['map50_dishes']:.3f} | {r['map50_95']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
