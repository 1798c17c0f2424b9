"""``dishtracker calibrate select``: the K frames of a site's video most worth labelling.

Hours of a new site's video hold few distinct views: a tray standing at the
till for a minute is a thousand near-copies. Labelling time should go to
frames that show dishes as they have not been seen yet: other positions on
the tray and in the picture, other rotations, lighting, partial occlusion.

How (over tracks, not whole frames):

1. **Scan**: the shipped detector (:mod:`edge.detect`, ONNX Runtime) and the
   tray tracker (:mod:`edge.track.tray_tracker`) run over every frame (or
   every ``every``-th: hours of video at the detector's 20-30 ms a frame take
   as long to scan as they last, at 20 fps; at ``every`` 5 the tracker sees
   4 frames a second, still several per tray passing, and a view that exists
   only between two scanned frames is lost); every dish *detected* in a
   scanned frame on a tracked track is described by
   :func:`calibration.appearance.describe` (colour, gradients, position on
   its tray and of the tray in the picture, voted class).
2. **Skip** frames a labeller should not get:

   * *blurred*: the variance of the Laplacian over the trays
     (:func:`calibration.appearance.sharpness`) is below ``blur_ratio`` times
     the median over the stream's frames with a tray (the measure depends on
     the scene, so only the stream's own typical value is a fair yardstick);
   * *hand over a tray*: the detector's own evidence. A tray in view whose
     established dishes (tracked for at least :data:`ESTABLISHED_HITS`
     detections) are mostly not detected in this frame (more than
     ``hidden_share`` of them missing) is covered, by a hand or an arm in a
     checkout scene. No skin-colour rule: food is skin-coloured too.

3. **Choose** greedily (k-center, farthest-point style) over the
   descriptors of all usable frames' detections: each detection's distance to
   the nearest detection in a chosen frame starts at a cap (the median
   distance between detections; every distance is taken less the stream's
   noise floor, the upper quartile of the distances between a track's detections in
   consecutive frames, so near-copies count as covered) and a frame's gain is
   how much choosing it
   lowers the mean of those distances (``gain="mean"``, default) or their
   maximum, ties broken by the mean (``gain="max"``, pure k-center, which
   chases outliers such as a single false detection). A near-copy of a
   chosen frame gains almost nothing, so a tray standing still is picked
   once. Several recordings (a service split into files) are scanned one by
   one and chosen from together (:func:`choose_frames`): the K frames are the
   best of all of them, not K of each.

Where it sits: the first step of onboarding a site, before labelling
(``calibrate propose``, the labelling workspace) and ``calibrate train``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from calibration.appearance import describe, sharpness
from calibration.numbered_frames import NumberedFrames
from edge.config import DEFAULT_MODEL, TrackerConfig
from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.errors import ConfigError, InputFormatError
from edge.frames import Frame
from edge.track.tray_tracker import TRAY_KEY, TrayTracker

FloatArray = npt.NDArray[np.float32]
ESTABLISHED_HITS = 3  # detections before a dish's absence is evidence of a hand
MAX_TARGETS = 20000  # detections kept as coverage targets (a random sample beyond)
MAX_CANDIDATES = 3000  # frames that may be chosen (spread evenly beyond)
JPEG_QUALITY = 95


@dataclass(slots=True)
class Scan:
    """What one pass of detector and tracker saw.

    ``numbers``, ``sharp`` and ``covered``: one entry per frame read (1-based
    number, Laplacian variance, a tray mostly hidden); ``has_tray``: a tray was
    in view; ``descriptors`` ``(n, D)`` with ``det_frame`` (index into
    ``numbers``) and ``det_track`` (dish track id) per detection.
    """

    numbers: list[int] = field(default_factory=list)
    sharp: list[float] = field(default_factory=list)
    covered: list[bool] = field(default_factory=list)
    has_tray: list[bool] = field(default_factory=list)
    descriptors: list[FloatArray] = field(default_factory=list)
    det_frame: list[int] = field(default_factory=list)
    det_track: list[int] = field(default_factory=list)


def scan(frames: NumberedFrames, detector: OnnxRuntimeDetector, *, hidden_share: float = 0.5,
         every: int = 1, progress: bool = True) -> Scan:
    """Detect, track and describe every ``every``-th frame of ``frames`` (the first,
    the ``every + 1``-th ...); the others are read and passed over.

    Raises
    ------
    ConfigError
        ``every`` below 1.
    """
    if every < 1:
        raise ConfigError(f"--every must be >= 1, got {every}")
    names = tuple(detector.info.class_names)
    out = Scan()
    tracker: TrayTracker | None = None
    bar = tqdm(total=frames.count, desc="scan", unit="frame", disable=not progress)
    for index, (number, image) in enumerate(frames.frames()):
        if index % every:
            bar.update(1)
            continue
        if tracker is None:
            tracker = TrayTracker(names, TrackerConfig(), frames.direction,
                                  width=image.shape[1], height=image.shape[0])
        det = detector.detect([image])[0]
        result = tracker.update(Frame("select", index // every, image, index / 20.0), det)
        trays = {t.track_id: t.box for t in result.tracks if t.class_name == TRAY_KEY}
        dishes = [t for t in result.tracks if t.class_name != TRAY_KEY]
        covered = False
        for tid in trays:
            known = [d for d in dishes if d.tray_id == tid and d.hits >= ESTABLISHED_HITS]
            missing = sum(not d.detected for d in known)
            covered |= bool(known) and missing > hidden_share * len(known)
        out.numbers.append(number)
        out.sharp.append(sharpness(image, list(trays.values())))
        out.covered.append(covered)
        out.has_tray.append(bool(trays))
        for d in dishes:
            if d.detected:
                tray = trays.get(d.tray_id) if d.tray_id is not None else None
                out.descriptors.append(describe(image, d.box, tray, d.class_id, len(names)))
                out.det_frame.append(len(out.numbers) - 1)
                out.det_track.append(d.track_id)
        bar.update(1)
    bar.close()
    return out


def usable(result: Scan, blur_ratio: float) -> tuple[npt.NDArray[np.bool_], dict[str, int]]:
    """Which frames may be chosen, and how many were skipped for each reason."""
    sharp = np.asarray(result.sharp, np.float64)
    with_tray = np.asarray(result.has_tray, bool)
    typical = float(np.median(sharp[with_tray])) if with_tray.any() else float(np.median(sharp))
    covered = np.asarray(result.covered, bool)
    blurred = (sharp < blur_ratio * typical) & ~covered  # a hand is smooth too: it counts first
    return ~(blurred | covered), {"blurred": int(blurred.sum()), "hand": int(covered.sum())}


def _spread(indices: npt.NDArray[np.int64], count: int) -> npt.NDArray[np.int64]:
    if len(indices) <= count:
        return indices
    picks = np.unique(np.linspace(0, len(indices) - 1, count).round().astype(np.int64))
    return np.asarray(indices[picks], np.int64)


def noise_floor(descriptors: list[FloatArray], det_frame: list[int],
                det_track: list[int]) -> float:
    """Upper quartile of the distances between a track's detections in consecutive frames.

    At video rates the next frame of a dish is a near-copy: this is how far
    near-copies lie apart in this stream (sensor noise, compression, a few
    pixels of motion). Distances below it count as covered.
    """
    last: dict[int, tuple[int, FloatArray]] = {}
    steps = []
    for x, frame, track in zip(descriptors, det_frame, det_track, strict=True):
        seen = last.get(track)
        if seen is not None and seen[0] == frame - 1:
            steps.append(float(np.linalg.norm(x - seen[1])))
        last[track] = (frame, x)
    return float(np.percentile(steps, 75)) if steps else 0.0


def choose(descriptors: FloatArray, det_frame: npt.NDArray[np.int64],
           candidates: npt.NDArray[np.int64], k: int, *, gain: str = "mean",
           floor: float = 0.0) -> tuple[list[int], dict[str, float]]:
    """Greedy k-center choice of ``k`` frames among ``candidates``.

    Parameters
    ----------
    descriptors : np.ndarray
        ``(n, D)`` float32, the coverage targets (detections of usable frames).
    det_frame : np.ndarray
        ``(n,)`` the frame index of each target.
    candidates : np.ndarray
        Frame indices that may be chosen (each holds at least one target).
    k : int
        Frames to choose; fewer when there are fewer candidates.
    gain : {"mean", "max"}
        What a chosen frame must lower: the mean or the max distance of the
        targets to their nearest chosen detection.
    floor : float
        Distances are taken less this (at least 0): a near-copy of a chosen
        detection is covered, and a mass of near-copies gains nothing.

    Returns
    -------
    chosen : list of int
        Frame indices in the order chosen (the most informative first).
    stats : dict
        ``cap``, and ``mean``/``max`` distance to the nearest chosen detection.
    """
    n = len(descriptors)
    if n == 0 or len(candidates) == 0:
        return [], {"cap": 0.0, "mean": 0.0, "max": 0.0}
    x = descriptors.astype(np.float32)
    sq = (x * x).sum(axis=1)
    rng = np.random.default_rng(0)
    sample = x[rng.choice(n, size=min(n, 500), replace=False)]
    ss = (sample * sample).sum(axis=1)
    pair = np.sqrt(np.maximum(ss[:, None] + ss[None] - 2 * sample @ sample.T, 0))
    cap = float(np.median(pair[np.triu_indices(len(sample), 1)])) if len(sample) > 1 else 1.0
    cap = max(cap, 1e-6)
    dist = np.empty((n, len(candidates)), np.float32)
    for j, f in enumerate(candidates):
        own = x[det_frame == f]
        d2 = sq[:, None] + (own * own).sum(1)[None] - 2 * x @ own.T
        dist[:, j] = np.maximum(np.sqrt(np.maximum(d2.min(axis=1), 0)) - floor, 0)
    cap = max(cap - floor, 1e-6)
    current = np.full(n, cap, np.float32)
    chosen: list[int] = []
    free = np.ones(len(candidates), bool)
    for _ in range(min(k, len(candidates))):
        after = np.minimum(dist, current[:, None])
        mean_gain = (current[:, None] - after).sum(axis=0)
        score = mean_gain
        if gain == "max":
            max_gain = current.max() - after.max(axis=0)
            score = np.where(max_gain >= max_gain[free].max() - 1e-6, mean_gain, -1.0)
        score = np.where(free, score, -np.inf)
        j = int(np.argmax(score))
        free[j] = False
        chosen.append(int(candidates[j]))
        current = after[:, j]
    return chosen, {"cap": cap, "floor": floor, "mean": float(current.mean()),
                    "max": float(current.max())}


def _check(k: int, gain: str) -> None:
    if k < 1:
        raise ConfigError(f"--frames must be >= 1, got {k}")
    if gain not in {"mean", "max"}:
        raise ConfigError(f"gain must be 'mean' or 'max', got {gain!r}")


@dataclass(frozen=True, slots=True)
class Choice:
    """The frames :func:`choose_frames` chose among one or more scans.

    ``picks`` are ``(scan index, frame number)`` in the order chosen (the most
    informative first); the counts are summed over the scans.
    """

    picks: list[tuple[int, int]]
    frames_read: int
    usable: int
    skipped: dict[str, int]
    detections: int
    tracks_covered: int
    distance: dict[str, float]


def choose_frames(scans: Sequence[Scan], k: int, *, blur_ratio: float = 0.5,
                  gain: str = "mean") -> Choice:
    """Choose ``k`` frames among the usable frames of all ``scans`` together.

    Each scan is judged for blur against its own median (a recording's
    sharpness depends on its scene); the coverage targets, the noise floor
    and the greedy choice span every scan, so the chosen frames are the ``k``
    best of all of them.

    Raises
    ------
    ConfigError
        ``k`` below 1 or an unknown ``gain``.
    """
    _check(k, gain)
    owner: list[tuple[int, int]] = []  # per frame of all scans: (scan index, frame number)
    oks: list[npt.NDArray[np.bool_]] = []
    descriptors: list[FloatArray] = []
    det_frame: list[int] = []
    det_track: list[int] = []
    skipped = {"blurred": 0, "hand": 0}
    for n, result in enumerate(scans):
        ok, skip = usable(result, blur_ratio)
        oks.append(ok)
        for reason, count in skip.items():
            skipped[reason] += count
        frame_offset, track_offset = len(owner), 1 + max(det_track, default=-1)
        owner += [(n, number) for number in result.numbers]
        descriptors += result.descriptors
        det_frame += [frame_offset + f for f in result.det_frame]
        det_track += [track_offset + t for t in result.det_track]
    ok = np.concatenate(oks) if oks else np.zeros(0, bool)
    frames_of = np.asarray(det_frame, np.int64)
    keep = ok[frames_of] if len(frames_of) else np.zeros(0, bool)
    rng = np.random.default_rng(0)
    targets = np.flatnonzero(keep)
    if len(targets) > MAX_TARGETS:
        targets = np.sort(rng.choice(targets, MAX_TARGETS, replace=False))
    x = (np.stack([descriptors[i] for i in targets]) if len(targets)
         else np.zeros((0, 1), np.float32))
    candidates = _spread(np.unique(frames_of[targets]), MAX_CANDIDATES)
    floor = noise_floor(descriptors, det_frame, det_track)
    chosen, stats = choose(x, frames_of[targets], candidates, k, gain=gain, floor=floor)
    if len(chosen) < k:
        # frames with no dish detected add nothing to cover; fill evenly in time
        rest = np.setdiff1d(np.flatnonzero(ok), chosen)
        chosen += [int(i) for i in _spread(rest, k - len(chosen))]
    picked = set(chosen)
    tracks = {det_track[i] for i in targets if det_frame[i] in picked}
    return Choice([owner[i] for i in chosen], len(owner), int(ok.sum()), skipped, len(targets),
                  len(tracks), {key: round(v, 4) for key, v in stats.items()})


def select_frames(frames: NumberedFrames, detector: OnnxRuntimeDetector, k: int, *,
                  blur_ratio: float = 0.5, hidden_share: float = 0.5, gain: str = "mean",
                  every: int = 1, progress: bool = True) -> dict[str, Any]:
    """Scan ``frames`` (every ``every``-th) and choose ``k`` of them; the
    ``selection.json`` document.

    Raises
    ------
    ConfigError
        ``k`` below 1, ``every`` below 1 or an unknown ``gain``.
    InputFormatError
        The source cannot be read.
    """
    _check(k, gain)
    result = scan(frames, detector, hidden_share=hidden_share, every=every, progress=progress)
    choice = choose_frames([result], k, blur_ratio=blur_ratio, gain=gain)
    numbers = [number for _, number in choice.picks]
    return {
        "format": "dishtracker-selection/1",
        "frames": sorted(numbers),
        "order": numbers,
        "source": frames.source,
        "requested": k,
        "frames_read": choice.frames_read,
        "usable": choice.usable,
        "skipped": choice.skipped,
        "detections": choice.detections,
        "tracks_covered": choice.tracks_covered,
        "method": {"descriptor": "colour+gradient histograms, position on tray and in "
                                 "picture, box size, voted class", "gain": gain,
                   "blur_ratio": blur_ratio, "hidden_share": hidden_share, "every": every},
        "distance": choice.distance,
    }


def write_selection(frames: NumberedFrames, doc: dict[str, Any], out: Path, *,
                    progress: bool = True) -> None:
    """Write the chosen frames as ``frame_NNNNNN.jpg`` and ``selection.json`` into ``out``.

    Everything is written into a temporary folder beside ``out`` and renamed
    when complete: a crash leaves no half-written selection.

    Raises
    ------
    InputFormatError
        ``out`` exists and is not an empty folder.
    """
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputFormatError(f"--out {out}: exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        wanted = set(doc["frames"])
        names: dict[int, str] = {}
        for number, image in tqdm(frames.pick(wanted), total=len(wanted), desc="write",
                                  unit="frame", disable=not progress):
            names[number] = f"frame_{number:06d}.jpg"
            if not cv2.imwrite(str(tmp / names[number]), image,
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
                raise InputFormatError(f"{tmp / names[number]}: cannot write the image")
        missing = wanted - set(names)
        if missing:
            raise InputFormatError(f"--source {frames.source}: frames {sorted(missing)[:5]} "
                                   "could not be read again")
        doc = {**doc, "images": [names[n] for n in doc["frames"]]}
        (tmp / "selection.json").write_text(json.dumps(doc, indent=1) + "\n")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def add_select_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``dishtracker calibrate select``."""
    p.add_argument("--source", required=True,
                   help="video file, folder (images, or a sequence with video.mp4) or URL")
    p.add_argument("--frames", type=int, required=True, metavar="K", help="frames to select")
    p.add_argument("--out", type=Path, required=True, help="new folder for images and "
                                                           "selection.json")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="detector (ONNX)")
    p.add_argument("--max-frames", type=int, default=None,
                   help="read at most this many frames (required for a URL)")
    p.add_argument("--blur-ratio", type=float, default=0.5,
                   help="skip frames sharper than this share of the stream's median only")
    p.add_argument("--hidden-share", type=float, default=0.5,
                   help="skip frames where more than this share of a tray's dishes vanished")
    p.add_argument("--gain", choices=["mean", "max"], default="mean",
                   help="what each chosen frame lowers: mean or max distance to the nearest "
                        "chosen detection")
    p.add_argument("--every", type=int, default=1, metavar="N",
                   help="scan every N-th frame only (default 1: all): N times faster, but a "
                        "view shown only between scanned frames cannot be chosen; 5 keeps "
                        "4 frames a second of a 20 fps camera")
    p.add_argument("--score-threshold", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def open_detector(model: Path, threads: int, score_threshold: float) -> OnnxRuntimeDetector:
    """The ONNX Runtime detector frame selection runs."""
    if not 0.0 < score_threshold < 1.0:
        raise ConfigError(f"--score-threshold must be in (0, 1), got {score_threshold}")
    return OnnxRuntimeDetector(model, threads=threads, score_threshold=score_threshold)


def run_select(args: argparse.Namespace, *,
               log: Callable[[str], None] = print) -> int:
    """Entry of ``dishtracker calibrate select``."""
    if not 0.0 <= args.blur_ratio < 1.0:
        raise ConfigError(f"--blur-ratio must be in [0, 1), got {args.blur_ratio}")
    if not 0.0 <= args.hidden_share < 1.0:
        raise ConfigError(f"--hidden-share must be in [0, 1), got {args.hidden_share}")
    if args.every < 1:
        raise ConfigError(f"--every must be >= 1, got {args.every}")
    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())):
        raise InputFormatError(f"--out {args.out}: exists and is not empty; choose a new folder")
    frames = NumberedFrames(args.source, args.max_frames)
    detector = open_detector(args.model, args.threads, args.score_threshold)
    try:
        doc = select_frames(frames, detector, args.frames, blur_ratio=args.blur_ratio,
                            hidden_share=args.hidden_share, gain=args.gain,
                            every=args.every, progress=not args.quiet)
    finally:
        detector.close()
    doc["model"] = str(args.model)
    write_selection(frames, doc, args.out, progress=not args.quiet)
    if len(doc["frames"]) < args.frames:
        log(f"only {doc['usable']} usable frames: selected {len(doc['frames'])} of "
            f"{args.frames}")
    log(f"wrote {args.out}: {len(doc['frames'])} frames of {doc['frames_read']} "
        f"({doc['skipped']['blurred']} blurred, {doc['skipped']['hand']} with a hand over "
        f"a tray skipped), {doc['tracks_covered']} dish tracks covered")
    return 0
