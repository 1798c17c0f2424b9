"""The detection stage: images in, :class:`~edge.frames.Detections` out.

Between frame decoding and the tracker. A backend (:class:`Detector`) wraps
one model: :mod:`~edge.detect.model_info` reads what the model is,
:mod:`~edge.detect.preprocess` builds its input, the backend runs it and
:mod:`~edge.detect.decode` turns its output into boxes in source pixels.
Backends are chosen by name from :data:`BACKENDS` and imported only when
asked for, so a box without a GPU never imports GPU libraries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError

if TYPE_CHECKING:
    from edge.detect.model_info import ModelInfo
    from edge.frames import Detections


class Detector(Protocol):
    """A loaded detector model on one backend.

    Implementations are not thread-safe: create and use one from a single
    thread (the stage's inference executor).
    """

    info: ModelInfo
    """What the model is: classes, input size, normalisation, output format."""

    def detect(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        """Detect objects in ``(height, width, 3)`` uint8 BGR images of any sizes.

        Returns one :class:`~edge.frames.Detections` per image, in order,
        boxes in that image's pixels.
        """
        ...

    def close(self) -> None:
        """Release the model's resources; idempotent."""
        ...


BackendLoader = Callable[[Path, int, float], Detector]
"""Loads a model file: ``(path, threads, score_threshold) -> Detector``."""


def _onnxruntime(path: Path, threads: int, score_threshold: float) -> Detector:
    from edge.detect.onnxrt import OnnxRuntimeDetector  # noqa: PLC0415 - lazy backend import

    return OnnxRuntimeDetector(path, threads=threads, score_threshold=score_threshold)


BACKENDS: Mapping[str, BackendLoader] = MappingProxyType({
    "onnxruntime": _onnxruntime,
})
"""Backend name -> loader. Each loader imports its backend's libraries on first use."""


def load_detector(path: str | Path, backend: str = "onnxruntime", *, threads: int = 1,
                  score_threshold: float = 0.25) -> Detector:
    """Load a detector model on a backend.

    Parameters
    ----------
    path : str or Path
        ONNX model file (the contract's ``detections-v1`` or an Ultralytics
        YOLOv8/11 detection export).
    backend : str
        A key of :data:`BACKENDS`.
    threads : int
        CPU threads for inference.
    score_threshold : float
        Detections scoring below are dropped, in ``[0, 1]``.

    Raises
    ------
    ConfigError
        If ``backend`` is not a known backend.
    ModelError
        If the model cannot be loaded or does not describe itself.
    """
    try:
        loader = BACKENDS[backend]
    except KeyError:
        raise ConfigError(f"detector backend {backend!r} is unknown; valid: "
                          f"{sorted(BACKENDS)}") from None
    return loader(Path(path), threads, score_threshold)
