"""Who may hold the event streams: per-address and per-token shares of ``GET /api/events``.

Beside ``journal ─▶ events (HTTP/SSE)``. The bill journal's event hub has a
fixed number of subscriber slots (:data:`edge.billing.events.MAX_SUBSCRIBERS`)
and the route is open on the LAN: without shares, one client that opens 40
streams and never reads takes every slot, and every cashier's page gets 503
until it lets go. So:

- a stream without the token counts against its client address, at most
  ``server.event_streams_per_address`` (a cashier's page holds one; a few
  tabs and a reload that overlaps the old stream fit), answered 429 beyond;
- streams without the token together leave ``server.event_streams_per_token``
  slots free: an integration that sends the token (a POS bridge, a probe)
  always finds one, and the streams with the token are capped at that number
  too, answered 503 beyond either share.

A client address is the TCP peer (``X-Forwarded-For`` is not trusted, as for
offers: docs/SECURITY.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from edge.config import ServerConfig

RETRY_AFTER_S = 5.0
"""``Retry-After`` of a refused stream: the page's EventSource retries by itself."""


@dataclass(frozen=True, slots=True)
class Claim:
    """One open event stream, to hand back to :meth:`EventSlots.release`."""

    address: str
    tokened: bool


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a stream was not opened: the HTTP status and the reason for a person."""

    status: int
    reason: str


class EventSlots:
    """Counts the open event streams by address and by token.

    Parameters
    ----------
    settings
        Returns the ``[server]`` table in force (read per claim, so a
        ``PUT /api/config`` changes the shares at once).
    """

    def __init__(self, settings: Callable[[], ServerConfig]) -> None:
        self.settings = settings
        self._by_address: Counter[str] = Counter()
        self._anonymous = 0
        self._tokened = 0

    def claim(self, address: str, *, tokened: bool, capacity: int) -> Claim | Refusal:
        """Take a share for a new stream, or say why not.

        Parameters
        ----------
        address
            The client's address.
        tokened
            Whether the request carries the right token.
        capacity
            Subscriber slots of the event hub in all.
        """
        server = self.settings()
        reserved = min(server.event_streams_per_token, capacity - 1)
        if tokened:
            if self._tokened >= server.event_streams_per_token:
                return Refusal(503, f"{self._tokened} event streams with the token are open "
                                    "already (server.event_streams_per_token)")
            self._tokened += 1
            return Claim(address, tokened=True)
        if self._by_address[address] >= server.event_streams_per_address:
            return Refusal(429, f"{self._by_address[address]} event streams from {address} are "
                                "open already (server.event_streams_per_address); close one "
                                "or send the token")
        if self._anonymous >= capacity - reserved:
            return Refusal(503, f"{self._anonymous} event streams without the token are open "
                                f"already; {reserved} more are kept for requests with the token")
        self._by_address[address] += 1
        self._anonymous += 1
        return Claim(address, tokened=False)

    def release(self, claim: Claim) -> None:
        """Give back the share of a stream that ended."""
        if claim.tokened:
            self._tokened -= 1
            return
        self._anonymous -= 1
        self._by_address[claim.address] -= 1
        if self._by_address[claim.address] <= 0:
            del self._by_address[claim.address]  # memory stays bounded by open streams


EVENT_SLOTS_KEY = web.AppKey("event_slots", EventSlots)
"""The application's :class:`EventSlots` (set by :func:`edge.web.app.make_app`)."""
