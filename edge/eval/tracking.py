"""Tracking and billing evaluation of any :class:`~edge.billing.model.Biller`.

Sits beside the pipeline, after ``track`` and ``bill``: frames 1..N of a
sequence (:mod:`edge.eval.sequences`) go through every system under test in
lockstep -- the full system (``edge.billing.biller.make_biller``, when present)
and the baselines (:mod:`edge.eval.baselines`) -- with the same detections.
Each system's tracks are scored per frame with motmetrics and its bills are
matched to ``gt/trays.json`` (:mod:`edge.eval.bills`).

Tracking metrics (CLEAR MOT and identity metrics, via motmetrics) are
computed for two categories: **dishes** (ground truth of a billable dish
class against tracks whose *voted* class, in that frame, is a dish class) and
**trays**. A track and a ground-truth box may pair at IoU >= 0.5 (distance
``1 - IoU``). Ground truth less than half visible (``visibility < 0.5``, or
``conf`` 0) is ignored the MOTChallenge way (its devkit's preprocessing of
distractors): in each frame the tracks of the category are first matched to
*all* its ground truth, ignored included (Hungarian on IoU >= 0.5); tracks
that land on ignored ground truth are removed from that frame, then the
ignored ground truth is removed and the rest is scored. So a tracker that
keeps a dish under a hand is not penalised, nor is one that loses it.

Counts are pooled over sequences (sums of misses, false positives, switches,
IDTP/IDFP/IDFN and bill counts), never averaged rates.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from edge.billing.model import Bill, Biller
from edge.catalogue import CATALOGUE as MENU
from edge.catalogue import Kind
from edge.config import SiteConfig, StreamConfig
from edge.errors import InputFormatError, MissingExtraError
from edge.eval.baselines import BASELINES
from edge.eval.bills import BillCounts, score_bills
from edge.eval.detection import box_iou
from edge.eval.sequences import CACHE_SCORE_THRESHOLD, SequenceData, video_frames
from edge.frames import Detections, Frame, Track
from edge.groundtruth import BoxRecord

MOT_IOU = 0.5
MIN_VISIBILITY = 0.5
TRAY_KEYS = frozenset(m.key for m in MENU if m.kind is Kind.TRAY)
DISH_KEYS = frozenset(m.key for m in MENU if m.kind is Kind.DISH)
_MOT_METRICS = ["num_objects", "num_misses", "num_false_positives", "num_switches",
                "idtp", "idfp", "idfn"]

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


@dataclass(slots=True)
class MotCounts:
    """CLEAR MOT and identity counts of one category, pooled with :meth:`merge`."""

    objects: int = 0
    misses: int = 0
    false_positives: int = 0
    switches: int = 0
    idtp: int = 0
    idfp: int = 0
    idfn: int = 0
    ignored_tracks: int = 0  # track boxes dropped on ignored ground truth

    def merge(self, other: MotCounts) -> None:
        """Add ``other``'s counts."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> dict[str, Any]:
        """``mota``, ``idf1``, ``id_switches`` and the counts."""
        errors = self.misses + self.false_positives + self.switches
        id_den = 2 * self.idtp + self.idfp + self.idfn
        return {
            "mota": 1.0 - errors / self.objects if self.objects else None,
            "idf1": 2 * self.idtp / id_den if id_den else None,
            "id_switches": self.switches,
            "counts": {f.name: getattr(self, f.name) for f in fields(self)},
        }


def _motmetrics() -> Any:
    try:
        import motmetrics  # noqa: PLC0415  # optional: the `eval` extra
    except ImportError as err:
        raise MissingExtraError("tracking metrics need motmetrics: "
                                "pip install 'dishtracker-edge[eval]'") from err
    return motmetrics


class CategoryScorer:
    """Feeds one category's ground truth and tracks to a motmetrics accumulator.

    Parameters
    ----------
    gt_classes : set of int
        Ground-truth class ids (``edge.sim.menu``) of the category.
    track_keys : set of str
        Class names a track must have (its voted class) to be in the category.
    """

    def __init__(self, gt_classes: Iterable[int], track_keys: Iterable[str]) -> None:
        self.gt_classes = frozenset(gt_classes)
        self.track_keys = frozenset(track_keys)
        self._mm = _motmetrics()
        self.acc = self._mm.MOTAccumulator(auto_id=False)
        self.ignored_tracks = 0

    def add(self, frame: int, gt: Sequence[BoxRecord], tracks: Sequence[Track]) -> None:
        """Score one frame (1-based ``frame``)."""
        g = [r for r in gt if r.class_id in self.gt_classes]
        h = [t for t in tracks if t.class_name in self.track_keys]
        gb = np.array([r.xyxy() for r in g], np.float64).reshape(-1, 4)
        hb = np.array([t.box for t in h], np.float64).reshape(-1, 4)
        ignored = np.array([r.conf == 0 or 0 <= r.visibility < MIN_VISIBILITY for r in g],
                           bool)
        iou = box_iou(hb, gb)
        keep_h = np.ones(len(h), bool)
        if ignored.any() and h:
            rows, cols = linear_sum_assignment(np.where(iou >= MOT_IOU, -iou, 1.0))
            for r, c in zip(rows, cols, strict=True):
                if iou[r, c] >= MOT_IOU and ignored[c]:
                    keep_h[r] = False
        self.ignored_tracks += int((~keep_h).sum())
        sub = iou[keep_h][:, ~ignored].T
        dist = np.where(sub >= MOT_IOU, 1.0 - sub, np.nan)
        self.acc.update([r.track_id for r, i in zip(g, ignored, strict=True) if not i],
                        [t.track_id for t, k in zip(h, keep_h, strict=True) if k],
                        dist, frameid=frame)

    def counts(self) -> MotCounts:
        """The accumulated counts."""
        m = self._mm.metrics.create().compute(self.acc, metrics=_MOT_METRICS,
                                              return_dataframe=False)
        return MotCounts(int(m["num_objects"]), int(m["num_misses"]),
                         int(m["num_false_positives"]), int(m["num_switches"]),
                         int(m["idtp"]), int(m["idfp"]), int(m["idfn"]), self.ignored_tracks)


# ---------------------------------------------------------------- results


@dataclass(slots=True)
class SystemResult:
    """Everything measured of one system, on one sequence or pooled over many."""

    dishes: MotCounts | None = None
    trays: MotCounts | None = None
    bills: BillCounts | None = None
    update_ms: list[float] = field(default_factory=list)
    frames: int = 0

    def merge(self, other: SystemResult) -> None:
        """Pool ``other`` into this result."""
        for name in ("dishes", "trays", "bills"):
            theirs = getattr(other, name)
            if theirs is None:
                continue
            mine = getattr(self, name)
            if mine is None:
                mine = type(theirs)()
                setattr(self, name, mine)
            mine.merge(theirs)
        self.update_ms.extend(other.update_ms)
        self.frames += other.frames

    def summary(self, *, details: bool = True) -> dict[str, Any]:
        """Flat report: bill and item rates, dish ``mota``/``idf1``/``id_switches``,
        ``tray_*`` likewise, update time; ``details`` adds per-class errors and wrong bills."""
        out: dict[str, Any] = dict.fromkeys(
            ("bill_exact_match", "bill_error_rate", "item_precision", "item_recall", "mota",
             "idf1", "id_switches", "tray_mota", "tray_idf1", "tray_id_switches"))
        if self.bills is not None:
            b = self.bills.summary()
            if not details:
                b.pop("wrong_bills")
                b.pop("per_class_errors")
            out.update(b)
        if self.dishes is not None:
            d = self.dishes.summary()
            out.update(mota=d["mota"], idf1=d["idf1"], id_switches=d["id_switches"],
                       dish_mot_counts=d["counts"])
        if self.trays is not None:
            t = self.trays.summary()
            out.update(tray_mota=t["mota"], tray_idf1=t["idf1"],
                       tray_id_switches=t["id_switches"], tray_mot_counts=t["counts"])
        ms = np.asarray(self.update_ms)
        out["frames"] = self.frames
        out["update_ms_p50"] = float(np.median(ms)) if ms.size else None
        out["update_ms_p95"] = float(np.percentile(ms, 95)) if ms.size else None
        return out


# ---------------------------------------------------------------- running


def _frame_time_base(fps: float) -> Fraction:
    return 1 / Fraction(fps).limit_denominator(1001)


def _above(d: Detections | None, min_score: float) -> Detections:
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
        tqdm bar; None shows it only on a terminal.

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
    dish_ids = {m.id for m in MENU if m.kind is Kind.DISH}
    tray_ids = {m.id for m in MENU if m.kind is Kind.TRAY}
    scorers = [(CategoryScorer(dish_ids, DISH_KEYS), CategoryScorer(tray_ids, TRAY_KEYS))
               if s.identities else None for s in systems]
    bills: list[list[Bill]] = [[] for _ in systems]
    timings: list[list[float]] = [[] for _ in systems]
    used: dict[int, Detections] = {} if detections is None else dict(detections)
    blank = np.zeros((seq.height, seq.width, 3), np.uint8)
    blank.flags.writeable = False
    images: Iterable[Any] = (video_frames(seq) if (detect is not None or decode)
                             and seq.video is not None else (blank for _ in range(seq.n_frames)))
    time_base = _frame_time_base(seq.fps)
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
                step = billers[n].update(frame, _above(det, spec.min_score))
                timings[n].append((time.perf_counter() - start) * 1e3)
                bills[n].extend(step.closed)
                pair = scorers[n]
                if pair is not None:
                    pair[0].add(k, gt, step.tracks)
                    pair[1].add(k, gt, step.tracks)
            bar.update(1)
    results = {}
    boxes = tray_boxes(seq, [t.tray_id for t in seq.trays or ()])
    for n, spec in enumerate(systems):
        r = SystemResult(update_ms=timings[n], frames=seq.n_frames)
        pair = scorers[n]
        if pair is not None:
            r.dishes, r.trays = pair[0].counts(), pair[1].counts()
        if seq.trays is not None:
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


def format_table(rep: Mapping[str, Any]) -> str:
    """A text table: one line per system (full system first, then the baselines)."""
    rows = []
    if rep.get("system"):
        rows.append(("system", rep))
    rows += list(rep.get("baselines", {}).items())
    head = (f"{'system':<14} {'exact %':>8} {'err %':>7} {'item P %':>9} {'item R %':>9} "
            f"{'false':>6} {'MOTA':>7} {'IDF1':>7} {'IDsw':>6} {'tray MOTA':>9} "
            f"{'ms/frame':>9}")
    lines = [head, "-" * len(head)]
    for name, r in rows:
        lines.append(
            f"{name:<14} {_pct(r['bill_exact_match']):>8} {_pct(r['bill_error_rate']):>7} "
            f"{_pct(r['item_precision']):>9} {_pct(r['item_recall']):>9} "
            f"{_num(r.get('false_bills'), '{:d}'):>6} {_num(r['mota']):>7} "
            f"{_num(r['idf1']):>7} {_num(r['id_switches'], '{:d}'):>6} "
            f"{_num(r['tray_mota']):>9} {_num(r['update_ms_p50'], '{:.2f}'):>9}")
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
