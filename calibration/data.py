"""Detector training data: the COCO-layout dataset the exporter writes, as torch Datasets.

Sits at the start of the training side: ``DATASET/{split}/annotations.json``
plus ``DATASET/{split}/images/*.jpg`` (640x480 BGR frames) are read into
:class:`Split`; :class:`DetectionDataset` turns a frame into a normalised RGB
tensor at the network input size and its CenterNet targets
(:mod:`calibration.targets`), augmented (:mod:`calibration.augment`) when
training. Augmentation draws from ``numpy.random.default_rng((seed, epoch,
index))``: a sample is the same whatever the worker count or a resume.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from calibration.augment import AugmentConfig, augment, letterbox, letterbox_params
from calibration.average_precision import GroundTruth
from calibration.model import IMAGENET_MEAN, IMAGENET_STD, HeadType
from calibration.targets import encode_targets
from edge.errors import HeldOutSeedError, InputFormatError
from edge.seeds import HELD_OUT


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One annotated frame.

    Attributes
    ----------
    path : Path
        The JPEG file.
    boxes : np.ndarray
        ``(n, 4)`` float32 x1, y1, x2, y2 in frame pixels.
    classes : np.ndarray
        ``(n,)`` int64 0-based class ids.
    ignore : np.ndarray
        ``(n,)`` bool: less than half visible, neither positive nor negative.
    size : tuple of int
        ``(width, height)`` of the frame in pixels.
    seed : int or None
        Simulator seed the frame came from, when known.
    complete : bool or None
        The COCO image's ``complete`` flag (every object on the frame is
        labelled; the labelling workspace writes it), None where the file does
        not say.
    ids : np.ndarray or None
        ``(n,)`` int64 object ids the trainer follows across epochs to find
        wrong labels (:mod:`calibration.noisy`), -1 for objects it does not
        follow; None: no object is followed.
    """

    path: Path
    boxes: NDArray[Any]
    classes: NDArray[Any]
    ignore: NDArray[Any]
    size: tuple[int, int]
    seed: int | None = None
    complete: bool | None = None
    ids: NDArray[Any] | None = None

    def object_ids(self) -> NDArray[Any]:
        """``ids``, or -1 for every object when none are set."""
        return self.ids if self.ids is not None else np.full(len(self.classes), -1, np.int64)


@dataclass(frozen=True, slots=True)
class Split:
    """One split (train, val or test) of a dataset."""

    root: Path
    class_names: list[str]
    frames: list[FrameRecord] = field(default_factory=list)


def _field(record: dict[str, Any], key: str, where: str) -> Any:
    if key not in record:
        msg = f"{where}: missing field {key!r}"
        raise InputFormatError(msg)
    return record[key]


def read_split(split_dir: Path) -> Split:
    """Read ``split_dir/annotations.json``; boxes become x1, y1, x2, y2 arrays.

    Raises
    ------
    InputFormatError
        If the file is missing or malformed, or a category id is out of range.
    """
    path = Path(split_dir) / "annotations.json"
    try:
        coco = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        msg = f"{path}: cannot read a COCO annotation file ({err})"
        raise InputFormatError(msg) from err
    categories = _field(coco, "categories", str(path))
    names = [str(_field(c, "name", f"{path} categories")) for c in categories]
    ids = [int(_field(c, "id", f"{path} categories")) for c in categories]
    if ids != list(range(len(ids))) or not names:
        msg = f"{path}: categories must list ids 0..C-1 in order, got {ids[:8]}..."
        raise InputFormatError(msg)
    per_image: dict[int, list[dict[str, Any]]] = {}
    for ann in _field(coco, "annotations", str(path)):
        per_image.setdefault(int(_field(ann, "image_id", f"{path} annotations")), []).append(ann)
    frames = []
    for image in _field(coco, "images", str(path)):
        where = f"{path} image {image.get('id')}"
        anns = per_image.get(int(_field(image, "id", where)), [])
        xywh = np.array([_field(a, "bbox", where) for a in anns], np.float32).reshape(-1, 4)
        classes = np.array([int(_field(a, "category_id", where)) for a in anns], np.int64)
        if classes.size and (classes.min() < 0 or classes.max() >= len(names)):
            msg = f"{where}: category_id outside 0..{len(names) - 1}"
            raise InputFormatError(msg)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        ignore = np.array([bool(a.get("ignore", 0)) for a in anns], bool)
        seed = image.get("seed")
        complete = image.get("complete")
        frames.append(
            FrameRecord(
                Path(split_dir) / str(_field(image, "file_name", where)),
                boxes,
                classes,
                ignore,
                (int(_field(image, "width", where)), int(_field(image, "height", where))),
                None if seed is None else int(seed),
                None if complete is None else bool(complete),
            )
        )
    return Split(Path(split_dir), names, frames)


def refuse_held_out(split: Split, purpose: str) -> None:
    """Raise :class:`HeldOutSeedError` if a frame comes from an evaluation-only seed."""
    for frame in split.frames:
        if frame.seed is not None and frame.seed in HELD_OUT:
            msg = (
                f"{frame.path}: simulator seed {frame.seed} is reserved for held-out evaluation "
                f"({HELD_OUT.start}-{HELD_OUT.stop - 1}) and cannot be used for {purpose}"
            )
            raise HeldOutSeedError(msg)


def budget(frames: list[FrameRecord], max_images: int | None, seed: int) -> list[FrameRecord]:
    """The first ``max_images`` frames of a seeded shuffle (nested across budgets)."""
    if max_images is None or max_images >= len(frames):
        return list(frames)
    order = np.random.default_rng(seed).permutation(len(frames))[:max_images]
    return [frames[i] for i in sorted(order.tolist())]


def read_frame(path: Path) -> NDArray[np.uint8]:
    """Decode a frame as ``(H, W, 3)`` uint8 BGR."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        msg = f"{path}: cannot decode image"
        raise InputFormatError(msg)
    return np.asarray(image, np.uint8)


def normalize_image(image_bgr: NDArray[Any]) -> NDArray[np.float32]:
    """``(H, W, 3)`` uint8 BGR → ``(3, H, W)`` float32 RGB, ImageNet mean/std."""
    rgb: NDArray[np.float32] = image_bgr[:, :, ::-1].astype(np.float32) / 255.0
    mean, std = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
    rgb = (rgb - mean) / std
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


class DetectionDataset(Dataset[dict[str, torch.Tensor]]):
    """Frames of a split as network inputs and CenterNet targets.

    Parameters
    ----------
    frames : list of FrameRecord
        The frames to serve, in order.
    num_classes : int
        C.
    input_size : tuple of int
        ``(width, height)`` of the network input in pixels.
    train : bool
        Augment (True) or only letterbox (False).
    seed : int
        Base seed of the augmentation.
    config : AugmentConfig, optional
        Augmentation ranges.
    head : {"centernet", "factorized"}
        The head whose targets to encode (heatmap layout).
    """

    def __init__(
        self,
        frames: list[FrameRecord],
        num_classes: int,
        input_size: tuple[int, int],
        *,
        train: bool,
        seed: int = 0,
        config: AugmentConfig | None = None,
        head: HeadType = "centernet",
    ) -> None:
        self.frames = frames
        self.num_classes = num_classes
        self.input_size = input_size
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.config = config or AugmentConfig()
        self.head: HeadType = head

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation draws of ``epoch`` (0-based)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.frames)

    def sample(self, index: int) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
        """Input image and its annotations before target encoding.

        Returns
        -------
        tuple of np.ndarray
            Image ``(h, w, 3)`` uint8 BGR at input size; boxes ``(n, 4)`` in
            input pixels; classes ``(n,)``; ignore ``(n,)`` bool.
        """
        small, boxes, classes, ignore, _ = self.sample_objects(index)
        return small, boxes, classes, ignore

    def sample_objects(
        self, index: int
    ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
        """:meth:`sample` plus the kept objects' ids ``(n,)`` (:attr:`FrameRecord.ids`)."""
        frame = self.frames[index]
        image = read_frame(frame.path)
        if not self.train:
            small, _ = letterbox(image, self.input_size)
            truth = self.ground_truth(index)
            return small, truth.boxes, truth.classes, truth.ignore, frame.object_ids()
        rng = np.random.default_rng((self.seed, self.epoch, index))
        small, boxes, keep, cut = augment(image, frame.boxes, self.input_size, rng, self.config)
        ignore = (frame.ignore | cut)[keep]
        return small, boxes[keep], frame.classes[keep], ignore, frame.object_ids()[keep]

    def ground_truth(self, index: int) -> GroundTruth:
        """Annotations of frame ``index`` in letterboxed input pixels (no image decode)."""
        frame = self.frames[index]
        box = letterbox_params(frame.size, self.input_size)
        shift = np.array([box.pad_x, box.pad_y] * 2, np.float32)
        return GroundTruth(frame.boxes * box.scale + shift, frame.classes, frame.ignore)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, boxes, classes, ignore, ids = self.sample_objects(index)
        targets = encode_targets(
            boxes, classes, ignore, self.num_classes, self.input_size, head=self.head, ids=ids
        )
        return {
            "image": torch.from_numpy(normalize_image(image)),
            "heatmap": torch.from_numpy(targets.heatmap),
            "heatmap_weight": torch.from_numpy(targets.heatmap_weight),
            "regression": torch.from_numpy(targets.regression),
            "regression_mask": torch.from_numpy(targets.regression_mask),
            "classes": torch.from_numpy(targets.classes),
            "objects": torch.from_numpy(targets.objects),
        }


def remap_classes(split: Split, class_names: list[str]) -> list[FrameRecord]:
    """``split``'s frames with class ids renumbered to ``class_names`` (matched by name).

    Lets a split of known classes (a replay set) train a model whose class list
    is longer (a site's new dishes appended).

    Raises
    ------
    InputFormatError
        If ``split`` has a class ``class_names`` lacks.
    """
    missing = [n for n in split.class_names if n not in class_names]
    if missing:
        msg = f"{split.root}: classes {missing} are not among the training classes"
        raise InputFormatError(msg)
    table = np.array([class_names.index(n) for n in split.class_names], np.int64)
    return [replace(f, classes=table[f.classes]) for f in split.frames]
