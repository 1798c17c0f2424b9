"""The labelling page in headless Chromium against the daemon's application and a real
workspace (frames of a simulator scene, the shipped detector proposing).

A labeller labels a first frame with the keyboard alone (accept, search a new
class, delete, complete, next); two labellers on two pages label at the same
time and never hold the same frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_browser import chromium, run_in_own_thread
from test_label_api import workspace
from test_report import until_js

from edge.label.store import LabelStore

LABEL = "window.dishtrackerLabel"
SETTLED = f"{LABEL}.item !== null && {LABEL}.pending === 0 && !{LABEL}.saving"


async def _item(page: Any) -> dict[str, Any]:
    item: dict[str, Any] = await page.evaluate(f"() => {LABEL}.item")
    return item


async def _press(page: Any, key: str) -> None:
    await page.keyboard.press(key)
    await until_js(page, SETTLED)


async def _label_frame(page: Any) -> dict[str, Any]:
    """Accept the first candidate of every open box (Enter), then C; the frame as saved."""
    item = await _item(page)
    for _ in range(sum(1 for b in item["boxes"] if not b["class"])):
        await _press(page, "Enter")
    await _press(page, "c")
    return await _item(page)


@pytest.mark.browser
def test_the_first_page_loads_and_labels_a_frame_by_keyboard_alone(tmp_path: Path) -> None:
    async def main() -> None:
        async with workspace(tmp_path) as box, chromium(tmp_path) as page:
            await page.goto(f"{box.url}label.html#token={box.tokens['ana']}")
            await until_js(page, SETTLED)
            await until_js(page, "document.getElementById('frame-image').naturalWidth > 0")
            await until_js(page, f"{LABEL}.status !== null")
            item = await _item(page)
            assert item["frame"] == 1 and item["version"] == 0 and len(item["boxes"]) >= 3
            await page.screenshot(path=str(tmp_path / "label-start.png"))
            await _press(page, "c")  # not yet: boxes are open
            assert "not labelled" in await page.locator("#status").inner_text()
            await _press(page, "Enter")  # first box: the first candidate
            await _press(page, "2")  # second box: the second candidate
            second = (await _item(page))["boxes"][1]
            assert second["class"] is not None and second["rank"] == 2
            await _press(page, "/")  # third box: a new dish from the menu
            await page.keyboard.type("linzer_torte")
            await _press(page, "Enter")
            await _press(page, "Delete")  # the fourth box is wrong
            before = len((await _item(page))["boxes"])
            saved = await _label_frame(page)
            assert saved["complete"] and all(b["class"] for b in saved["boxes"])
            assert len(saved["boxes"]) == before
            assert saved["boxes"][2]["class"] == "linzer_torte"
            await until_js(page, "document.querySelectorAll('#classes tr').length > 0")
            await page.screenshot(path=str(tmp_path / "label.png"))
            assert "linzer_torte" in await page.locator("#classes").inner_text()
            await _press(page, "n")
            assert (await _item(page))["frame"] == 2
            await _press(page, "p")
            assert (await _item(page))["frame"] == 1
            errors = [m for m in page.console_log if m.startswith("error")
                      and "Failed to load resource" not in m]  # the 422 of the early C
            assert errors == []
        store = LabelStore(box.root)
        newest = store.revision(1, 1)
        store.close()
        assert newest.complete and newest.actor == "ana"
        assert [b["class"] for b in newest.boxes] == [b["class"] for b in saved["boxes"]]

    run_in_own_thread(main)
    assert (tmp_path / "label.png").stat().st_size > 10_000


@pytest.mark.browser
def test_two_labellers_on_two_pages_never_get_the_same_frame(tmp_path: Path) -> None:
    frames = (60, 64, 68, 72, 76, 80)

    async def main() -> None:
        async with workspace(tmp_path, numbers=frames) as box, chromium(tmp_path) as ana:
            ben = await ana.context.new_page()  # its own tab: its own sessionStorage
            ben.console_log = []
            await ana.goto(f"{box.url}label.html#token={box.tokens['ana']}")
            await ben.goto(f"{box.url}label.html#token={box.tokens['ben']}")
            pages = {"ana": ana, "ben": ben}
            done: dict[str, list[int]] = {"ana": [], "ben": []}
            for page in pages.values():
                await until_js(page, SETTLED)
            while True:
                held = {name: (await _item(page))["frame"] for name, page in pages.items()}
                assert held["ana"] != held["ben"], held
                active = [n for n, p in pages.items()
                          if not await p.evaluate(f"() => {LABEL}.done")]
                if not active:
                    break
                for name in active:  # one frame each, turn about
                    page = pages[name]
                    saved = await _label_frame(page)
                    if saved["complete"] and saved["frame"] not in done[name]:
                        done[name].append(saved["frame"])
                    await _press(page, "n")
                    message = await page.evaluate(f"() => {LABEL}.message")
                    if message.startswith("Nothing left"):
                        await page.evaluate(f"() => {{ {LABEL}.done = true; }}")
            assert sorted(done["ana"] + done["ben"]) == list(range(1, len(frames) + 1))
            assert not set(done["ana"]) & set(done["ben"])
            assert done["ana"] and done["ben"]
            await ana.screenshot(path=str(tmp_path / "label-ana.png"))

    run_in_own_thread(main)
