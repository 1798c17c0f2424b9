"""``GET /api/whoami``: whose token a page holds and what it may do.

Beside :mod:`edge.web.access` on the HTTP side. The cashier page asks it
first: 401 means no token (or a wrong one), so the page shows its sign-in
form; otherwise it shows the controls of ``may`` and no others
(:data:`edge.web.roles.CAPABILITIES`).
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from edge.web.openapi import Reply, operation
from edge.web.roles import CAPABILITIES, ROLES, actor_of, allow

WHOAMI = "/api/whoami"


class WhoAmI(BaseModel):
    """``GET /api/whoami``: the holder of the request's token."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="the token's name; 'owner' for the token file's")
    role: str = Field(description="cashier, manager or labeller")
    may: list[str] = Field(description="what the role may do: watch, correct, void, "
                                       "handover, menu, config, report, label")


@operation("Whose token this is", "access",
           {200: Reply("the token's name, role and what it may do", WhoAmI)})
async def whoami(request: web.Request) -> web.Response:
    """The name and role of the request's token and what that role may do
    (``may``); 401 without a token in force, so a page can ask for one."""
    actor = actor_of(request)
    if actor is None:  # the access middleware lets no request here without one
        raise web.HTTPUnauthorized(text="this request needs the access token")
    body = WhoAmI(name=actor.name, role=actor.role, may=list(CAPABILITIES.get(actor.role, ())))
    return web.json_response(body.model_dump())


def add_whoami_route(app: web.Application) -> None:
    """Add ``GET /api/whoami``, open to a token of any role."""
    app.router.add_get(WHOAMI, whoami)
    allow(app, "GET", WHOAMI, *ROLES)
