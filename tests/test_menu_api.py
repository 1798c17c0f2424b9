"""Menu editing and the menu's currency on a real server: add, rename, reprice,
disable applied live and saved, refused with field paths when invalid, and
manager only once tokens carry roles.
"""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path
from typing import Any

import pytest
from bills_support import MENU
from test_webrtc_support import write_token_file
from till_support import serve

from edge.billing.menu import Menu
from edge.config import (
    ServerConfig,
    SiteConfig,
    StorageConfig,
    TillConfig,
    load_config,
    parse_config,
    write_config_atomic,
)
from edge.errors import ConfigError
from edge.web.access import load_keyring
from edge.web.config_history import HISTORY_FILE, read_history
from edge.web.tokens import TOKENS_FILE, TokenStore


async def _json(resp: Any) -> Any:
    return await resp.json()


def test_the_menu_names_its_currency_locale_and_disabled_dishes(tmp_path: Path) -> None:
    async def main() -> None:
        config = SiteConfig(till=TillConfig(currency="CHF", locale="de-CH"))
        async with serve(tmp_path, config=config) as till:
            menu = await _json(await till.client.get("/api/menu"))
            assert (menu["currency"], menu["locale"]) == ("CHF", "de-CH")
            assert all(i["enabled"] is True for i in menu["items"])

    asyncio.run(main())


@pytest.mark.parametrize(("till", "field"), [
    ({"currency": "eur"}, "till.currency"), ({"currency": "EURO"}, "till.currency"),
    ({"currency": "XYZ"}, "till.currency"), ({"locale": "english"}, "till.locale"),
    ({"locale": "en_US"}, "till.locale"), ({"pos_webhook_url": "ftp://pos/x"},
                                           "till.pos_webhook_url"),
    ({"pos_webhook_url": "http://"}, "till.pos_webhook_url"), ({"colour": "red"}, "till.colour"),
])
def test_till_settings_are_validated_with_their_path(till: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"till": till})
    assert info.value.errors[0].startswith(f"{field}: ")  # type: ignore[attr-defined]


def test_valid_till_settings_survive_the_config_file(tmp_path: Path) -> None:
    config = parse_config({"till": {"currency": "USD", "locale": "sr-Latn-RS",
                                    "pos_webhook_url": "https://pos.local:8443/bills"}})
    write_config_atomic(tmp_path / "site.toml", config)
    assert load_config(tmp_path / "site.toml").till == config.till


def test_menu_edits_apply_live_and_are_saved(tmp_path: Path) -> None:
    async def main() -> None:
        site = tmp_path / "site.toml"
        write_config_atomic(site, SiteConfig())
        async with serve(tmp_path, config=SiteConfig(), config_path=site) as till:
            await till.bill("cam1-1-1")
            resp = await till.client.post("/api/menu", json={
                "key": "lasagne", "name": "Lasagne", "price": 11.5})
            assert resp.status == 200, await resp.text()
            answer = await resp.json()
            assert answer["item"] == {"key": "lasagne", "name": "Lasagne", "price": 11.5,
                                      "billable": True, "enabled": True}
            assert answer["applied"] == [] and answer["saved_to"] == str(site)
            # a cashier's correction takes the new dish at once
            fix = await till.correct("cam1-1-1", {"action": "add", "class_key": "lasagne"})
            assert fix["effective"]["items"][-1]["price"] == 11.5

            resp = await till.client.patch("/api/menu/burger", json={
                "name": "Cheeseburger", "price": 9.9})
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["item"]["name"] == "Cheeseburger"
            fix = await till.correct("cam1-1-1", {"action": "add", "class_key": "burger"})
            assert fix["effective"]["items"][-1]["name"] == "Cheeseburger"
            assert fix["effective"]["items"][-1]["price"] == 9.9
            # the biller's menu of the config in force bills the next tray so
            keys = list(MENU)
            biller_menu = Menu(till.daemon.config.menu, keys, 0.75)
            line = biller_menu.item(keys.index("burger"), 0.95, 1)
            assert line is not None and (line.name, line.price) == ("Cheeseburger", 9.9)

            resp = await till.client.patch("/api/menu/burger", json={"enabled": False})
            assert resp.status == 200
            line = Menu(till.daemon.config.menu, keys, 0.75).item(keys.index("burger"), 0.95, 1)
            assert line is not None and line.needs_review is True  # billed, flagged
            fix = await till.correct("cam1-1-1", {"action": "add", "class_key": "burger"}, 422)
            assert fix["errors"] == ["class_key: 'burger' (Cheeseburger) is disabled on the menu"]
            menu = await _json(await till.client.get("/api/menu"))
            burger = next(i for i in menu["items"] if i["key"] == "burger")
            assert (burger["enabled"], burger["price"]) == (False, 9.9)

            saved = load_config(site).menu
            assert saved["lasagne"].price == 11.5
            assert (saved["burger"].name, saved["burger"].enabled) == ("Cheeseburger", False)

    asyncio.run(main())


def test_bad_menu_edits_are_refused_with_the_field_and_change_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as till:
            body: Any
            for body, field in (({"key": "soup", "name": "Soup", "price": -1}, "price"),
                                ({"key": "soup", "name": "", "price": 3}, "name"),
                                ({"key": "soup", "name": "x" * 81, "price": 3}, "name"),
                                ({"key": "so up", "name": "Soup", "price": 3}, "key"),
                                ({"name": "Soup", "price": 3}, "key"),
                                ({"key": "soup", "name": "Soup"}, "price"),
                                ({"key": "soup", "name": "Soup", "price": 3, "colour": 1},
                                 "colour"),
                                ([], "(root)")):
                resp = await till.client.post("/api/menu", json=body)
                assert resp.status == 422, body
                assert (await resp.json())["errors"][0].startswith(f"{field}: "), body
            resp = await till.client.post("/api/menu", json={"key": "burger", "name": "B",
                                                             "price": 1})
            assert resp.status == 409 and (await resp.json())["errors"][0].startswith("key: ")
            for body, field in (({}, "(root)"), ({"price": None}, "price"),
                                ({"price": "cheap"}, "price"), ({"price": 1e9}, "price"),
                                ({"name": ""}, "name"), ({"key": "x"}, "key")):
                resp = await till.client.patch("/api/menu/burger", json=body)
                assert resp.status == 422, body
                assert (await resp.json())["errors"][0].startswith(f"{field}: "), body
            resp = await till.client.patch("/api/menu/no_such_dish", json={"price": 2})
            assert resp.status == 404
            assert till.daemon.applied == []
            assert till.daemon.config.menu == SiteConfig().menu

    asyncio.run(main())


def test_a_cashier_gets_403_from_the_menu_routes_and_may_read_the_report(
        tmp_path: Path) -> None:
    storage = tmp_path / "var"
    storage.mkdir(mode=0o700)
    write_token_file(storage / "token")
    cashier = TokenStore(storage / TOKENS_FILE).create("till-1", "cashier")
    keyring = load_keyring(ServerConfig(), StorageConfig(dir=storage))[1]
    as_cashier = {"Authorization": f"Bearer {cashier}"}

    async def main() -> None:
        async with serve(tmp_path, token=keyring) as till:
            await till.bill("cam1-1-1")
            resp = await till.client.post("/api/menu", headers=as_cashier, json={
                "key": "soup", "name": "Soup", "price": 4})
            assert resp.status == 403
            resp = await till.client.patch("/api/menu/burger", headers=as_cashier,
                                           json={"price": 1})
            assert resp.status == 403
            assert till.daemon.applied == []
            for path in ("/api/report", "/api/report.csv"):
                assert (await till.client.get(path, headers=as_cashier)).status == 200
            resp = await till.client.post("/api/bills/cam1-1-1/corrections",
                                          headers=as_cashier,
                                          json={"action": "void", "reason": "left"})
            assert resp.status == 200
            assert (await resp.json())["corrections"][-1]["actor"] == "till-1"
            resp = await till.client.post("/api/bills/cam1-1-1/handover", headers=as_cashier)
            assert resp.status == 409  # void: the role may, the bill may not
            resp = await till.client.post("/api/menu", json={
                "key": "soup", "name": "Soup", "price": 4})  # the owner: a manager
            assert resp.status == 200

    asyncio.run(main())


def test_every_config_change_records_who_made_it(tmp_path: Path) -> None:
    """Menu edits and ``PUT /api/config`` append to the change history with the
    token's name; nothing is rewritten (issue 17: every change attributable)."""
    storage = tmp_path / "var"
    storage.mkdir(mode=0o700)
    write_token_file(storage / "token")
    ana = TokenStore(storage / TOKENS_FILE).create("ana", "manager")
    keyring = load_keyring(ServerConfig(), StorageConfig(dir=storage))[1]
    as_ana = {"Authorization": f"Bearer {ana}"}

    async def main() -> None:
        async with serve(tmp_path, token=keyring) as till:
            resp = await till.client.patch("/api/menu/burger", headers=as_ana,
                                           json={"price": 9.9})
            assert resp.status == 200, await resp.text()
            config = till.daemon.config.model_dump(mode="json")
            config["billing"]["confirm_below"] = 0.8
            resp = await till.client.put("/api/config", json=config)  # the owner
            assert resp.status == 200, await resp.text()
            resp = await till.client.patch("/api/menu/burger", headers=as_ana,
                                           json={"price": -1})  # refused: not recorded
            assert resp.status == 422

    asyncio.run(main())
    path = storage / HISTORY_FILE
    history = read_history(path)
    assert [h["actor"] for h in history] == ["ana", "owner"]
    assert history[0]["config"]["menu"]["burger"]["price"] == 9.9
    assert history[1]["config"]["billing"]["confirm_below"] == 0.8
    assert history[0]["sha256"] != history[1]["sha256"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
