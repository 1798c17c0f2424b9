"""Who may do what: the roles a token carries, and who made a change.

It sits with :mod:`edge.web.access` on the HTTP side (``… ─▶ events
(HTTP/SSE)`` and ``annotate ─▶ WebRTC``). A token carries one role:

- ``cashier``: watch, correct bills, void, undo, hand a bill over to the POS,
  read the day report (a till's Z report);
- ``manager``: everything a cashier may, plus the menu, the config, the
  models (:mod:`edge.web.model_routes`), the labelling workspace and its
  training jobs (:mod:`edge.web.training_routes`);
- ``labeller``: the labelling workspace only (and following its jobs).

A route that changes state (or a protected read) names the roles it allows
with :func:`allow`; a guarded route that names none is ``manager`` only, so a
route added later is safe by default. The access middleware
(:mod:`edge.web.access`) puts the :class:`Actor` of an accepted token on the
request; handlers record :func:`actor_name` with every change they journal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from aiohttp import web

Role = Literal["cashier", "manager", "labeller"]
ROLES: Final[tuple[Role, ...]] = ("cashier", "manager", "labeller")
"""Every role. None implies another: a labeller is not a cashier."""

DEFAULT_ROLES: Final[frozenset[str]] = frozenset({"manager"})
"""Roles allowed on a guarded route that names none."""

ROUTE_ROLES_KEY = web.AppKey("route_roles", dict)
"""``{(method, canonical path): frozenset of roles}`` of :func:`allow`."""

PROTECTED_READS_KEY = web.AppKey("protected_reads", set)
"""Canonical paths of GET routes that need a token as well
(:func:`edge.web.access.protect_reads`, and :func:`allow` of a GET route)."""

CAPABILITIES: Final[dict[str, tuple[str, ...]]] = {
    "cashier": ("watch", "correct", "void", "handover", "report"),
    "manager": ("watch", "correct", "void", "handover", "menu", "config", "report", "models",
                "label", "train"),
    "labeller": ("label",),
}
"""What each role may do, as ``GET /api/whoami`` lists it (``may``): the page
shows the controls of these and no others."""


@dataclass(frozen=True, slots=True)
class Actor:
    """The holder of an accepted token.

    Attributes
    ----------
    name : str
        The token's name (``dishtracker token create --name``), recorded with
        every change it makes; never the token itself.
    role : str
        One of :data:`ROLES`.
    """

    name: str
    role: str


# aiohttp 3.13 warns (an error under the tests' filterwarnings) about plain string
# request keys; older ones, still fine for Python 3.10, have no RequestKey
_RequestKey = getattr(web, "RequestKey", None)
ACTOR_KEY: Final[Any] = (_RequestKey("dishtracker.actor", Actor) if _RequestKey is not None
                         else "dishtracker.actor")
"""Request key of the :class:`Actor` whose token the request carries."""


def allow(app: web.Application, method: str, canonical: str, *roles: Role) -> None:
    """Let tokens of ``roles`` use the route ``method canonical``.

    A GET route named here needs a token as well (it joins the protected
    reads); a later call for the same route replaces the roles.

    Parameters
    ----------
    app
        The application, before it starts.
    method
        ``"POST"``, ``"GET"`` …
    canonical
        The route's canonical path, e.g. ``/api/bills/{bill_id}/corrections``.
    roles
        Allowed roles (at least one).
    """
    if not roles or any(r not in ROLES for r in roles):
        raise ValueError(f"roles must be some of {ROLES}, got {roles!r}")
    app.setdefault(ROUTE_ROLES_KEY, {})[(method.upper(), canonical)] = frozenset(roles)
    if method.upper() in ("GET", "HEAD"):  # a read that names roles needs a token
        app.setdefault(PROTECTED_READS_KEY, set()).add(canonical)


def route_roles(app: web.Application, method: str, canonical: str | None) -> frozenset[str]:
    """Roles allowed on a route (:data:`DEFAULT_ROLES` when it names none); HEAD
    follows GET, as aiohttp answers it with the GET handler."""
    table: dict[tuple[str, str], frozenset[str]] = app.get(ROUTE_ROLES_KEY, {})
    if canonical is None:
        return DEFAULT_ROLES
    method = "GET" if method.upper() == "HEAD" else method.upper()
    return table.get((method, canonical), DEFAULT_ROLES)


def actor_of(request: web.Request) -> Actor | None:
    """The :class:`Actor` of the request's token; None on open routes without one."""
    actor = request.get(ACTOR_KEY)
    return actor if isinstance(actor, Actor) else None


def actor_name(request: web.Request) -> str | None:
    """The name to record with a change made by ``request`` (None: unknown)."""
    actor = actor_of(request)
    return actor.name if actor is not None else None


def refusal(needed: frozenset[str], actor: Actor) -> str:
    """The 403 message for ``actor`` on a route that allows ``needed``
    ("this needs the manager role; your token is a cashier's")."""
    names = [r for r in ROLES if r in needed]
    wanted = " or ".join(names) if names else "another"
    return (f"this needs the {wanted} role; your token is a{_an(actor.role)} {actor.role}'s "
            f"(token {actor.name!r}); ask the operator for one with that role "
            "(`dishtracker token create`)")


def _an(word: str) -> str:
    return "n" if word[:1] in "aeiou" else ""
