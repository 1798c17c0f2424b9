"""A live change of the menu keeps the trays in view (issue 17, item 1, in part).

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
from test_hardening_config import _site, needs_model

from edge.billing.biller import menu_change_only
from edge.config import SiteConfig
from edge.pipeline import Pipeline


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
            # a change of how trays are tracked still starts them afresh
            await pipeline.apply_config(pipeline.config.model_copy(update={
                "tracker": pipeline.config.tracker.model_copy(update={"iou_threshold": 0.3})}))
            assert runner.tracker is None
        finally:
            await pipeline.stop()

    asyncio.run(main())
