"""The workspace's labels as the project's COCO detection format, for ``calibrate train``.

Last step of the workspace (:mod:`edge.label`). The document is the one
``calibrate dataset`` writes (``docs/FORMATS.md``) and ``calibrate train``
reads: ``images[]`` (``id``, ``file_name``, ``width``, ``height``, plus
``complete``: every object on the frame is labelled, and ``source``,
``frame``), ``annotations[]`` (``category_id``, ``bbox`` ``[x, y, w, h]``
pixels, ``area``, ``iscrowd: 0``, ``ignore: 0``, and ``labeller``) and
``categories[]`` in id order: the model's classes first, in its order, then
the classes the labellers added (new dishes), in name order, as
``calibrate train --init`` expects (new classes appended).

Only frames somebody wrote are exported, with pass 1's labels (pass 2
exists to measure agreement). On a frame that is not complete, a box nobody
labelled yet is exported with ``ignore: 1`` (its ``category_id`` the class the
detector proposed, else a dish class): ``calibrate train`` neither learns it
as an object nor as background (its region gets no objectness loss), so
incomplete frames can be trained on. An object with no box at all on such a
frame is still background to the trainer, which is why ``complete`` matters.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.catalogue import BY_KEY, Kind
from edge.fsutil import make_private_dir, write_atomic
from edge.label.store import LabelStore

FORMAT = "dishtracker-labels/1"


def categories(base: Sequence[str], used: Sequence[str]) -> list[str]:
    """Class names in id order: ``base`` (the model's), then new ones in name order."""
    return [*base, *sorted(set(used) - set(base))]


def coco_document(store: LabelStore, base_classes: Sequence[str], *,
                  image_dir: str = "images") -> dict[str, Any]:
    """The COCO document of the workspace (see the module's text).

    ``file_name`` is ``image_dir/<file>`` (the layout :func:`write_dataset` writes).
    """
    frames = {f.id: f for f in store.frames()}
    written = [r for r in store.latest() if r.pass_ == 1]
    names = categories(base_classes, [b["class"] for r in written for b in r.boxes
                                      if b.get("class")])
    index = {name: i for i, name in enumerate(names)}
    any_dish = next((i for i, n in enumerate(names) if _kind(n) != Kind.TRAY.value), 0)
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for r in written:
        f = frames[r.frame_id]
        images.append({"id": f.id, "file_name": f"{image_dir}/{f.file}", "width": f.width,
                       "height": f.height, "complete": r.complete, "source": f.source,
                       "frame": f.source_frame, "version": r.version, "labeller": r.actor})
        proposed = None
        for b in r.boxes:
            ignore = 0
            category = index.get(b.get("class") or "")
            if category is None:
                if r.complete:
                    continue  # cannot happen: a complete frame has every box labelled
                # an object nobody labelled yet on an incomplete frame: not background
                # either; the trainer ignores its region for objectness (the tray or
                # the dish channel, by what the detector proposed), and learns no class
                if proposed is None:
                    props = store.proposals(f.id)
                    proposed = [] if props is None else props.boxes
                p = b.get("proposal")
                said = proposed[p]["class"] if isinstance(p, int) and p < len(proposed) else ""
                category, ignore = index.get(said, any_dish), 1
            x1, y1, x2, y2 = (float(v) for v in b["box"])
            annotations.append({
                "id": len(annotations) + 1, "image_id": f.id, "category_id": category,
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "area": round((x2 - x1) * (y2 - y1), 2), "iscrowd": 0, "ignore": ignore,
                "labeller": r.actor})
    return {
        "format": FORMAT,
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": n, "supercategory": _kind(n)}
                       for i, n in enumerate(names)],
    }


def write_dataset(store: LabelStore, out: Path, base_classes: Sequence[str]) -> dict[str, Any]:
    """Write ``out/train/annotations.json`` and ``out/train/images/`` (``calibrate train
    --data out``); returns the document."""
    split = out / "train"
    make_private_dir(split / "images")
    doc = coco_document(store, base_classes)
    for image in doc["images"]:
        target = split / image["file_name"]
        if not target.exists():
            shutil.copyfile(store.frames_dir / Path(image["file_name"]).name, target)
    write_atomic(split / "annotations.json", json.dumps(doc, indent=1).encode())
    return doc


def _kind(name: str) -> str:
    item = BY_KEY.get(name)
    return item.kind.value if item is not None else "dish"
