"""Open-set check of a known-class bank: are a site's new dishes flagged, and its known ones not?

    python bench/openset.py [--model edge/models/dishnet.onnx] [--bank B.npz] \
        [--sequences 8] [--seconds 60] [--cache DIR] [--json OUT]

Renders ``site2`` scenes (the shipped classes plus five dishes the shipped
model never saw, ``edge.sim.menu.NEW_DISHES``) from the learning loop's
**tuning** seeds (``edge.seeds.LEARNING_TUNING``, 17000-17099; never a
held-out seed), runs the model on every ``--every``-th frame, matches its
detections to the ground truth the way ``dishtracker calibrate bank`` does,
and applies the bank's rule to every dish track: the track's query
(``KnownBank.query`` of its detections' embeddings) against the class the
detector named most often; flagged when ``KnownBank.known`` says no.

Prints, per new dish and for the known dishes together: tracks, the share
flagged, and what the detector named them. A track the detector named as a
tray or clutter (or saw in fewer than ``MIN_DETECTIONS`` frames above the
bank's score) is not a dish track: counted apart, as the tracker would never
bill it as a dish. This is the bank alone; the open-set decision adds the
site's examples and low-score objects on top.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from calibration.bank import MIN_DETECTIONS, collect, dish_classes, tracks_of  # noqa: E402
from edge.config import DEFAULT_MODEL  # noqa: E402
from edge.eval.sequences import file_sha256  # noqa: E402
from edge.learn.bank import KnownBank, find_bank  # noqa: E402
from edge.seeds import LEARNING_TUNING, refuse_held_out  # noqa: E402
from edge.sim.menu import ITEMS  # noqa: E402

TUNING = range(LEARNING_TUNING["standard"], LEARNING_TUNING["standard"] + 100)


def evaluate(bank: KnownBank, scenes: list[Any], min_score: float) -> dict[int, dict[str, Any]]:
    """Flag counts per ground-truth dish of the ``site2`` scenes."""
    names = list(bank.meta.get("class_names", []))
    dish = set(dish_classes(names))
    per: dict[int, dict[str, Any]] = {}
    scenes = [o.above(min_score) for o in scenes]
    for t in tracks_of(scenes, min_detections=MIN_DETECTIONS):
        if ITEMS[t.truth].kind.value != "dish":
            continue
        row = per.setdefault(t.truth, {"tracks": 0, "flagged": 0, "not_dish": 0,
                                       "named": Counter()})
        row["named"][names[t.named] if t.named < len(names) else str(t.named)] += 1
        if t.named not in dish:
            row["not_dish"] += 1
            continue
        sim = bank.similarity(bank.query(scenes[t.scene].embedding[t.rows]))
        row["tracks"] += 1
        row["flagged"] += not bank.known(t.named, float(sim[t.named]))
    return per


def summary(per: dict[int, dict[str, Any]], n_known: int) -> dict[str, Any]:
    """Totals of known (model) classes and new dishes."""
    out: dict[str, Any] = {}
    for group, ids in (("known", [c for c in per if c < n_known]),
                       ("new", [c for c in per if c >= n_known])):
        tracks = sum(per[c]["tracks"] for c in ids)
        flagged = sum(per[c]["flagged"] for c in ids)
        out[group] = {"tracks": tracks, "flagged": flagged,
                      "flag_rate": flagged / tracks if tracks else None,
                      "not_dish": sum(per[c]["not_dish"] for c in ids)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--bank", type=Path, default=None, help="default: beside the model")
    ap.add_argument("--sequences", type=int, default=8)
    ap.add_argument("--first-seed", type=int, default=TUNING.start)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    seeds = list(range(args.first_seed, args.first_seed + args.sequences))
    refuse_held_out(seeds, "the open-set bench")
    if not seeds or seeds[0] not in TUNING or seeds[-1] not in TUNING:
        ap.error(f"seeds must lie in the tuning range {TUNING.start}-{TUNING.stop - 1}")
    bank = KnownBank.load(args.bank or find_bank(args.model), file_sha256(args.model))
    min_score = float(bank.meta.get("min_score", 0.3))
    scenes = collect(args.model, seeds, seconds=args.seconds, every=args.every, menu="site2",
                     plan=[("standard", False)] * len(seeds), cache=args.cache,
                     threads=args.threads)
    per = evaluate(bank, scenes, min_score)
    n_known = bank.num_classes
    print(f"site2 seeds {seeds[0]}-{seeds[-1]} ({args.seconds:g} s, standard), model "
          f"{args.model.name}, bank dims {bank.dims[0]}:{bank.dims[1]}, score >= {min_score}")
    print(f"{'dish':<18} {'tracks':>6} {'flagged':>8} {'not dish':>8}  named as")
    for c in sorted(per, key=lambda c: (c < n_known, c)):
        if c < n_known:
            continue
        r = per[c]
        rate = f"{100 * r['flagged'] / r['tracks']:6.1f}%" if r["tracks"] else "      -"
        named = ", ".join(f"{k} {v}" for k, v in r["named"].most_common(3))
        print(f"{ITEMS[c].key:<18} {r['tracks']:>6} {rate:>8} {r['not_dish']:>8}  {named}")
    totals = summary(per, n_known)
    for group in ("new", "known"):
        t = totals[group]
        rate = "-" if t["flag_rate"] is None else f"{100 * t['flag_rate']:.1f}%"
        print(f"{group + ' dishes':<18} {t['tracks']:>6} {rate:>8} {t['not_dish']:>8}")
    if args.json:
        doc = {"seeds": seeds, "seconds": args.seconds, "every": args.every,
               "model": args.model.name, "bank_sha256": file_sha256(
                   args.bank or find_bank(args.model)), "totals": totals,
               "per_class": {ITEMS[c].key: {**r, "named": dict(r["named"])}
                             for c, r in sorted(per.items())}}
        args.json.write_text(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
