"""Messages that flow between the pipeline's stages.

For now this holds :class:`Detections`, what the detection stage
(:mod:`edge.detect`) hands to the tracker. ``Frame``, ``Track`` and
``TrayBill`` will join it as their stages are built; keep the module small:
plain frozen, slotted dataclasses with validation and no behaviour beyond
construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Detections:
    """The objects a detector found in one source image.

    Parameters
    ----------
    boxes : np.ndarray
        ``(n, 4)`` float32, ``x1, y1, x2, y2`` in **source image pixels**
        (the image given to the detector, not the network input), with
        ``0 <= x1 <= x2 <= width`` and likewise for y: the edges of pixels,
        so a box covering pixel columns 10..19 has ``x1 = 10, x2 = 20``.
    scores : np.ndarray
        ``(n,)`` float32 confidences in ``(0, 1]``.
    classes : np.ndarray
        ``(n,)`` int32 class ids, indices into the model's class names.

    Raises
    ------
    ValueError
        If the arrays have the wrong shapes, lengths or dtypes.
    """

    boxes: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float32]
    classes: npt.NDArray[np.int32]

    def __post_init__(self) -> None:
        n = len(self.scores)
        problems = []
        if self.boxes.shape != (n, 4) or self.boxes.dtype != np.float32:
            problems.append(f"boxes must be ({n}, 4) float32, got {self.boxes.shape} "
                            f"{self.boxes.dtype}")
        if self.scores.ndim != 1 or self.scores.dtype != np.float32:
            problems.append(f"scores must be (n,) float32, got {self.scores.shape} "
                            f"{self.scores.dtype}")
        if self.classes.shape != (n,) or self.classes.dtype != np.int32:
            problems.append(f"classes must be ({n},) int32, got {self.classes.shape} "
                            f"{self.classes.dtype}")
        if problems:
            raise ValueError("invalid Detections: " + "; ".join(problems))

    @classmethod
    def empty(cls) -> Detections:
        """Return detections with no objects (``n = 0``)."""
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            classes=np.zeros((0,), np.int32),
        )

    def __len__(self) -> int:
        return len(self.scores)
