"""Menu editing for the manager: ``POST /api/menu`` and ``PATCH /api/menu/{key}``.

Beside the control plane (``… ─▶ events (HTTP/SSE)``): a menu edit is a
change of the site config. The handler builds a new
:class:`~edge.config.SiteConfig` from the one in force with one dish added or
changed, and hands it to :meth:`edge.web.app.ControlPlane.replace_config`,
the path of ``PUT /api/config``: the same validation, the same live apply by
the daemon (bills that close afterwards use the new name and price), the
same atomic save of the config file, under the same lock.

Keys are detector class names. A key the detector does not know may be
added: the camera never bills it, but a cashier can add it to a bill with an
``add`` correction (and it is ready for a model that learns it). A disabled
dish (``enabled: false``) stays detected and billed, its line flagged for
the cashier's review; corrections cannot add it (:mod:`edge.billing.menu`).
Manager only (:mod:`edge.web.roles`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.config import MenuEntry, SiteConfig, format_errors, parse_config
from edge.errors import ConfigError
from edge.web.limits import read_json
from edge.web.openapi import Reply, operation
from edge.web.payloads import (
    ConfigApplied,
    ConflictBody,
    ErrorBody,
    MenuItem,
    ValidationErrorBody,
    error,
    invalid,
)
from edge.web.roles import actor_name, allow

MAX_MENU_BODY_BYTES = 4 * 1024
"""Largest menu edit accepted (one dish is a few dozen bytes)."""

Build = Callable[[SiteConfig], Awaitable["SiteConfig | web.Response"]]


class ConfigReplacer(Protocol):
    """What the menu routes need from the control plane
    (:class:`edge.web.app.ControlPlane`)."""

    async def replace_config(self, build: Build, actor: str | None = None) -> web.Response:
        """Apply and save the config ``build`` makes from the one in force
        (``actor``: who asked, for the change history)."""
        ...


class NewDish(MenuEntry):
    """Body of ``POST /api/menu``: a dish and its detector class name."""

    key: str = Field(min_length=1, max_length=80, pattern=r"^[A-Za-z0-9_.-]+$",
                     description="detector class name")


class DishChange(BaseModel):
    """Body of ``PATCH /api/menu/{key}``: the fields to change (at least one)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    price: float | None = None
    billable: bool | None = None
    enabled: bool | None = None


class MenuChanged(ConfigApplied):
    """A menu edit applied: the dish as it is now, and the config change."""

    item: MenuItem


class MenuApi:
    """Handlers of the menu edits, bound to the control plane.

    Parameters
    ----------
    control
        The control plane; its config lock, apply and save are used.
    """

    def __init__(self, control: ConfigReplacer) -> None:
        self.control = control

    @operation("Add a dish to the menu (manager)", "menu", {
        200: Reply("applied (and saved); the dish", MenuChanged),
        409: Reply("the key is on the menu already, or the config file cannot be written",
                   ConflictBody),
        422: Reply("invalid; nothing changed", ValidationErrorBody),
        500: Reply("applied, but the config file could not be written", ErrorBody)},
        body=NewDish, body_limit=MAX_MENU_BODY_BYTES)
    async def add(self, request: web.Request) -> web.Response:
        """Add ``{"key", "name", "price", "billable"?, "enabled"?}`` to the menu."""
        data = await read_json(request, MAX_MENU_BODY_BYTES, "a menu edit")
        if isinstance(data, web.Response):
            return data
        try:
            dish = NewDish.model_validate(data)
        except ValidationError as err:
            return invalid(format_errors(err), "the dish")
        entry = MenuEntry.model_validate(dish.model_dump(exclude={"key"}))

        async def build(config: SiteConfig) -> SiteConfig | web.Response:
            if dish.key in config.menu:
                return error(409, f"{dish.key!r} is on the menu already; change it with "
                                  f"PATCH /api/menu/{dish.key}",
                             errors=[f"key: {dish.key!r} is on the menu already"])
            return await _with_menu(config, {**config.menu, dish.key: entry})

        return await self._apply(build, dish.key, lambda: entry, actor_name(request))

    @operation("Rename, reprice, disable a dish (manager)", "menu", {
        200: Reply("applied (and saved); the dish", MenuChanged),
        404: Reply("no such dish on the menu", ErrorBody),
        409: Reply("the config file cannot be written; nothing changed", ErrorBody),
        422: Reply("invalid; nothing changed", ValidationErrorBody),
        500: Reply("applied, but the config file could not be written", ErrorBody)},
        body=DishChange, body_limit=MAX_MENU_BODY_BYTES)
    async def change(self, request: web.Request) -> web.Response:
        """Change some of ``{"name", "price", "billable", "enabled"}`` of a dish."""
        key = request.match_info["key"]
        data = await read_json(request, MAX_MENU_BODY_BYTES, "a menu edit")
        if isinstance(data, web.Response):
            return data
        try:
            patch = DishChange.model_validate(data)
        except ValidationError as err:
            return invalid(format_errors(err), "the change")
        nulls = sorted(f for f in patch.model_fields_set if getattr(patch, f) is None)
        if nulls or not patch.model_fields_set:
            return invalid([f"{f}: may not be null; leave it out to keep it" for f in nulls]
                           or ["(root): give at least one of name, price, billable, enabled"],
                           "the change")

        made: list[MenuEntry] = []

        async def build(config: SiteConfig) -> SiteConfig | web.Response:
            old = config.menu.get(key)
            if old is None:
                return error(404, f"no dish {key!r} on the menu; add it with POST /api/menu")
            try:
                entry = MenuEntry.model_validate(
                    {**old.model_dump(), **patch.model_dump(exclude_unset=True)})
            except ValidationError as err:
                return invalid(format_errors(err), "the change")
            made.append(entry)
            return await _with_menu(config, {**config.menu, key: entry})

        return await self._apply(build, key, lambda: made[-1], actor_name(request))

    async def _apply(self, build: Build, key: str, entry: Callable[[], MenuEntry],
                     actor: str | None) -> web.Response:
        """Replace the config; on success, the answer names the dish as applied."""
        resp = await self.control.replace_config(build, actor)
        if resp.status != 200 or resp.text is None:
            return resp
        body: dict[str, Any] = json.loads(resp.text)
        e = entry()
        body["item"] = MenuItem(key=key, name=e.name, price=e.price, billable=e.billable,
                                enabled=e.enabled).model_dump()
        return web.json_response(body)


async def _with_menu(config: SiteConfig, menu: dict[str, MenuEntry]) -> SiteConfig | web.Response:
    """``config`` with ``menu``, validated as ``PUT /api/config`` validates a body."""
    data = {**config.model_dump(), "menu": {k: e.model_dump() for k, e in menu.items()}}
    try:
        # off the loop: streams' scene files are read from disk
        return await asyncio.to_thread(parse_config, data, source="the menu edit")
    except ConfigError as err:
        return invalid(list(getattr(err, "errors", None) or [str(err)]), "the config")


MENU_KEY = web.AppKey("menu_edits", MenuApi)


def add_menu_routes(app: web.Application, control: ConfigReplacer) -> MenuApi:
    """Add ``POST /api/menu`` and ``PATCH /api/menu/{key}`` (manager only)."""
    api = MenuApi(control)
    app[MENU_KEY] = api
    app.router.add_post("/api/menu", api.add)
    app.router.add_patch("/api/menu/{key}", api.change)
    allow(app, "POST", "/api/menu", "manager")
    allow(app, "PATCH", "/api/menu/{key}", "manager")
    return api
