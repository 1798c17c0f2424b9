"""The models page in headless Chromium against a real pipeline, registry and rollout
controller: a manager uploads a model, shadows, promotes, rolls back and retires
it with the page's buttons; a refused upload shows the server's reason; a
cashier's token gets a note instead of the page.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from model_variants import dishnet_variant
from test_browser import chromium, run_in_own_thread
from test_hardening_config import needs_model
from test_model_routes import serve
from test_model_store import no_contract_model
from test_report import until_js
from test_webrtc_support import TOKEN

MODELS = "window.dishtrackerModels"


async def _state_of(page: Any, version: str) -> str:
    state: str = await page.evaluate(
        f"() => ({MODELS}.models.find((m) => m.version === '{version}') || {{}}).state")
    return state


async def _click(page: Any, version: str, action: str) -> None:
    model_id = await page.evaluate(
        f"() => {MODELS}.models.find((m) => m.version === '{version}').id")
    await page.locator(f'#rows tr[data-key="{model_id}"] button[data-action="{action}"]').click()


@pytest.mark.browser
@needs_model
def test_a_manager_rolls_a_model_out_and_back_from_the_page(tmp_path: Path) -> None:
    candidate = dishnet_variant(tmp_path / "canteen-v2.onnx", "dishnet-v2")
    broken = no_contract_model(tmp_path / "plain.onnx")

    async def main() -> None:
        async with serve(tmp_path) as box, chromium(tmp_path) as page:
            page.on("dialog", lambda dialog: dialog.accept())
            base = str(box.client.make_url("/"))
            await page.goto(f"{base}models.html#token={TOKEN}")
            await until_js(page, f"{MODELS}.models.length === 1")
            assert await page.locator("#link-models").is_visible()
            assert "dishnet-1.1" in await page.locator("#running").inner_text()

            await page.locator("#upload-file").set_input_files(str(candidate))
            await page.locator('#upload-form button[type="submit"]').click()
            await until_js(page, f"{MODELS}.models.length === 2")
            assert "candidate" in await page.locator("#status").inner_text()
            assert await _state_of(page, "dishnet-v2") == "candidate"

            await _click(page, "dishnet-v2", "shadow")
            await until_js(page, f"({MODELS}.rollout.shadow || {{}}).version === 'dishnet-v2'")
            await until_js(page, "document.querySelector('[aria-label=\"Shadow figures\"], "
                                 "#running .notice-line') !== null")
            await page.screenshot(path=str(tmp_path / "models.png"), full_page=True)

            await _click(page, "dishnet-v2", "promote")
            await until_js(page, f"{MODELS}.rollout.serving.version === 'dishnet-v2'")
            assert await _state_of(page, "dishnet-1.1") == "retired"
            assert box.rollout.status()["serving"]["version"] == "dishnet-v2"

            await _click(page, "dishnet-v2", "rollback")
            await until_js(page, f"{MODELS}.rollout.serving.version === 'dishnet-1.1'")
            assert await _state_of(page, "dishnet-v2") == "retired"
            await _click(page, "dishnet-v2", "shadow")  # a retired model may come back
            await until_js(page, f"{MODELS}.rollout.shadow !== null")
            await _click(page, "dishnet-v2", "retire")
            await until_js(page, f"{MODELS}.rollout.shadow === null")
            assert await _state_of(page, "dishnet-v2") == "retired"
            history = await page.locator("#history").inner_text()
            assert "serving → retired" in history and "owner" in history

            await page.locator("#upload-file").set_input_files(str(broken))
            await page.locator('#upload-form button[type="submit"]').click()
            await until_js(page, "document.getElementById('status').dataset.kind === 'error'")
            assert "class_names" in await page.locator("#status").inner_text()
            assert len(box.rollout.store.entries()) == 2
            errors = [m for m in page.console_log if m.startswith("error")
                      and "Failed to load resource" not in m]  # the 422 itself
            assert errors == []

            cashier = box.cashier["Authorization"].removeprefix("Bearer ")
            await page.goto(f"{base}models.html?till#token={cashier}")  # a new load
            await until_js(page, "!document.getElementById('role-note').hidden")
            assert not await page.locator("[data-managers]").first.is_visible()
            assert not await page.locator("#link-models").is_visible()

    run_in_own_thread(main)
    assert (tmp_path / "models.png").stat().st_size > 10_000
