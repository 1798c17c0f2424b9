"""The video overlays: the engineer's keeps the corner stamp readable; the cashier's names
dishes by the menu in force and places labels clear of the dishes and of each other."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from test_hardening_config import _site, needs_model

from edge.annotate import _label_text, annotate, class_colour
from edge.billing.biller import make_menu
from edge.billing.menu import Menu
from edge.catalogue import BY_KEY, CLASS_NAMES
from edge.config import SiteConfig
from edge.frames import Frame, Track, TrackedFrame
from edge.labels import LabelMemory, place_labels
from edge.overlay import cashier_labels, cashier_overlay, render
from edge.palette import AMBER, tray_colour
from edge.pipeline import Pipeline
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
    tray = Track(track_id=4, box=(-30, -10, width + 40, height + 20), class_id=BY_KEY["tray"].id,
                 class_name="tray", confidence=1.0, hits=3, detected=True, tray_id=4)
    tf = TrackedFrame(Frame("cam1", 7, img, 12.5), None, (*tracks, tray), bills=((4, 1, 2.5),))
    out = cashier_overlay(tf, make_menu(SiteConfig(), CLASS_NAMES))
    assert out.shape == (height, width, 3)
    _, placed = cashier_labels(tf, make_menu(SiteConfig(), CLASS_NAMES))
    assert all(0 <= p.rect[0] <= p.rect[2] <= width and 0 <= p.rect[1] <= p.rect[3] <= height
               for p in placed)


# -- the cashier's overlay (edge.overlay): menu names, totals, flags, placement -----------

def _menu(**renamed: str) -> Menu:
    """The default site menu, with ``key=name`` renames."""
    site = SiteConfig()
    menu = dict(site.menu)
    for key, name in renamed.items():
        menu[key] = menu[key].model_copy(update={"name": name})
    return make_menu(site.model_copy(update={"menu": menu}), CLASS_NAMES)


def _tray(tray_id: int, box: tuple[float, float, float, float]) -> Track:
    return Track(track_id=tray_id, box=box, class_id=BY_KEY["tray"].id, class_name="tray",
                 confidence=1.0, hits=9, detected=True, tray_id=tray_id)


def _dish(track_id: int, key: str, box: tuple[float, float, float, float], tray_id: int | None,
          confidence: float = 0.95) -> Track:
    return Track(track_id=track_id, box=box, class_id=BY_KEY[key].id, class_name=key,
                 confidence=confidence, hits=9, detected=True, tray_id=tray_id)


def _rects_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_cashier_labels_name_dishes_by_the_menu_in_force_and_show_no_track_ids() -> None:
    img = _frame()
    # dish 3 carries its tray's number as its own id: still a dish, not a second tray
    tf = TrackedFrame(Frame("cam1", 7, img, 12.5), None,
                      (_tray(3, (100, 150, 400, 380)),
                       _dish(3, "coffee", (120, 200, 180, 260), 3),
                       _dish(41, "tomato_soup", (250, 220, 330, 300), 3)),
                      bills=((3, 2, 12.4),))
    labels, _ = cashier_labels(tf, _menu(coffee="House brew"))
    texts = [lb.text for lb in labels]
    assert texts == ["Tray 3  12.40", "House brew", "Tomato soup"]
    assert not any("coffee" in t or "#" in t or "%" in t or "41" in t for t in texts)
    default = [lb.text for lb in cashier_labels(tf, _menu())[0]]
    assert default[1] == "Coffee"  # the same track, named by whichever menu is in force
    # the engineer's overlay keeps the ids and keys (today's drawing), and draws dish 3
    # as a dish on tray 3, not as a second "TRAY 3"
    assert "#41" in _label_text(tf.tracks[2], CLASS_NAMES)
    assert _label_text(tf.tracks[1], CLASS_NAMES) == "#3 coffee 95% T3"


def test_cashier_flags_unsure_and_unknown_dishes_and_leaves_out_clutter() -> None:
    menu = _menu()
    unknown = Track(track_id=8, box=(420, 100, 480, 160), class_id=len(CLASS_NAMES) + 3,
                    class_name="new_dish", confidence=0.99, hits=9, detected=True, tray_id=None)
    clutter = next(c for c in CLASS_NAMES if c in menu.entries and not menu.entries[c].billable)
    tf = TrackedFrame(Frame("cam1", 7, np.full((480, 640, 3), 120, np.uint8), 12.5), None,
                      (_dish(5, "coffee", (100, 200, 160, 260), None,
                             confidence=menu.confirm_below - 0.05),
                       unknown, _dish(9, clutter, (300, 300, 340, 340), None)))
    labels, _ = cashier_labels(tf, menu)
    assert [(lb.text, lb.flagged) for lb in labels] == [("new dish ?", True), ("Coffee ?", True)]
    out = cashier_overlay(tf, menu)
    assert tuple(out[230, 100]) == AMBER  # the unsure coffee's left edge
    assert tuple(out[320, 300]) == (120, 120, 120)  # the napkin is not drawn


@pytest.mark.parametrize(("name", "shown"), [("Käsespätzle", "Kasespatzle"),
                                             ("Smørrebrød", "Smorrebrod"),
                                             ("味噌汁", "tomato soup")])
def test_cashier_labels_draw_any_name_without_question_marks(name: str, shown: str) -> None:
    tf = TrackedFrame(Frame("cam1", 7, _frame(), 12.5), None,
                      (_dish(2, "tomato_soup", (200, 200, 260, 260), None),))
    labels, _ = cashier_labels(tf, _menu(tomato_soup=name))
    assert [lb.text for lb in labels] == [shown]
    assert labels[0].text.isascii() and "?" not in labels[0].text


def _crowded() -> TrackedFrame:
    """Three trays of five or six dishes side by side: labels must find room between them."""
    keys = ["coffee", "tomato_soup", "water_still", "schnitzel_fries", "green_salad",
            "espresso"]
    tracks: list[Track] = []
    for t in range(3):
        tx = 20.0 + 205.0 * t
        tracks.append(_tray(t + 1, (tx, 120.0, tx + 190.0, 330.0)))
        for d in range(5 + t % 2):
            dx, dy = tx + 10.0 + 62.0 * (d % 3), 140.0 + 100.0 * (d // 3)
            tracks.append(_dish(10 * (t + 1) + d, keys[d], (dx, dy, dx + 52.0, dy + 52.0),
                                t + 1, 0.95 if d else 0.5))
    return TrackedFrame(Frame("cam1", 3, _frame(), 1.0), None, tuple(tracks),
                        bills=((1, 5, 14.5), (2, 6, 18.0), (3, 5, 9.9)))


def test_labels_cover_neither_each_other_nor_any_dish_in_a_crowded_frame() -> None:
    tf = _crowded()
    labels, placed = cashier_labels(tf, _menu())
    assert len(labels) == 19
    dishes = [lb.box for lb in labels if not lb.is_tray]
    rects = [p.rect for p in placed]
    for i, a in enumerate(rects):
        assert 0 <= a[0] < a[2] <= 640 and 0 <= a[1] < a[3] <= 480
        assert not any(_rects_overlap(a, b) for b in rects[i + 1:]), (labels[i].text, a)
        assert not any(_rects_overlap(a, d) for d in dishes), (labels[i].text, a)
    assert all(p.clear for p in placed)
    # a label that had to move away from its box is joined to it by a leader line
    assert any(p.moved for p in placed)
    assert all(not p.moved or not _rects_overlap(p.rect, p.target) for p in placed)


def test_label_placement_prefers_the_spot_above_the_box_and_never_leaves_the_picture() -> None:
    placed = place_labels([(80, 22), (80, 22)], [(100, 100, 160, 160), (0, 0, 40, 40)], [],
                          640, 480)
    assert placed[0].rect == (100, 78, 180, 100) and not placed[0].moved
    assert placed[1].rect == (0, 40, 80, 62)  # no room above: below, touching the box


def test_cashier_overlay_draws_no_stamp_the_engineer_overlay_keeps_it() -> None:
    tf = _crowded()
    assert read_stamp(tf.frame.image) == (4242, EPOCH_MS % TIME_MODULUS)
    cashier = render("cashier", tf, _menu(), CLASS_NAMES, fps=20.0, latency_ms=30.0)
    engineer = render("engineer", tf, _menu(), CLASS_NAMES, fps=20.0, latency_ms=30.0)
    assert read_stamp(cashier) is None
    geo = stamp_geometry(640, 480)
    corner = cashier[: geo["height_px"], : geo["width_px"]].reshape(-1, 3)
    assert corner.min(axis=0).tolist() == corner.max(axis=0).tolist()  # one flat colour
    assert read_stamp(engineer) == (4242, EPOCH_MS % TIME_MODULUS)


def test_cashier_overlay_outlines_trays_in_their_colour_with_their_total() -> None:
    img = np.full((480, 640, 3), 90, np.uint8)
    tf = TrackedFrame(Frame("cam1", 7, img, 12.5), None, (_tray(6, (100, 150, 400, 380)),),
                      bills=((6, 3, 7.5),))
    out = cashier_overlay(tf, _menu())
    assert tuple(out[300, 100]) == tray_colour(6)
    labels, placed = cashier_labels(tf, _menu())
    assert labels[0].text == "Tray 6  7.50" and placed[0].rect[3] == 150  # above the tray


@needs_model
def test_a_live_rename_reaches_the_cashier_overlay_of_the_running_stream(
        tmp_path: Path) -> None:
    site = _site(tmp_path, "synthetic://?seed=3&fps=20&size=320x240")

    async def main() -> None:
        pipeline = Pipeline(site)
        await pipeline.start()
        try:
            view = pipeline.runners["cam1"].view
            names = pipeline.worker.class_names
            coffee = Track(track_id=5, box=(100, 100, 140, 140), class_id=names.index("coffee"),
                           class_name="coffee", confidence=0.97, hits=9, detected=True)
            tf = TrackedFrame(Frame("cam1", 1, np.zeros((240, 320, 3), np.uint8), 0.0), None,
                              (coffee,))
            assert [lb.text for lb in cashier_labels(tf, view.menu)[0]] == ["Coffee"]
            menu = dict(pipeline.config.menu)
            menu["coffee"] = menu["coffee"].model_copy(update={"name": "Filterkaffee"})
            result = await pipeline.apply_config(pipeline.config.model_copy(
                update={"menu": menu}))
            assert result["applied"] == ["menu"]
            assert [lb.text for lb in cashier_labels(tf, view.menu)[0]] == ["Filterkaffee"]
            assert pipeline.runners["cam1"].view is view  # the viewers' view, renamed in place
        finally:
            await pipeline.stop()

    asyncio.run(main())


def test_a_label_stays_where_it_was_while_its_spot_stays_free() -> None:
    memory = LabelMemory()
    menu = _menu()
    soup = _dish(1, "tomato_soup", (200, 200, 260, 260), None)
    above = _dish(2, "coffee", (190, 150, 270, 198), None)  # no room above the soup

    def frame(*tracks: Track) -> TrackedFrame:
        return TrackedFrame(Frame("cam1", 1, _frame(), 0.0), None, tracks)

    labels, placed = cashier_labels(frame(above, soup), menu, memory)
    soup_label = next(p for lb, p in zip(labels, placed, strict=True) if lb.track is soup)
    assert soup_label.rect[1] == 260  # below the soup
    # the coffee is gone: a fresh layout puts the soup's label above it again,
    # the remembered one keeps it below, moved along with the soup
    moved = _dish(1, "tomato_soup", (206, 200, 266, 260), None)
    assert cashier_labels(frame(moved), menu)[1][0].rect[3] == 200
    assert cashier_labels(frame(moved), menu, memory)[1][0].rect[:2] == (206, 260)
    # a spot taken by another dish is given up
    below = _dish(3, "espresso", (200, 262, 280, 300), None)
    _, placed = cashier_labels(frame(moved, below), menu, memory)
    assert placed[0].rect[3] == 200 and placed[0].clear
