"""The bill photo outlines the billed tray and boxes its dishes with their line numbers
(edge.billing.photo), from the biller to ``GET /api/bills/{id}/snapshot.jpg``."""

from __future__ import annotations

import asyncio
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from test_bills_api import _serve, _until
from test_trays import SOUP, Obj, _dets, _on, _tray

from edge.billing.biller import make_biller
from edge.billing.model import Bill, BillItem
from edge.billing.photo import DIM, bill_photo, dish_boxes
from edge.catalogue import BY_KEY, CLASS_NAMES
from edge.config import SiteConfig, StreamConfig
from edge.frames import Frame, Track
from edge.palette import AMBER, class_colour, tray_colour

GREY = 140
COFFEE = BY_KEY["coffee"].id


def _close(a: tuple[int, ...], b: tuple[int, ...], tol: int = 40) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b, strict=True))


def _decode(jpeg: bytes) -> npt.NDArray[np.uint8]:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return np.asarray(img, np.uint8)


def _billed_tray() -> Bill:
    """One tray with a soup and a coffee slides over the checkout line and is billed,
    a second tray (nothing billed yet) follows it in view."""
    biller = make_biller(StreamConfig(id="cam", url="synthetic://?seed=1"), SiteConfig(),
                         CLASS_NAMES, 640, 480, run_id="test", clock_offset=0.0)
    image = np.full((480, 640, 3), GREY, np.uint8)

    def scene(i: int) -> list[Obj]:
        x = 20.0 + 6 * i
        return [_tray(x), _on(x, 20, 30, SOUP), _on(x, 110, 40, COFFEE),
                _tray(x - 330.0, y=200.0)]

    for i in range(80):
        step = biller.update(Frame("cam", i, image, i / 20.0), _dets(scene(i)))
        if step.closed:
            return step.closed[0]
    raise AssertionError("no bill closed")


def test_the_bill_photo_outlines_the_billed_tray_and_boxes_its_lines() -> None:
    bill = _billed_tray()
    assert [i.class_id for i in bill.items] == [SOUP, COFFEE]
    assert bill.snapshot_jpeg is not None
    photo = _decode(bill.snapshot_jpeg)
    x1, y1, x2, y2 = (round(v) for v in bill.tray_box)
    mid_y = (y1 + y2) // 2
    assert _close(tuple(photo[mid_y, x1 + 1]), tray_colour(bill.tray_id))  # left edge
    assert _close(tuple(photo[mid_y, x2 - 2]), tray_colour(bill.tray_id))  # right edge
    inside = photo[mid_y, (x1 + x2) // 2 - 5]
    assert _close(tuple(inside), (GREY, GREY, GREY), 12)  # the tray at full brightness
    outside = photo[470, 5]
    assert _close(tuple(outside), (round(GREY * DIM),) * 3, 12)  # the rest dimmed
    # the coffee (line 2) is boxed in its class colour: near its left edge where the
    # scene put it at the closing frame (the tracked box may be a pixel or two off)
    cx = round(20.0 + 6 * bill.frame_seq + 110)
    window = photo[205:225, cx - 4 : cx + 4].reshape(-1, 3)
    assert any(_close(tuple(px), class_colour(COFFEE)) for px in window)


def test_each_line_finds_its_dish_by_track_id_or_else_by_class_on_the_tray() -> None:
    def item(class_id: int, track_id: int) -> BillItem:
        key = CLASS_NAMES[class_id]
        return BillItem(class_id, key, key, 1.0, 0.9, track_id, False)

    def track(track_id: int, class_id: int, tray: int, x: float) -> Track:
        return Track(track_id, (x, 100.0, x + 40.0, 140.0), class_id, CLASS_NAMES[class_id],
                     0.9, 5, True, tray)

    tray = Track(4, (0.0, 50.0, 400.0, 300.0), BY_KEY["tray"].id, "tray", 1.0, 9, True, 4)
    tracks = [tray, track(4, SOUP, 4, 10.0),  # a dish numbered like its tray
              track(17, COFFEE, 4, 100.0), track(18, COFFEE, 9, 200.0)]  # 18: another tray
    items = [item(SOUP, 4), item(COFFEE, 12), item(COFFEE, 13)]
    boxes = dish_boxes(items, tracks, 4)
    assert boxes == [tracks[1].box, tracks[2].box, None]


def test_a_line_to_review_is_amber_in_the_photo() -> None:
    image = np.full((480, 640, 3), GREY, np.uint8)
    items = [BillItem(SOUP, "tomato_soup", "Tomato soup", 4.5, 0.4, 7, True),
             BillItem(COFFEE, "coffee", "Coffee", 2.0, 0.99, 8, False)]
    boxes = [(150.0, 200.0, 210.0, 260.0), (300.0, 200.0, 360.0, 260.0)]
    photo = bill_photo(image, 5, (100.0, 150.0, 450.0, 400.0), items, boxes)
    assert tuple(photo[230, 150]) == AMBER
    assert tuple(photo[230, 300]) == class_colour(COFFEE)
    assert tuple(photo[300, 100]) == tray_colour(5)
    np.testing.assert_array_equal(image, np.full((480, 640, 3), GREY, np.uint8))  # untouched


def test_the_snapshot_route_serves_the_marked_photo(tmp_path: Any) -> None:
    bill = _billed_tray()

    async def main() -> None:
        async with _serve(tmp_path) as (client, service):
            service.submit(bill)
            await _until(lambda: service.pending == 0)
            resp = await client.get(f"/api/bills/{bill.bill_id}/snapshot.jpg")
            assert resp.status == 200
            photo = _decode(await resp.read())
            x1, y1, _, y2 = (round(v) for v in bill.tray_box)
            assert _close(tuple(photo[(y1 + y2) // 2, x1 + 1]), tray_colour(bill.tray_id))

    asyncio.run(main())
