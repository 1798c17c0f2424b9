"""Benchmark: the project's generic tracker against tuned Norfair and ByteTrack on public MOT data.

    python bench/mot.py [--seed 2] [--tune-seed 1] [--json OUT] [--quiet]

Ground truth: the MOTChallenge TUD-Campus (71 frames) and TUD-Stadtmitte
(179 frames) pedestrian sequences that ship inside the motmetrics wheel,
copied with their licence note to ``tests/data/mot``. Detections are made
from the ground truth with a fixed seed, the same for every tracker: each
box dropped with probability 20 %; each kept box's x, y, w and h moved by
Gaussian noise of 5 % of its width or height; 5 % false positives (per
frame, Poisson with mean 5 % of its boxes) of a ground-truth size at a
uniform place. Scores: a true box U(0.4, 1), a false positive U(0.1, 0.7),
so a score tells something, as a detector's does.

The trackers, scored by :mod:`edge.eval.mot_metrics` (IoU 0.5; HOTA over
0.05-0.95) through ``dishtracker eval tracking``'s generic mode
(:mod:`edge.eval.generic`), all on detections from the site's default score
threshold (0.3) up, ByteTrack from 0.1:

* ``tracker`` -- the project's generic tracker
  (:class:`edge.track.norfair_tracker.NorfairTracker`);
* ``norfair`` -- plain Norfair (IoU distance, its own output);
* ``bytetrack`` -- :class:`edge.eval.bytetrack.ByteTracker` with ByteTrack's
  published defaults (not tuned here).

``tracker`` and ``norfair`` each get the best of the same small grid of
their three settings (IoU threshold, hit counter, initialisation delay;
:data:`GRID`), chosen by pooled IDF1 over both sequences on detections of
``--tune-seed`` (default 1). The table reports ``--seed`` (default 2), a
noise draw that informed no choice: not the grid's pick, nor any change to
the tracker (the only one made while this bench was written: a box whose
predicted corners cross is reported as their span, seen on seed 1).

On one object class the project's tracker associates exactly as Norfair
does (it is Norfair plus lifetime class votes), so with the same settings
the two tie; ByteTrack reports only the tracks matched in a frame, so each
dropped detection is a miss for it.

The acceptance (PASS/FAIL per sequence): the project's tracker's IDF1 is at
least tuned Norfair's and ByteTrack's, both measured in this run.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import logging
import platform
import shlex
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.config import SiteConfig, TrackerConfig
from edge.eval.generic import (
    CLASS_NAMES,
    LEGEND,
    GenericByteTrack,
    PlainNorfair,
    biller_factory,
    format_mot_table,
)
from edge.eval.sequences import SequenceData, open_sequence
from edge.eval.tracking import SystemResult, SystemSpec, evaluate_sequence
from edge.frames import Detections
from edge.track.norfair_tracker import NorfairTracker

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "mot"
SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")
DROP, JITTER, FALSE_POSITIVES = 0.20, 0.05, 0.05
GRID = {
    "iou_threshold": (0.2, 0.3, 0.4, 0.5),
    "hit_counter_max": (3, 5, 10, 20),
    "initialization_delay": (0, 1, 2, 3),
}
"""The settings tuned for ``tracker`` and ``norfair`` (every combination)."""


def noisy_detections(seq: SequenceData, seed: int) -> dict[int, Detections]:
    """The ground truth as a detector with misses, jitter and false positives sees it.

    Returns
    -------
    dict
        ``{frame (1-based): Detections}``, boxes ``x1 y1 x2 y2`` in pixels, class 0.
    """
    rng = np.random.default_rng(seed)
    sizes = np.array([(r.w, r.h) for rows in seq.gt.values() for r in rows])
    out = {}
    for frame in range(1, seq.n_frames + 1):
        rows = seq.gt.get(frame, [])
        xywh = np.array([(r.x, r.y, r.w, r.h) for r in rows], np.float64).reshape(-1, 4)
        xywh = xywh[rng.random(len(xywh)) >= DROP]
        scale = np.stack([xywh[:, 2], xywh[:, 3], xywh[:, 2], xywh[:, 3]], axis=1)
        xywh = xywh + rng.normal(0.0, JITTER, xywh.shape) * scale
        scores = rng.uniform(0.4, 1.0, len(xywh))
        n_fp = rng.poisson(FALSE_POSITIVES * len(rows))
        wh = sizes[rng.integers(0, len(sizes), n_fp)]
        xy = rng.uniform(0, 1, (n_fp, 2)) * (np.array([seq.width, seq.height]) - wh)
        xywh = np.concatenate([xywh, np.concatenate([xy, wh], axis=1)])
        scores = np.concatenate([scores, rng.uniform(0.1, 0.7, n_fp)])
        xywh[:, 2:] = np.maximum(xywh[:, 2:], 2.0)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, seq.width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, seq.height)
        out[frame] = Detections(np.ascontiguousarray(boxes, np.float32),
                                scores.astype(np.float32), np.zeros(len(boxes), np.int32))
    return out


Maker = Callable[[SiteConfig], Any]


def _spec(name: str, make: Maker, min_score: float) -> SystemSpec:
    return SystemSpec(name, biller_factory(make), min_score)


def run(seqs: Sequence[SequenceData], dets: Sequence[Mapping[int, Detections]],
        specs: Sequence[SystemSpec], *, progress: bool = False) -> list[dict[str, SystemResult]]:
    """Every system on every sequence (generic mode), one result dict per sequence."""
    return [evaluate_sequence(seq, specs, SiteConfig(), CLASS_NAMES, detections=d, decode=False,
                              progress=progress, generic=True)[0]
            for seq, d in zip(seqs, dets, strict=True)]


def _pooled_idf1(results: Sequence[Mapping[str, SystemResult]], name: str) -> float:
    total = SystemResult()
    for r in results:
        total.merge(r[name])
    idf1 = total.summary()["idf1"]
    return float(idf1) if idf1 is not None else 0.0


def _ignore_site(build: Callable[[TrackerConfig], Any], config: TrackerConfig,
                 site: SiteConfig) -> Any:
    return build(config)


def tune(seqs: Sequence[SequenceData], dets: Sequence[Mapping[int, Detections]],
         build: Callable[[TrackerConfig], Any], *, quiet: bool) -> tuple[TrackerConfig, float]:
    """The :data:`GRID` point with the best pooled IDF1 on ``dets``, and that IDF1."""
    best: tuple[float, TrackerConfig] | None = None
    points = list(itertools.product(*GRID.values()))
    specs = []
    for values in points:
        config = TrackerConfig(**dict(zip(GRID, values, strict=True)))
        specs.append(_spec(f"{values}", functools.partial(_ignore_site, build, config), 0.3))
    results = run(seqs, dets, specs, progress=not quiet)
    for values, spec in zip(points, specs, strict=True):
        idf1 = _pooled_idf1(results, spec.name)
        if best is None or idf1 > best[0]:
            best = (idf1, TrackerConfig(**dict(zip(GRID, values, strict=True))))
    assert best is not None
    return best[1], best[0]


def _cpu() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    return next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")),
                platform.machine())


def main(argv: list[str] | None = None) -> int:
    """Tune on ``--tune-seed``, report on ``--seed``; exit 0 on PASS, 1 on FAIL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=2, help="noise seed of the reported run")
    parser.add_argument("--tune-seed", type=int, default=1, help="noise seed of the tuning")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    # plain Norfair's predicted corners cross when a box shrinks at the picture's edge, and
    # its IoU says so once per pair and frame: the count shows in the scores, not the log
    logging.getLogger("norfair").setLevel(logging.ERROR)
    if args.seed == args.tune_seed:
        parser.error("--seed must differ from --tune-seed (the report must not be tuned on)")
    seqs = [open_sequence(DATA / name) for name in SEQUENCES]
    tune_dets = [noisy_detections(s, args.tune_seed) for s in seqs]
    tuned = {}
    for name, build in (("tracker", lambda c: NorfairTracker(CLASS_NAMES, c)),
                        ("norfair", PlainNorfair)):
        config, idf1 = tune(seqs, tune_dets, build, quiet=args.quiet)
        tuned[name] = config
        print(f"{name}: tuned on seed {args.tune_seed} (pooled IDF1 {idf1:.3f}): "
              f"{config.model_dump(include=set(GRID))}", file=sys.stderr)
    site = SiteConfig()
    specs = [
        _spec("tracker", lambda s: NorfairTracker(CLASS_NAMES, tuned["tracker"]),
              site.detector.score_threshold),
        _spec("norfair", lambda s: PlainNorfair(tuned["norfair"]), site.detector.score_threshold),
        _spec("bytetrack", lambda s: GenericByteTrack(s.detector.score_threshold),
              GenericByteTrack.min_score),
    ]
    dets = [noisy_detections(s, args.seed) for s in seqs]
    results = run(seqs, dets, specs, progress=not args.quiet)
    print(f"# bench/mot.py {shlex.join(sys.argv[1:])}: noise seed {args.seed}, settings tuned "
          f"on seed {args.tune_seed}; {_cpu()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}")
    report: dict[str, Any] = {"seed": args.seed, "tune_seed": args.tune_seed,
                              "tuned": {k: v.model_dump(include=set(GRID))
                                        for k, v in tuned.items()},
                              "sequences": {}}
    verdicts = []
    for seq, res in zip(seqs, results, strict=True):
        rows = {name: r.summary(details=False) for name, r in res.items()}
        mine = rows["tracker"]["idf1"]
        ok = all(mine >= rows[o]["idf1"] for o in ("norfair", "bytetrack"))
        verdicts.append(ok)
        print(f"\n## {seq.name} ({seq.n_frames} frames)")
        print(format_mot_table(rows, legend=False))
        print(f"{'PASS' if ok else 'FAIL'}: tracker IDF1 {mine:.3f} >= norfair "
              f"{rows['norfair']['idf1']:.3f} and bytetrack {rows['bytetrack']['idf1']:.3f}")
        report["sequences"][seq.name] = {
            name: {k: r[k] for k in ("idf1", "mota", "hota", "deta", "assa", "id_switches")}
            for name, r in rows.items()}
        report["sequences"][seq.name]["pass"] = ok
    print("\n" + "\n".join(LEGEND))
    print(f"\n{'PASS' if all(verdicts) else 'FAIL'}: the project's tracker is not behind on "
          f"{sum(verdicts)} of {len(verdicts)} sequences")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
