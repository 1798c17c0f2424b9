"""Where the labelling stands: frames done, labels per class, agreement per labeller.

Part of the workspace (:mod:`edge.label`); computed from the newest revision
of every item (:meth:`edge.label.store.LabelStore.latest`), nothing stored.

- **Per class**: boxes labelled, frames they are on, and how often the
  workspace's first proposal was the class the labeller chose (``top1``):
  the share of one-key accepts, an estimate of how well the detector and
  the examples know the class so far (a class near 1.0 needs few more
  examples; a new dish starts near 0). ``needed``: examples short of
  :data:`TARGET_EXAMPLES`, the few-label benchmark's five per dish.
- **Agreement**: on a frame labelled twice, both passes complete, boxes are
  paired greedily by IoU (at least :data:`MATCH_IOU`); the frame's agreement
  is the pairs with the same class over the larger of the two box counts
  (1.0 when both are empty). A labeller's figure is the mean over the
  frames they labelled either pass of.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.geometry import box_iou
from edge.label.store import Frame, Lease, Revision

MATCH_IOU = 0.5
TARGET_EXAMPLES = 5


def agreement(first: Sequence[dict[str, Any]], second: Sequence[dict[str, Any]]) -> float:
    """Share of boxes two labellings agree on (box and class), in ``[0, 1]``."""
    if not first and not second:
        return 1.0
    if not first or not second:
        return 0.0
    a = np.array([b["box"] for b in first], np.float64)
    b = np.array([b["box"] for b in second], np.float64)
    iou = box_iou(a, b)
    same = 0
    used_a: set[int] = set()
    used_b: set[int] = set()
    for flat in np.argsort(-iou, axis=None):
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < MATCH_IOU:
            break
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        same += first[i]["class"] == second[j]["class"]
    return same / max(len(first), len(second))


def summary(frames: Sequence[Frame], latest: Sequence[Revision], leases: Sequence[Lease],
            missing_proposals: int) -> dict[str, Any]:
    """The workspace's figures (``GET /api/label/status``; see the module's text)."""
    by_item = {(r.frame_id, r.pass_): r for r in latest}
    items = sum(f.passes for f in frames)
    complete = sum(r.complete for r in latest)
    classes: dict[str, dict[str, Any]] = {}
    for r in latest:
        if r.pass_ != 1:
            continue
        seen: set[str] = set()
        for box in r.boxes:
            name = box.get("class")
            if not name:
                continue
            entry = classes.setdefault(name, {"name": name, "labelled": 0, "frames": 0,
                                              "top1": 0})
            entry["labelled"] += 1
            entry["top1"] += box.get("rank") == 1
            if name not in seen:
                seen.add(name)
                entry["frames"] += 1
    for entry in classes.values():
        entry["top1"] = round(entry["top1"] / entry["labelled"], 3)
        entry["needed"] = max(0, TARGET_EXAMPLES - entry["labelled"])
    people: dict[str, dict[str, Any]] = {}
    for r in latest:
        person = people.setdefault(r.actor or "", {"name": r.actor, "frames": 0, "complete": 0,
                                                  "boxes": 0, "scores": []})
        person["frames"] += 1
        person["complete"] += r.complete
        person["boxes"] += sum(1 for b in r.boxes if b.get("class"))
    for f in frames:
        one, two = by_item.get((f.id, 1)), by_item.get((f.id, 2))
        if f.passes == 2 and one and two and one.complete and two.complete:
            score = agreement(one.boxes, two.boxes)
            for r in (one, two):
                people[r.actor or ""]["scores"].append(score)
    labellers = []
    for person in sorted(people.values(), key=lambda p: str(p["name"])):
        scores = person.pop("scores")
        person["compared"] = len(scores)
        person["agreement"] = round(float(np.mean(scores)), 3) if scores else None
        labellers.append(person)
    return {
        "frames": len(frames), "items": items, "complete": complete,
        "double": sum(f.passes == 2 for f in frames),
        "waiting_for_proposals": missing_proposals,
        "leased": [{"frame": x.frame_id, "pass": x.pass_, "actor": x.actor,
                    "expires_at": round(x.expires_at, 1)} for x in leases],
        "classes": sorted(classes.values(), key=lambda c: (-c["labelled"], c["name"])),
        "labellers": labellers,
    }
