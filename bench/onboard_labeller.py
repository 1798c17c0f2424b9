"""The scripted labeller of ``bench/onboard.py``: a person who knows the ground truth.

It works through the labelling workspace's HTTP API (docs/LABELLING.md) as a
person at ``/label.html`` does, one saved change per action:

* lease the next frame (``POST /api/label/lease``) and read its boxes, each
  with its three ranked candidates;
* go through the boxes in the page's order. A box that covers an object of
  the ground truth (IoU >= ``box_iou``, pairs chosen greedily by IoU, one box
  per object, whatever the classes) is labelled with the object's class:
  **accept** when the class is among the box's candidates (keys ``1``-``3``),
  **correct** when it has to be searched in the menu. A box that covers no
  object (a false detection, a second box on one object) is **deleted**;
* **draw** each object the detector left without a box (at least
  ``must_visible`` visible: a dish mostly under a hand is not seen), then
  label it as above (a drawn box's candidates are the classes labelled most);
* mark the frame **complete**.

Each of these is one action and one ``PUT /api/label/frames/{id}``; the
answer is the frame re-ranked over every label so far, so a new dish labelled
on one box is proposed for the next box of that dish, on this frame and the
next ones. The box a person accepts is the detector's, not the ground
truth's: that is what a labeller who does not fiddle with corners trains on.

:func:`next_action` is the pure part (state in, one action out): the
labeller resumes a half-labelled frame from what the workspace shows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import aiohttp

from edge.label.asked import iou

Box = tuple[float, float, float, float]
Kind = Literal["accept", "correct", "delete", "draw", "complete"]
KINDS: tuple[Kind, ...] = ("accept", "correct", "delete", "draw", "complete")

BOX_IOU = 0.5
"""A detector's box this close to an object is accepted as that object's box (the
overlap mAP@0.5 counts as a hit; the shipped model's boxes of known dishes lie at
0.75-0.95 of the simulator's)."""
MUST_VISIBLE = 0.5
"""Objects at least this visible must be boxed (less: ignored by the dataset export
and the evaluation too)."""
MIN_DRAWN_PX = 4.0
"""A missing object whose box, inside the picture, is narrower or lower is not drawn."""


@dataclass(frozen=True, slots=True)
class Truth:
    """One object of the ground truth on a frame: ``box`` x1, y1, x2, y2 pixels."""

    box: Box
    name: str
    visibility: float


@dataclass(frozen=True, slots=True)
class Action:
    """One labeller action: the frame's boxes after it (the ``PUT`` body).

    ``name`` is the true class of the object acted on (None for a deletion
    and for completing the frame); ``rank`` the candidate chosen (1-3), None
    when the class came from the menu.
    """

    kind: Kind
    boxes: list[dict[str, Any]]
    complete: bool
    name: str | None = None
    rank: int | None = None


def match(boxes: Sequence[dict[str, Any]], truth: Sequence[Truth],
          box_iou: float = BOX_IOU) -> dict[int, int]:
    """``{box index: truth index}``: pairs with IoU >= ``box_iou``, the best overlap
    first, each box and each object at most once."""
    pairs = sorted(((iou(b["box"], t.box), i, j) for i, b in enumerate(boxes)
                    for j, t in enumerate(truth)), reverse=True)
    out: dict[int, int] = {}
    taken: set[int] = set()
    for overlap, i, j in pairs:
        if overlap < box_iou:
            break
        if i not in out and j not in taken:
            out[i] = j
            taken.add(j)
    return out


def _clipped(box: Box, width: float, height: float) -> Box:
    return (min(max(box[0], 0.0), width), min(max(box[1], 0.0), height),
            min(max(box[2], 0.0), width), min(max(box[3], 0.0), height))


def _label(boxes: list[dict[str, Any]], i: int, name: str) -> Action:
    names = [c["class"] for c in boxes[i].get("candidates") or []]
    rank = names.index(name) + 1 if name in names[:3] else None
    after = [dict(b) for b in boxes]
    after[i] = {**after[i], "class": name, "rank": rank}
    return Action("accept" if rank else "correct", after, False, name, rank)


def next_action(item: dict[str, Any], truth: Sequence[Truth], *, box_iou: float = BOX_IOU,
                must_visible: float = MUST_VISIBLE) -> Action | None:
    """The next thing a person who knows ``truth`` does on the frame ``item``
    (as ``GET /api/label/frames/{id}`` shows it), or None when it is complete.

    Parameters
    ----------
    item : dict
        ``boxes`` (each ``box`` x1, y1, x2, y2 pixels, ``class`` or None,
        ``proposal``, ``rank``, ``candidates``), ``width``, ``height``,
        ``complete``.
    truth : sequence of Truth
        Every object on the frame.
    box_iou : float
        Overlap at which a box is taken as an object's.
    must_visible : float
        Objects at least this visible are drawn when no box covers them.
    """
    if item.get("complete"):
        return None
    boxes = [{k: b.get(k) for k in ("box", "class", "proposal", "rank", "candidates")}
             for b in item["boxes"]]
    size = (float(item["width"]), float(item["height"]))
    seen = [Truth(_clipped(t.box, *size), t.name, t.visibility) for t in truth]
    pairs = match(boxes, seen, box_iou)
    for i, b in enumerate(boxes):
        if b["class"] is None:
            if i in pairs:
                return _label(boxes, i, seen[pairs[i]].name)
            return Action("delete", boxes[:i] + boxes[i + 1:], False)
    covered = set(pairs.values())
    for j, t in enumerate(seen):
        x1, y1, x2, y2 = t.box
        if (j in covered or t.visibility < must_visible or x2 - x1 < MIN_DRAWN_PX
                or y2 - y1 < MIN_DRAWN_PX):
            continue
        drawn = {"box": [round(v, 1) for v in t.box], "class": None, "proposal": None,
                 "rank": None, "candidates": []}
        return Action("draw", [*boxes, drawn], False, t.name)
    return Action("complete", boxes, True)


@dataclass
class Tally:
    """What the labeller did: actions by kind, by the true class acted on, per frame."""

    kinds: Counter[str] = field(default_factory=Counter)
    by_class: dict[str, Counter[str]] = field(default_factory=dict)
    frames: set[int] = field(default_factory=set)

    def add(self, action: Action, frame: int) -> None:
        """Count one action on ``frame``."""
        self.kinds[action.kind] += 1
        if action.name is not None:
            self.by_class.setdefault(action.name, Counter())[action.kind] += 1
        self.frames.add(frame)

    @property
    def total(self) -> int:
        """Actions in all."""
        return sum(self.kinds.values())

    def of(self, name: str) -> int:
        """Actions on objects of class ``name`` (accepted, corrected, drawn)."""
        return sum(self.by_class.get(name, Counter()).values())

    def summary(self) -> dict[str, Any]:
        """JSON-ready counts."""
        return {"actions": self.total, "by_kind": {k: self.kinds.get(k, 0) for k in KINDS},
                "by_class": {n: dict(c) for n, c in sorted(self.by_class.items())},
                "frames": len(self.frames)}


class Workspace(Protocol):
    """What the labeller needs of the workspace (:class:`HttpWorkspace`, or a test's)."""

    async def lease(self, after: int | None) -> dict[str, Any] | None:
        """Lease the next frame to label after ``after``; None when none is left."""

    async def save(self, item: dict[str, Any], boxes: list[dict[str, Any]], *,
                   complete: bool) -> dict[str, Any]:
        """Save ``boxes`` as the new revision of ``item``; the frame as it is now."""


class HttpWorkspace:
    """The workspace's routes over HTTP with a labeller's token."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http = http
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    async def lease(self, after: int | None) -> dict[str, Any] | None:
        body: dict[str, Any] = {"step": "next"}
        if after is not None:
            body["after"] = after
        async with self.http.post(f"{self.base}/api/label/lease", json=body,
                                  headers=self.headers) as resp:
            data = await _answer(resp)
        item: dict[str, Any] | None = data["item"]
        return item

    async def save(self, item: dict[str, Any], boxes: list[dict[str, Any]], *,
                   complete: bool) -> dict[str, Any]:
        body = {"pass": item["pass"], "version": item["version"], "complete": complete,
                "boxes": [{k: b.get(k) for k in ("box", "class", "proposal", "rank")}
                          for b in boxes]}
        async with self.http.put(f"{self.base}/api/label/frames/{item['frame']}", json=body,
                                 headers=self.headers) as resp:
            data: dict[str, Any] = await _answer(resp)
        return data


async def _answer(resp: aiohttp.ClientResponse) -> Any:
    data = await resp.json(content_type=None)
    if resp.status != 200:
        raise RuntimeError(f"{resp.method} {resp.url.path}: {resp.status} {data}")
    return data


TruthOf = Callable[[dict[str, Any]], Sequence[Truth]]
"""The ground truth of a leased frame (its ``source`` and ``source_frame``)."""


async def label_all(workspace: Workspace, truth_of: TruthOf, tally: Tally, *,
                    box_iou: float = BOX_IOU, must_visible: float = MUST_VISIBLE,
                    log: Path | None = None,
                    progress: Callable[[str], None] | None = None) -> Tally:
    """Label every frame the workspace leases until none is left.

    Each action is added to ``tally`` and, with ``log``, appended to it as a
    JSON line (``frame``, ``kind``, ``name``, ``rank``), so an interrupted run
    goes on with its counts (:func:`read_log`).

    Raises
    ------
    RuntimeError
        The workspace refused a save, or a frame took more actions than its
        boxes and objects can need (the script and the workspace disagree).
    """
    item = await workspace.lease(None)
    while item is not None:
        truth = truth_of(item)
        done = 0
        limit = 2 * (len(item["boxes"]) + 2 * len(truth)) + 1
        while (action := next_action(item, truth, box_iou=box_iou,
                                     must_visible=must_visible)) is not None:
            if done >= limit:
                raise RuntimeError(f"frame {item['frame']}: {done} actions and not complete; "
                                   f"the last was {action.kind} ({action.name})")
            item = await workspace.save(item, action.boxes, complete=action.complete)
            tally.add(action, item["frame"])
            done += 1
            if log is not None:
                with log.open("a") as fh:
                    fh.write(json.dumps({"frame": item["frame"], **asdict(action),
                                         "boxes": len(action.boxes)}) + "\n")
        if progress is not None:
            progress(f"frame {item['frame']} ({item['source_frame']} of {item['source']}): "
                     f"{done} actions, {len(item['boxes'])} boxes; {tally.total} in all")
        item = await workspace.lease(item["frame"])
    return tally


def read_log(log: Path) -> Tally:
    """The tally of a log :func:`label_all` wrote (empty when there is none)."""
    tally = Tally()
    if log.is_file():
        for line in log.read_text().splitlines():
            row = json.loads(line)
            tally.add(Action(row["kind"], [], row["complete"], row["name"], row["rank"]),
                      row["frame"])
    return tally
