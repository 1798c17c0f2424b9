"""Transfer-learning table at the crop stage: ImageNet vs scratch, shallow vs deep, by labels.

    python bench/transfer_crops.py --data DATASET [--budgets 50,300,2000] [--steps 150] \
        [--out runs/transfer_crops] [--json OUT]

The shipped detector learns its dishes in the crop warm-up
(``dishtracker calibrate pretrain``) before detection training; this table
measures that stage under a fixed budget per run (``--steps`` steps of 128
crops) on the first N labelled training frames, scored as crop accuracy on
2 000 validation objects (seeds 2000-2004). Shallow = backbone frozen
(linear probe on pooled stride-8/16 features); deep = stem and first 3 blocks
frozen, the rest trains (the shipped recipe). Resumable: finished runs are
read back from their JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CONFIGS = [
    ("imagenet", "deep", ["--freeze-blocks", "3"]),
    ("imagenet", "shallow", ["--freeze-blocks", "8"]),
    ("scratch", "deep", ["--freeze-blocks", "3", "--from-scratch"]),
    ("scratch", "shallow", ["--freeze-blocks", "8", "--from-scratch"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--budgets", default="50,300,2000")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--out", type=Path, default=Path("runs/transfer_crops"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    for budget in (int(b) for b in args.budgets.split(",")):
        for init, mode, flags in CONFIGS:
            out = args.out / f"{init}-{mode}-{budget}"
            out.mkdir(parents=True, exist_ok=True)
            result = out / "result.json"
            if not result.exists():
                cmd = [sys.executable, "-m", "edge.cli", "calibrate", "pretrain", "--data",
                       str(args.data), "--out", str(out / "warm.ckpt"), "--max-images",
                       str(budget), "--epochs", "100000", "--max-steps", str(args.steps),
                       "--json", str(result), *flags]
                print("+", " ".join(cmd), flush=True)
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            r = json.loads(result.read_text())
            rows.append({"init": init, "mode": mode, "labelled_frames": budget,
                         "crops": r["crops"], "steps": r["steps"],
                         "val_accuracy": r["val_accuracy"], "seconds": round(r["seconds"])})
            print(rows[-1], flush=True)
    print(f"\nfixed budget: {args.steps} steps x 128 crops; val crop accuracy on 2 000 objects")
    print("| init | fine-tuning | labelled frames | crops | val accuracy | seconds |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['init']} | {r['mode']} | {r['labelled_frames']} | {r['crops']} | "
              f"{r['val_accuracy']:.3f} | {r['seconds']} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
