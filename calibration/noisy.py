"""Training on imperfect labels: objects nobody labelled, and labels that are wrong.

A site's labels are made in a hurry by people who know the dishes, not by
annotators: some objects on a frame are never boxed, and some boxes carry the
wrong dish. Trained naively, an unboxed dish is taught as background (the
detector learns to miss it) and a wrong label teaches the classifier the wrong
dish. :mod:`calibration.trainer` has one answer for each (``calibrate train
--unlabelled proposals --noisy-labels drop``):

* **Unlabelled objects: ignore regions around unlabelled proposals.** Before
  training, the model the run starts from (``--init``: the serving model)
  runs over every training frame that is not marked ``complete``; each of its
  class-agnostic boxes (objectness >= ``proposal_score``) that overlaps no
  labelled box (IoU < :data:`MATCH_IOU`) becomes an *ignore* box: neither a
  positive nor a negative for objectness in its region
  (:func:`calibration.targets.encode_targets`). The labelling workspace's
  export does the same with the proposals it showed (``docs/LABELLING.md``);
  this covers labels from anywhere else. A frame marked complete keeps its
  unlabelled proposals as negatives: there they are the model's false
  positives. Replay frames are never touched.
* **Wrong labels: drop the labels the model keeps contradicting.** A network
  learns the pattern most labels of a class share before it memorises the
  exceptions (Arpit et al. 2017, "A closer look at memorization"); Co-teaching
  (Han et al. 2018) and O2U-Net train on the small-loss examples for that
  reason. Here each labelled dish of the site's frames is followed through
  training (:class:`LabelTrust`): an exponential average of the classifier's
  probabilities over its labelled cells, updated at every sighting (with
  augmentation, each one differs). After ``warmup_epochs``, a dish whose
  average prefers another class while giving its own label less than
  ``floor`` is a suspect, provided its class is learned (most of its labels
  are believed: early on, a new dish looks like the known dish it resembles,
  and doubting all its labels would keep it from ever being learned). A
  suspect's cells weigh 0 in the classification loss of the next epoch (its
  box still teaches objectness and size, which a wrong dish name does not
  spoil). A suspect is re-judged every epoch: no longer fitted,
  a wrong label stays contradicted, while a right one the model later learns
  from its class's other examples comes back. Unlike a fixed forget rate it
  needs no estimate of the noise: clean labels lose few examples. The last
  judgement is written to ``label_trust.json`` (the labels a person should
  look at again).

Only the ``factorized`` head has the per-cell classifier this needs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from calibration.augment import letterbox, letterbox_params
from calibration.data import FrameRecord, normalize_image, read_frame
from calibration.model import TRAY_CLASS, DishNet
from calibration.train import PROPOSAL_SCORE, TRUST_FLOOR  # torch-free: the CLI's defaults
from edge.geometry import box_iou

__all__ = ["PROPOSAL_SCORE", "TRUST_FLOOR", "LabelTrust", "load_or_find_proposals",
           "number_objects", "with_ignore_boxes"]

MATCH_IOU = 0.3  # a proposal overlapping a labelled box this much is that box
TRUST_WARMUP_EPOCHS = 1  # epochs every label counts, while the model learns the majority
TRUST_MOMENTUM = 0.5  # weight of the newest sighting in a label's running probabilities
LEARNED = 0.5  # a class whose labels' median own probability is this is learned
BATCH = 16


def class_agnostic_boxes(
    model: DishNet, images: list[NDArray[Any]], score: float
) -> list[NDArray[Any]]:
    """The model's boxes on letterboxed ``images``, scored by objectness alone.

    Returns
    -------
    list of np.ndarray
        Per image ``(n, 5)``: x1, y1, x2, y2 in input pixels and the channel's
        class (0 a tray, 1 any dish for the factorized head; the class for the
        centernet head).
    """
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), BATCH):
            chunk = images[start:start + BATCH]
            batch = torch.from_numpy(np.stack([normalize_image(i) for i in chunk]))
            outputs = model(batch)
            factorized = len(outputs) == 4
            if factorized:  # uniform class logits: a dish's score is objectness / (C - 1)
                outputs = (*outputs[:3], torch.zeros_like(outputs[3]))
            for det in model.decode(outputs).numpy():
                dish = det[:, 5] != TRAY_CLASS
                objectness = det[:, 4] * np.where(
                    dish & factorized, outputs[3].shape[1] - 1, 1)  # a tray's score is its own
                keep = objectness >= score
                classes = (dish[keep] if factorized else det[keep, 5]).astype(np.float32)
                out.append(np.concatenate([det[keep, :4], classes[:, None]], axis=1))
    return out


def unlabelled_proposals(
    model: DishNet,
    frames: list[FrameRecord],
    input_size: tuple[int, int],
    *,
    score: float = PROPOSAL_SCORE,
) -> dict[str, list[list[float]]]:
    """The model's proposals that no label covers, per frame not marked complete.

    Returns
    -------
    dict
        Frame path → ``[[x1, y1, x2, y2, class], ...]`` in frame pixels.
    """
    result: dict[str, list[list[float]]] = {}
    todo = [f for f in {str(f.path): f for f in frames}.values() if f.complete is not True]
    for start in range(0, len(todo), BATCH):
        chunk = todo[start:start + BATCH]
        images = [letterbox(read_frame(f.path), input_size)[0] for f in chunk]
        for frame, boxes in zip(chunk, class_agnostic_boxes(model, images, score), strict=True):
            box = letterbox_params(frame.size, input_size)
            shift = np.array([box.pad_x, box.pad_y] * 2, np.float32)
            in_frame = (boxes[:, :4] - shift) / box.scale
            overlap = box_iou(in_frame, frame.boxes).max(axis=1, initial=0.0)
            result[str(frame.path)] = [
                [*(round(float(v), 1) for v in b), float(c)]
                for b, c, o in zip(in_frame, boxes[:, 4], overlap, strict=True) if o < MATCH_IOU
            ]
    return result


def with_ignore_boxes(
    frames: list[FrameRecord], proposals: dict[str, list[list[float]]]
) -> list[FrameRecord]:
    """``frames`` with their unlabelled proposals appended as ignore boxes (id -1)."""
    out = []
    for frame in frames:
        extra = np.asarray(proposals.get(str(frame.path), []), np.float32).reshape(-1, 5)
        if not len(extra):
            out.append(frame)
            continue
        ids = None if frame.ids is None else np.concatenate(
            [frame.ids, np.full(len(extra), -1, np.int64)])
        out.append(replace(
            frame,
            boxes=np.concatenate([frame.boxes, extra[:, :4]]),
            classes=np.concatenate([frame.classes, extra[:, 4].astype(np.int64)]),
            ignore=np.concatenate([frame.ignore, np.ones(len(extra), bool)]),
            ids=ids,
        ))
    return out


def load_or_find_proposals(
    cache: Path, model: DishNet, frames: list[FrameRecord], input_size: tuple[int, int],
    score: float,
) -> dict[str, list[list[float]]]:
    """:func:`unlabelled_proposals`, cached in ``cache`` so a resumed run sees the same ones."""
    if cache.exists():
        doc = json.loads(cache.read_text())
        if doc.get("score") == score:
            frames_doc: dict[str, list[list[float]]] = doc["frames"]
            return frames_doc
    found = unlabelled_proposals(model, frames, input_size, score=score)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps({"score": score, "frames": found}))
    tmp.replace(cache)
    return found


def number_objects(frames: list[FrameRecord]) -> tuple[list[FrameRecord], list[dict[str, Any]]]:
    """Give every labelled dish (not a tray, not an ignore box) of ``frames`` an id.

    Returns
    -------
    tuple
        The frames with :attr:`FrameRecord.ids` set, and per id its frame path,
        box (frame pixels) and label.
    """
    out: list[FrameRecord] = []
    objects: list[dict[str, Any]] = []
    for frame in frames:
        ids = np.full(len(frame.classes), -1, np.int64)
        for i, (box, cls, skip) in enumerate(zip(frame.boxes, frame.classes, frame.ignore,
                                                 strict=True)):
            if int(cls) != TRAY_CLASS and not skip:
                ids[i] = len(objects)
                objects.append({"path": str(frame.path), "box": [round(float(v), 1) for v in box],
                                "label": int(cls)})
        out.append(replace(frame, ids=ids))
    return out, objects


class LabelTrust:
    """How much the classifier believes each followed label; see the module docstring.

    Parameters
    ----------
    labels : np.ndarray
        ``(n,)`` class id (>= 1) of each followed object, by id.
    num_classes : int
        C, tray included.
    """

    def __init__(
        self,
        labels: NDArray[Any],
        num_classes: int,
        *,
        floor: float = TRUST_FLOOR,
        warmup_epochs: int = TRUST_WARMUP_EPOCHS,
        momentum: float = TRUST_MOMENTUM,
    ) -> None:
        if not 0.0 < floor < 1.0:
            raise ValueError(f"trust floor must be in (0, 1), got {floor}")
        self.labels = np.asarray(labels, np.int64)
        self.floor, self.warmup_epochs, self.momentum = floor, warmup_epochs, momentum
        self.prob = np.full((len(self.labels), num_classes - 1), np.nan, np.float32)
        self.weight = np.ones(len(self.labels), np.float32)

    def class_weight(self, objects: torch.Tensor) -> torch.Tensor:
        """``(N, h, w)`` loss weight of each cell: its object's weight, 1 where none."""
        table = torch.from_numpy(np.concatenate([self.weight, np.ones(1, np.float32)]))
        return table[torch.where(objects >= 0, objects, len(self.weight))]

    def observe(self, objects: torch.Tensor, class_logits: torch.Tensor) -> None:
        """Fold one batch's class probabilities into its objects' running averages."""
        mask = objects >= 0
        if not bool(mask.any()):
            return
        with torch.no_grad():
            probs = torch.softmax(class_logits[:, TRAY_CLASS + 1:].float(), dim=1)
            cells = probs.permute(0, 2, 3, 1)[mask]
            ids, inverse = torch.unique(objects[mask], return_inverse=True)
            sums = torch.zeros(len(ids), cells.shape[1]).index_add_(0, inverse, cells)
            mean = (sums / torch.bincount(inverse).unsqueeze(1)).numpy()
        rows = ids.numpy()
        old = self.prob[rows]
        fresh = np.isnan(old[:, 0])
        self.prob[rows] = np.where(fresh[:, None], mean,
                                   self.momentum * mean + (1 - self.momentum) * old)

    def end_epoch(self, epochs_done: int) -> dict[str, int]:
        """Judge every label after an epoch; returns counts for the run's history."""
        seen = ~np.isnan(self.prob[:, 0])
        if epochs_done < self.warmup_epochs or not seen.any():
            return {"labels_followed": len(self.labels), "labels_doubted": 0}
        suspect = self.suspects() & seen
        self.weight = np.where(suspect, 0.0, 1.0).astype(np.float32)
        return {"labels_followed": len(self.labels), "labels_doubted": int(suspect.sum())}

    def suspects(self) -> NDArray[Any]:
        """``(n,)`` bool: the running average prefers another class and gives the label
        less than ``floor``, and the label's class is learned: the median of its
        labels' own probabilities is at least :data:`LEARNED`. A class the model has
        not learned yet (a new dish, early on) contradicts nothing."""
        seen = ~np.isnan(self.prob[:, 0])
        prob = np.nan_to_num(self.prob, nan=1.0)
        own = prob[np.arange(len(self.labels)), self.labels - 1]
        best = prob.argmax(axis=1) + 1
        learned = np.zeros(len(self.labels), bool)
        for cls in np.unique(self.labels):
            mine = (self.labels == cls) & seen
            learned[self.labels == cls] = bool(mine.any()) and float(
                np.median(own[mine])) >= LEARNED
        result: NDArray[Any] = (best != self.labels) & (own < self.floor) & learned
        return result

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps to resume the judgement (tensors: checkpoints load
        with ``weights_only``)."""
        return {"prob": torch.from_numpy(self.prob.copy()),
                "weight": torch.from_numpy(self.weight.copy())}

    def load(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state`.

        Raises
        ------
        ValueError
            If it follows other labels than this run's (another frame set).
        """
        prob = np.asarray(state["prob"], np.float32).copy()
        if prob.shape != self.prob.shape:
            raise ValueError(f"saved label trust follows {prob.shape} labels x classes, this "
                             f"run {self.prob.shape}: not the same labelled frames")
        self.prob = prob
        self.weight = np.asarray(state["weight"], np.float32).copy()

    def report(self, objects: list[dict[str, Any]], class_names: list[str]) -> dict[str, Any]:
        """The doubted labels, most contradicted first, for ``label_trust.json``."""
        prob = np.nan_to_num(self.prob, nan=1.0)
        doubted = []
        for i in np.flatnonzero(self.weight == 0):
            best = int(prob[i].argmax()) + 1
            doubted.append({**objects[i], "label_name": class_names[objects[i]["label"]],
                            "p_label": round(float(prob[i, self.labels[i] - 1]), 3),
                            "model_says": class_names[best],
                            "p_model": round(float(prob[i, best - 1]), 3)})
        doubted.sort(key=lambda d: d["p_label"])
        return {"followed": len(self.labels), "doubted": doubted, "floor": self.floor}
