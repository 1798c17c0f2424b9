"""Ground-truth and detection file formats shared by the simulator, evaluators and tracker.

* ``gt/gt.txt`` -- MOTChallenge: ``frame,id,x,y,w,h,conf,class,visibility``;
  frames are 1-based, boxes in pixels (top-left corner, width, height), class
  is the 0-based id of :mod:`edge.catalogue`, visibility in [0, 1].
* ``det.txt`` -- MOTChallenge detections: ``frame,-1,x,y,w,h,score,class,-1``
  (the class column is an extension; files with 7 columns read as class -1).
* ``gt/trays.json`` -- one record per tray and its expected bill (see
  ``docs/FORMATS.md``).
* ``seqinfo.ini`` -- MOTChallenge sequence header plus a ``[DishTracker]``
  section with the simulator's parameters.
"""

from __future__ import annotations

import configparser
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import InputFormatError


@dataclass(frozen=True, slots=True)
class BoxRecord:
    """One row of a MOTChallenge file: an object (or detection) in one frame.

    Attributes
    ----------
    frame : int
        1-based frame number.
    track_id : int
        Object id, constant over the object's life; -1 for detections.
    x, y, w, h : float
        Box in image pixels: top-left corner, width, height.
    conf : float
        1 for ground truth that counts, 0 to ignore; the score for detections.
    class_id : int
        0-based class id (``edge.catalogue``); -1 if unknown.
    visibility : float
        Fraction of the object visible, in [0, 1]; -1 for detections.
    """

    frame: int
    track_id: int
    x: float
    y: float
    w: float
    h: float
    conf: float = 1.0
    class_id: int = -1
    visibility: float = 1.0

    def xyxy(self) -> tuple[float, float, float, float]:
        """Return the box as ``(x1, y1, x2, y2)`` pixels."""
        return (self.x, self.y, self.x + self.w, self.y + self.h)


def format_mot_row(r: BoxRecord) -> str:
    """Format one record as a MOTChallenge text line (no newline)."""
    return (
        f"{r.frame},{r.track_id},{r.x:.2f},{r.y:.2f},{r.w:.2f},{r.h:.2f},"
        f"{r.conf:.4g},{r.class_id},{r.visibility:.3f}"
    )


def write_mot(path: Path, records: Iterable[BoxRecord]) -> None:
    """Write records sorted by (frame, id) as a MOTChallenge text file."""
    rows = sorted(records, key=lambda r: (r.frame, r.track_id))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(format_mot_row(r) + "\n" for r in rows))
    tmp.replace(path)


def parse_mot_line(line: str, *, source: str = "<string>", lineno: int = 0) -> BoxRecord:
    """Parse one MOTChallenge line (7, 9 or 10 comma-separated columns).

    Raises
    ------
    InputFormatError
        The line has the wrong number of columns or a non-numeric value.
    """
    parts = [p.strip() for p in line.split(",")]
    if len(parts) not in (7, 9, 10):
        raise InputFormatError(
            f"{source}:{lineno}: expected 7, 9 or 10 comma-separated columns, got {len(parts)}"
        )
    try:
        nums = [float(p) for p in parts]
    except ValueError as err:
        raise InputFormatError(f"{source}:{lineno}: non-numeric value in {line!r}") from err
    if not all(math.isfinite(v) for v in nums):
        raise InputFormatError(f"{source}:{lineno}: non-finite value in {line!r}")
    frame, tid, x, y, w, h, conf = nums[:7]
    if frame < 1 or frame != int(frame):
        raise InputFormatError(f"{source}:{lineno}: frame must be an integer >= 1, got {parts[0]}")
    if w < 0 or h < 0:
        raise InputFormatError(f"{source}:{lineno}: negative box size {w}x{h}")
    class_id = int(nums[7]) if len(nums) >= 9 else -1
    vis = nums[8] if len(nums) >= 9 else -1.0
    return BoxRecord(int(frame), int(tid), x, y, w, h, conf, class_id, vis)


def read_mot(path: Path) -> list[BoxRecord]:
    """Read a MOTChallenge ground-truth or detection file.

    Raises
    ------
    InputFormatError
        The file is missing or a line is malformed (the message names the line).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InputFormatError(f"cannot read {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        lineno = path.read_bytes()[:err.start].count(b"\n") + 1
        raise InputFormatError(f"{path}:{lineno}: not UTF-8 text ({err.reason})") from err
    out = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            out.append(parse_mot_line(line, source=str(path), lineno=lineno))
    return out


def by_frame(records: Iterable[BoxRecord]) -> dict[int, list[BoxRecord]]:
    """Group records by frame number."""
    out: dict[int, list[BoxRecord]] = {}
    for r in records:
        out.setdefault(r.frame, []).append(r)
    return out


@dataclass(frozen=True, slots=True)
class BillLine:
    """One billed item of a tray's expected bill."""

    dish_id: int  # the dish's track id in gt.txt
    class_id: int
    key: str
    name: str
    price: float


@dataclass(frozen=True, slots=True)
class TrayRecord:
    """Ground truth of one tray (one record of ``gt/trays.json``)."""

    tray_id: int
    first_frame: int
    last_frame: int
    checkout_frame: int | None  # first frame its centre is past the checkout line
    items: tuple[BillLine, ...]  # billable dishes
    clutter_ids: tuple[int, ...] = ()
    total: float = 0.0
    tags: tuple[str, ...] = field(default=())  # e.g. "occluded", "lookalike", "clutter"


TRAYS_FORMAT = "dishtracker-trays/1"


def write_trays(path: Path, trays: Iterable[TrayRecord], meta: Mapping[str, Any]) -> None:
    """Write ``trays.json`` (atomically)."""
    doc = {
        "format": TRAYS_FORMAT,
        **meta,
        "trays": [
            {**asdict(t), "items": [asdict(i) for i in t.items]}
            for t in sorted(trays, key=lambda t: t.tray_id)
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(path)


def read_trays(path: Path) -> tuple[list[TrayRecord], dict[str, Any]]:
    """Read ``trays.json``; returns the trays and the remaining header fields.

    Raises
    ------
    InputFormatError
        Missing file, bad JSON, unknown format or a malformed record.
    """
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as err:  # bad JSON, UTF-8, 4300+ digits
        raise InputFormatError(f"cannot read {path}: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != TRAYS_FORMAT:
        raise InputFormatError(f"{path}: 'format' must be {TRAYS_FORMAT!r}")
    records = doc.get("trays", [])
    if not isinstance(records, list):
        raise InputFormatError(f"{path}: 'trays' must be a list, got {type(records).__name__}")
    trays = []
    for n, t in enumerate(records):
        try:
            items = tuple(BillLine(**i) for i in t["items"])
            trays.append(
                TrayRecord(
                    tray_id=int(t["tray_id"]),
                    first_frame=int(t["first_frame"]),
                    last_frame=int(t["last_frame"]),
                    checkout_frame=(None if t["checkout_frame"] is None
                                    else int(t["checkout_frame"])),
                    items=items,
                    clutter_ids=tuple(int(c) for c in t.get("clutter_ids", ())),
                    total=float(t.get("total", 0.0)),
                    tags=tuple(t.get("tags", ())),
                )
            )
        except (KeyError, TypeError, ValueError, OverflowError) as err:  # int(Infinity)
            raise InputFormatError(f"{path}: trays[{n}] is malformed: {err!r}") from err
    meta = {k: v for k, v in doc.items() if k not in ("format", "trays")}
    return trays, meta


def write_seqinfo(path: Path, *, name: str, fps: float, length: int, width: int,
                  height: int, params: Mapping[str, Any]) -> None:
    """Write a MOTChallenge ``seqinfo.ini`` with a ``[DishTracker]`` parameter section."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # keep MOT's camelCase keys
    cp["Sequence"] = {
        "name": name, "imDir": "video.mp4", "frameRate": f"{fps:g}", "seqLength": str(length),
        "imWidth": str(width), "imHeight": str(height), "imExt": ".mp4",
    }
    cp["DishTracker"] = {k: str(v) for k, v in params.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        cp.write(fh)


def read_seqinfo(path: Path) -> dict[str, dict[str, str]]:
    """Read ``seqinfo.ini`` into ``{section: {key: value}}``."""
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # keep MOT's camelCase keys
    try:
        if not cp.read(path, encoding="utf-8"):
            raise InputFormatError(f"cannot read {path}")
    except configparser.Error as err:  # the message names the line
        raise InputFormatError(f"{path}: {err}") from err
    except UnicodeDecodeError as err:
        raise InputFormatError(f"{path}: not UTF-8 text ({err.reason})") from err
    return {s: dict(cp[s]) for s in cp.sections()}
