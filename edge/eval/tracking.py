"""Tracking and billing evaluation of any :class:`~edge.billing.model.Biller`.

Sits beside the pipeline, after ``track`` and ``bill``: frames 1..N of a
sequence (:mod:`edge.eval.sequences`) go through every system under test in
lockstep -- the full system (``edge.billing.biller.make_biller``, when present)
and the baselines (:mod:`edge.eval.baselines`) -- with the same detections.
Each system's tracks are scored per frame (:mod:`edge.eval.mot_metrics`) and
its bills are matched to ``gt/trays.json`` (:mod:`edge.eval.bills`).

Tracking metrics (CLEAR MOT, identity and HOTA, :mod:`edge.eval.mot_metrics`)
are computed for two categories: **dishes** (ground truth of a billable dish
class against tracks whose *voted* class, in that frame, is a dish class) and
**trays**. A track and a ground-truth box may pair at IoU >= 0.5 (HOTA sweeps
its own thresholds, 0.05 to 0.95). Ground truth less than half visible (``visibility < 0.5``, or
``conf`` 0) is ignored the MOTChallenge way (its devkit's preprocessing of
distractors): in each frame the tracks of the category are first matched to
*all* its ground truth, ignored included (Hungarian on IoU >= 0.5); tracks
that land on ignored ground truth are removed from that frame, then the
ignored ground truth is removed and the rest is scored, by every metric
HOTA included. So a tracker that keeps a dish under a hand is not penalised,
nor is one that loses it.

Counts are pooled over sequences (sums of misses, false positives, switches,
IDTP/IDFP/IDFN, HOTA's per-threshold counts and bill counts), never averaged
rates.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from tqdm import tqdm

from edge.billing.model import Bill, Biller
from edge.catalogue import CATALOGUE as MENU
from edge.catalogue import Kind
from edge.config import SiteConfig, StreamConfig
from edge.errors import InputFormatError
from edge.eval.baselines import BASELINES
from edge.eval.bills import BillCounts, score_bills
from edge.eval.mot_metrics import MATCH_IOU, MotAccumulator, MotCounts
from edge.eval.sequences import CACHE_SCORE_THRESHOLD, SequenceData, video_frames
from edge.frames import Detections, Frame, Track
from edge.geometry import box_iou
from edge.groundtruth import BoxRecord

MOT_IOU = MATCH_IOU
MIN_VISIBILITY = 0.5
TRAY_KEYS = frozenset(m.key for m in MENU if m.kind is Kind.TRAY)
DISH_KEYS = frozenset(m.key for m in MENU if m.kind is Kind.DISH)

BillerFactory = Callable[..., Biller]
"""``(stream, site, class_names, width, height, *, run_id) -> Biller``."""


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """One system under test.

    Attributes
    ----------
    name : str
        ``"system"`` or a baseline's name.
    factory : callable
        Builds a fresh biller per sequence (signature of :data:`BillerFactory`).
    min_score : float
        Detections scoring below are withheld from this system.
    identities : bool
        False for systems whose tracks carry no identity (no MOT metrics).
    """

    name: str
    factory: BillerFactory
    min_score: float
    identities: bool = True


def full_system() -> tuple[BillerFactory | None, str]:
    """The full system's factory, or None and why not (the module is not there yet)."""
    try:
        module = importlib.import_module("edge.billing.biller")
    except ModuleNotFoundError as err:
        if err.name not in ("edge.billing.biller",):
            raise
        return None, "edge.billing.biller is not available: baselines only"
    factory = getattr(module, "make_biller", None)
    if factory is None:
        return None, "edge.billing.biller has no make_biller: baselines only"
    if "snapshots" in inspect.signature(factory).parameters:
        # the evaluation never looks at the JPEG of a closed bill: don't encode one
        return functools.partial(factory, snapshots=False), ""
    return factory, ""


def system_specs(site: SiteConfig, baselines: Iterable[str],
                 with_system: bool = True) -> tuple[list[SystemSpec], str]:
    """The systems to run: the full system first (if present), then the named baselines.

    Returns
    -------
    tuple
        The specs and a note ("" or why the full system is missing).
    """
    specs = []
    note = ""
    if with_system:
        factory, note = full_system()
        if factory is not None:
            specs.append(SystemSpec("system", factory, site.detector.score_threshold))
    for name in baselines:
        cls = BASELINES[name]
        specs.append(SystemSpec(name, cls, cls.min_score if cls.min_score is not None
                                else site.detector.score_threshold, cls.identities))
    return specs, note


# ---------------------------------------------------------------- MOT


def is_ignored(record: BoxRecord) -> bool:
    """Ground truth neither hit nor missed: ``conf`` 0 or less than half visible."""
    return record.conf == 0 or 0 <= record.visibility < MIN_VISIBILITY


class CategoryScorer:
    """Scores one category's tracks against its ground truth, frame by frame.

    Parameters
    ----------
    gt_classes : set of int or None
        Ground-truth class ids of the category (:data:`MENU` ids); None: every class.
    track_keys : set of str or None
        Class names a track must have (its voted class) to be in the category;
        None: every track.
    """

    def __init__(self, gt_classes: Iterable[int] | None,
                 track_keys: Iterable[str] | None) -> None:
        self.gt_classes = None if gt_classes is None else frozenset(gt_classes)
        self.track_keys = None if track_keys is None else frozenset(track_keys)
        self.acc = MotAccumulator(MOT_IOU)

    def add(self, frame: int, gt: Sequence[BoxRecord], tracks: Sequence[Track]) -> None:
        """Score one frame (1-based ``frame``; boxes in source pixels)."""
        g = [r for r in gt if self.gt_classes is None or r.class_id in self.gt_classes]
        h = [t for t in tracks if self.track_keys is None or t.class_name in self.track_keys]
        gb = np.array([r.xyxy() for r in g], np.float64).reshape(-1, 4)
        hb = np.array([t.box for t in h], np.float64).reshape(-1, 4)
        self.acc.update([r.track_id for r in g], [t.track_id for t in h], box_iou(gb, hb),
                        np.array([is_ignored(r) for r in g], bool))

    def counts(self) -> MotCounts:
        """The counts of every frame added so far."""
        return self.acc.counts()


# ---------------------------------------------------------------- results


@dataclass(slots=True)
class SystemResult:
    """Everything measured of one system, on one sequence or pooled over many."""

    dishes: MotCounts | None = None
    trays: MotCounts | None = None
    objects: MotCounts | None = None  # the one category of a generic sequence
    bills: BillCounts | None = None
    update_ms: list[float] = field(default_factory=list)
    frames: int = 0
    tracks: list[BoxRecord] = field(default_factory=list)  # kept on request, never pooled

    def merge(self, other: SystemResult) -> None:
        """Pool ``other`` into this result."""
        for name in ("dishes", "trays", "objects"):
            theirs = getattr(other, name)
            if theirs is not None:
                mine = getattr(self, name)
                setattr(self, name, theirs if mine is None else mine + theirs)
        if other.bills is not None:
            if self.bills is None:
                self.bills = BillCounts()
            self.bills.merge(other.bills)
        self.update_ms.extend(other.update_ms)
        self.frames += other.frames

    def summary(self, *, details: bool = True) -> dict[str, Any]:
        """Flat report: bill and item rates, dish ``mota``/``idf1``/``hota``/``id_switches``,
        ``tray_*`` likewise, update time; ``details`` adds per-class errors and wrong bills."""
        out: dict[str, Any] = dict.fromkeys(
            ("bill_exact_match", "bill_error_rate", "item_precision", "item_recall", "mota",
             "idf1", "hota", "id_switches", "tray_mota", "tray_idf1", "tray_hota",
             "tray_id_switches"))
        if self.bills is not None:
            b = self.bills.summary()
            if not details:
                b.pop("wrong_bills")
                b.pop("per_class_errors")
            out.update(b)
        if self.dishes is not None:
            d = self.dishes.summary()
            out.update(mota=d["mota"], idf1=d["idf1"], hota=d["hota"],
                       id_switches=d["id_switches"], dish_mot_counts=d["counts"])
        if self.objects is not None:
            o = self.objects.summary()
            out.update({k: o[k] for k in ("mota", "idf1", "hota", "deta", "assa", "loca",
                                          "id_switches")}, mot_counts=o["counts"])
        if self.trays is not None:
            t = self.trays.summary()
            out.update(tray_mota=t["mota"], tray_idf1=t["idf1"], tray_hota=t["hota"],
                       tray_id_switches=t["id_switches"], tray_mot_counts=t["counts"])
        ms = np.asarray(self.update_ms)
        out["frames"] = self.frames
        out["update_ms_p50"] = float(np.median(ms)) if ms.size else None
        out["update_ms_p95"] = float(np.percentile(ms, 95)) if ms.size else None
        return out


# ---------------------------------------------------------------- running


def frame_time_base(fps: float) -> Fraction:
    """The time base of a sequence's frames at ``fps`` (one frame per unit)."""
    return 1 / Fraction(fps).limit_denominator(1001)


def above_score(d: Detections | None, min_score: float) -> Detections:
    """The detections of ``d`` scoring at least ``min_score`` (None: none)."""
    if d is None or len(d) == 0:
        return Detections.empty()
    keep = d.scores >= min_score
    if keep.all():
        return d
    return Detections(np.ascontiguousarray(d.boxes[keep]), d.scores[keep], d.classes[keep])


def stream_for(seq: SequenceData) -> StreamConfig:
    """The stream config a biller gets for ``seq`` (its checkout line and direction)."""
    return StreamConfig(id="eval", url=str((seq.path / "video.mp4").resolve()),
                        checkout=seq.checkout)


def tray_boxes(seq: SequenceData, tray_ids: Iterable[int]) -> dict[int, dict[int, tuple[
        float, float, float, float]]]:
    """``{tray_id: {frame: xyxy}}`` of the given trays from the ground truth."""
    wanted = set(tray_ids)
    out: dict[int, dict[int, tuple[float, float, float, float]]] = {t: {} for t in wanted}
    for frame, rows in seq.gt.items():
        for r in rows:
            if r.track_id in wanted:
                out[r.track_id][frame] = r.xyxy()
    return out


DetectFn = Callable[[Any], Detections]
"""Runs a detector on one BGR image (at :data:`CACHE_SCORE_THRESHOLD`)."""


def evaluate_sequence(
    seq: SequenceData,
    systems: Sequence[SystemSpec],
    site: SiteConfig,
    class_names: Sequence[str],
    *,
    detections: Mapping[int, Detections] | None = None,
    detect: DetectFn | None = None,
    decode: bool = True,
    progress: bool | None = None,
    generic: bool = False,
    keep_tracks: bool = False,
) -> tuple[dict[str, SystemResult], dict[int, Detections]]:
    """Run every system over frames 1..N of ``seq`` and score it.

    Parameters
    ----------
    seq : SequenceData
        The sequence.
    systems : sequence of SystemSpec
        Systems under test, each given a fresh biller.
    site : SiteConfig
        Menu, billing and tracker settings for every system.
    class_names : sequence of str
        Class names of the detections' class ids.
    detections : mapping, optional
        ``{frame (1-based): Detections}``; frames missing have no objects.
    detect : callable, optional
        Used instead of ``detections``: runs on each decoded frame.
    decode : bool
        Give the billers the decoded video frames (if ``video.mp4`` exists);
        otherwise, and always without a video, a black frame of the right size.
    progress : bool or None
        tqdm bar (on stderr); None shows it only on a terminal.
    generic : bool
        A plain MOTChallenge sequence: every ground-truth box and every track
        in one category (``SystemResult.objects``), no bills scored.
    keep_tracks : bool
        Keep every system's tracks as MOTChallenge rows (``SystemResult.tracks``).

    Returns
    -------
    tuple
        ``{system name: SystemResult}`` and the detections used (those the
        detector produced, for the cache).
    """
    if (detections is None) == (detect is None):
        raise ValueError("give exactly one of detections and detect")
    if detect is not None and seq.video is None:
        raise InputFormatError(f"{seq.path}: no video.mp4 to run the detector on")
    names = tuple(class_names)
    stream = stream_for(seq)
    billers = [s.factory(stream, site, names, seq.width, seq.height, run_id="eval")
               for s in systems]
    categories: dict[str, tuple[Iterable[int] | None, Iterable[str] | None]] = (
        {"objects": (None, None)} if generic else {
            "dishes": ({m.id for m in MENU if m.kind is Kind.DISH}, DISH_KEYS),
            "trays": ({m.id for m in MENU if m.kind is Kind.TRAY}, TRAY_KEYS)})
    scorers = [{c: CategoryScorer(*which) for c, which in categories.items()}
               if s.identities else {} for s in systems]
    kept: list[list[BoxRecord]] = [[] for _ in systems]
    bills: list[list[Bill]] = [[] for _ in systems]
    timings: list[list[float]] = [[] for _ in systems]
    used: dict[int, Detections] = {} if detections is None else dict(detections)
    blank = np.zeros((seq.height, seq.width, 3), np.uint8)
    blank.flags.writeable = False
    images: Iterable[Any] = (video_frames(seq) if (detect is not None or decode)
                             and seq.video is not None else (blank for _ in range(seq.n_frames)))
    time_base = frame_time_base(seq.fps)
    with tqdm(total=seq.n_frames, desc=f"eval {seq.name}", unit="frame",
              disable=None if progress is None else not progress) as bar:
        for k, image in enumerate(images, 1):
            if detect is not None:
                used[k] = detect(image)
            det = used.get(k)
            frame = Frame(stream.id, k - 1, image, (k - 1) / seq.fps, k - 1, time_base)
            gt = seq.gt.get(k, [])
            for n, spec in enumerate(systems):
                start = time.perf_counter()
                step = billers[n].update(frame, above_score(det, spec.min_score))
                timings[n].append((time.perf_counter() - start) * 1e3)
                bills[n].extend(step.closed)
                for scorer in scorers[n].values():
                    scorer.add(k, gt, step.tracks)
                if keep_tracks:
                    kept[n] += [BoxRecord(k, t.track_id, t.box[0], t.box[1], t.box[2] - t.box[0],
                                          t.box[3] - t.box[1], 1.0,
                                          -1 if generic else t.class_id, -1.0)
                                for t in step.tracks]
            bar.update(1)
    results = {}
    boxes = tray_boxes(seq, [t.tray_id for t in seq.trays or ()])
    for n, spec in enumerate(systems):
        r = SystemResult(update_ms=timings[n], frames=seq.n_frames, tracks=kept[n])
        for category, scorer in scorers[n].items():
            setattr(r, category, scorer.counts())
        if seq.trays is not None and not generic:
            r.bills = score_bills(bills[n], seq.trays, boxes, n_frames=seq.n_frames,
                                  fps=seq.fps, sequence=seq.name)
        results[spec.name] = r
    return results, used


def report(per_sequence: Sequence[tuple[SequenceData, Mapping[str, SystemResult]]],
           systems: Sequence[SystemSpec], note: str = "") -> dict[str, Any]:
    """The JSON report: the full system's pooled row at the top level, baselines under
    ``baselines``, one row per sequence under ``sequences``.

    Without the full system the top-level metric keys are None and ``system``
    is None with ``system_note`` saying why.
    """
    pooled = {s.name: SystemResult() for s in systems}
    rows = []
    for seq, results in per_sequence:
        for name, r in results.items():
            pooled[name].merge(r)
        row: dict[str, Any] = {"name": seq.name, "path": str(seq.path), "frames": seq.n_frames}
        if "system" in results:
            row.update(results["system"].summary(details=False))
        row["baselines"] = {n: r.summary(details=False) for n, r in results.items()
                            if n != "system"}
        rows.append(row)
    out: dict[str, Any] = {
        "system": "edge.billing.biller.make_biller" if "system" in pooled else None,
        "system_note": note,
    }
    out.update(pooled["system"].summary() if "system" in pooled else SystemResult().summary())
    out["baselines"] = {n: r.summary() for n, r in pooled.items() if n != "system"}
    out["sequences"] = rows
    out["matching"] = {"mot_iou": MOT_IOU, "min_visibility": MIN_VISIBILITY,
                       "cache_score_threshold": CACHE_SCORE_THRESHOLD}
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _num(v: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if v is None else pattern.format(v)


MOT_LEGEND = (
    "MOTA       1 - (misses + false positives + ID switches) / ground-truth boxes",
    "IDF1       boxes tracked under their object's own id (one global id matching), "
    "F1 over ground truth and tracks",
    "HOTA       sqrt(detection accuracy x association accuracy), mean over IoU "
    "0.05 .. 0.95",
    "IDsw       ID switches: a ground-truth object paired with another track than before",
)
"""What the tracking columns of the tables mean (printed under them)."""

BILL_LEGEND = (
    "exact %    expected trays billed exactly right",
    "err %      (expected trays not billed exactly + bills for no tray) / expected trays",
    "item P %   billed items that were on the tray; item R %: tray items that were billed",
    "false      bills for no tray",
)
"""What the bill columns mean."""


def format_table(rep: Mapping[str, Any], *, legend: bool = True) -> str:
    """A text table: one line per system (full system first, then the baselines).

    MOTA, IDF1, HOTA and IDsw are of dishes; ``tray MOTA`` of trays. With
    ``legend`` the lines under the table say what each column means.
    """
    rows = []
    if rep.get("system"):
        rows.append(("system", rep))
    rows += list(rep.get("baselines", {}).items())
    head = (f"{'system':<14} {'exact %':>8} {'err %':>7} {'item P %':>9} {'item R %':>9} "
            f"{'false':>6} {'MOTA':>7} {'IDF1':>7} {'HOTA':>7} {'IDsw':>6} {'tray MOTA':>9} "
            f"{'ms/frame':>9}")
    lines = [head, "-" * len(head)]
    for name, r in rows:
        lines.append(
            f"{name:<14} {_pct(r['bill_exact_match']):>8} {_pct(r['bill_error_rate']):>7} "
            f"{_pct(r['item_precision']):>9} {_pct(r['item_recall']):>9} "
            f"{_num(r.get('false_bills'), '{:d}'):>6} {_num(r['mota']):>7} "
            f"{_num(r['idf1']):>7} {_num(r.get('hota')):>7} "
            f"{_num(r['id_switches'], '{:d}'):>6} "
            f"{_num(r['tray_mota']):>9} {_num(r['update_ms_p50'], '{:.2f}'):>9}")
    if legend:
        lines += ["", *BILL_LEGEND, *(f"{m} (dishes)" for m in MOT_LEGEND),
                  "tray MOTA  MOTA of trays",
                  "ms/frame   median time of one update (tracking and billing)",
                  f"pairs need IoU >= {MOT_IOU}; ground truth less than "
                  f"{MIN_VISIBILITY:.0%} visible is ignored"]
    if rep.get("system_note"):
        lines.append(f"note: {rep['system_note']}")
    return "\n".join(lines)


def format_wrong(rep: Mapping[str, Any], limit: int = 10) -> str:
    """The full system's wrong bills, one line each (at most ``limit``), or ""."""
    wrong = rep.get("wrong_bills") or []
    lines = [f"full system: {len(wrong)} tray(s) or bill(s) in error"] if wrong else []
    for w in wrong[:limit]:
        what = ", ".join([f"-{k}" + (f" x{n}" if n > 1 else "") for k, n in w["missed"].items()]
                         + [f"+{k}" + (f" x{n}" if n > 1 else "") for k, n in w["extra"].items()])
        lines.append(f"  {w['sequence']} tray {w['tray_id']} (checkout frame "
                     f"{w['checkout_frame']}, bills at {w['bill_frames']}): {w['error']}"
                     f"{' ' + what if what else ''}{' ' + w['why'] if w['why'] else ''}"
                     f"{' [' + ','.join(w['tags']) + ']' if w['tags'] else ''}")
    if len(wrong) > limit:
        lines.append(f"  ... {len(wrong) - limit} more in the JSON report (wrong_bills)")
    return "\n".join(lines)
