"""The run loop every detection backend shares: letterbox, chunk, pad, infer, decode.

Part of the detection stage (:mod:`edge.detect`). A backend (ONNX Runtime,
TensorRT) only says how to run the network on one ``(N, 3, H, W)`` tensor
(:meth:`BatchedDetector.infer`) and how many images one call may take
(:attr:`BatchedDetector.batch_limit`); preprocessing
(:class:`~edge.detect.preprocess.Letterbox`), the split into network calls
and decoding (:func:`~edge.detect.decode.decoder_for`) are this one code
path, built from the same :class:`~edge.detect.model_info.ModelInfo`, so both
backends turn the same raw network output into the same detections.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from edge.detect.decode import Decoder, decoder_for
from edge.detect.model_info import ModelInfo
from edge.detect.preprocess import Letterbox
from edge.frames import Detections

_Self = TypeVar("_Self", bound="BatchedDetector")


class BatchedDetector(ABC):
    """A detector backend whose network takes batches of letterboxed images.

    Parameters
    ----------
    info : ModelInfo
        What the model is (input size, normalisation, output format, batch).
    score_threshold : float
        Detections scoring below are dropped, in ``[0, 1]``.

    Notes
    -----
    Not thread-safe (backends keep sessions, CUDA buffers and streams):
    create and use one from a single thread.
    """

    info: ModelInfo
    """What the model is: classes, input size, normalisation, output format."""

    def __init__(self, info: ModelInfo, score_threshold: float) -> None:
        self.info = info
        self._letterbox = Letterbox.from_info(info)
        self._decoder: Decoder = decoder_for(info, score_threshold)

    @property
    def batch_limit(self) -> int | None:
        """Most images one network call may take when the model's batch is dynamic.

        ``None`` (the default) means any number: all images go in one call.
        A model with a fixed batch (:attr:`ModelInfo.batch`) ignores this.
        """
        return None

    def detect(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        """Detect objects in each image.

        Parameters
        ----------
        images : sequence of np.ndarray
            ``(height, width, 3)`` uint8 BGR images, of any sizes.

        Returns
        -------
        list of Detections
            One per image, in order, boxes in that image's pixels.

        Notes
        -----
        With a dynamic batch dimension the images go through the network
        :attr:`batch_limit` at a time (all at once when there is no limit);
        with a fixed batch ``b`` they go ``b`` at a time, the last call
        padded with blank inputs whose outputs are dropped.
        """
        if not images:
            return []
        fixed = self.info.batch
        size = fixed or min(len(images), self.batch_limit or len(images))
        results: list[Detections] = []
        for start in range(0, len(images), size):
            chunk = images[start:start + size]
            tensor, mappings = self._letterbox.batch(chunk)
            if fixed and len(chunk) < fixed:
                blank = np.zeros((fixed - len(chunk), *tensor.shape[1:]), np.float32)
                tensor = np.concatenate([tensor, blank])
            output, embeddings = self.infer_outputs(tensor)
            results.extend(self._decoder(
                output[:len(chunk)], mappings,
                None if embeddings is None else embeddings[:len(chunk)]))
        return results

    def infer_outputs(self, tensor: npt.NDArray[np.float32]
                      ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None]:
        """Run the network: its detections (:meth:`infer`) and, where the model
        has them (:attr:`ModelInfo.embedding_dim`), its ``embeddings``
        ``(N, K, D)`` from the same run. This default has none."""
        return self.infer(tensor), None

    @abstractmethod
    def infer(self, tensor: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Run the network alone.

        Parameters
        ----------
        tensor : np.ndarray
            ``(N, 3, H, W)`` float32 network input (see
            :class:`~edge.detect.preprocess.Letterbox`).

        Returns
        -------
        np.ndarray
            The first output as float32, boxes in network input pixels.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the backend's resources; the detector cannot be used afterwards. Idempotent."""

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
