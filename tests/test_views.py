"""Dish tracks keep a few diverse, sharp views (issue 14, item 1): embedding + crop."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
from test_hardening_config import needs_model

from edge.config import DEFAULT_MODEL, SiteConfig, StreamConfig
from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.frames import DishEvidence, Frame, View
from edge.sim.scene import Scene
from edge.track.views import (
    CROP_PX,
    SAME_VIEW_COS,
    SHARP_SHARE,
    VIEWS_PER_TRACK,
    ViewSet,
    crop_view,
    sharpness,
)


def _unit(*values: float) -> npt.NDArray[np.float32]:
    v = np.array(values, np.float32)
    return v / np.linalg.norm(v)


def _crop(detail: float) -> npt.NDArray[np.uint8]:
    """A checkerboard whose contrast sets its sharpness."""
    board = (np.indices((CROP_PX, CROP_PX)).sum(axis=0) % 2) * detail + 100
    return np.repeat(board[:, :, None], 3, axis=2).astype(np.uint8)


def test_a_look_like_one_kept_is_not_cropped_again() -> None:
    views = ViewSet()
    made = []

    def crop() -> npt.NDArray[np.uint8]:
        made.append(1)
        return _crop(50)

    assert views.offer(_unit(1, 0, 0), 1, crop)
    assert not views.offer(_unit(1, 0.01, 0), 2, crop)  # within SAME_VIEW_COS
    assert len(views) == 1 and len(made) == 1


def test_a_full_set_takes_a_look_only_if_it_is_more_diverse() -> None:
    views = ViewSet()
    for i, e in enumerate([_unit(1, 0, 0, 0), _unit(0, 1, 0, 0), _unit(0, 0, 1, 0),
                           _unit(0.9, 0.3, 0, 0)]):
        assert views.add(View(e, _crop(50), i, 100.0))
    assert len(views) == VIEWS_PER_TRACK
    # (1,0,0,0) and (0.9,0.3,0,0) are the redundant pair: a new direction replaces one
    assert views.add(View(_unit(0, 0, 0, 1), _crop(50), 9, 100.0))
    kept = np.stack([v.embedding for v in views.views])
    gram = kept @ kept.T
    np.fill_diagonal(gram, -1)
    assert gram.max() < 0.5
    # a look as redundant as any kept one does not get in
    assert not views.add(View(_unit(1, 0.05, 0, 0), _crop(50), 10, 100.0))


def test_blurred_looks_give_way_to_a_sharp_one() -> None:
    views = ViewSet()
    assert views.add(View(_unit(1, 0, 0), _crop(4), 1, sharpness(_crop(4))))
    sharp = sharpness(_crop(80))
    assert sharp * SHARP_SHARE > sharpness(_crop(4))
    assert views.add(View(_unit(0, 1, 0), _crop(80), 2, sharp))
    assert [v.seq for v in views.views] == [2]  # the blurred one is gone
    assert not views.add(View(_unit(0, 0, 1), _crop(4), 3, sharpness(_crop(4))))


def test_merging_keeps_both_sets_as_they_were() -> None:
    a, b = ViewSet(), ViewSet()
    a.add(View(_unit(1, 0, 0), _crop(50), 1, 100.0))
    b.add(View(_unit(0, 1, 0), _crop(50), 2, 100.0))
    both = a.merged(b)
    assert [v.seq for v in both.views] == [1, 2]
    assert len(a) == len(b) == 1


def test_a_crop_is_square_and_none_off_the_picture() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    crop = crop_view(image, (10.5, 20.2, 60.0, 90.0))
    assert crop is not None and crop.shape == (CROP_PX, CROP_PX, 3) and crop.dtype == np.uint8
    assert crop_view(image, (97, 10, 120, 40)) is None  # 3 px in view


def _run(with_embeddings: bool) -> dict[int, DishEvidence]:
    from edge.billing.biller import make_biller

    scene = Scene(21, fps=20, size=(640, 480), difficulty="standard", keep_history=False)
    biller = make_biller(StreamConfig(id="cam", url="synthetic://"), SiteConfig(),
                         scene_names(), 640, 480, run_id="t", clock_offset=0.0, snapshots=False)
    seen: dict[int, DishEvidence] = {}
    with OnnxRuntimeDetector(DEFAULT_MODEL, score_threshold=0.3) as detector:
        for i in range(160):
            image = scene.render(i)[0]
            dets = detector.detect([image])[0]
            if not with_embeddings:
                dets = type(dets)(dets.boxes, dets.scores, dets.classes)
            biller.update(Frame("cam", i, image, i / 20.0), dets)
            for tray in biller.open_trays():
                for dish in biller.tracker.evidence(tray):
                    seen[dish.track_id] = dish
    return seen


def scene_names() -> tuple[str, ...]:
    from edge.detect.contract import read_model_info

    return read_model_info(DEFAULT_MODEL).class_names


@needs_model
def test_dish_tracks_keep_diverse_sharp_views_from_the_detector() -> None:
    seen = _run(with_embeddings=True)
    with_views = [d for d in seen.values() if d.views]
    assert len(with_views) >= 4
    for dish in with_views:
        assert len(dish.views) <= VIEWS_PER_TRACK
        kept = np.stack([v.embedding for v in dish.views])
        np.testing.assert_allclose(np.linalg.norm(kept, axis=1), 1.0, atol=1e-3)
        gram = kept @ kept.T
        np.fill_diagonal(gram, -1)
        assert gram.max() < SAME_VIEW_COS
        best = max(v.sharpness for v in dish.views)
        assert all(v.sharpness >= SHARP_SHARE * best for v in dish.views)
        assert all(v.crop.shape == (CROP_PX, CROP_PX, 3) for v in dish.views)
    assert any(len(d.views) >= 2 for d in with_views)  # a moving dish shows more than one


@needs_model
def test_without_embeddings_no_views_are_taken() -> None:
    assert not any(d.views for d in _run(with_embeddings=False).values())


@pytest.mark.parametrize("bad", [0])
def test_views_per_track_is_bounded(bad: int) -> None:
    views = ViewSet()
    rng = np.random.default_rng(bad)
    for i in range(50):
        views.add(View(_unit(*rng.normal(size=8)), _crop(50), i, 100.0))
    assert len(views) == VIEWS_PER_TRACK
