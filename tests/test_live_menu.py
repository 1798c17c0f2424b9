"""A live change of the menu keeps the trays in view, and tray numbers go on
(issue 17, item 1, in part).

A price change in ``PUT /api/config`` used to reset every stream's tracker:
the open bills of the trays in view were dropped (``tracker_reset``). Now a
change of the menu or of ``billing.confirm_below`` only renames and reprices
the bills that close after it; any other tracker or billing change still
starts the trays in view afresh.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from bills_support import make_bill
from test_hardening_config import _site, needs_model
from test_trays import IMAGE, SOUP, _dets, _on, _tray

from edge.billing.biller import make_biller, menu_change_only
from edge.billing.service import BillingService
from edge.config import SiteConfig, StreamConfig
from edge.frames import Frame
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.sim.menu import CLASS_NAMES


def _priced(site: SiteConfig, key: str, price: float) -> SiteConfig:
    menu = dict(site.menu)
    menu[key] = menu[key].model_copy(update={"price": price})
    return site.model_copy(update={"menu": menu})


def test_only_menu_and_confirm_below_changes_keep_the_tracker() -> None:
    old = SiteConfig()
    assert menu_change_only(old, _priced(old, "coffee", 9.99))
    assert menu_change_only(old, old.model_copy(update={"billing": old.billing.model_copy(
        update={"confirm_below": 0.9})}))
    assert not menu_change_only(old, old.model_copy(update={"billing": old.billing.model_copy(
        update={"min_item_hits": 5})}))
    assert not menu_change_only(old, old.model_copy(update={"tracker": old.tracker.model_copy(
        update={"iou_threshold": 0.3})}))


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
            # a change of how trays are tracked still starts them afresh, but the
            # tray numbers go on: no second "Tray 1" in the day's history
            seen = max(trays)
            await pipeline.apply_config(pipeline.config.model_copy(update={
                "tracker": pipeline.config.tracker.model_copy(update={"iou_threshold": 0.3})}))
            assert runner.tracker is None
            while runner.tracker is None or not runner.tracker.open_trays():
                assert asyncio.get_running_loop().time() < deadline + 60.0, "no new tray"
                await asyncio.sleep(0.05)
            assert min(runner.tracker.open_trays()) > seen
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
