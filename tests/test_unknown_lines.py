"""An unknown dish on the pictures: the cashier's overlay names it "Unknown dish?" in amber
(edge.overlay), and the bill photo outlines its line in amber labelled with its number
and "?" (edge.billing.photo), never with the detector's look-alike."""

from __future__ import annotations

import numpy as np

from edge.billing.biller import make_menu
from edge.billing.model import UNKNOWN_KEY, UNKNOWN_NAME, BillItem, Proposal
from edge.billing.photo import bill_photo, line_text, tray_text
from edge.catalogue import BY_KEY, CLASS_NAMES
from edge.config import SiteConfig
from edge.frames import Frame, Track, TrackedFrame
from edge.overlay import UNKNOWN_LABEL, cashier_labels, cashier_overlay, render
from edge.palette import AMBER, class_colour

GREY = 120
MENU = make_menu(SiteConfig(), CLASS_NAMES)


def _dish(track_id: int, key: str, box: tuple[float, float, float, float]) -> Track:
    return Track(track_id=track_id, box=box, class_id=BY_KEY[key].id, class_name=key,
                 confidence=0.97, hits=9, detected=True, tray_id=3)


def _tray() -> Track:
    return Track(track_id=3, box=(80.0, 120.0, 560.0, 400.0), class_id=BY_KEY["tray"].id,
                 class_name="tray", confidence=1.0, hits=9, detected=True, tray_id=3)


def _frame(*tracks: Track) -> TrackedFrame:
    image = np.full((480, 640, 3), GREY, np.uint8)
    return TrackedFrame(Frame("cam1", 7, image, 12.5), None, tracks, bills=((3, 3, 7.3),))


def _unknown_item(track_id: int) -> BillItem:
    return BillItem(class_id=-1, key=UNKNOWN_KEY, name=UNKNOWN_NAME, price=0.0,
                    confidence=0.0, track_id=track_id, needs_review=True, unknown=True,
                    proposals=(Proposal("donut", "Donut", 2.9, 0.61),), source="unknown")


def test_the_overlay_names_an_unknown_dish_as_such_not_as_its_look_alike() -> None:
    # the detector calls dish 12 a yogurt and dish 13 a phone (clutter, never billed):
    # their open bill holds both as unknown items
    tf = _frame(_tray(), _dish(11, "coffee", (120.0, 160.0, 180.0, 220.0)),
                _dish(12, "yogurt", (240.0, 160.0, 300.0, 220.0)),
                _dish(13, "phone", (360.0, 260.0, 420.0, 320.0)))
    before = [(lb.text, lb.flagged) for lb in cashier_labels(tf, MENU)[0]]
    assert before == [("Tray 3  7.30", False), ("Coffee", False), ("Yogurt", False)]

    unknown = {12, 13}
    labels, _ = cashier_labels(tf, MENU, unknown=unknown)
    assert [(lb.text, lb.flagged) for lb in labels] == [
        ("Tray 3  7.30", False), ("Coffee", False), (UNKNOWN_LABEL, True), (UNKNOWN_LABEL, True)]
    assert UNKNOWN_LABEL == "Unknown dish?"
    assert not any("ogurt" in lb.text or "hone" in lb.text for lb in labels)

    out = cashier_overlay(tf, MENU, unknown=unknown)
    assert tuple(out[190, 240]) == AMBER  # the unknown dishes are outlined in amber
    assert tuple(out[290, 360]) == AMBER
    assert tuple(out[190, 120]) == class_colour(BY_KEY["coffee"].id)
    same = render("cashier", tf, MENU, CLASS_NAMES, fps=20.0, latency_ms=None,
                  unknown=unknown)
    np.testing.assert_array_equal(same, out)


def test_the_photo_outlines_an_unknown_line_in_amber_labelled_with_its_number() -> None:
    coffee = BillItem(BY_KEY["coffee"].id, "coffee", "Coffee", 2.2, 0.98, 11, False)
    soup = BillItem(BY_KEY["tomato_soup"].id, "tomato_soup", "Tomato soup", 4.5, 0.5, 14, True)
    unknown = _unknown_item(12)
    assert [line_text(n, i) for n, i in enumerate((coffee, unknown, soup), start=1)] == [
        "1 Coffee", "2 ?", "3 Tomato soup ?"]
    assert tray_text(3, (coffee, unknown)) == "Tray 3  2.20 + ?"  # not the whole bill yet
    assert tray_text(3, (coffee,)) == "Tray 3  2.20"

    image = np.full((480, 640, 3), GREY, np.uint8)
    boxes = [(120.0, 200.0, 180.0, 260.0), (300.0, 200.0, 360.0, 260.0)]
    photo = bill_photo(image, 3, (80.0, 120.0, 560.0, 400.0), (coffee, unknown), boxes)
    assert tuple(photo[230, 300]) == AMBER  # the unknown dish's box
    assert tuple(photo[230, 301]) == AMBER  # drawn as thick as a line to review
    assert tuple(photo[230, 120]) == class_colour(BY_KEY["coffee"].id)
