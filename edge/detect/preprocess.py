"""Turn camera images into network input tensors, and network boxes back into image pixels.

Part of the detection stage (:mod:`edge.detect`), between the decoded frame
(BGR uint8, as OpenCV and PyAV's ``bgr24`` give it) and the backend's
inference call. :class:`Letterbox` resizes (keeping the aspect ratio and
padding with grey, or stretching), reorders the channels and normalises in
one pass per image; the :class:`BoxMapping` it returns with each image takes
the decoder's boxes from network input pixels back to that image's pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.detect.model_info import Color, ModelInfo, Resize

PAD_VALUE = 114
"""Grey of the letterbox border (0-255), the value Ultralytics and YOLOv5 train with."""


@dataclass(frozen=True, slots=True)
class BoxMapping:
    """Where one source image lies in the network input.

    Network pixel ``x_net = x_src * scale_x + pad_x`` (likewise for y); all
    coordinates are pixel edges, so the source image spans
    ``[pad_x, pad_x + width * scale_x]`` in the network input.

    Attributes
    ----------
    scale_x, scale_y : float
        Network pixels per source pixel along x and y (equal up to rounding
        for letterbox).
    pad_x, pad_y : float
        Network pixels of border left of and above the image.
    source_size : (int, int)
        Source image ``(width, height)`` in pixels.
    """

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    source_size: tuple[int, int]

    def to_source(self, boxes: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Map ``(n, 4)`` x1, y1, x2, y2 boxes from network input pixels to source pixels.

        Boxes are clipped to the source image ``[0, width] x [0, height]``; a
        box that lay wholly in the border comes back with zero width or height.
        """
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float32)
        w, h = self.source_size
        limit = np.array([w, h, w, h], np.float32)
        mapped: npt.NDArray[np.float32] = (np.asarray(boxes, np.float32) - offset) / scale
        return np.clip(mapped, np.float32(0), limit).astype(np.float32, copy=False)

    def to_network(self, boxes: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Map ``(n, 4)`` x1, y1, x2, y2 boxes from source pixels to network input pixels."""
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y], np.float32)
        return (np.asarray(boxes, np.float32) * scale + offset).astype(np.float32, copy=False)


class Letterbox:
    """Resize, pad, reorder and normalise BGR uint8 images into a network input tensor.

    Parameters
    ----------
    input_size : (int, int)
        Network input ``(width, height)`` in pixels.
    mean, std : (float, float, float)
        Per channel in ``color`` order; output is ``(pixel / 255 - mean) / std``.
    color : {"RGB", "BGR"}
        Channel order of the output tensor (input images are always BGR).
    resize : {"letterbox", "stretch"}
        ``letterbox`` scales by the smaller ratio and centres the image on a
        grey (:data:`PAD_VALUE`) border; ``stretch`` scales each axis to fill.

    Notes
    -----
    Stateless apart from constants: one instance may serve several threads.
    Resizing uses ``cv2.INTER_LINEAR``; normalisation is one multiply from
    the uint8 image straight into the float32 output plus one in-place add.
    A 640x480 frame takes about 0.3 ms into a 320x320 input and 0.6 ms into
    640x640 (one core of the 2-core dev box, ImageNet mean and std).
    """

    def __init__(self, input_size: tuple[int, int], *,
                 mean: Sequence[float] = (0.0, 0.0, 0.0), std: Sequence[float] = (1.0, 1.0, 1.0),
                 color: Color = "RGB", resize: Resize = "letterbox") -> None:
        if len(input_size) != 2 or min(input_size) < 1:
            raise ValueError(f"input_size must be (width, height) >= 1, got {input_size}")
        if resize not in ("letterbox", "stretch"):
            raise ValueError(f"resize must be 'letterbox' or 'stretch', got {resize!r}")
        if color not in ("RGB", "BGR"):
            raise ValueError(f"color must be 'RGB' or 'BGR', got {color!r}")
        std_array = np.asarray(std, np.float64)
        if std_array.shape != (3,) or np.any(std_array <= 0) or len(mean) != 3:
            raise ValueError(f"mean and std must be 3 numbers, std > 0; got {mean}, {std}")
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.resize: Resize = resize
        self.color: Color = color
        mean_array = np.asarray(mean, np.float64)
        self._scale = (1.0 / (255.0 * std_array)).astype(np.float32).reshape(3, 1, 1)
        self._offset = (-mean_array / std_array).astype(np.float32).reshape(3, 1, 1)
        self._pad = (PAD_VALUE * self._scale + self._offset).astype(np.float32)
        # Images arrive BGR: reversing the channel axis is a view, not a copy.
        self._channels = slice(None, None, -1) if color == "RGB" else slice(None)

    @classmethod
    def from_info(cls, info: ModelInfo) -> Letterbox:
        """Build the transform a model's metadata asks for."""
        return cls(info.input_size, mean=info.mean, std=info.std, color=info.color,
                   resize=info.resize)

    def mapping(self, width: int, height: int) -> BoxMapping:
        """Where a ``width x height`` source image lands in the network input."""
        new_w, new_h, left, top = self._placement(width, height)
        return BoxMapping(new_w / width, new_h / height, float(left), float(top),
                          (width, height))

    def _placement(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Resized ``(width, height)`` and the ``(left, top)`` border, in network pixels."""
        net_w, net_h = self.input_size
        if self.resize == "stretch":
            return net_w, net_h, 0, 0
        ratio = min(net_w / width, net_h / height)
        new_w = max(1, min(net_w, round(width * ratio)))
        new_h = max(1, min(net_h, round(height * ratio)))
        return new_w, new_h, (net_w - new_w) // 2, (net_h - new_h) // 2

    def __call__(self, image: npt.NDArray[np.uint8],
                 out: npt.NDArray[np.float32] | None = None,
                 ) -> tuple[npt.NDArray[np.float32], BoxMapping]:
        """Transform one image.

        Parameters
        ----------
        image : np.ndarray
            ``(height, width, 3)`` uint8, BGR.
        out : np.ndarray, optional
            ``(3, H, W)`` float32 buffer to write into (e.g. one slot of a batch).

        Returns
        -------
        tensor : np.ndarray
            ``(3, H, W)`` float32 network input (``out`` when given).
        mapping : BoxMapping
            From network input pixels back to this image's pixels.
        """
        if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3
                or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1):
            described = (f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray)
                         else type(image).__name__)
            raise ValueError(f"image must be (height, width, 3) uint8 BGR, got {described}")
        net_w, net_h = self.input_size
        if out is None:
            out = np.empty((3, net_h, net_w), np.float32)
        elif out.shape != (3, net_h, net_w) or out.dtype != np.float32:
            raise ValueError(f"out must be (3, {net_h}, {net_w}) float32, got {out.shape} "
                             f"{out.dtype}")
        height, width = image.shape[:2]
        new_w, new_h, left, top = self._placement(width, height)
        resized = image
        if (new_w, new_h) != (width, height):
            resized = np.asarray(cv2.resize(image, (new_w, new_h),
                                            interpolation=cv2.INTER_LINEAR))
        if new_h < net_h:
            out[:, :top] = self._pad
            out[:, top + new_h:] = self._pad
        if new_w < net_w:
            out[:, :, :left] = self._pad
            out[:, :, left + new_w:] = self._pad
        region = out[:, top:top + new_h, left:left + new_w]
        np.multiply(resized.transpose(2, 0, 1)[self._channels], self._scale, out=region)
        region += self._offset
        return out, self.mapping(width, height)

    def batch(self, images: Sequence[npt.NDArray[np.uint8]],
              ) -> tuple[npt.NDArray[np.float32], list[BoxMapping]]:
        """Transform several images, of any sizes, into one ``(N, 3, H, W)`` float32 batch.

        Returns the batch and one :class:`BoxMapping` per image, in order.
        """
        net_w, net_h = self.input_size
        tensor = np.empty((len(images), 3, net_h, net_w), np.float32)
        mappings = [self(image, out=tensor[i])[1] for i, image in enumerate(images)]
        return tensor, mappings
