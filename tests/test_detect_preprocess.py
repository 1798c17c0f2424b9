"""Letterbox and stretch preprocessing, and mapping boxes back to source pixels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from edge.detect.preprocess import PAD_VALUE, BoxMapping, Letterbox


def _image_with_box(width: int, height: int, box: tuple[int, int, int, int],
                    value: int = 255) -> npt.NDArray[np.uint8]:
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = value
    return image


def _bright_box(channel: npt.NDArray[np.float32], threshold: float) -> npt.NDArray[np.float32]:
    ys, xs = np.nonzero(channel > threshold)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize(("width", "height"), [(500, 300), (300, 700), (1280, 720), (77, 33)])
def test_letterbox_places_a_drawn_box_where_the_mapping_says_and_back(
        width: int, height: int) -> None:
    letterbox = Letterbox((320, 256))
    x1, x2 = round(width * 0.2), round(width * 0.6)
    y1, y2 = round(height * 0.3), round(height * 0.9)
    source_box = np.array([x1, y1, x2, y2], np.float32)
    image = _image_with_box(width, height, (x1, y1, x2, y2))
    tensor, mapping = letterbox(image)
    assert tensor.shape == (3, 256, 320)
    assert tensor.dtype == np.float32
    expected_net = mapping.to_network(source_box[None])[0]
    found_net = _bright_box(tensor[0], 0.5)
    # Linear interpolation blurs each edge by up to one network pixel.
    np.testing.assert_allclose(found_net, expected_net, atol=1.0)
    back = mapping.to_source(expected_net[None])[0]
    np.testing.assert_allclose(back, source_box, atol=1e-3)


def test_letterbox_keeps_aspect_and_centres_on_grey() -> None:
    letterbox = Letterbox((320, 256))
    tensor, mapping = letterbox(np.full((100, 400, 3), 255, np.uint8))
    assert mapping == BoxMapping(0.8, 0.8, 0.0, 88.0, (400, 100))
    grey = PAD_VALUE / 255
    np.testing.assert_allclose(tensor[:, :88], grey, rtol=1e-6)
    np.testing.assert_allclose(tensor[:, 168:], grey, rtol=1e-6)
    np.testing.assert_allclose(tensor[:, 88:168], 1.0, rtol=1e-6)


def test_stretch_fills_the_input_and_scales_each_axis() -> None:
    letterbox = Letterbox((320, 256), resize="stretch")
    image = _image_with_box(640, 640, (320, 320, 640, 640))
    tensor, mapping = letterbox(image)
    assert mapping == BoxMapping(0.5, 0.4, 0.0, 0.0, (640, 640))
    np.testing.assert_allclose(_bright_box(tensor[0], 0.5), [160, 128, 320, 256], atol=1)


def test_normalisation_and_colour_order() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 128, 250  # B, G, R
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    rgb, _ = Letterbox((8, 8), mean=mean, std=std, color="RGB")(image)
    expected = [(250 / 255 - mean[0]) / std[0], (128 / 255 - mean[1]) / std[1],
                (10 / 255 - mean[2]) / std[2]]
    np.testing.assert_allclose(rgb[:, 4, 4], expected, rtol=1e-5)
    bgr, _ = Letterbox((8, 8), color="BGR")(image)
    np.testing.assert_allclose(bgr[:, 4, 4], [10 / 255, 128 / 255, 250 / 255], rtol=1e-6)


def test_mapping_back_clips_boxes_to_the_source_image() -> None:
    _, mapping = Letterbox((320, 256))(np.zeros((100, 400, 3), np.uint8))
    boxes = np.array([[-10, 98, 160, 250],    # spills into the side and bottom border
                      [10, 0, 50, 80]], np.float32)  # lies wholly in the top border
    source = mapping.to_source(boxes)
    np.testing.assert_allclose(source[0], [0, 12.5, 200, 100], rtol=1e-6)
    assert source[1, 1] == source[1, 3] == 0.0
    assert source.dtype == np.float32


def test_batch_of_differently_sized_images_gets_one_mapping_each() -> None:
    letterbox = Letterbox((320, 256))
    images = [_image_with_box(640, 480, (100, 100, 200, 200)),
              _image_with_box(200, 600, (10, 10, 50, 50)),
              _image_with_box(320, 256, (0, 0, 320, 256))]
    batch, mappings = letterbox.batch(images)
    assert batch.shape == (3, 3, 256, 320)
    assert [m.source_size for m in mappings] == [(640, 480), (200, 600), (320, 256)]
    for i, image in enumerate(images):
        single, mapping = letterbox(image)
        np.testing.assert_array_equal(batch[i], single)
        assert mappings[i] == mapping
    assert mappings[2] == BoxMapping(1.0, 1.0, 0.0, 0.0, (320, 256))


@pytest.mark.parametrize("image", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 4), np.uint8),
                                   np.zeros((10, 10, 3), np.float32),
                                   np.zeros((0, 10, 3), np.uint8)])
def test_images_that_are_not_bgr_uint8_are_refused(image: npt.NDArray[np.uint8]) -> None:
    with pytest.raises(ValueError, match=r"image must be \(height, width, 3\) uint8 BGR"):
        Letterbox((32, 32))(image)
