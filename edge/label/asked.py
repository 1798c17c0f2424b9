"""The daemon's questions as workspace frames: imported once, their boxes drawn already.

Beside the importer of selected frames (:mod:`edge.label.importer`): a
question (:mod:`edge.learn.questions`) is a closed frame with the lines the
box was unsure of. :func:`import_question` stores its JPEG and the lines
(box, reason, proposals) in the workspace, once per question and once per
bill (:meth:`edge.label.store.LabelStore.add_question`). When the frame's
proposals are computed, the detector runs on it as on any frame, and
:func:`with_asked` puts each asked line on the box the detector found for
that dish (intersection over union >= :data:`MATCH_IOU`; the detector's box
and embedding stay), or adds the line's own box when the detector found
none (the sushi it sees as a phone, or not at all). Such a box carries
``asked``: its reason and the question's proposals, which the ranking counts
as evidence beside the detector's and the site's labels
(:meth:`edge.label.workspace.Workspace.view`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.fsutil import write_atomic
from edge.label.store import LabelStore, Proposals
from edge.learn.questions import Question

MATCH_IOU = 0.5
"""A detector box this close to an asked line's box is that dish."""


def import_question(store: LabelStore, question: Question) -> tuple[int, bool]:
    """Copy a question's frame into ``store``: ``(frame id, added)`` (see the module's
    text); a question imported before gives its frame and ``False``."""
    sha = hashlib.sha256(question.jpeg).hexdigest()
    name = f"{sha[:20]}.jpg"
    target = store.frames_dir / name
    if not target.exists():
        write_atomic(target, question.jpeg)
    return store.add_question(sha, name, (question.width, question.height),
                              question=question.to_json())


def with_asked(proposals: Proposals, lines: Sequence[dict[str, Any]],
               size: tuple[int, int]) -> Proposals:
    """The detector's ``proposals`` of a question's frame with its asked ``lines``
    (``{"line", "box", "reason", "key", "proposals"}``) on them.

    Each matched detector box gains ``asked``; a line the detector has no box
    for is appended (class ``""``, score 0, a zero embedding: it says nothing
    about other boxes). Boxes are clipped to the ``(width, height)`` frame; a
    line without a box (not in view when the bill closed) is left out.
    """
    boxes = [dict(b) for b in proposals.boxes]
    added = 0
    for line in lines:
        box = _clipped(line.get("box"), size)
        if box is None:
            continue
        asked = {"line": line["line"], "reason": line["reason"],
                 "proposals": [{"class": p["key"], "score": p["score"]}
                               for p in line.get("proposals", ())]}
        best, best_iou = None, MATCH_IOU
        for i, b in enumerate(boxes):
            overlap = iou(b["box"], box)
            if "asked" not in b and overlap >= best_iou:
                best, best_iou = i, overlap
        if best is not None:
            boxes[best]["asked"] = asked
        else:
            boxes.append({"box": box, "class": "", "score": 0.0, "asked": asked})
            added += 1
    emb = proposals.embeddings
    if emb is not None and added:
        emb = np.concatenate([emb, np.zeros((added, emb.shape[1]), np.float32)])
    return Proposals(proposals.frame_id, proposals.model, boxes, emb)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``x1 y1 x2 y2`` boxes (0 for no overlap)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _clipped(box: Any, size: tuple[int, int]) -> list[float] | None:
    """``box`` inside the frame, rounded to 0.1 px; None when nothing of it is left."""
    if not box or len(box) != 4:
        return None
    limits = (size[0], size[1]) * 2
    x1, y1, x2, y2 = (round(min(max(float(v), 0.0), float(lim)), 1)
                      for v, lim in zip(box, limits, strict=True))
    return [x1, y1, x2, y2] if x1 < x2 and y1 < y2 else None
