"""Sprites: every class draws at its menu size, reproducibly, and look-alikes stay apart."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge.sim.menu import BY_KEY, LOOKALIKE_PAIRS, MENU, MenuItem
from edge.sim.sprites import TRAY_SIZE, draw_counter, draw_item, draw_tray

SEEDS = (0, 1, 2)


def _object_extent(sprite: npt.NDArray[np.uint8]) -> tuple[int, int]:
    """Width and height in pixels of the opaque part (alpha >= 128)."""
    ys, xs = np.nonzero(sprite[:, :, 3] >= 128)
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def _detector_view(
    sprite: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.bool_]]:
    """What the detector sees of a half-scale sprite over grey: 3 px blur, JPEG q50.

    Returns the BGR pixels and the opaque mask (alpha >= 128).
    """
    a = sprite[:, :, 3:4].astype(np.float32) / 255
    img = (sprite[:, :, :3] * a + 128 * (1 - a)).astype(np.uint8)
    img = cv2.GaussianBlur(img, (3, 3), 0)
    ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 50])
    assert ok
    return np.asarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), np.uint8), sprite[:, :, 3] >= 128


@pytest.mark.parametrize("item", MENU, ids=[m.key for m in MENU])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_every_class_draws_bgra_at_its_menu_size(item: MenuItem, scale: float) -> None:
    for seed in SEEDS:
        sprite = draw_item(item, scale, np.random.default_rng(seed))
        assert sprite.dtype == np.uint8
        assert sprite.ndim == 3
        assert sprite.shape[2] == 4
        alpha = sprite[:, :, 3]
        assert alpha.max() == 255
        assert (alpha == 255).mean() > 0.15, "object should fill a fair part of its box"
        border = np.concatenate([alpha[0], alpha[-1], alpha[:, 0], alpha[:, -1]])
        assert border.max() == 0, "a transparent margin surrounds the object"
        assert not sprite[alpha == 0, :3].any(), "colour is zero where fully transparent"
        long_side = max(_object_extent(sprite))
        assert 0.75 * item.size_px * scale <= long_side <= 1.25 * item.size_px * scale


@pytest.mark.parametrize("item", MENU, ids=[m.key for m in MENU])
def test_same_seed_same_sprite_other_seed_differs(item: MenuItem) -> None:
    first = draw_item(item, 1.0, np.random.default_rng(7))
    again = draw_item(item, 1.0, np.random.default_rng(7))
    other = draw_item(item, 1.0, np.random.default_rng(8))
    assert np.array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)


@pytest.mark.parametrize(
    ("a", "b"),
    [(MENU[i], MENU[j]) for i, j in LOOKALIKE_PAIRS],
    ids=[f"{MENU[i].key}-{MENU[j].key}" for i, j in LOOKALIKE_PAIRS],
)
def test_lookalikes_differ_in_colour_at_detector_resolution(a: MenuItem, b: MenuItem) -> None:
    # Same seed: same vessel colour and arrangement angle, so only the food differs.
    assert a.vessel == b.vessel
    for seed in SEEDS:
        img_a, mask_a = _detector_view(draw_item(a, 0.5, np.random.default_rng(seed)))
        img_b, mask_b = _detector_view(draw_item(b, 0.5, np.random.default_rng(seed)))
        mean_a = img_a[mask_a].astype(np.float64).mean(axis=0)
        mean_b = img_b[mask_b].astype(np.float64).mean(axis=0)
        # Measured minimum over 20 seeds is ~29 (bolognese/carbonara); identical food gives ~0.
        assert np.linalg.norm(mean_a - mean_b) > 15.0
        assert 0.8 < mask_a.sum() / mask_b.sum() < 1.25


def test_tray_is_260_by_190_with_rounded_corners() -> None:
    tray = draw_tray(1.0, np.random.default_rng(0))
    w, h = _object_extent(tray)
    assert abs(w - TRAY_SIZE[0]) <= 2
    assert abs(h - TRAY_SIZE[1]) <= 2
    ys, xs = np.nonzero(tray[:, :, 3] == 255)
    assert tray[ys.min(), xs.min(), 3] < 255, "corner pixel of the bounding box is rounded off"
    assert np.array_equal(draw_item(BY_KEY["tray"], 1.0, np.random.default_rng(0)), tray)
    half = draw_tray(0.5, np.random.default_rng(0))
    assert abs(_object_extent(half)[0] - TRAY_SIZE[0] / 2) <= 2


def test_trays_come_in_several_colours() -> None:
    means = {
        tuple((draw_tray(0.25, np.random.default_rng(s))[40, 30, :3] // 32).tolist())
        for s in range(12)
    }
    assert len(means) >= 3


@pytest.mark.parametrize(("width", "height"), [(640, 480), (320, 240)])
def test_counter_is_bgr_of_requested_size_and_reproducible(width: int, height: int) -> None:
    counter = draw_counter(width, height, np.random.default_rng(3))
    assert counter.shape == (height, width, 3)
    assert counter.dtype == np.uint8
    assert np.array_equal(counter, draw_counter(width, height, np.random.default_rng(3)))
    assert not np.array_equal(counter, draw_counter(width, height, np.random.default_rng(4)))
    assert counter.std() > 2.0, "textured, not flat"


def test_counter_materials_vary_with_seed() -> None:
    middle = [
        draw_counter(160, 120, np.random.default_rng(s))[40:80].mean(axis=(0, 1)) for s in range(10)
    ]
    spread = np.ptp(np.array(middle), axis=0)
    assert spread.max() > 20


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="scale"):
        draw_item(BY_KEY["coffee"], 0.0, np.random.default_rng(0))
    unknown = MenuItem(99, "soup_of_the_day", "Soup", BY_KEY["coffee"].kind, 1.0, "bowl", 60)
    with pytest.raises(ValueError, match="soup_of_the_day"):
        draw_item(unknown, 1.0, np.random.default_rng(0))
