"""``dishtracker calibrate propose``: label proposals for a site's new dishes.

Labelling a new menu by drawing boxes is slow; confirming a proposal is fast.
This tool takes a few labelled frames (the *support* set: a COCO split, new
classes included) and unlabelled frames, lets the shipped detector find the
objects (its tray/item objectness is class-agnostic, so it finds dishes it
has never been trained on), describes every object by the detector's own
feature maps pooled over its box (the *embedding*), and ranks each
unlabelled object's candidate classes by nearest-neighbour similarity to the
labelled examples. A person then confirms or corrects the top proposal
instead of drawing: the output is a COCO file with the proposed class,
the ranked candidates and a ``review`` flag on the uncertain ones, plus a
contact sheet of the crops sorted by class and confidence.

Where it sits: a site tool between ``calibrate dataset`` (or a site's own
labelled frames) and ``calibrate train``; it uses the daemon's ONNX Runtime
detector and preprocessing (:mod:`edge.detect`) unchanged, plus a second
session over the same model that exposes the feature tensors.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from tqdm import tqdm

from calibration.data import read_split
from calibration.frame_sources import IMAGE_SUFFIXES, image_files
from edge.config import DEFAULT_MODEL
from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.detect.preprocess import Letterbox
from edge.errors import ConfigError, InputFormatError, ModelError
from edge.fsutil import write_atomic
from edge.geometry import box_iou
from edge.label.ranking import knn_scores

FloatArray = npt.NDArray[np.float32]

# DishNet's feature tensors (calibration/model.py, exported names): the item
# classifier's last hidden layer (class-discriminative) and the neck's output
# (generic appearance). Either alone works; both together rank best.
DEFAULT_TAPS = ("head/classes", "neck/fuse")


def _last_relu(model: onnx.ModelProto, fragment: str) -> str | None:
    """Output name of the last Relu whose node name contains ``fragment``."""
    found = None
    for node in model.graph.node:
        if node.op_type == "Relu" and fragment in node.name:
            found = node.output[0]
    return found


class Embedder:
    """Detect objects and describe each by the detector's pooled feature maps.

    Parameters
    ----------
    model : Path
        A DishNet ONNX model (the shipped one or a ``calibrate train`` export).
    threads : int
        ONNX Runtime threads.
    score_threshold : float
        Detections below are dropped. Low by default: on a dish it has never
        seen, the detector's class probability is spread over look-alikes, so
        its score (objectness x class probability) is lower than usual.
    taps : sequence of str
        Name fragments of the feature tensors to pool (see :data:`DEFAULT_TAPS`).

    Raises
    ------
    ModelError
        If the model cannot be loaded or has none of the feature tensors.
    """

    def __init__(self, model: Path, *, threads: int = 2, score_threshold: float = 0.1,
                 taps: Sequence[str] = DEFAULT_TAPS) -> None:
        self.detector = OnnxRuntimeDetector(model, threads=threads,
                                            score_threshold=score_threshold)
        proto = onnx.load(str(model))
        names = [name for name in (_last_relu(proto, t) for t in taps) if name]
        if not names:
            raise ModelError(f"{model}: no feature tensor matching {list(taps)}; proposals "
                             "need a DishNet model (calibrate train / calibrate export)")
        del proto.graph.output[:]
        proto.graph.output.extend(
            onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in names)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(proto.SerializeToString(), sess_options=options,
                                             providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.taps = names
        self.letterbox = Letterbox.from_info(self.detector.info)
        self.class_names = list(self.detector.info.class_names)

    def embed(self, image: npt.NDArray[np.uint8], boxes: FloatArray) -> FloatArray:
        """Unit-length embeddings ``(n, D)`` of ``boxes`` (x1, y1, x2, y2 source pixels)."""
        tensor, mapping = self.letterbox(image)
        maps = self._session.run(self.taps, {self._input: tensor[None]})
        net = mapping.to_network(np.asarray(boxes, np.float32).reshape(-1, 4))
        parts = [_pool(np.asarray(m[0], np.float32), net, self.letterbox.input_size)
                 for m in maps]
        return _unit(np.concatenate([_unit(p) for p in parts], axis=1))

    def detect_and_embed(self, image: npt.NDArray[np.uint8],
                         ) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Item boxes (trays left out), their detector scores and their embeddings."""
        det = self.detector.detect([image])[0]
        tray = self.class_names.index("tray") if "tray" in self.class_names else -1
        keep = det.classes != tray
        boxes, scores = det.boxes[keep], det.scores[keep]
        return boxes, scores, self.embed(image, boxes)

    def close(self) -> None:
        """Release both sessions."""
        self.detector.close()


def _pool(fmap: FloatArray, boxes: FloatArray, input_size: tuple[int, int]) -> FloatArray:
    """Mean of ``fmap`` ``(C, h, w)`` over the central half of each box (network pixels)."""
    channels, fh, fw = fmap.shape
    sx, sy = fw / input_size[0], fh / input_size[1]
    out = np.zeros((len(boxes), channels), np.float32)
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        cx, cy, hw, hh = (x1 + x2) / 2 * sx, (y1 + y2) / 2 * sy, (x2 - x1) / 4 * sx, \
            (y2 - y1) / 4 * sy
        c0 = int(np.clip(np.floor(cx - hw), 0, fw - 1))
        c1 = int(np.clip(np.ceil(cx + hw), c0 + 1, fw))
        r0 = int(np.clip(np.floor(cy - hh), 0, fh - 1))
        r1 = int(np.clip(np.ceil(cy + hh), r0 + 1, fh))
        out[i] = fmap[:, r0:r1, c0:c1].mean(axis=(1, 2))
    return out


def _unit(x: FloatArray) -> FloatArray:
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6),
                      np.float32)


@dataclass(frozen=True, slots=True)
class Support:
    """The labelled examples: embeddings, class ids and the categories they use."""

    embeddings: FloatArray
    labels: npt.NDArray[np.int64]
    class_names: list[str]
    counts: dict[str, int]


def build_support(embedder: Embedder, split_dir: Path, *, include_ignored: bool = False,
                  progress: bool = True) -> Support:
    """Embed every labelled box of a COCO split (the few labelled frames).

    Raises
    ------
    InputFormatError
        If the split cannot be read or holds no labelled box.
    """
    split = read_split(split_dir)
    embs: list[FloatArray] = []
    labels: list[npt.NDArray[np.int64]] = []
    for frame in tqdm(split.frames, desc="support", unit="img", disable=not progress):
        image = _read(frame.path)
        keep = np.ones(len(frame.classes), bool) if include_ignored else ~frame.ignore
        if "tray" in split.class_names:
            keep &= frame.classes != split.class_names.index("tray")
        if keep.any():
            embs.append(embedder.embed(image, frame.boxes[keep]))
            labels.append(frame.classes[keep])
    if not embs:
        raise InputFormatError(f"{split_dir}: no labelled boxes to learn from")
    label_arr = np.concatenate(labels)
    counts = {split.class_names[c]: int((label_arr == c).sum()) for c in np.unique(label_arr)}
    return Support(np.concatenate(embs), label_arr, split.class_names, counts)


def _read(path: Path) -> npt.NDArray[np.uint8]:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputFormatError(f"{path}: cannot decode image")
    return np.asarray(image, np.uint8)


def unlabelled_images(source: Path) -> list[tuple[Path, dict[str, Any]]]:
    """``(path, COCO image record)`` of a folder of images or of a COCO split's images.

    Raises
    ------
    InputFormatError
        If ``source`` does not exist or holds no image.
    """
    if (source / "annotations.json").is_file():
        doc = json.loads((source / "annotations.json").read_text())
        found = [(source / im["file_name"], dict(im)) for im in doc.get("images", [])]
    elif source.is_dir():
        paths = image_files(source)
        found = [(p, {"id": i + 1, "file_name": str(p.relative_to(source))})
                 for i, p in enumerate(paths)]
    else:
        raise InputFormatError(f"{source}: no such folder")
    if not found:
        raise InputFormatError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return found


def propose(embedder: Embedder, support: Support, images: list[tuple[Path, dict[str, Any]]],
            *, k: int = 3, review_margin: float = 0.05, top: int = 3,
            progress: bool = True) -> dict[str, Any]:
    """Proposals for every object the detector finds in ``images``.

    Returns a COCO document (``images``, ``annotations``, ``categories`` of the
    support split) whose annotations carry ``similarity`` (to the proposed
    class), ``margin`` (over the runner-up), ``candidates`` (``[name,
    similarity]``, best first) and ``review`` (margin below ``review_margin``).
    Annotations are ordered by margin, most certain first.
    """
    classes = sorted(int(c) for c in np.unique(support.labels))
    anns: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    for path, given in tqdm(images, desc="propose", unit="img", disable=not progress):
        image = _read(path)
        record = {**given, "width": int(image.shape[1]), "height": int(image.shape[0])}
        records.append(record)
        boxes, scores, emb = embedder.detect_and_embed(image)
        if not len(boxes):
            continue
        ranked = knn_scores(support.embeddings, support.labels, emb, classes, k)
        order = np.argsort(-ranked, axis=1)
        for i in range(len(boxes)):
            best = [(classes[j], float(ranked[i, j])) for j in order[i, :top]]
            margin = best[0][1] - (best[1][1] if len(best) > 1 else -1.0)
            x1, y1, x2, y2 = (float(v) for v in boxes[i])
            anns.append({
                "image_id": record["id"], "category_id": best[0][0],
                "bbox": [round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1)],
                "score": round(float(scores[i]), 4), "similarity": round(best[0][1], 4),
                "margin": round(margin, 4),
                "candidates": [[support.class_names[c], round(s, 4)] for c, s in best],
                "review": bool(margin < review_margin),
            })
    anns.sort(key=lambda a: -a["margin"])
    for n, ann in enumerate(anns, 1):
        ann["id"] = n
    return {
        "format": "dishtracker-proposals/1",
        "support": support.counts,
        "images": records,
        "annotations": anns,
        "categories": [{"id": i, "name": n} for i, n in enumerate(support.class_names)],
    }


def score_proposals(doc: dict[str, Any], split_dir: Path, *, classes: Sequence[str] | None = None,
                    iou: float = 0.5) -> dict[str, float]:
    """Top-1 and top-3 accuracy of proposals against a split's true labels.

    Only proposals whose box matches a true box (IoU >= ``iou``) of one of
    ``classes`` (default: all) count; ``coverage`` is the share of those true
    boxes that got a proposal.
    """
    split = read_split(split_dir)
    wanted = set(range(len(split.class_names))) if classes is None else {
        split.class_names.index(c) for c in classes}
    truth = {int(im["id"]): frame for im, frame in zip(
        json.loads((split_dir / "annotations.json").read_text())["images"], split.frames,
        strict=True)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in doc["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    hits1 = hits3 = counted = total = covered = 0
    for image_id, frame in truth.items():
        mask = np.isin(frame.classes, list(wanted)) & ~frame.ignore
        gt_boxes, gt_cls = frame.boxes[mask], frame.classes[mask]
        total += len(gt_boxes)
        props = by_image.get(image_id, [])
        if not props or not len(gt_boxes):
            continue
        xywh = np.array([p["bbox"] for p in props], np.float64)
        pb = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        ious = box_iou(pb, gt_boxes.astype(np.float64))
        matched: set[int] = set()
        for i in np.argsort(-ious.max(axis=1)):
            j = int(np.argmax(ious[i]))
            if ious[i, j] < iou or j in matched:
                continue
            matched.add(j)
            name = split.class_names[int(gt_cls[j])]
            names = [c[0] for c in props[i]["candidates"]]
            counted += 1
            hits1 += names[0] == name
            hits3 += name in names[:3]
        covered += len(matched)
    return {"top1": hits1 / max(counted, 1), "top3": hits3 / max(counted, 1),
            "proposals": counted, "coverage": covered / max(total, 1)}


def contact_sheet(doc: dict[str, Any], images: dict[int, Path], out: Path, *,
                  cell: int = 96, columns: int = 12, limit: int = 600) -> None:
    """Crops of the proposals, grouped by proposed class, most certain first.

    A red frame marks a proposal to review; the text is the proposed class
    and its similarity.
    """
    anns = sorted(doc["annotations"][:limit], key=lambda a: (a["category_id"], -a["margin"]))
    names = {c["id"]: c["name"] for c in doc["categories"]}
    rows = max(1, -(-len(anns) // columns))
    sheet = np.full((rows * (cell + 14), columns * cell, 3), 40, np.uint8)
    cache: dict[int, npt.NDArray[np.uint8]] = {}
    for n, ann in enumerate(anns):
        image = cache.get(ann["image_id"])
        if image is None:
            image = cache[ann["image_id"]] = _read(images[ann["image_id"]])
        x, y, w, h = (round(v) for v in ann["bbox"])
        crop = image[max(y, 0):max(y + h, 1), max(x, 0):max(x + w, 1)]
        if not crop.size:
            continue
        scale = (cell - 4) / max(crop.shape[:2])
        crop = np.asarray(cv2.resize(crop, (max(1, int(crop.shape[1] * scale)),
                                            max(1, int(crop.shape[0] * scale)))), np.uint8)
        r, c = divmod(n, columns)
        y0, x0 = r * (cell + 14), c * cell
        sheet[y0 + 2:y0 + 2 + crop.shape[0], x0 + 2:x0 + 2 + crop.shape[1]] = crop
        colour = (40, 40, 230) if ann["review"] else (60, 200, 60)
        cv2.rectangle(sheet, (x0 + 1, y0 + 1), (x0 + cell - 2, y0 + cell - 2), colour, 1)
        cv2.putText(sheet, f"{names[ann['category_id']][:11]} {ann['similarity']:.2f}",
                    (x0 + 2, y0 + cell + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.32, (235, 235, 235),
                    1, cv2.LINE_AA)
    write_atomic(out, cv2.imencode(out.suffix or ".jpg", sheet)[1].tobytes())




def iter_new_classes(support: Support, base: Sequence[str]) -> Iterator[str]:
    """Support classes the model's class list does not have (the site's new dishes)."""
    return (name for name in support.counts if name not in base)


def add_propose_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``dishtracker calibrate propose``."""
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="DishNet ONNX model")
    p.add_argument("--labelled", type=Path, required=True,
                   help="COCO split folder (annotations.json + images) with the few labelled "
                        "frames; its categories may include classes the model never saw")
    p.add_argument("--images", type=Path, required=True,
                   help="unlabelled frames: a folder of images, or a COCO split folder")
    p.add_argument("--out", type=Path, required=True, help="proposals (COCO JSON) to write")
    p.add_argument("--sheet", type=Path, default=None,
                   help="contact sheet image of the proposals (default: OUT with .jpg)")
    p.add_argument("--k", type=int, default=3, help="nearest labelled examples per class")
    p.add_argument("--score-threshold", type=float, default=0.1,
                   help="detections below are not proposed")
    p.add_argument("--review-margin", type=float, default=0.05,
                   help="flag proposals whose lead over the runner-up class is below this")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_propose(args: argparse.Namespace) -> int:
    """Entry of ``dishtracker calibrate propose``."""
    if args.k < 1:
        raise ConfigError(f"--k must be >= 1, got {args.k}")
    if not 0.0 < args.score_threshold < 1.0:
        raise ConfigError(f"--score-threshold must be in (0, 1), got {args.score_threshold}")
    images = unlabelled_images(args.images)
    embedder = Embedder(args.model, threads=args.threads, score_threshold=args.score_threshold)
    try:
        support = build_support(embedder, args.labelled, progress=not args.quiet)
        doc = propose(embedder, support, images, k=args.k, review_margin=args.review_margin,
                      progress=not args.quiet)
    finally:
        embedder.close()
    doc["model"] = str(args.model)
    write_atomic(args.out, json.dumps(doc, indent=1).encode())
    sheet = args.sheet or args.out.with_suffix(".jpg")
    contact_sheet(doc, {int(r["id"]): p for p, r in images}, sheet)
    new = list(iter_new_classes(support, embedder.class_names))
    review = sum(a["review"] for a in doc["annotations"])
    print(f"support: {sum(support.counts.values())} labelled boxes of {len(support.counts)} "
          f"classes ({len(new)} new to the model: {', '.join(new) or 'none'})")
    print(f"wrote {args.out}: {len(doc['annotations'])} proposals on {len(images)} images, "
          f"{review} to review; sheet {sheet}")
    return 0
