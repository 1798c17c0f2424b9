"""Evaluation inputs: (image, ground truth) pairs from a simulator run or a COCO split.

Feeds :mod:`edge.eval.detection`. Two layouts are read:

* a simulator output directory: ``video.mp4`` (decoded with PyAV) and
  ``gt/gt.txt`` (MOTChallenge, frame = decoded frame index + 1);
* a COCO split directory: ``annotations.json`` and ``images/*.jpg``, or a
  dataset root holding such splits (``train/``, ``val/``, ``test/``).

Ground truth with visibility < 0.5, or marked ignore (MOT ``conf`` 0, COCO
``ignore``/``iscrowd`` 1), is flagged ignored, as MOTChallenge's evaluation
does. Every missing or malformed file raises :class:`InputFormatError` with
its path.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import av
import cv2
import numpy as np
import numpy.typing as npt

from edge.errors import InputFormatError
from edge.groundtruth import BoxRecord, by_frame, read_mot, read_seqinfo

MIN_VISIBILITY = 0.5


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """The annotated objects of one image.

    Attributes
    ----------
    boxes : np.ndarray
        ``(n, 4)`` float32 ``x1, y1, x2, y2`` in image pixels.
    classes : np.ndarray
        ``(n,)`` int32 0-based class ids.
    ignore : np.ndarray
        ``(n,)`` bool; ignored objects are neither counted nor missed.
    """

    boxes: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int32]
    ignore: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class Sample:
    """One image to evaluate: ``image`` is ``(h, w, 3)`` BGR uint8."""

    key: str  # "frame 12" or the image's file name
    image: npt.NDArray[np.uint8]
    gt: GroundTruth


class EvalDataset(Protocol):
    """A finite, sized sequence of samples."""

    path: Path

    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[Sample]: ...


def _gt_from_records(records: list[BoxRecord]) -> GroundTruth:
    boxes = np.array([r.xyxy() for r in records], dtype=np.float32).reshape(-1, 4)
    classes = np.array([r.class_id for r in records], dtype=np.int32)
    ignore = np.array(
        [r.conf == 0 or (0 <= r.visibility < MIN_VISIBILITY) for r in records], dtype=bool
    )
    return GroundTruth(boxes, classes, ignore)


def _check_classes(classes: npt.NDArray[np.int32], num_classes: int | None, where: str) -> None:
    bad = classes[(classes < 0) | (num_classes is not None and classes >= num_classes)]
    if bad.size:
        valid = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise InputFormatError(f"{where}: class id {int(bad[0])} is not in {valid}")


class SimSequence:
    """Frames of a simulator run with their MOTChallenge ground truth.

    Parameters
    ----------
    path : Path
        Directory holding ``video.mp4`` and ``gt/gt.txt``.
    stride : int
        Evaluate every ``stride``-th decoded frame, starting with the first.
    num_classes : int or None
        Size of the class table; larger ids raise :class:`InputFormatError`.
    """

    def __init__(self, path: Path, *, stride: int = 1, num_classes: int | None = None) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.path = Path(path)
        self.stride = stride
        self.video = self.path / "video.mp4"
        if not self.video.is_file():
            raise InputFormatError(f"{self.video}: no such video file")
        records = read_mot(self.path / "gt" / "gt.txt")
        self._gt = by_frame(records)
        self.last_gt_frame = max(self._gt, default=0)
        for frame, rows in self._gt.items():
            _check_classes(
                np.array([r.class_id for r in rows], dtype=np.int32), num_classes,
                f"{self.path / 'gt' / 'gt.txt'} frame {frame}",
            )
        self.n_frames = self._probe()
        if self.last_gt_frame > self.n_frames:
            raise InputFormatError(
                f"{self.path / 'gt' / 'gt.txt'}: ground truth for frame {self.last_gt_frame} "
                f"but {self.video} has {self.n_frames} frames"
            )

    def _probe(self) -> int:
        """Open the video once: a missing moov atom or bad header fails here."""
        try:
            with av.open(str(self.video)) as container:
                if not container.streams.video:
                    raise InputFormatError(f"{self.video}: no video stream")
                frames = int(container.streams.video[0].frames)
        except av.FFmpegError as err:
            raise InputFormatError(f"{self.video}: cannot open video: {err}") from err
        if frames <= 0 and (self.path / "seqinfo.ini").is_file():
            # Some muxers leave the frame count out of the header; MOT's seqLength has it.
            seq = read_seqinfo(self.path / "seqinfo.ini").get("Sequence", {})
            length = seq.get("seqLength", "")
            frames = int(length) if length.isdigit() else 0
        return frames if frames > 0 else self.last_gt_frame

    def __len__(self) -> int:
        return (self.n_frames + self.stride - 1) // self.stride

    def __iter__(self) -> Iterator[Sample]:
        empty = GroundTruth(
            np.zeros((0, 4), np.float32), np.zeros(0, np.int32), np.zeros(0, bool)
        )
        index = -1
        try:
            with av.open(str(self.video)) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                for index, frame in enumerate(container.decode(stream)):
                    if index % self.stride:
                        continue
                    rows = self._gt.get(index + 1)
                    gt = _gt_from_records(rows) if rows else empty
                    yield Sample(f"frame {index + 1}", frame.to_ndarray(format="bgr24"), gt)
        except av.FFmpegError as err:
            raise InputFormatError(
                f"{self.video}: decoding failed after frame {index + 1}: {err}"
            ) from err
        if index + 1 < max(self.last_gt_frame, self.n_frames):
            raise InputFormatError(
                f"{self.video}: truncated, decoded {index + 1} frames but the header says "
                f"{self.n_frames} and the ground truth reaches frame {self.last_gt_frame}"
            )


class CocoSplit:
    """Images of one COCO split with their annotations.

    Parameters
    ----------
    path : Path
        Directory holding ``annotations.json``; ``file_name`` is resolved
        against it and then against its ``images/`` folder.
    num_classes : int or None
        Size of the class table; ``category_id`` (0-based) beyond it raises.
    """

    def __init__(self, path: Path, *, num_classes: int | None = None) -> None:
        self.path = Path(path)
        ann_path = self.path / "annotations.json"
        try:
            doc = json.loads(ann_path.read_text())
        except OSError as err:
            raise InputFormatError(f"cannot read {ann_path}: {err.strerror}") from err
        except json.JSONDecodeError as err:
            raise InputFormatError(f"{ann_path}: invalid JSON: {err}") from err
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise InputFormatError(f"{ann_path}: expected an object with an 'images' list")
        self.categories: list[dict[str, Any]] = list(doc.get("categories", []))
        self._images: list[tuple[str, GroundTruth]] = []
        by_image: dict[Any, list[dict[str, Any]]] = {}
        for n, ann in enumerate(doc.get("annotations", [])):
            if not isinstance(ann, dict) or "image_id" not in ann:
                raise InputFormatError(f"{ann_path}: annotations[{n}] has no 'image_id'")
            by_image.setdefault(ann["image_id"], []).append(ann)
        for n, img in enumerate(doc["images"]):
            try:
                name = str(img["file_name"])
                anns = by_image.get(img["id"], [])
                gt = self._parse(anns)
            except (KeyError, TypeError, ValueError) as err:
                raise InputFormatError(f"{ann_path}: images[{n}] or its annotations are "
                                       f"malformed: {err!r}") from err
            _check_classes(gt.classes, num_classes, f"{ann_path} image {name}")
            self._images.append((name, gt))

    @staticmethod
    def _parse(anns: list[dict[str, Any]]) -> GroundTruth:
        xywh = np.array([[float(v) for v in a["bbox"]] for a in anns], dtype=np.float32)
        xywh = xywh.reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        classes = np.array([int(a["category_id"]) for a in anns], dtype=np.int32)
        ignore = np.array(
            [
                bool(a.get("ignore", 0)) or bool(a.get("iscrowd", 0))
                or float(a.get("visibility", 1.0)) < MIN_VISIBILITY
                for a in anns
            ],
            dtype=bool,
        )
        return GroundTruth(boxes, classes, ignore)

    def _resolve(self, name: str) -> Path:
        for candidate in (self.path / name, self.path / "images" / name):
            if candidate.is_file():
                return candidate
        raise InputFormatError(f"{self.path / 'images' / name}: image file not found")

    def __len__(self) -> int:
        return len(self._images)

    def __iter__(self) -> Iterator[Sample]:
        for name, gt in self._images:
            path = self._resolve(name)
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise InputFormatError(f"{path}: not a readable image")
            yield Sample(name, np.ascontiguousarray(image, dtype=np.uint8), gt)


def open_dataset(
    path: Path, *, split: str = "test", stride: int = 1, num_classes: int | None = None
) -> SimSequence | CocoSplit:
    """Open a simulator directory, a COCO split or a COCO root (choosing ``split``).

    Raises
    ------
    InputFormatError
        ``path`` is none of these layouts, or its files are missing or malformed.
    """
    path = Path(path)
    if (path / "video.mp4").exists() or (path / "gt" / "gt.txt").exists():
        return SimSequence(path, stride=stride, num_classes=num_classes)
    if (path / "annotations.json").exists():
        return CocoSplit(path, num_classes=num_classes)
    if (path / split / "annotations.json").exists():
        return CocoSplit(path / split, num_classes=num_classes)
    raise InputFormatError(
        f"{path}: not a dataset; expected video.mp4 + gt/gt.txt (simulator), "
        f"annotations.json (COCO split) or {split}/annotations.json (COCO root)"
    )
