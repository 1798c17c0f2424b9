"""Nothing dropped on a change: live settings keep the trays in view, and tray
numbers go on (issue 17, item 1).

A price change in ``PUT /api/config`` used to reset every stream's tracker:
the open bills of the trays in view were dropped (``tracker_reset``). Now a
change of the menu, the tracker or billing applies to the trays in view
(their tracks and evidence stay; bills that close after it follow it); a
changed stream keeps its tracker and viewers where the picture allows, and
otherwise bills its open trays flagged ``stream_changed``, never silently.
``bench/live_changes.py`` checks a 3-minute run tray by tray.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bills_support import make_bill
from test_hardening_config import _site, needs_model
from test_trays import IMAGE, SOUP, _biller, _dets, _on, _tray

from edge.billing.biller import make_biller
from edge.billing.line import CheckoutLine
from edge.billing.service import BillingService
from edge.config import CheckoutConfig, SiteConfig, StreamConfig
from edge.frames import Frame
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.sim.menu import CLASS_NAMES


def _priced(site: SiteConfig, key: str, price: float) -> SiteConfig:
    menu = dict(site.menu)
    menu[key] = menu[key].model_copy(update={"price": price})
    return site.model_copy(update={"menu": menu})


def _tracked(site: SiteConfig) -> SiteConfig:
    return site.model_copy(update={"tracker": site.tracker.model_copy(
        update={"iou_threshold": 0.3, "hit_counter_max": 20, "optical_flow": False})})


def _soup_tray(i: int) -> list[tuple[float, float, float, float, int, float]]:
    x = 20.0 + 6 * i
    return [_tray(x), _on(x, 20, 30, SOUP)]


def test_a_tracker_and_billing_change_keeps_the_trays_and_applies() -> None:
    biller = _biller()
    for i in range(10):
        biller.update(Frame("cam", i, IMAGE, i / 20.0), _dets(_soup_tray(i)))
    assert biller.open_trays() == [1]
    site = _tracked(SiteConfig())
    site = site.model_copy(update={"billing": site.billing.model_copy(
        update={"min_item_hits": 4})})
    biller.retune(site, CLASS_NAMES)
    trays = biller.tracker._trays.tracker
    assert trays.distance_threshold == pytest.approx(0.7)
    assert all(o.hit_counter_max == 20 for o in trays.tracked_objects)  # the live ones too
    assert biller.min_item_hits == 4 and not biller.tracker._flow.enabled
    bills = []
    for i in range(10, 80):  # on across the line: the same tray, billed once
        bills += biller.update(Frame("cam", i, IMAGE, i / 20.0), _dets(_soup_tray(i))).closed
    assert [(b.tray_id, [it.key for it in b.items]) for b in bills] == [(1, ["tomato_soup"])]


def test_switching_the_noise_guard_on_and_off_live_keeps_billing() -> None:
    biller = _biller()
    bills = []
    for i in range(80):
        if i in (10, 40):
            site = SiteConfig()
            guard = i == 10
            biller.retune(site.model_copy(update={"billing": site.billing.model_copy(
                update={"noise_guard": guard})}), CLASS_NAMES)
            assert biller.tracker.noise_guard is guard
        bills += biller.update(Frame("cam", i, IMAGE, i / 20.0), _dets(_soup_tray(i))).closed
    assert [[it.key for it in b.items] for b in bills] == [["tomato_soup"]]


def test_a_moved_checkout_line_applies_to_the_trays_in_view() -> None:
    biller = _biller()
    for i in range(10):  # the tray's centre reaches x = 174, the line is at 397
        biller.update(Frame("cam", i, IMAGE, i / 20.0), _dets(_soup_tray(i)))
    biller.use_line(CheckoutLine(CheckoutConfig(line=((200, 0), (200, 480))), 640, 480))
    bills = []
    for i in range(10, 20):
        bills += biller.update(Frame("cam", i, IMAGE, i / 20.0), _dets(_soup_tray(i))).closed
    assert [b.tray_id for b in bills] == [1]
    assert bills[0].closed_at < 20 / 20.0  # closed at the new line, not the old one


def test_open_trays_close_into_flagged_bills_when_the_tracker_must_go() -> None:
    biller = _biller()
    frame = None
    for i in range(10):
        frame = Frame("cam", i, IMAGE, i / 20.0)
        biller.update(frame, _dets(_soup_tray(i)))
    assert frame is not None
    bills = biller.close_open(frame, "stream_changed")
    assert len(bills) == 1
    assert bills[0].review == ("stream_changed",) and bills[0].needs_review
    assert [it.key for it in bills[0].items] == ["tomato_soup"]
    assert biller.open_trays() == [] and biller.close_open(frame, "stream_changed") == ()


@needs_model
def test_a_price_change_keeps_the_trays_in_view_and_prices_their_bills_anew(
        tmp_path: Path) -> None:
    site = _site(tmp_path, "synthetic://?seed=3&fps=20&size=320x240")

    async def main() -> None:
        pipeline = Pipeline(site)
        await pipeline.start()
        try:
            runner = pipeline.runners["cam1"]
            deadline = asyncio.get_running_loop().time() + 60.0
            while runner.tracker is None or not runner.tracker.open_trays():
                assert asyncio.get_running_loop().time() < deadline, "no tray in view"
                await asyncio.sleep(0.05)
            tracker, trays = runner.tracker, set(runner.tracker.open_trays())
            result = await pipeline.apply_config(_priced(pipeline.config, "coffee", 9.99))
            assert result["applied"] == ["menu"]
            assert runner.tracker is tracker  # the trays in view and their evidence stay
            assert trays & set(tracker.open_trays()) or not tracker.open_trays()
            coffee = pipeline.worker.class_names.index("coffee")
            item = tracker.menu.item(coffee, 1.0, 1)
            assert item is not None and item.price == pytest.approx(9.99)
            # a change of how trays are tracked keeps them too
            result = await pipeline.apply_config(_tracked(pipeline.config))
            assert result["applied"] == ["tracker"]
            assert runner.tracker is tracker
            assert tracker.tracker._trays.tracker.distance_threshold == pytest.approx(0.7)
        finally:
            await pipeline.stop()

    asyncio.run(main())


def test_a_stream_numbers_its_trays_on_from_the_journal_after_a_restart(
        tmp_path: Path) -> None:
    async def main() -> None:
        service = BillingService(tmp_path / "journal.sqlite3", Metrics())
        await service.open()
        try:
            assert service.last_tray_id("cam1") == 0
            service.submit(make_bill("cam1-1-7", tray_id=7))
            service.submit(make_bill("cam2-1-3", stream="cam2", tray_id=3))
            assert service.last_tray_id("cam1") == 7
        finally:
            await service.close()
        again = BillingService(tmp_path / "journal.sqlite3", Metrics())
        await again.open()
        try:
            assert (again.last_tray_id("cam1"), again.last_tray_id("cam2")) == (7, 3)
        finally:
            await again.close()

    asyncio.run(main())


def test_a_tracker_numbers_its_trays_from_its_first_tray_id() -> None:
    biller = make_biller(StreamConfig(id="cam", url="synthetic://?seed=1"), SiteConfig(),
                         CLASS_NAMES, 640, 480, run_id="t", clock_offset=0.0, snapshots=False,
                         first_tray_id=41)
    for i in range(10):
        x = 20.0 + 6 * i
        biller.update(Frame("cam", i, IMAGE, i / 20.0), _dets([_tray(x), _on(x, 20, 30, SOUP)]))
    assert biller.open_trays() == [41]
    assert biller.next_tray_id == 42


def _with_stream(site: SiteConfig, **update: object) -> SiteConfig:
    stream = site.streams[0]
    if "checkout" in update:
        update["checkout"] = stream.checkout.model_copy(update=update["checkout"])
    return site.model_copy(update={"streams": [stream.model_copy(update=update)]})


async def _until(check: object, what: str, timeout: float = 60.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


@needs_model
def test_a_changed_stream_keeps_its_tracker_or_bills_its_open_trays_flagged(
        tmp_path: Path) -> None:
    site = _site(tmp_path, "synthetic://?seed=3&fps=20&size=320x240")

    async def main() -> None:
        service = BillingService(tmp_path / "journal.sqlite3", Metrics())
        await service.open()
        pipeline = Pipeline(site, billing=service)
        await pipeline.start()
        try:
            runner = pipeline.runners["cam1"]
            await _until(lambda: runner.tracker is not None, "no frame")
            tracker, view, source = runner.tracker, runner.view, runner.source
            # another URL with the same picture: the source is swapped under the tracker
            result = await pipeline.apply_config(_with_stream(
                pipeline.config, url="synthetic://?seed=3&fps=20&size=320x240&stamp=0"))
            assert result["applied"] == ["streams.cam1"]
            assert pipeline.runners["cam1"] is runner and runner.view is view
            assert runner.source is not source and runner.tracker is tracker
            done = runner.frames_done
            await _until(lambda: runner.frames_done > done + 5, "no frame from the new source")
            assert runner.tracker is tracker
            # a moved checkout line applies to the same tracker
            await pipeline.apply_config(_with_stream(
                pipeline.config, checkout={"line": ((250.0, 0.0), (250.0, 240.0))}))
            assert runner.tracker is tracker and tracker.line.points == ((250, 0), (250, 240))

            def billable_open() -> bool:
                return any(tracker._items(tracker._billable(t)) for t in tracker.open_trays())

            await _until(billable_open, "no open tray with a dish")
            # another picture size: the tracker cannot carry on; its open trays are
            # billed, flagged for the cashier, and the new tracker numbers on
            await pipeline.apply_config(_with_stream(
                pipeline.config, url="synthetic://?seed=3&fps=20&size=256x192&stamp=0"))
            await _until(lambda: runner.tracker is not tracker, "the tracker stayed")

            async def flagged() -> list[dict[str, object]]:
                page = await service.list_bills(limit=50)
                return [b for b in page.bills if b["review"] == ["stream_changed"]]

            deadline = asyncio.get_running_loop().time() + 10.0
            while not await flagged():
                assert asyncio.get_running_loop().time() < deadline, "no flagged bill"
                await asyncio.sleep(0.05)
            bill = (await flagged())[0]
            assert bill["needs_review"] and bill["reason"] == "stream_changed"
            assert runner.tracker is None or runner.tracker.first_tray_id > bill["tray_id"]
        finally:
            await pipeline.stop()
            await service.close()

    asyncio.run(main())


@needs_model
def test_the_live_changes_bench_bills_the_baseline_trays_and_can_tell_a_reset() -> None:
    from bench import live_changes as lc

    size = (320, 240)
    frames, dets = lc.detect_run(21, 24.0, 20, size, "standard", threshold=0.3)
    names = CLASS_NAMES
    base = lc.bill_baseline(frames, dets, names, size)
    changed, made = lc.bill_with_changes(frames, dets, names, size)
    assert len(made) == 4 and len(base) >= 2
    result = lc.compare(base, changed)
    assert result["trays_alike"] == result["trays_baseline"] == result["trays_changes"]
    assert result["lines_priced_in_force"] == result["lines"]
    # what a tracker reset at the tracker change did: the trays in view are lost
    cut = int(lc.TRACKER_AT * len(frames))
    first = lc.bill_baseline(frames[:cut], dets[:cut], names, size)
    biller = lc._biller(SiteConfig(), names, size, first_tray_id=1 + max(
        (b.tray_id for b in first), default=0))
    after = [b for f, d in zip(frames[cut:], dets[cut:], strict=True)
             for b in biller.update(f, d).closed]
    reset = lc.compare(base, [(b, SiteConfig()) for b in first + after])
    assert reset["trays_alike"] < reset["trays_baseline"]
