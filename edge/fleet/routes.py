"""``GET /api/fleet``: the MQTT publisher's state, for operators and probes.

A broker outage is not a readiness failure (bills wait in the journal's
outbox), so the broker's state is reported here, beside ``/readyz``, not in
its reasons. With ``fleet.models`` it also holds the model pull's state
(``models``: downloading with its bytes, shadowing with its figures, promoted,
refused, …). The route is added by :mod:`edge.daemon`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from edge.web.openapi import Reply, operation
from edge.web.payloads import FleetState

FleetStatus = Callable[[], dict[str, Any]]
"""Returns the publisher's state: ``FleetPublisher.status()`` (with ``models``
when ``fleet.models`` is on), or ``{"enabled": false}`` when the fleet is off."""


def add_fleet_routes(app: web.Application, status: FleetStatus) -> None:
    """Add ``GET /api/fleet`` answering ``status()`` as JSON (always 200)."""

    @operation("The fleet publisher's state", "health",
               {200: Reply("the MQTT publisher's state; {\"enabled\": false} when off",
                           FleetState)})
    async def fleet(request: web.Request) -> web.Response:
        """The MQTT publisher's state (broker, connection, outbox depth)."""
        return web.json_response(status())

    app.router.add_get("/api/fleet", fleet)
