"""Annotation draws tracks onto a copy of the frame and leaves the corner stamp readable."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest

from edge.annotate import annotate, class_colour
from edge.catalogue import CLASS_NAMES
from edge.frames import Frame, Track, TrackedFrame
from edge.stamp import TIME_MODULUS, read_stamp, stamp_frame, stamp_geometry

EPOCH_MS = 1_760_000_000_000


def _frame(width: int = 640, height: int = 480) -> npt.NDArray[np.uint8]:
    rng = np.random.default_rng(3)
    img = rng.integers(60, 200, (height, width, 3), dtype=np.uint8)
    stamp_frame(img, 4242, EPOCH_MS)
    return img


def _track(track_id: int, box: tuple[float, float, float, float], class_id: int = 3, *,
           detected: bool = True, name: str | None = None) -> Track:
    return Track(track_id=track_id, box=box, class_id=class_id,
                 class_name=name or CLASS_NAMES[class_id], confidence=0.8, hits=4,
                 detected=detected)


def _tracked(img: npt.NDArray[np.uint8], *tracks: Track) -> TrackedFrame:
    return TrackedFrame(Frame("cam1", 7, img, 12.5), None, tracks)


def test_returns_a_new_bgr_image_and_leaves_the_frame_untouched() -> None:
    img = _frame()
    before = img.copy()
    tf = _tracked(img, _track(1, (100, 100, 200, 180)), _track(2, (300, 200, 380, 260),
                                                                  detected=False))
    out = annotate(tf, fps=20.0, latency_ms=35.0, class_names=CLASS_NAMES)
    assert out.shape == img.shape
    assert out.dtype == np.uint8
    assert out is not img
    np.testing.assert_array_equal(img, before)
    assert np.any(out[100:180, 100:200] != img[100:180, 100:200])  # something was drawn


def test_stamp_stays_readable_even_under_boxes_that_cross_the_corner() -> None:
    img = _frame()
    geo = stamp_geometry(640, 480)
    over_corner = _track(1, (0, 0, geo["width_px"] + 40, geo["height_px"] + 30))
    tf = _tracked(img, over_corner, _track(2, (5, 5, 60, 30), detected=False))
    out = annotate(tf, fps=20.0, latency_ms=None, class_names=CLASS_NAMES)
    assert read_stamp(out) == (4242, EPOCH_MS % TIME_MODULUS)
    h, w = geo["height_px"], geo["width_px"]
    np.testing.assert_array_equal(out[:h, :w], img[:h, :w])


def test_predicted_tracks_are_drawn_thinner_than_detected_ones() -> None:
    img = np.full((480, 640, 3), 128, np.uint8)
    box = (200.0, 200.0, 300.0, 300.0)
    cls = 5
    detected = annotate(_tracked(img, _track(1, box, cls)), fps=0, latency_ms=None,
                        class_names=CLASS_NAMES)
    predicted = annotate(_tracked(img, _track(1, box, cls, detected=False)), fps=0,
                         latency_ms=None, class_names=CLASS_NAMES)
    colour = np.array(class_colour(cls), np.uint8)
    left_edge = (slice(250, 299), slice(195, 205))  # below the label

    def coloured(out: npt.NDArray[np.uint8]) -> int:
        return int(np.all(out[left_edge] == colour, axis=-1).sum())

    assert coloured(predicted) < coloured(detected) / 2
    assert coloured(predicted) > 0


def test_classes_get_distinct_stable_colours() -> None:
    colours = [class_colour(i) for i in range(len(CLASS_NAMES))]
    assert len(set(colours)) == len(colours)
    assert class_colour(4) == colours[4]
    # neighbouring ids must not look alike: at least 60 levels apart in some channel
    for a, b in itertools.pairwise(colours):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) >= 60


def test_box_colour_follows_the_class() -> None:
    img = np.full((480, 640, 3), 128, np.uint8)
    tf = _tracked(img, _track(1, (100, 300, 200, 400), 2), _track(2, (400, 300, 500, 400), 9))
    out = annotate(tf, fps=20.0, latency_ms=10.0, class_names=CLASS_NAMES)
    assert tuple(out[350, 100]) == class_colour(2)
    assert tuple(out[350, 400]) == class_colour(9)


@pytest.mark.parametrize("size", [(160, 120), (320, 240), (1280, 720)])
def test_any_frame_size_works_including_boxes_off_the_edges(size: tuple[int, int]) -> None:
    width, height = size
    img = np.zeros((height, width, 3), np.uint8)
    tracks = (_track(1, (-50, -20, 30, 40)), _track(2, (width - 10, height - 5, width + 80,
                                                        height + 60), detected=False),
              _track(3, (10, 10, 10, 10), class_id=999, name="Käsespätzle"))
    out = annotate(_tracked(img, *tracks), fps=19.96, latency_ms=120.4, class_names=CLASS_NAMES)
    assert out.shape == (height, width, 3)
