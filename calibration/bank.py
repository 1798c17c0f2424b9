"""``dishtracker calibrate bank``: a model's known-class bank, calibrated on known classes only.

The open-set decision (:mod:`edge.learn.bank`) asks of every dish track
whether its appearance is close enough to the class the detector named. This
tool answers *close enough* per model and per class, from base-menu scenes
(:data:`edge.seeds.LEARNING_BANK`) whose every dish the model was trained on:

1. Render scenes (standard, with easy and hard mixed in; most with every
   dish equally likely, some at sales frequencies), run the model on
   every ``--every``-th frame (ONNX Runtime), and match its detections to the
   ground truth (IoU >= 0.5, visibility >= 0.5, score >= ``--min-score``).
   A **track** is one ground-truth dish with at least
   :data:`MIN_DETECTIONS` matched detections; its query is the unit mean of
   their projected embeddings, the detector's name for it their majority class.
2. **Prototypes**: per dish class, farthest-point sampling of ``P`` projected
   detections of that class from every scene (spread over its views: mugs,
   lights, blur), starting from the one nearest the class mean.
3. **Thresholds**, leave one scene out: each track's similarity to its own
   class in a bank built without its scene. A class's threshold lets a
   share ``Q`` of its known tracks fall below it: its own spread (median
   distance) times a tail factor shared by all classes
   (:func:`class_thresholds`). A class with fewer than :data:`MIN_TRACKS`
   tracks takes the spread of all tracks (pooled).
4. **Report**: per class the tracks, threshold and the known tracks that
   would be flagged, and a **leave-class-out** estimate of how often a dish
   the model never saw is flagged: each class in turn is removed from the
   bank and its tracks stand in for a new dish. The detector would name such
   a dish as a look-alike; its stand-in name is the nearest remaining dish
   class (the detector's classifier reads the same class-branch feature).
   ``named``: flagged when below that class's threshold; ``any``: flagged
   only when no remaining class would accept it (the pessimistic bound).

The same figures for the neck half, the class-branch half and the whole
embedding let the report show which slice separates best.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from edge.catalogue import BY_KEY, Kind
from edge.config import DEFAULT_MODEL
from edge.detect import load_detector
from edge.errors import ConfigError, ModelError
from edge.eval.sequences import file_sha256, open_sequence, video_frames
from edge.geometry import box_iou
from edge.learn.bank import EPS, KnownBank, find_bank
from edge.seeds import LEARNING_BANK, refuse_held_out
from edge.sim.writer import write_sequence

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]

SCENE_CYCLE: tuple[tuple[str, bool], ...] = (
    ("standard", True), ("hard", True), ("standard", True), ("easy", True),
    ("standard", False), ("hard", False), ("standard", True), ("easy", True),
)
"""Difficulty and balanced dish draws of the i-th scene: half standard, a quarter each hard
and easy; three in four scenes draw every dish equally often (rare dishes get tracks too),
one in four at the sales frequencies (best sellers in all their variety: a coffee comes in
several mugs)."""
SLICES: dict[str, tuple[int, int]] = {"neck": (0, 64), "cls": (64, 128), "full": (0, 128)}
"""Slices of a DishNet embedding (``docs/FORMATS.md``): neck feature, class-branch feature."""
MIN_IOU = 0.5
MIN_VISIBILITY = 0.5
DETECT_SCORE = 0.05  # what is cached; --min-score filters above it
MIN_DETECTIONS = 5
MIN_TRACKS = 5
OBS_FORMAT = "dishtracker-bank-obs/1"


@dataclass(frozen=True, slots=True)
class Observations:
    """The model's detections on one scene that match a ground-truth object.

    Attributes
    ----------
    seed : int
        The scene.
    track, truth, named : np.ndarray
        ``(n,)`` int32: ground-truth track id and class, detector class.
    score : np.ndarray
        ``(n,)`` float32 detector score.
    embedding : np.ndarray
        ``(n, D)`` float32 model embeddings.
    """

    seed: int
    track: IntArray
    truth: IntArray
    named: IntArray
    score: FloatArray
    embedding: FloatArray

    def above(self, min_score: float) -> Observations:
        """Only the detections scoring at least ``min_score``."""
        keep = self.score >= min_score
        return Observations(self.seed, self.track[keep], self.truth[keep], self.named[keep],
                            self.score[keep], self.embedding[keep])


@dataclass(frozen=True, slots=True)
class Track:
    """One ground-truth object as the detector saw it on one scene."""

    scene: int  # index into the scenes
    truth: int
    named: int  # the detector's majority class
    rows: npt.NDArray[np.intp]  # into that scene's observations


def scene_plan(index: int) -> tuple[str, bool]:
    """Difficulty and balanced draws of the ``index``-th scene of a build (:data:`SCENE_CYCLE`)."""
    return SCENE_CYCLE[index % len(SCENE_CYCLE)]


def observe(seq_dir: Path, detector: Any, every: int, seed: int) -> Observations:
    """Run ``detector`` on every ``every``-th frame of a rendered scene; keep matched boxes."""
    seq = open_sequence(seq_dir)
    cols: list[list[Any]] = [[], [], [], [], []]
    for index, img in enumerate(video_frames(seq)):
        if index % every:
            continue
        det = detector.detect([img])[0]
        truth = [r for r in seq.gt.get(index + 1, [])
                 if r.conf > 0 and r.visibility >= MIN_VISIBILITY]
        if not truth or not len(det.scores) or det.embeddings is None:
            continue
        boxes = np.array([[r.x, r.y, r.x + r.w, r.y + r.h] for r in truth], np.float32)
        iou = box_iou(det.boxes, boxes)
        best = iou.argmax(axis=1)
        for i in np.flatnonzero(iou[np.arange(len(best)), best] >= MIN_IOU):
            g = truth[int(best[i])]
            for col, value in zip(cols, (g.track_id, g.class_id, det.classes[i],
                                         det.scores[i], det.embeddings[i]), strict=True):
                col.append(value)
    dim = detector.info.embedding_dim or 0
    return Observations(
        seed, np.array(cols[0], np.int32), np.array(cols[1], np.int32), np.array(cols[2], np.int32),
        np.array(cols[3], np.float32),
        np.array(cols[4], np.float32).reshape(-1, dim))


def collect(model: Path, seeds: Sequence[int], *, seconds: float, every: int, menu: str = "base",
            plan: Sequence[tuple[str, bool]] | None = None, cache: Path | None = None,
            threads: int = 2, progress: bool = True) -> list[Observations]:
    """Render each seed (or reuse ``cache``), run the model and match its detections.

    Parameters
    ----------
    plan : sequence of (str, bool), optional
        Difficulty and balanced draws per seed; default :func:`scene_plan` of
        its position.
    cache : Path, optional
        Keeps rendered scenes and the matched detections (per model SHA-256
        and ``every``), so a second run, or a second model, is fast.

    Raises
    ------
    HeldOutSeedError
        A seed is reserved for held-out evaluation.
    ModelError
        The model has no ``embeddings`` output.
    """
    refuse_held_out(seeds, "building or tuning a known-class bank")
    plan = list(plan) if plan is not None else [scene_plan(i) for i in range(len(seeds))]
    sha = file_sha256(model)
    detector = load_detector(model, "onnxruntime", threads=threads, score_threshold=DETECT_SCORE)
    if not detector.info.embedding_dim:
        detector.close()
        raise ModelError(f"{model}: the model has no 'embeddings' output; a known-class bank "
                         "needs one (docs/FORMATS.md)")
    out = []
    bar = tqdm(total=len(seeds), desc="bank scenes", unit="scene", disable=not progress)
    try:
        for seed, (level, balanced) in zip(seeds, plan, strict=True):
            bar.set_postfix(seed=seed, level=level)
            out.append(_collect_one(detector, sha, seed, level, seconds=seconds, every=every,
                                    menu=menu, balanced=balanced, cache=cache))
            bar.update()
    finally:
        bar.close()
        detector.close()
    return out


def _collect_one(detector: Any, sha: str, seed: int, level: str, *, seconds: float, every: int,
                 menu: str, balanced: bool, cache: Path | None) -> Observations:
    name = f"{menu}-{seed}-{level}-{seconds:g}s{'-bal' if balanced else ''}"
    with contextlib.ExitStack() as stack:
        root = cache if cache is not None else Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="bank-")))
        seq_dir = root / name
        obs_file = seq_dir / f"obs-{sha[:16]}-every{every}.npz"
        if obs_file.is_file():
            with np.load(obs_file) as z:
                if str(z["format"]) == OBS_FORMAT:
                    return Observations(seed, z["track"], z["truth"], z["named"], z["score"],
                                        z["embedding"])
        if not (seq_dir / "seqinfo.ini").is_file():
            write_sequence(seq_dir, seed=seed, seconds=seconds, difficulty=level,
                           balanced=balanced, menu=menu)
        obs = observe(seq_dir, detector, every, seed)
        if cache is not None:
            tmp = obs_file.with_suffix(".tmp.npz")
            np.savez(tmp, format=np.array(OBS_FORMAT), track=obs.track, truth=obs.truth,
                     named=obs.named, score=obs.score, embedding=obs.embedding)
            tmp.replace(obs_file)
        return obs


def tracks_of(scenes: Sequence[Observations], *, min_detections: int = MIN_DETECTIONS
              ) -> list[Track]:
    """Every ground-truth object with at least ``min_detections`` matched detections."""
    out = []
    for s, obs in enumerate(scenes):
        for tid in np.unique(obs.track):
            rows = np.flatnonzero(obs.track == tid)
            if len(rows) < min_detections:
                continue
            named = np.bincount(obs.named[rows]).argmax()
            truth = np.bincount(obs.truth[rows]).argmax()
            out.append(Track(s, int(truth), int(named), rows))
    return out


def dish_classes(class_names: Sequence[str]) -> list[int]:
    """The model's class ids that are catalogue dishes (only dishes get prototypes)."""
    return [i for i, n in enumerate(class_names)
            if n in BY_KEY and BY_KEY[n].kind is Kind.DISH]


def _unit(x: FloatArray) -> FloatArray:
    out: FloatArray = (x / np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + EPS)).astype(np.float32)
    return out


def farthest_points(rows: FloatArray, count: int) -> npt.NDArray[np.intp]:
    """Indices of ``count`` unit rows spread over ``rows`` (greedy farthest-point sampling).

    Starts from the row nearest the rows' mean, then adds the row farthest (in
    cosine distance) from every row picked so far. Deterministic.
    """
    if len(rows) <= count:
        return np.arange(len(rows))
    picked = [int(np.argmax(rows @ _unit(rows.mean(axis=0))))]
    distance = 1.0 - rows @ rows[picked[0]]
    for _ in range(count - 1):
        nxt = int(np.argmax(distance))
        picked.append(nxt)
        distance = np.minimum(distance, 1.0 - rows @ rows[nxt])
    return np.array(picked)


def prototypes(projected: Sequence[FloatArray], scenes: Sequence[Observations],
               classes: Sequence[int], count: int, *, skip_scene: int | None = None
               ) -> tuple[FloatArray, IntArray]:
    """``count`` prototypes per class from every scene (but ``skip_scene``) and their labels."""
    use = [i for i in range(len(scenes)) if i != skip_scene]
    rows = np.concatenate([projected[i] for i in use])
    truth = np.concatenate([scenes[i].truth for i in use])
    protos, labels = [], []
    for c in classes:
        mine = rows[truth == c]
        pick = farthest_points(mine, count)
        protos.append(mine[pick])
        labels += [c] * len(pick)
    dim = rows.shape[1]
    return (np.concatenate(protos) if protos else np.zeros((0, dim), np.float32),
            np.array(labels, np.int32))


@dataclass(frozen=True, slots=True)
class Calibration:
    """Leave-one-scene-out similarities of every track, and the thresholds they give."""

    tracks: list[Track]
    similarity: FloatArray  # (T, C): each track against the bank without its scene
    thresholds: FloatArray  # (C,), NaN where a class has no prototypes
    pooled: list[int]  # classes that got the pooled threshold
    held_out: FloatArray  # (scenes, C): the thresholds without each scene's tracks


def calibrate(scenes: Sequence[Observations], classes: Sequence[int], n_classes: int, *,
              dims: tuple[int, int], count: int, k: int, quantile: float,
              min_detections: int = MIN_DETECTIONS, min_tracks: int = MIN_TRACKS
              ) -> Calibration:
    """Leave-one-scene-out similarities and per-class thresholds (see the module docstring)."""
    probe = KnownBank(np.zeros((0, dims[1] - dims[0])), np.zeros(0, np.int32),
                      np.full(n_classes, np.nan), model_sha256="", dims=dims, k=k)
    projected = [probe.project(o.embedding) for o in scenes]
    tracks = [t for t in tracks_of(scenes, min_detections=min_detections) if t.truth in classes]
    sims = np.full((len(tracks), n_classes), np.nan, np.float32)
    for s in range(len(scenes)):
        mine = [i for i, t in enumerate(tracks) if t.scene == s]
        if not mine:
            continue
        protos, labels = prototypes(projected, scenes, classes, count, skip_scene=s)
        bank = KnownBank(protos, labels, np.full(n_classes, np.nan), model_sha256="",
                         dims=dims, k=k)
        queries = np.stack([_unit(projected[s][tracks[i].rows].mean(axis=0)) for i in mine])
        sims[mine] = bank.similarity(queries)
    own = np.array([sims[i, t.truth] for i, t in enumerate(tracks)], np.float32)
    truth = np.array([t.truth for t in tracks], np.int32)
    scene = np.array([t.scene for t in tracks], np.int32)
    thresholds, pooled = class_thresholds(own, truth, classes, n_classes, quantile=quantile,
                                          min_tracks=min_tracks)
    held_out = np.stack([class_thresholds(own[scene != s], truth[scene != s], classes,
                                          n_classes, quantile=quantile,
                                          min_tracks=min_tracks)[0]
                         for s in range(len(scenes))])
    return Calibration(tracks, sims, thresholds, pooled, held_out)


def class_thresholds(own: FloatArray, truth: IntArray, classes: Sequence[int], n_classes: int, *,
                     quantile: float, min_tracks: int) -> tuple[FloatArray, list[int]]:
    """Per-class thresholds from tracks' own-class similarities, and the pooled classes.

    A class's *spread* is the median distance ``1 - similarity`` of its
    tracks; the *tail* is shared: ``R``, the ``1 - quantile`` quantile of every
    track's distance over its class's spread. A class's threshold is
    ``1 - R * spread``. A dozen tracks pin a median down but not a 2 % tail,
    and classes differ in spread far more than in the shape of their tail
    (docs/LEARNING.md). A class with fewer than ``min_tracks`` tracks takes
    the median distance of every track as its spread (pooled).
    """
    thresholds = np.full(n_classes, np.nan, np.float32)
    distance = 1.0 - own.astype(np.float64)
    if not len(distance):
        return thresholds, list(classes)
    pooled_spread = float(np.median(distance))
    spread = np.full(n_classes, pooled_spread)
    pooled = []
    for c in classes:
        mine = distance[truth == c]
        if len(mine) >= min_tracks:
            spread[c] = max(float(np.median(mine)), 1e-6)
        else:
            pooled.append(c)
    tail = float(np.quantile(distance / spread[truth], 1.0 - quantile))
    thresholds[list(classes)] = 1.0 - tail * spread[list(classes)]
    return thresholds, pooled


def flag_rates(cal: Calibration, classes: Sequence[int]) -> dict[str, Any]:
    """Known tracks flagged, and the leave-class-out estimate for unseen dishes, per class.

    Every track is judged with the thresholds calibrated without its scene
    (:attr:`Calibration.held_out`), so a track never sets its own bar.
    """
    dish = np.zeros(cal.thresholds.shape[0], bool)
    dish[list(classes)] = True
    per: dict[int, dict[str, int]] = {c: {"tracks": 0, "flag_own": 0, "flag_named": 0,
                                          "named_dish": 0, "lco_named": 0, "lco_any": 0}
                                      for c in classes}
    for sim, t in zip(cal.similarity, cal.tracks, strict=True):
        thr = cal.held_out[t.scene]
        row = per[t.truth]
        row["tracks"] += 1
        row["flag_own"] += bool(sim[t.truth] < thr[t.truth])
        if dish[t.named]:
            row["named_dish"] += 1
            row["flag_named"] += bool(not sim[t.named] >= thr[t.named])
        others = np.where(dish, sim, -np.inf)
        others[t.truth] = -np.inf
        nearest = int(np.argmax(others))
        row["lco_named"] += bool(sim[nearest] < thr[nearest])
        accept = dish & (sim >= thr)
        accept[t.truth] = False
        row["lco_any"] += bool(not accept.any())
    total = {key: sum(r[key] for r in per.values()) for key in next(iter(per.values()))}

    def rates(r: dict[str, int]) -> dict[str, float | None]:
        n, named = r["tracks"], r["named_dish"]
        return {"known_flagged_own": r["flag_own"] / n if n else None,
                "known_flagged": r["flag_named"] / named if named else None,
                "unseen_flagged_named": r["lco_named"] / n if n else None,
                "unseen_flagged_any": r["lco_any"] / n if n else None}

    return {"per_class": {c: {**r, **rates(r)} for c, r in per.items()},
            "total": {**total, **rates(total)}}


def build(scenes: Sequence[Observations], class_names: Sequence[str], *, model_sha256: str,
          dims: tuple[int, int], count: int, k: int, quantile: float,
          min_score: float, meta: dict[str, Any]) -> tuple[KnownBank, Calibration]:
    """The bank from every scene, with its leave-one-scene-out calibration."""
    scenes = [o.above(min_score) for o in scenes]
    classes = [c for c in dish_classes(class_names) if any((o.truth == c).any() for o in scenes)]
    cal = calibrate(scenes, classes, len(class_names), dims=dims, count=count, k=k,
                    quantile=quantile)
    probe = KnownBank(np.zeros((0, dims[1] - dims[0])), np.zeros(0, np.int32),
                      cal.thresholds, model_sha256=model_sha256, dims=dims, k=k)
    protos, labels = prototypes([probe.project(o.embedding) for o in scenes], scenes, classes,
                                count)
    meta = {**meta, "quantile": quantile, "prototypes_per_class": count,
            "min_score": min_score, "min_detections": MIN_DETECTIONS,
            "pooled_classes": cal.pooled, "class_names": list(class_names),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    return KnownBank(protos, labels, cal.thresholds, model_sha256=model_sha256, dims=dims,
                     k=k, meta=meta), cal


def report(bank: KnownBank, cal: Calibration, class_names: Sequence[str],
           slices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The JSON report: per class and in total, plus the totals of every slice compared."""
    rates = flag_rates(cal, bank.classes)
    counts = np.bincount(bank.labels, minlength=bank.num_classes)
    rows = [{"id": c, "name": class_names[c], "prototypes": int(counts[c]),
             "threshold": bank.threshold(c), "pooled": c in cal.pooled, **rates["per_class"][c]}
            for c in bank.classes]
    return {"format": "dishtracker-bank-report/1", "model_sha256": bank.model_sha256,
            "dims": list(bank.dims), "k": bank.k, **{key: bank.meta.get(key) for key in (
                "model", "quantile", "prototypes_per_class", "min_score", "seeds", "levels",
                "balanced", "seconds", "every", "created")},
        "classes": rows, "total": rates["total"], "slices": slices}


def _pct(v: float | None) -> str:
    return "   -" if v is None else f"{100 * v:5.1f}"


def print_report(doc: dict[str, Any]) -> Iterator[str]:
    """The report as text lines."""
    yield (f"{'class':<18} {'protos':>6} {'tracks':>6} {'thresh':>7} {'known%':>7} "
           f"{'unseen%':>8} {'unseen-any%':>11}")
    for r in doc["classes"]:
        thr = "   -" if r["threshold"] is None else f"{r['threshold']:.3f}"
        yield (f"{r['name']:<18} {r['prototypes']:>6} {r['tracks']:>6} {thr:>6}"
               f"{'*' if r['pooled'] else ' '} {_pct(r['known_flagged']):>7} "
               f"{_pct(r['unseen_flagged_named']):>8} {_pct(r['unseen_flagged_any']):>11}")
    t = doc["total"]
    yield (f"{'all':<18} {'':>6} {t['tracks']:>6} {'':>7} {_pct(t['known_flagged']):>7} "
           f"{_pct(t['unseen_flagged_named']):>8} {_pct(t['unseen_flagged_any']):>11}")
    yield ("* pooled threshold (fewer than "
           f"{MIN_TRACKS} tracks). known%: known tracks flagged (as the detector named them, "
           "leave one scene out); unseen%: leave-class-out flagged, named as the nearest class; "
           "unseen-any%: flagged by every remaining class")
    yield "slice        known%  unseen%  unseen-any%"
    for name, s in doc["slices"].items():
        yield (f"{name:<10} {_pct(s['known_flagged']):>8} {_pct(s['unseen_flagged_named']):>8} "
               f"{_pct(s['unseen_flagged_any']):>12}")


def add_bank_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``dishtracker calibrate bank``."""
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                   help="detector (ONNX) with an embeddings output")
    p.add_argument("--out", type=Path, default=None,
                   help="bank file (default: <model stem>.bank.npz beside the model)")
    p.add_argument("--sequences", type=int, default=32,
                   help=f"scenes, from seed --first-seed (within {LEARNING_BANK.start}-"
                        f"{LEARNING_BANK.stop - 1})")
    p.add_argument("--first-seed", type=int, default=LEARNING_BANK.start)
    p.add_argument("--seconds", type=float, default=60.0, help="length of each scene")
    p.add_argument("--every", type=int, default=2, help="run the model on every N-th frame")
    p.add_argument("--prototypes", type=int, default=64, metavar="P", help="per class")
    p.add_argument("--k", type=int, default=5, help="similarity = mean of the k best cosines")
    p.add_argument("--quantile", type=float, default=0.02, metavar="Q",
                   help="share of a known class's calibration tracks below its threshold")
    p.add_argument("--min-score", type=float, default=0.3,
                   help="detections below are not used (the daemon's detector threshold)")
    p.add_argument("--dims", choices=sorted(SLICES), default="cls",
                   help="embedding slice: neck (0:64), cls (64:128, class branch) or full")
    p.add_argument("--cache", type=Path, default=None,
                   help="keep rendered scenes and detections here (reruns are fast)")
    p.add_argument("--json", type=Path, default=None, metavar="REPORT", help="write the report")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_bank(args: argparse.Namespace) -> int:
    """Entry of ``dishtracker calibrate bank``."""
    seeds = list(range(args.first_seed, args.first_seed + args.sequences))
    refuse_held_out(seeds, "building a known-class bank")
    if args.sequences < 2 or seeds[0] not in LEARNING_BANK or seeds[-1] not in LEARNING_BANK:
        raise ConfigError(f"--first-seed/--sequences: need at least 2 scenes within "
                          f"{LEARNING_BANK.start}-{LEARNING_BANK.stop - 1}, got "
                          f"{seeds[0] if seeds else args.first_seed}+{args.sequences}")
    checks = [(args.every >= 1, "--every must be >= 1"), (args.k >= 1, "--k must be >= 1"),
              (args.prototypes >= 1, "--prototypes must be >= 1"),
              (0.0 <= args.quantile < 0.5, "--quantile must be in [0, 0.5)"),
              (DETECT_SCORE <= args.min_score < 1.0, f"--min-score must be in [{DETECT_SCORE}, 1)"),
              (args.seconds > 0, "--seconds must be > 0")]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    scenes = collect(args.model, seeds, seconds=args.seconds, every=args.every,
                     cache=args.cache, threads=args.threads, progress=not args.quiet)
    detector = load_detector(args.model, "onnxruntime", threads=1)
    class_names = detector.info.class_names
    detector.close()
    sha = file_sha256(args.model)
    plan = [scene_plan(i) for i in range(len(seeds))]
    levels = [lv for lv, _ in plan]
    meta = {"model": args.model.name, "seeds": seeds,
            "levels": {lv: levels.count(lv) for lv in sorted(set(levels))},
            "balanced": [b for _, b in plan],
            "seconds": args.seconds, "every": args.every}
    kw = {"model_sha256": sha, "count": args.prototypes, "k": args.k,
          "quantile": args.quantile, "min_score": args.min_score, "meta": meta}
    slices = {}
    chosen: tuple[KnownBank, Calibration] | None = None
    for name, dims in SLICES.items():
        bank, cal = build(scenes, class_names, dims=dims, **kw)
        slices[name] = flag_rates(cal, bank.classes)["total"]
        if name == args.dims:
            chosen = bank, cal
    assert chosen is not None
    bank, cal = chosen
    doc = report(bank, cal, class_names, slices)
    for line in print_report(doc):
        print(line)
    out = args.out or find_bank(args.model)
    bank.save(out)
    doc["bank"] = {"path": str(out), "bytes": out.stat().st_size, "sha256": file_sha256(out)}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1))
    print(f"wrote {out} ({doc['bank']['bytes']} bytes, {len(bank.labels)} prototypes, "
          f"{len(bank.classes)} classes, dims {bank.dims[0]}:{bank.dims[1]})")
    return 0
