"""Bills over HTTP: the journal's bills, corrections, and live events (SSE).

``journal ─▶ events (HTTP/SSE)``: the routes read and correct bills through
:class:`edge.billing.service.BillingService` (whose thread owns the SQLite
connection) and stream its :class:`~edge.billing.events.EventHub` as
server-sent events. Added to the control plane's application
(:func:`edge.web.app.make_app`) by :func:`add_bill_routes`; errors follow its
JSON shape (``{"error": "…"}``, validation ``{"errors": ["field: reason", …]}``).
The routes and payloads are documented in ``docs/API.md``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

import structlog
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from edge.billing.corrections import parse_correction
from edge.billing.events import Event, SubscriptionClosed
from edge.billing.service import BillingService
from edge.config import MenuEntry, StreamId, format_errors
from edge.errors import CorrectionError, JournalError
from edge.web.access import protect_reads
from edge.web.limits import read_body, retry_after, too_large

MAX_CORRECTION_BYTES = 16 * 1024
"""Largest correction body accepted (one is a few dozen bytes)."""

HEARTBEAT_S = 15.0
"""Seconds between SSE comments on an idle stream (proxies and dead peers)."""

REPLAY_MAX = 200
"""Most bills an event stream replays after ``Last-Event-ID``; beyond that it
sends ``resync`` and the page reloads the list."""

RETRY_MS = 2000
"""The browser's reconnect delay after a lost event stream."""

WRITE_TIMEOUT_S = 10.0
"""An event stream whose client takes longer to accept a write is ended."""

log = structlog.get_logger(__name__)
MenuSource = Callable[[], Mapping[str, MenuEntry]]


def _unix_seconds(value: Any) -> Any:
    """Unix seconds, or ISO 8601 (``2024-05-01T12:00:00+02:00``, ``…Z``; no
    offset: the box's local time) to Unix seconds."""
    if not isinstance(value, str):
        return value
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise ValueError("must be a finite number")
        return seconds
    text = value.strip()
    if text.endswith(("Z", "z")):  # fromisoformat() reads "Z" only from Python 3.11
        text = text[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise ValueError("expected Unix seconds or ISO 8601 such as "
                         "2024-05-01T12:00:00+02:00") from None


UnixTime = Annotated[float | None, BeforeValidator(_unix_seconds)]


class BillQuery(BaseModel):
    """Query of ``GET /api/bills``."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=200)
    before: int | None = Field(None, ge=1, description="next_before of the previous page")
    stream: StreamId | None = None
    since: UnixTime = None
    until: UnixTime = None


class BillsApi:
    """Route handlers of the bills API, bound to one billing service.

    Parameters
    ----------
    service
        The running billing service.
    menu
        Returns the site menu in force (class key -> entry); corrections
        take names and prices from it.
    heartbeat_s
        Seconds between SSE heartbeat comments.
    """

    def __init__(self, service: BillingService, menu: MenuSource, *,
                 heartbeat_s: float = HEARTBEAT_S) -> None:
        self.service = service
        self.menu_source = menu
        self.heartbeat_s = heartbeat_s

    async def menu(self, request: web.Request) -> web.Response:
        """The menu: ``{"items": [{"key", "name", "price", "billable"}, …]}`` by name."""
        items = [{"key": k, "name": e.name, "price": e.price, "billable": e.billable}
                 for k, e in self.menu_source().items()]
        items.sort(key=lambda i: (str(i["name"]).casefold(), i["key"]))
        return web.json_response({"items": items})

    async def list_bills(self, request: web.Request) -> web.Response:
        """A page of bills, newest first; ``?limit&before&stream&since&until``."""
        try:
            q = BillQuery.model_validate(dict(request.query))
        except ValidationError as err:
            return _invalid(format_errors(err))
        try:
            page = await self.service.list_bills(q.limit, before=q.before, stream=q.stream,
                                                 since=q.since, until=q.until)
        except JournalError as err:
            return _unavailable(err)
        return web.json_response({"bills": page.bills, "next_before": page.next_before,
                                  "last_seq": page.last_seq,
                                  "journal": self.service.status()})

    async def get_bill(self, request: web.Request) -> web.Response:
        """One bill with ``corrections`` and ``effective``; 404 for an unknown id."""
        bill_id = request.match_info["bill_id"]
        try:
            view = await self.service.get(bill_id)
        except JournalError as err:
            return _unavailable(err)
        if view is None:
            return _error(404, f"no bill {bill_id!r}")
        return web.json_response(view)

    async def snapshot(self, request: web.Request) -> web.Response:
        """The JPEG of the frame the bill closed on."""
        bill_id = request.match_info["bill_id"]
        try:
            jpeg = await self.service.snapshot(bill_id)
            if jpeg is None:
                known = await self.service.get(bill_id) is not None
                return _error(404, f"bill {bill_id!r} has no snapshot" if known
                              else f"no bill {bill_id!r}")
        except JournalError as err:
            return _unavailable(err)
        # a bill's snapshot never changes
        return web.Response(body=jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=86400, immutable"})

    async def post_correction(self, request: web.Request) -> web.Response:
        """Add a correction; returns the updated bill (with ``effective``).

        Status codes: 200 stored; 400 body is not JSON; 404 unknown bill; 413
        body over :data:`MAX_CORRECTION_BYTES`; 422 invalid or does not fit
        the bill or the menu (``errors`` lists ``field: reason``); 503 the
        journal failed (nothing stored).
        """
        bill_id = request.match_info["bill_id"]
        raw = await read_body(request, MAX_CORRECTION_BYTES)
        if raw is None:
            return too_large(MAX_CORRECTION_BYTES, "a correction")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            return _error(400, f"request body is not valid JSON: {err}")
        try:
            correction = parse_correction(data)
            view = await self.service.correct(bill_id, correction, self.menu_source())
        except CorrectionError as err:
            return _invalid(err.errors)
        except JournalError as err:
            return _unavailable(err)
        if view is None:
            return _error(404, f"no bill {bill_id!r}")
        return web.json_response(view)

    async def events(self, request: web.Request) -> web.StreamResponse:
        """``text/event-stream`` of ``bill``, ``bill_corrected``, ``journal``,
        ``tray`` and ``resync`` events, with a heartbeat comment when idle.

        Bills committed after ``Last-Event-ID`` (header, sent by a reconnecting
        EventSource) or ``?after=SEQ`` are replayed first.
        """
        after = _after(request)
        if isinstance(after, web.Response):
            return after
        hub = self.service.hub
        sub = hub.subscribe()
        if sub is None:
            return web.json_response(
                {"error": f"too many event streams open ({hub.max_subscribers})"},
                status=503, headers=retry_after(RETRY_MS / 1000))
        gauge = self.service.metrics.sse_subscribers
        gauge.set(hub.subscribers)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        reason = "client gone"

        async def send(data: bytes) -> None:
            # a client that stops reading would otherwise hold this handler forever
            await asyncio.wait_for(resp.write(data), WRITE_TIMEOUT_S)

        try:
            await resp.prepare(request)
            await send(f"retry: {RETRY_MS}\n\n".encode()
                       + Event.of("journal", self.service.status()).encode())
            replayed = await self._replay(send, after) if after is not None else 0
            while True:
                try:
                    event = await asyncio.wait_for(sub.get(), self.heartbeat_s)
                except asyncio.TimeoutError:
                    await send(b": heartbeat\n\n")
                    continue
                if event.kind == "bill" and event.id is not None and int(event.id) <= replayed:
                    continue  # already sent by the replay
                await send(event.encode())
        except SubscriptionClosed as err:
            reason = str(err)
        except asyncio.TimeoutError:
            reason = f"client did not read for {WRITE_TIMEOUT_S} s"
        except ConnectionResetError:  # aiohttp's ClientConnectionResetError included
            pass
        finally:
            hub.unsubscribe(sub)
            gauge.set(hub.subscribers)
            log.debug("sse_stream_ended", reason=reason)
        return resp

    async def _replay(self, send: Callable[[bytes], Awaitable[None]], after: int) -> int:
        """Send the bills committed after ``after``; the last ``seq`` sent."""
        try:
            bills = await self.service.after(after, REPLAY_MAX + 1)
        except JournalError:
            await send(Event.of("resync", {"reason": "journal unavailable"}).encode())
            return after
        for view in bills[:REPLAY_MAX]:
            await send(Event.of("bill", view, view["seq"]).encode())
        if len(bills) > REPLAY_MAX:
            await send(Event.of("resync", {"reason": "too many bills missed"}).encode())
        return int(bills[min(len(bills), REPLAY_MAX) - 1]["seq"]) if bills else after


BILLS_KEY = web.AppKey("bills", BillsApi)


def add_bill_routes(app: web.Application, service: BillingService, *, menu: MenuSource,
                    heartbeat_s: float = HEARTBEAT_S) -> BillsApi:
    """Add the bills API to ``app``.

    Routes: ``GET /api/menu``, ``GET /api/bills``, ``GET /api/bills/{id}``,
    ``GET /api/bills/{id}/snapshot.jpg``, ``POST /api/bills/{id}/corrections``,
    ``GET /api/events``. On the application's shutdown every event stream ends,
    so the server stops without waiting for them. The correction and the
    snapshot need the bearer token (:mod:`edge.web.access`); the rest is open.

    Parameters
    ----------
    app
        The control plane's application (:func:`edge.web.app.make_app`).
    service
        The opened billing service.
    menu
        Returns the site menu in force.
    heartbeat_s
        Seconds between SSE heartbeats.
    """
    api = BillsApi(service, menu, heartbeat_s=heartbeat_s)
    app[BILLS_KEY] = api
    r = app.router
    r.add_get("/api/menu", api.menu)
    r.add_get("/api/bills", api.list_bills)
    r.add_get("/api/bills/{bill_id}", api.get_bill)
    r.add_get("/api/bills/{bill_id}/snapshot.jpg", api.snapshot)
    r.add_post("/api/bills/{bill_id}/corrections", api.post_correction)
    r.add_get("/api/events", api.events)
    # camera frames: as private as the live video, which needs the token too
    protect_reads(app, "/api/bills/{bill_id}/snapshot.jpg")

    async def end_streams(_: web.Application) -> None:
        service.hub.close()

    app.on_shutdown.append(end_streams)
    return api


def _after(request: web.Request) -> int | web.Response | None:
    header = request.headers.get("Last-Event-ID")
    if header is not None:
        try:
            return max(0, int(header))
        except ValueError:
            return None  # not one of ours: no replay
    value = request.query.get("after")
    if value is None:
        return None
    try:
        return max(0, int(value))
    except ValueError:
        return _invalid([f"after: expected the seq of a bill (an integer), got {value!r}"])


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _invalid(lines: list[str]) -> web.Response:
    return web.json_response({"errors": lines}, status=422)


def _unavailable(err: JournalError) -> web.Response:
    return _error(503, f"the bill journal is unavailable: {err}")
