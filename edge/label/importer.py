"""Frames into the labelling workspace: a ``calibrate select`` folder, or any folder of images.

The first step of the workspace (:mod:`edge.label`). ``calibrate select``
writes ``frame_NNNNNN.jpg`` files and ``selection.json`` (``frames``: 1-based
frame numbers, ``order``: the greedy order, most informative first,
``images``: the file of each frame, ``source``). Frames enter the queue in
``order``, so the frames worth most are labelled first; a folder without
``selection.json`` enters in file-name order. Each image is copied into the
workspace (the selection folder may be deleted afterwards) under its SHA-256,
so importing a folder twice adds nothing. Every ``double_every``-th frame of
the workspace is to be labelled twice, by two people, to measure agreement.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.errors import InputFormatError
from edge.fsutil import write_atomic
from edge.label.store import LabelStore

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
DOUBLE_EVERY = 10
"""One frame in this many is labelled twice (0: none)."""


@dataclass(frozen=True, slots=True)
class Imported:
    """What an import did: frame ids in queue order, and how many were new."""

    frame_ids: list[int]
    added: int
    source: str


def selected_images(folder: Path) -> tuple[list[tuple[Path, int | None]], str]:
    """``[(image, frame number or None)]`` in labelling order, and the source's name.

    Raises
    ------
    InputFormatError
        No such folder, a ``selection.json`` that is not one, a listed image
        missing, or no images at all.
    """
    if not folder.is_dir():
        raise InputFormatError(f"{folder}: no such folder (give the --out folder of "
                               "`dishtracker calibrate select`)")
    sel = folder / "selection.json"
    if not sel.is_file():
        images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise InputFormatError(f"{folder}: no selection.json and no images "
                                   f"({', '.join(IMAGE_SUFFIXES)})")
        return [(p, None) for p in images], str(folder)
    try:
        doc: Any = json.loads(sel.read_text())
        numbers = [int(n) for n in doc.get("order") or doc["frames"]]
        files = dict(zip((int(n) for n in doc["frames"]),
                         doc.get("images") or [f"frame_{int(n):06d}.jpg" for n in doc["frames"]],
                         strict=True))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputFormatError(f"{sel}: not a frame selection ({err!r}); expected "
                               '{"frames": [n, ...], "order": [...], "images": [...]}') from err
    out: list[tuple[Path, int | None]] = []
    for n in numbers:
        path = folder / str(files.get(n, f"frame_{n:06d}.jpg"))
        if not path.is_file():
            raise InputFormatError(f"{sel}: frame {n} is listed but {path.name} is missing")
        out.append((path, n))
    return out, str(doc.get("source", folder))


def import_folder(store: LabelStore, folder: Path, *,
                  double_every: int = DOUBLE_EVERY) -> Imported:
    """Copy the frames of ``folder`` into ``store`` (see the module's text).

    Raises
    ------
    InputFormatError
        As :func:`selected_images`, or an image that does not decode.
    """
    if double_every < 0:
        raise InputFormatError(f"double_every must be >= 0, got {double_every}")
    images, source = selected_images(folder)
    ids, added = [], 0
    for path, number in images:
        data = path.read_bytes()
        pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if pixels is None:
            raise InputFormatError(f"{path}: cannot decode the image")
        sha = hashlib.sha256(data).hexdigest()
        name = f"{sha[:20]}{path.suffix.lower()}"
        target = store.frames_dir / name
        if not target.exists():
            write_atomic(target, data)
        count = len(store.frames()) + 1
        passes = 2 if double_every and count % double_every == 0 else 1
        frame_id, new = store.add_frame(sha, name, (int(pixels.shape[1]), int(pixels.shape[0])),
                                        source=source, source_frame=number, passes=passes)
        ids.append(frame_id)
        added += new
    return Imported(ids, added, source)
