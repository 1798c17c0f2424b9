"""Noise axis that adds objects: identical dishes side by side (part of :mod:`edge.eval.noise`)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from edge.eval.noise.episode import Axis, Episode, check_share
from edge.eval.tape import F64, Tape, Truth
from edge.geometry import box_iou
from edge.groundtruth import BillLine, BoxRecord


@dataclass(frozen=True, slots=True)
class Twins(Axis):
    """Identical dishes side by side: ``share`` of the dishes on trays get a twin.

    The twin is the dish's ground truth and its detections (whatever the
    source saw of it: misses, scores, classes) shifted in the picture by one
    box width or height, to a side (tried in random order) where, in the frame
    the dish is best visible, it lies inside its tray's box and overlaps no
    other object of the tray. It is added to ``gt/gt.txt`` (new track id,
    same visibility) and to its tray's expected bill. Caveats: the shift is in
    picture coordinates, so a tray's rotation (up to 8 degrees) slides the
    twin a little against its neighbours, and the twin's detections are the
    original's, so its misses are the original's too. A dish with no free side
    gets no twin.
    """

    share: float
    name: ClassVar[str] = "twins"
    level_name: ClassVar[str] = "share"

    def __post_init__(self) -> None:
        check_share("twins share", self.share)

    def apply(self, ep: Episode, rng: np.random.Generator) -> Episode:
        seq, t, tape = ep.seq, ep.truth, ep.tape
        next_id = int(t.track_id.max(initial=0)) + 1
        gt = {f: list(rows) for f, rows in seq.gt.items()}
        added: list[Tape] = []
        trays = []
        for tray in seq.trays or ():
            items = list(tray.items)
            twins: list[tuple[int, F64]] = []  # (dish row index, offset)
            mates = [i.dish_id for i in tray.items] + list(tray.clutter_ids)
            for item in tray.items:
                draw, sides = rng.random(), rng.permutation(4)
                rows = t.rows_of(item.dish_id)
                if draw >= self.share or not len(rows):
                    continue
                ref = int(rows[np.argmax(t.visibility[rows])])
                f = int(t.frame[ref])
                tray_box = t.box(tray.tray_id, f)
                if tray_box is None:
                    continue
                b = t.boxes[ref]
                w, h = b[2] - b[0], b[3] - b[1]
                others = [t.boxes[i] for m in mates if (i := t.row(m, f)) is not None]
                others += [t.boxes[r] + off for r, off in twins]
                for s in sides:
                    off = np.array([(w, 0, w, 0), (-w, 0, -w, 0), (0, h, 0, h),
                                    (0, -h, 0, -h)][s], np.float64)
                    nb = b + off
                    fits = (nb[0] >= tray_box[0] and nb[1] >= tray_box[1]
                            and nb[2] <= tray_box[2] and nb[3] <= tray_box[3])
                    if fits and not (others and box_iou(nb, np.array(others)).max() > 0):
                        break
                else:
                    continue
                twins.append((ref, off))
                for r in rows:
                    x1, y1, x2, y2 = t.boxes[r] + off
                    x1, y1 = max(x1, 0.0), max(y1, 0.0)
                    x2, y2 = min(x2, float(seq.width)), min(y2, float(seq.height))
                    if x2 - x1 >= 1 and y2 - y1 >= 1:
                        fr = int(t.frame[r])
                        gt[fr].append(BoxRecord(fr, next_id, x1, y1, x2 - x1, y2 - y1,
                                                float(t.conf[r]), item.class_id,
                                                float(t.visibility[r])))
                mine = tape.keep(tape.owner == item.dish_id)
                added.append(replace(mine, boxes=mine.boxes + off,
                                     owner=np.full(len(mine), next_id, np.int64)))
                items.append(BillLine(next_id, item.class_id, item.key, item.name, item.price))
                next_id += 1
            trays.append(tray if len(items) == len(tray.items) else replace(
                tray, items=tuple(items), total=round(sum(i.price for i in items), 2),
                tags=tuple(sorted({*tray.tags, "noise_twin"}))))
        for extra in added:
            tape = tape.plus(extra)
        new_seq = replace(seq, gt=gt, trays=trays if seq.trays is not None else None)
        return Episode(new_seq, Truth(new_seq), tape, ep.score_pool)
