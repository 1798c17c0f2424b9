"""Letterbox geometry and training augmentation for detector frames.

Sits between reading a dataset frame (:mod:`calibration.data`) and target
encoding (:mod:`calibration.targets`). Geometry (letterbox to the network
input, random scale and translation, flips) is one affine warp from the full
frame straight to the input size; photometric changes (colour, brightness,
contrast, sensor noise, motion blur along the counter, JPEG re-compression)
then run on the small image, which is 4x cheaper than at 640x480.

The letterbox convention is the detector contract's: keep the aspect ratio,
scale to fit, pad centred with grey 114.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

PAD_VALUE = 114
MIN_VISIBLE_FRACTION = 0.5  # same rule as the dataset's ``ignore``: under half visible


@dataclass(frozen=True, slots=True)
class Letterbox:
    """Where a source frame lands in the network input.

    Attributes
    ----------
    scale : float
        Network pixels per source pixel.
    pad_x, pad_y : int
        Left and top padding in network pixels.
    """

    scale: float
    pad_x: int
    pad_y: int


@dataclass(frozen=True, slots=True)
class AugmentConfig:
    """Ranges and probabilities of the training augmentation.

    Pixel amounts (translation, blur) are in source-frame pixels or fractions
    of the input; intensities on the 0-255 scale.
    """

    scale: tuple[float, float] = (0.85, 1.15)
    translate: float = 0.08  # fraction of the input width/height
    hflip: float = 0.5
    vflip: float = 0.5
    brightness: float = 25.0
    contrast: tuple[float, float] = (0.75, 1.25)
    saturation: tuple[float, float] = (0.7, 1.3)
    channel_gain: float = 0.08  # white balance drift per channel
    noise_p: float = 0.5
    noise_sigma: float = 8.0
    blur_p: float = 0.4
    blur_max_px: int = 9  # motion blur length along x at the source frame's scale
    jpeg_p: float = 0.5
    jpeg_quality: tuple[int, int] = (35, 95)


def letterbox_params(src_size: tuple[int, int], dst_size: tuple[int, int]) -> Letterbox:
    """Scale and centred padding that fit ``src_size=(w, h)`` into ``dst_size=(w, h)``."""
    scale = min(dst_size[0] / src_size[0], dst_size[1] / src_size[1])
    new_w, new_h = round(src_size[0] * scale), round(src_size[1] * scale)
    return Letterbox(scale, (dst_size[0] - new_w) // 2, (dst_size[1] - new_h) // 2)


def letterbox(image: NDArray[Any], dst_size: tuple[int, int]) -> tuple[NDArray[Any], Letterbox]:
    """Resize keeping aspect and pad centred with grey 114.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` uint8 frame.
    dst_size : tuple of int
        ``(width, height)`` of the network input.

    Returns
    -------
    tuple
        ``(height, width, 3)`` uint8 image and the :class:`Letterbox` used.
    """
    box = letterbox_params((image.shape[1], image.shape[0]), dst_size)
    new_w, new_h = round(image.shape[1] * box.scale), round(image.shape[0] * box.scale)
    if (new_w, new_h) != (image.shape[1], image.shape[0]):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    if (new_w, new_h) == dst_size:
        return image, box
    out = np.full((dst_size[1], dst_size[0], 3), PAD_VALUE, np.uint8)
    out[box.pad_y : box.pad_y + new_h, box.pad_x : box.pad_x + new_w] = image
    return out, box


def random_affine(
    src_size: tuple[int, int],
    dst_size: tuple[int, int],
    rng: np.random.Generator,
    config: AugmentConfig,
) -> NDArray[Any]:
    """Letterbox, then random scale about the centre, translation and flips.

    Returns
    -------
    np.ndarray
        ``(2, 3)`` float64 matrix mapping source pixels to input pixels.
    """
    box = letterbox_params(src_size, dst_size)
    base = np.array([[box.scale, 0, box.pad_x], [0, box.scale, box.pad_y], [0, 0, 1]], np.float64)
    cx, cy = dst_size[0] / 2, dst_size[1] / 2
    s = rng.uniform(*config.scale)
    tx = rng.uniform(-config.translate, config.translate) * dst_size[0]
    ty = rng.uniform(-config.translate, config.translate) * dst_size[1]
    zoom = np.array([[s, 0, (1 - s) * cx + tx], [0, s, (1 - s) * cy + ty], [0, 0, 1]])
    fx = -1.0 if rng.random() < config.hflip else 1.0
    fy = -1.0 if rng.random() < config.vflip else 1.0
    flip = np.array(
        [[fx, 0, dst_size[0] if fx < 0 else 0], [0, fy, dst_size[1] if fy < 0 else 0], [0, 0, 1]]
    )
    matrix: NDArray[np.float64] = (flip @ zoom @ base)[:2]
    return matrix


def transform_boxes(
    boxes: NDArray[Any], matrix: NDArray[Any], dst_size: tuple[int, int]
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Map ``(n, 4)`` x1, y1, x2, y2 boxes through an axis-aligned affine and clip.

    Returns
    -------
    tuple of np.ndarray
        Clipped boxes ``(n, 4)`` in input pixels, ``keep`` ``(n,)`` bool (box
        still has area) and ``cut`` ``(n,)`` bool (under half of it is left).
    """
    xs = boxes[:, [0, 2]] * matrix[0, 0] + matrix[0, 2]
    ys = boxes[:, [1, 3]] * matrix[1, 1] + matrix[1, 2]
    mapped = np.stack([xs.min(1), ys.min(1), xs.max(1), ys.max(1)], axis=1)
    clipped = mapped.copy()
    clipped[:, [0, 2]] = np.clip(mapped[:, [0, 2]], 0, dst_size[0])
    clipped[:, [1, 3]] = np.clip(mapped[:, [1, 3]], 0, dst_size[1])
    area = (mapped[:, 2] - mapped[:, 0]) * (mapped[:, 3] - mapped[:, 1])
    left = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (clipped[:, 2] - clipped[:, 0] >= 1) & (clipped[:, 3] - clipped[:, 1] >= 1)
    cut = left < MIN_VISIBLE_FRACTION * np.maximum(area, 1e-6)
    return clipped, keep, cut


def photometric(
    image: NDArray[Any], rng: np.random.Generator, config: AugmentConfig, blur_scale: float
) -> NDArray[Any]:
    """Colour, brightness, contrast, motion blur, noise and JPEG artifacts.

    Parameters
    ----------
    image : np.ndarray
        ``(h, w, 3)`` uint8 BGR at network-input size.
    blur_scale : float
        Input pixels per source pixel, to keep blur lengths physical.

    Returns
    -------
    np.ndarray
        ``(h, w, 3)`` uint8 BGR.
    """
    out = image.astype(np.float32)
    grey = out.mean(axis=2, keepdims=True)
    out = grey + rng.uniform(*config.saturation) * (out - grey)
    out *= 1.0 + rng.uniform(-config.channel_gain, config.channel_gain, size=3).astype(np.float32)
    mean = float(out.mean())
    out = (out - mean) * rng.uniform(*config.contrast) + mean
    out += rng.uniform(-config.brightness, config.brightness)
    if rng.random() < config.blur_p:
        length = max(1, round(rng.uniform(1, config.blur_max_px) * blur_scale))
        if length > 1:
            out = cv2.blur(out, (length, 1))
    if rng.random() < config.noise_p:
        sigma = rng.uniform(0, config.noise_sigma)
        out += rng.normal(0.0, sigma, size=out.shape).astype(np.float32)
    result: NDArray[np.uint8] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < config.jpeg_p:
        quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        ok, encoded = cv2.imencode(".jpg", result, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            result = np.asarray(cv2.imdecode(encoded, cv2.IMREAD_COLOR), np.uint8)
    return result


def augment(
    image: NDArray[Any],
    boxes: NDArray[Any],
    dst_size: tuple[int, int],
    rng: np.random.Generator,
    config: AugmentConfig,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Full training augmentation of one frame and its boxes.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)`` uint8 BGR source frame.
    boxes : np.ndarray
        ``(n, 4)`` x1, y1, x2, y2 in source pixels.
    dst_size : tuple of int
        ``(width, height)`` of the network input.

    Returns
    -------
    tuple of np.ndarray
        Image ``(height, width, 3)`` uint8 BGR, boxes ``(n, 4)`` in input
        pixels, ``keep`` and ``cut`` masks ``(n,)`` (see :func:`transform_boxes`).
    """
    src_size = (image.shape[1], image.shape[0])
    matrix = random_affine(src_size, dst_size, rng, config)
    warped = cv2.warpAffine(
        image,
        matrix,
        dst_size,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )
    out_boxes, keep, cut = transform_boxes(boxes, matrix, dst_size)
    return photometric(warped, rng, config, abs(matrix[0, 0])), out_boxes, keep, cut
