"""Record motmetrics' and TrackEval's numbers on the TUD sequences, for the metric tests.

``tests/test_mot_metrics.py`` holds :mod:`edge.eval.mot_metrics` to these
numbers. Neither reference installs beside the project's stack (motmetrics
1.4 needs numpy 1, PyPI's ``trackeval`` numpy >= 2.3.2), so each runs in a
venv of its own and this script imports neither the project nor the other:

    python3 -m venv /tmp/mm && /tmp/mm/bin/pip install 'numpy<2' 'pandas<3' \\
        scipy motmetrics==1.4.0
    /tmp/mm/bin/python bench/mot_reference.py motmetrics
    python3 -m venv /tmp/te && /tmp/te/bin/pip install trackeval scipy
    /tmp/te/bin/python bench/mot_reference.py trackeval

Each run scores two tracker outputs per sequence against ``SEQ/gt/gt.txt``
at IoU 0.5 and updates its own section of ``tests/data/mot/reference.json``:
``SEQ/test.txt``, the example output that ships with motmetrics, and
``SEQ/noisy.txt``, the ground truth with boxes dropped and jittered, ids
switched and false positives added (written by ``python bench/mot_reference.py
noisy``, seed 5), which has more switches and fragments to tell metrics apart.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "mot"
SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")
TRACKS = ("test.txt", "noisy.txt")
NOISY_SEED = 5


def _motmetrics(seq: Path, tracks: str) -> dict[str, Any]:
    import motmetrics as mm  # noqa: PLC0415  # only in its own numpy-1 venv

    gt = mm.io.loadtxt(seq / "gt" / "gt.txt", fmt="mot15-2D")
    ts = mm.io.loadtxt(seq / tracks, fmt="mot15-2D")
    acc = mm.utils.compare_to_groundtruth(gt, ts, "iou", distth=0.5)
    names = ["num_objects", "num_misses", "num_false_positives", "num_switches", "idtp",
             "idfp", "idfn", "mota", "idf1"]
    m = mm.metrics.create().compute(acc, metrics=names, return_dataframe=False)
    return {"version": mm.__version__, **{k: float(m[k]) for k in names}}


def _frames(path: Path) -> dict[int, np.ndarray]:
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    return {int(f): rows[rows[:, 0] == f] for f in np.unique(rows[:, 0])}


def _trackeval(seq: Path, tracks: str) -> dict[str, Any]:
    import trackeval  # noqa: PLC0415  # only in its own numpy>=2.3.2 venv
    from trackeval.datasets._base_dataset import _BaseDataset  # noqa: PLC0415

    gt, tr = _frames(seq / "gt" / "gt.txt"), _frames(seq / tracks)
    n = int(max(*gt, *tr))
    gt_ids = {int(i): k for k, i in enumerate(np.unique(np.concatenate(
        [r[:, 1] for r in gt.values()])))}
    tr_ids = {int(i): k for k, i in enumerate(np.unique(np.concatenate(
        [r[:, 1] for r in tr.values()])))}
    empty = np.zeros((0, 10))
    data: dict[str, Any] = {"num_timesteps": n, "num_gt_ids": len(gt_ids),
                            "num_tracker_ids": len(tr_ids), "gt_ids": [], "tracker_ids": [],
                            "similarity_scores": [], "num_gt_dets": 0, "num_tracker_dets": 0}
    for f in range(1, n + 1):
        g, t = gt.get(f, empty), tr.get(f, empty)
        data["gt_ids"].append(np.array([gt_ids[int(i)] for i in g[:, 1]], int))
        data["tracker_ids"].append(np.array([tr_ids[int(i)] for i in t[:, 1]], int))
        data["similarity_scores"].append(
            _BaseDataset._calculate_box_ious(g[:, 2:6], t[:, 2:6], box_format="xywh"))
        data["num_gt_dets"] += len(g)
        data["num_tracker_dets"] += len(t)
    out: dict[str, Any] = {"version": getattr(trackeval, "__version__", "1.3.0")}
    quiet = {"PRINT_CONFIG": False}
    hota = trackeval.metrics.HOTA(quiet).eval_sequence(data)
    out.update({k.lower(): float(np.mean(hota[k])) for k in ("HOTA", "DetA", "AssA", "LocA")})
    out["hota_tp"] = [float(v) for v in hota["HOTA_TP"]]
    clear = trackeval.metrics.CLEAR(quiet).eval_sequence(data)
    out.update(mota=float(clear["MOTA"]), id_switches=int(clear["IDSW"]))
    ident = trackeval.metrics.Identity(quiet).eval_sequence(data)
    out.update(idf1=float(ident["IDF1"]), idtp=int(ident["IDTP"]))
    return out


def write_noisy(seq: Path, seed: int = NOISY_SEED) -> None:
    """Write ``seq/noisy.txt``: the ground truth as a poor tracker would output it."""
    rng = np.random.default_rng(seed)
    rows: dict[tuple[int, int], tuple[float, ...]] = {}
    renamed: dict[int, int] = {}
    for r in np.loadtxt(seq / "gt" / "gt.txt", delimiter=",", ndmin=2):
        if rng.random() < 0.15:
            continue
        frame, gid = int(r[0]), int(r[1])
        if rng.random() < 0.03:  # from here on the object carries another id
            renamed[gid] = int(rng.integers(1000, 1100))
        tid = renamed.get(gid, gid)
        x, y, w, h = r[2:6] + rng.normal(0, 0.12, 4) * np.r_[r[4], r[5], r[4], r[5]]
        rows[frame, tid] = (frame, tid, x, y, max(w, 5.0), max(h, 5.0))
        if rng.random() < 0.08:
            fp = int(rng.integers(2000, 2020))
            rows[frame, fp] = (frame, fp, *rng.uniform(0, 500, 2), 60.0, 150.0)
    text = "".join(f"{f},{i},{x:.1f},{y:.1f},{w:.1f},{h:.1f},1,-1,-1,-1\n"
                   for f, i, x, y, w, h in sorted(rows.values()))
    (seq / "noisy.txt").write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Update ``reference.json`` with the named reference's numbers (or write noisy.txt)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", choices=("motmetrics", "trackeval", "noisy"))
    parser.add_argument("--data", type=Path, default=DATA,
                        help="folder with SEQ/gt/gt.txt, SEQ/test.txt and reference.json")
    args = parser.parse_args(argv)
    if args.reference == "noisy":
        for name in SEQUENCES:
            write_noisy(args.data / name)
        return 0
    compute = _motmetrics if args.reference == "motmetrics" else _trackeval
    path = args.data / "reference.json"
    ref = json.loads(path.read_text()) if path.is_file() else {}
    for name in SEQUENCES:
        for tracks in TRACKS:
            got = compute(args.data / name, tracks)
            ref.setdefault(name, {}).setdefault(tracks, {})[args.reference] = got
            print(name, tracks, json.dumps(got))
    path.write_text(json.dumps(ref, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
