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
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt
import structlog

from edge.errors import ConfigError

if TYPE_CHECKING:
    from edge.detect.model_info import ModelInfo
    from edge.frames import Detections

log = structlog.get_logger(__name__)


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


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How a backend loads a model; each backend reads the fields it needs.

    Attributes
    ----------
    threads : int
        CPU threads for inference (ONNX Runtime).
    score_threshold : float
        Detections scoring below are dropped, in ``[0, 1]``.
    engine_dir : Path or None
        TensorRT engine cache; ``None`` is ``var/engines`` (the default
        ``storage.dir``).
    max_batch : int
        Most images per network call on TensorRT (the number of streams).
    fallback_to_cpu : bool
        When TensorRT, pycuda or a GPU is missing, log why once and load the
        model on ONNX Runtime instead of raising.
    """

    threads: int = 1
    score_threshold: float = 0.25
    engine_dir: Path | None = None
    max_batch: int = 1
    fallback_to_cpu: bool = True


BackendLoader = Callable[[Path, LoadOptions], Detector]
"""Loads a model file on one backend: ``(path, options) -> Detector``."""


def _onnxruntime(path: Path, options: LoadOptions) -> Detector:
    from edge.detect.onnxrt import OnnxRuntimeDetector  # noqa: PLC0415 - lazy backend import

    return OnnxRuntimeDetector(path, threads=options.threads,
                               score_threshold=options.score_threshold)


def _tensorrt(path: Path, options: LoadOptions) -> Detector:
    from edge.detect.engine_store import DEFAULT_ENGINE_DIR  # noqa: PLC0415 - as above
    from edge.detect.tensorrt import (  # noqa: PLC0415 - as above
        TensorRTDetector,
        TensorRTUnavailable,
    )

    try:
        return TensorRTDetector(path, engine_dir=options.engine_dir or DEFAULT_ENGINE_DIR,
                                max_batch=options.max_batch,
                                score_threshold=options.score_threshold)
    except TensorRTUnavailable as err:
        if not options.fallback_to_cpu:
            raise TensorRTUnavailable(f"{err.reason} (detector.fallback_to_cpu is false, so "
                                      "the daemon does not run on the CPU instead)") from err
        log.warning("detector_backend_fallback", backend="tensorrt", fallback="onnxruntime",
                    reason=err.reason, model=str(path),
                    hint="see docs/TENSORRT.md; set detector.fallback_to_cpu = false to refuse "
                         "to start instead")
    return _onnxruntime(path, options)


BACKENDS: Mapping[str, BackendLoader] = MappingProxyType({
    "onnxruntime": _onnxruntime,
    "tensorrt": _tensorrt,
})
"""Backend name -> loader. Each loader imports its backend's libraries on first use."""


def load_detector(path: str | Path, backend: str = "onnxruntime", *, threads: int = 1,
                  score_threshold: float = 0.25, engine_dir: Path | None = None,
                  max_batch: int = 1, fallback_to_cpu: bool = True) -> Detector:
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
    engine_dir : Path, optional
        ``tensorrt`` only: the engine cache (``storage.dir / "engines"``).
    max_batch : int
        ``tensorrt`` only: most images per network call (streams).
    fallback_to_cpu : bool
        ``tensorrt`` only: run on ONNX Runtime, after one
        ``detector_backend_fallback`` warning, when TensorRT, pycuda or a GPU
        is missing; when false, raise instead.

    Raises
    ------
    ConfigError
        If ``backend`` is not a known backend.
    ModelError
        If the model cannot be loaded or does not describe itself.
    MissingExtraError
        If the backend's libraries or GPU are missing and there is no fallback.
    """
    try:
        loader = BACKENDS[backend]
    except KeyError:
        raise ConfigError(f"detector backend {backend!r} is unknown; valid: "
                          f"{sorted(BACKENDS)}") from None
    return loader(Path(path), LoadOptions(threads=threads, score_threshold=score_threshold,
                                          engine_dir=engine_dir, max_batch=max_batch,
                                          fallback_to_cpu=fallback_to_cpu))
