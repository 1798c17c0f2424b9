"""Inputs of the tracking and billing evaluation: a sequence and its detections.

Feeds :mod:`edge.eval.tracking`. A sequence directory is what ``dishtracker
sim`` writes (``docs/FORMATS.md``): ``gt/gt.txt`` (required),
``gt/trays.json`` (optional: without it only tracking is scored),
``seqinfo.ini`` and ``video.mp4`` (optional when detections come from a file).
A plain MOTChallenge sequence (``seqinfo.ini``, ``gt/gt.txt``, no video
needed) reads the same way; its ten-column ground truth (MOT15: world
coordinates where later benchmarks put class and visibility) reads as class
-1 with no visibility.

Detections come either from a MOTChallenge ``det.txt`` with the class column
(without it, class -1 or 7 columns: one generic object class, see
:func:`has_classes`), or from running a detector over the video. A detector's output is cached as
``det.txt`` plus a ``det.json`` that names the model (by SHA-256) and the
score threshold, so evaluating trackers again does not run the detector again.
The cache keeps everything down to :data:`CACHE_SCORE_THRESHOLD`, below any
deployed threshold, so billers that use low-score boxes (ByteTrack) get them;
each biller then sees only the scores it asks for.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from edge.config import CheckoutConfig
from edge.errors import InputFormatError
from edge.frames import Detections
from edge.groundtruth import (
    BoxRecord,
    TrayRecord,
    by_frame,
    read_mot,
    read_seqinfo,
    read_trays,
    write_mot,
)

CACHE_SCORE_THRESHOLD = 0.05
DET_META_FORMAT = "dishtracker-det/1"


@dataclass(frozen=True, slots=True)
class SequenceData:
    """One evaluation sequence: ground truth and geometry.

    Attributes
    ----------
    path : Path
        The sequence directory.
    name : str
        Its name (``seqinfo.ini`` ``name`` or the directory name).
    fps : float
        Frames per second.
    width, height : int
        Frame size in pixels.
    n_frames : int
        Frames evaluated: 1..n_frames.
    gt : dict
        ``{frame (1-based): [BoxRecord, ...]}`` from ``gt/gt.txt``.
    trays : list of TrayRecord or None
        ``gt/trays.json``; None when the file is absent (no billing metrics).
    checkout : CheckoutConfig
        The checkout line and travel direction the simulator used.
    """

    path: Path
    name: str
    fps: float
    width: int
    height: int
    n_frames: int
    gt: dict[int, list[BoxRecord]]
    trays: list[TrayRecord] | None
    checkout: CheckoutConfig

    @property
    def video(self) -> Path | None:
        """``video.mp4`` if the directory has one."""
        p = self.path / "video.mp4"
        return p if p.is_file() else None


def _num(section: Mapping[str, str], key: str, where: Path) -> float | None:
    if key not in section:
        return None
    try:
        value = float(section[key])
    except ValueError as err:
        raise InputFormatError(f"{where}: {key} = {section[key]!r} is not a number") from err
    if not math.isfinite(value):
        raise InputFormatError(f"{where}: {key} = {section[key]!r} is not a finite number")
    return value


def open_sequence(path: Path) -> SequenceData:
    """Read a sequence directory's ground truth and geometry.

    Raises
    ------
    InputFormatError
        ``path`` is not a directory, ``gt/gt.txt`` is missing or malformed, or
        neither ``seqinfo.ini`` nor ``gt/trays.json`` gives the frame size.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputFormatError(f"{path}: not a directory (expected a sequence written by "
                               f"`dishtracker sim`)")
    gt_path = path / "gt" / "gt.txt"
    if not gt_path.is_file():
        raise InputFormatError(f"{gt_path}: missing; a sequence needs MOTChallenge ground truth")
    gt = by_frame(_read_gt(gt_path))
    seq: dict[str, str] = {}
    sim: dict[str, str] = {}
    ini = path / "seqinfo.ini"
    if ini.is_file():
        info = read_seqinfo(ini)
        seq, sim = info.get("Sequence", {}), info.get("DishTracker", {})
    trays: list[TrayRecord] | None = None
    meta: dict[str, Any] = {}
    if (path / "gt" / "trays.json").is_file():
        trays, meta = read_trays(path / "gt" / "trays.json")

    fps = _num(seq, "frameRate", ini) or meta.get("fps")
    width = _num(seq, "imWidth", ini) or meta.get("width")
    height = _num(seq, "imHeight", ini) or meta.get("height")
    length = _num(seq, "seqLength", ini) or meta.get("frames") or max(gt, default=0)
    if not (fps and width and height):
        raise InputFormatError(f"{path}: frame rate and size unknown; needs seqinfo.ini "
                               f"(frameRate, imWidth, imHeight) or gt/trays.json")
    if not length:
        raise InputFormatError(f"{path}: no frames (empty gt/gt.txt and no seqLength)")

    line: Any = meta.get("checkout_line")
    direction: Any = meta.get("direction")
    if line is None and "checkoutLineX" in sim:
        x = _num(sim, "checkoutLineX", ini)
        line = ((x, 0.0), (x, float(height)))
    if direction is None and "direction" in sim:
        try:
            direction = tuple(float(v) for v in sim["direction"].split(","))
        except ValueError as err:
            raise InputFormatError(f"{ini}: direction = {sim['direction']!r} is not "
                                   f"'dx,dy'") from err
    try:
        checkout = CheckoutConfig(
            line=None if line is None else tuple(tuple(p) for p in line),
            **({} if direction is None else {"direction": tuple(direction)}),
        )
    except (ValueError, TypeError) as err:
        raise InputFormatError(f"{path}: invalid checkout line {line!r} or direction "
                               f"{direction!r}: {err}") from err
    return SequenceData(
        path=path, name=seq.get("name") or path.name, fps=float(fps), width=int(width),
        height=int(height), n_frames=int(length), gt=gt, trays=trays, checkout=checkout,
    )


def _read_gt(path: Path) -> list[BoxRecord]:
    """``gt.txt`` rows; a ten-column file (MOT15 layout) without class and visibility."""
    rows = read_mot(path)
    with path.open(encoding="utf-8") as fh:
        first = next((line for line in fh if line.strip()), "")
    if first.count(",") == 9:  # frame,id,x,y,w,h,conf,wx,wy,wz
        return [replace(r, class_id=-1, visibility=-1.0) for r in rows]
    return rows


def has_classes(path: Path) -> bool:
    """Whether a ``det.txt`` has a class column (some row's class is not -1).

    Raises
    ------
    InputFormatError
        Missing file or malformed line.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(f"{path}: no such detections file")
    return any(r.class_id != -1 for r in read_mot(path))


def _to_detections(rows: list[BoxRecord], width: int, height: int) -> Detections:
    xywh = np.array([(r.x, r.y, r.w, r.h) for r in rows], np.float32).reshape(-1, 4)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return Detections(np.ascontiguousarray(boxes, np.float32),
                      np.array([r.conf for r in rows], np.float32),
                      np.array([r.class_id for r in rows], np.int32))


def read_detections(path: Path, seq: SequenceData, num_classes: int, *,
                    generic: bool = False) -> dict[int, Detections]:
    """Read a ``det.txt`` (MOTChallenge with the class column) for ``seq``.

    With ``generic`` the class column is not read (it may be -1 or absent):
    every detection is class 0, the one object class of a plain MOTChallenge
    sequence.

    Returns
    -------
    dict
        ``{frame (1-based): Detections}`` in source pixels; frames without a
        line are absent.

    Raises
    ------
    InputFormatError
        Missing file, malformed line, no class column, a class id outside
        ``[0, num_classes)`` or a frame beyond the sequence.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFormatError(f"{path}: no such detections file")
    rows = read_mot(path)
    if generic:
        rows = [replace(r, class_id=0) for r in rows]
    for r in rows:
        if not 0 <= r.class_id < num_classes:
            why = ("has no class column (billing needs the class: write 9 or 10 columns)"
                   if r.class_id == -1 else
                   f"class {r.class_id} is not in [0, {num_classes})")
            raise InputFormatError(f"{path}: frame {r.frame}: {why}")
        if r.frame > seq.n_frames:
            raise InputFormatError(f"{path}: frame {r.frame} is beyond the sequence's "
                                   f"{seq.n_frames} frames ({seq.path})")
    return {f: _to_detections(rs, seq.width, seq.height) for f, rs in by_frame(rows).items()}


def write_detections(path: Path, detections: Mapping[int, Detections]) -> None:
    """Write ``{frame: Detections}`` as a MOTChallenge ``det.txt`` with the class column."""
    rows = [
        BoxRecord(frame, -1, float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1]),
                  float(s), int(c), -1.0)
        for frame, d in detections.items()
        for b, s, c in zip(d.boxes, d.scores, d.classes, strict=True)
    ]
    write_mot(path, rows)


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (the model's identity in the cache)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class DetectionCache:
    """``det.txt`` + ``det.json`` of one model on one sequence.

    Parameters
    ----------
    directory : Path
        Where the two files live (default for a sequence: ``DIR/det``).
    """

    directory: Path

    @property
    def det_txt(self) -> Path:
        """The detections."""
        return self.directory / "det.txt"

    @property
    def meta_json(self) -> Path:
        """What produced them."""
        return self.directory / "det.json"

    def load(self, seq: SequenceData, model_sha256: str,
             score_threshold: float) -> tuple[dict[int, Detections], tuple[str, ...]] | None:
        """The cached detections and class names, or None if absent or made differently."""
        try:
            meta = json.loads(self.meta_json.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if (not isinstance(meta, dict) or meta.get("format") != DET_META_FORMAT
                or meta.get("model_sha256") != model_sha256
                or meta.get("score_threshold") != score_threshold
                or meta.get("frames") != seq.n_frames or not self.det_txt.is_file()):
            return None
        names = tuple(str(n) for n in meta.get("class_names", ()))
        return read_detections(self.det_txt, seq, len(names)), names

    def save(self, detections: Mapping[int, Detections], *, model: Path, model_sha256: str,
             score_threshold: float, class_names: tuple[str, ...], frames: int) -> None:
        """Write both files (the metadata last, so a half-written cache is never used)."""
        self.meta_json.unlink(missing_ok=True)
        write_detections(self.det_txt, detections)
        meta = {"format": DET_META_FORMAT, "model": str(model), "model_sha256": model_sha256,
                "score_threshold": score_threshold, "class_names": list(class_names),
                "frames": frames}
        tmp = self.meta_json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        tmp.replace(self.meta_json)


def class_names_beside(det_txt: Path) -> tuple[str, ...] | None:
    """Class names from a ``det.json`` next to ``det_txt``, if there is one."""
    meta_path = Path(det_txt).with_name("det.json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    names = meta.get("class_names") if isinstance(meta, dict) else None
    return tuple(str(n) for n in names) if names else None


def video_frames(seq: SequenceData) -> Iterator[npt.NDArray[np.uint8]]:
    """Decode ``video.mp4`` as ``(height, width, 3)`` BGR uint8 frames, in order.

    Raises
    ------
    InputFormatError
        No video, it cannot be decoded, it has another size, or it has fewer
        frames than the sequence.
    """
    video = seq.video
    if video is None:
        raise InputFormatError(f"{seq.path}: no video.mp4 to run the detector on")
    n = 0
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                if (frame.width, frame.height) != (seq.width, seq.height):
                    raise InputFormatError(
                        f"{video}: frames are {frame.width}x{frame.height}, seqinfo.ini says "
                        f"{seq.width}x{seq.height}")
                n += 1
                yield frame.to_ndarray(format="bgr24")
                if n >= seq.n_frames:
                    return
    except (av.FFmpegError, IndexError) as err:
        raise InputFormatError(f"{video}: cannot decode after frame {n}: {err}") from err
    raise InputFormatError(f"{video}: {n} frames, the sequence has {seq.n_frames}")
