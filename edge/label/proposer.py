"""The detector's proposals for the labelling workspace, computed off the event loop.

Part of the workspace (:mod:`edge.label`): for each imported frame the
detector (:mod:`edge.detect`, ONNX Runtime, unchanged pre- and
post-processing) finds the objects at a low score threshold. The shipped
model's objectness does not depend on the class, so it finds dishes it has
never been trained on, naming a look-alike at a low score; trays are
proposed too. Each box keeps the detector's class and score and, where the
model has the ``embeddings`` output, its embedding: what
:mod:`edge.label.ranking` compares with the site's labels.

A :class:`Proposer` owns its own session, separate from the serving
detector's, loaded and run in one worker thread with one intra-op thread
(a labeller's frame costs about as much as one stream frame; the streams
keep their cores), as the detection stage runs its model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.errors import InputFormatError
from edge.label.store import Proposals

SCORE_THRESHOLD = 0.1
"""Detections below are not proposed: low, as on an unknown dish the detector's
class probability is spread over look-alikes (``calibrate propose`` uses the same)."""


class Proposer:
    """Detect the objects of frames, one at a time, in a thread of its own.

    Parameters
    ----------
    model : callable
        Returns the ONNX model to use (the config's ``detector.model``); read
        for each frame, so a new model is loaded when the config names one.
    threads : int
        ONNX Runtime intra-op threads.
    score_threshold : float
        Detections below are dropped.
    """

    def __init__(self, model: Callable[[], Path], *, threads: int = 1,
                 score_threshold: float = SCORE_THRESHOLD) -> None:
        self.model = model
        self.threads = threads
        self.score_threshold = score_threshold
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="label-proposer")
        self._detector: OnnxRuntimeDetector | None = None

    async def propose(self, frame_id: int, image: Path) -> Proposals:
        """The proposals of one frame (``image``: its file).

        Raises
        ------
        ModelError
            The model cannot be loaded or run.
        InputFormatError
            The image cannot be decoded.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.propose_now, frame_id, image)

    async def class_names(self) -> list[str]:
        """The model's classes, in its order (loads it if needed)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._names)

    def _names(self) -> list[str]:
        return list(self._load().info.class_names)

    def propose_now(self, frame_id: int, image: Path) -> Proposals:
        """:meth:`propose` on the calling thread (the CLI's, or the worker's)."""
        detector = self._load()
        pixels = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if pixels is None:
            raise InputFormatError(f"{image}: cannot decode the frame")
        det = detector.detect([np.asarray(pixels, np.uint8)])[0]
        names = detector.info.class_names
        boxes = [{"box": [round(float(v), 1) for v in det.boxes[i]],
                  "class": names[int(det.classes[i])], "score": round(float(det.scores[i]), 4)}
                 for i in range(len(det.scores))]
        return Proposals(frame_id, f"{detector.info.model_version} ({detector.path.name})",
                         boxes, det.embeddings)

    def _load(self) -> OnnxRuntimeDetector:
        path = Path(self.model())
        if self._detector is None or self._detector.path != path:
            if self._detector is not None:
                self._detector.close()
            self._detector = OnnxRuntimeDetector(path, threads=self.threads,
                                                 score_threshold=self.score_threshold)
        return self._detector

    def close(self) -> None:
        """Stop the worker (after the frame it is on) and release the session."""
        self._executor.shutdown(wait=True)
        if self._detector is not None:
            self._detector.close()
            self._detector = None
