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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

import structlog
from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema

from edge.billing.corrections import Correction, CorrectionConflict, parse_correction
from edge.billing.events import Event, SubscriptionClosed
from edge.billing.pos import PosDelivery
from edge.billing.service import BillingService
from edge.config import MenuEntry, ServerConfig, StreamId, TillConfig, format_errors
from edge.errors import CorrectionError, JournalError
from edge.web.access import carries_token, protect_reads
from edge.web.event_slots import EVENT_SLOTS_KEY, RETRY_AFTER_S, EventSlots, Refusal
from edge.web.limits import read_body, read_json, retry_after, too_large
from edge.web.openapi import Reply, operation
from edge.web.payloads import (
    BillPage,
    BillView,
    ConflictBody,
    ErrorBody,
    Menu,
    MenuItem,
    ValidationErrorBody,
    decode_json,
    error,
    invalid,
)
from edge.web.queries import parse_query
from edge.web.report import add_report_routes
from edge.web.roles import actor_name, allow

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

MAX_SEQ = 2**63 - 1
"""Largest bill ``seq`` (SQLite's INTEGER); a larger cursor would overflow the query."""

log = structlog.get_logger(__name__)
MenuSource = Callable[[], Mapping[str, MenuEntry]]
TillSource = Callable[[], TillConfig]


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


UnixTime = Annotated[float | None, BeforeValidator(_unix_seconds), WithJsonSchema(
    {"anyOf": [{"type": "number"}, {"type": "string", "format": "date-time"}, {"type": "null"}],
     "description": "Unix seconds or ISO 8601 (no offset: the box's local time)"})]


class BillQuery(BaseModel):
    """Query of ``GET /api/bills``."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=200)
    before: int | None = Field(None, ge=1, le=MAX_SEQ,
                               description="next_before of the previous page")
    stream: StreamId | None = None
    since: UnixTime = None
    until: UnixTime = None


class _EmptyBody(BaseModel):
    """Body of ``POST /api/bills/{id}/handover``: empty, or ``{}``."""

    model_config = ConfigDict(extra="forbid")


class _EventsQuery(BaseModel):
    """Query of ``GET /api/events`` (documentation only: :func:`_after` reads it)."""

    after: int | None = Field(None, le=MAX_SEQ,
                              description="replay the bills committed after this seq")


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
    till
        Returns the ``till`` config in force (currency, locale, POS webhook).
    """

    def __init__(self, service: BillingService, menu: MenuSource, *,
                 heartbeat_s: float = HEARTBEAT_S, till: TillSource = TillConfig) -> None:
        self.service = service
        self.menu_source = menu
        self.heartbeat_s = heartbeat_s
        self.till = till

    @operation("The menu in force", "bills", {200: Reply("sorted by name", Menu)})
    async def menu(self, request: web.Request) -> web.Response:
        """The menu: ``{"currency", "locale", "items": [{"key", "name", "price",
        "billable", "enabled"}, …]}``, items by name."""
        items = [MenuItem(key=k, name=e.name, price=e.price, billable=e.billable,
                          enabled=e.enabled)
                 for k, e in self.menu_source().items()]
        items.sort(key=lambda i: (i.name.casefold(), i.key))
        till = self.till()
        return web.json_response(Menu(currency=till.currency, locale=till.locale,
                                      items=items).model_dump())

    @operation("A page of bills, newest first", "bills", {
        200: Reply("the page", BillPage),
        422: Reply("an unknown or invalid query parameter", ValidationErrorBody),
        503: Reply("the journal is unavailable", ErrorBody)}, query=BillQuery)
    async def list_bills(self, request: web.Request) -> web.Response:
        """A page of bills, newest first; ``?limit&before&stream&since&until``."""
        q = parse_query(request, BillQuery)
        if isinstance(q, web.Response):
            return q
        try:
            page = await self.service.list_bills(q.limit, before=q.before, stream=q.stream,
                                                 since=q.since, until=q.until)
        except JournalError as err:
            return _unavailable(err)
        return web.json_response({"bills": page.bills, "next_before": page.next_before,
                                  "last_seq": page.last_seq,
                                  "journal": self.service.status()})

    @operation("One bill, with its corrections", "bills", {
        200: Reply("the bill", BillView), 404: Reply("no such bill", ErrorBody),
        503: Reply("the journal is unavailable", ErrorBody)})
    async def get_bill(self, request: web.Request) -> web.Response:
        """One bill with ``corrections`` and ``effective``; 404 for an unknown id."""
        bill_id = request.match_info["bill_id"]
        try:
            view = await self.service.get(bill_id)
        except JournalError as err:
            return _unavailable(err)
        if view is None:
            return error(404, f"no bill {bill_id!r}")
        return web.json_response(view)

    @operation("The frame a bill closed on", "bills", {
        200: Reply("the JPEG", media_type="image/jpeg",
                   schema={"type": "string", "contentMediaType": "image/jpeg"}),
        404: Reply("no such bill, or it has no snapshot", ErrorBody),
        503: Reply("the journal is unavailable", ErrorBody)})
    async def snapshot(self, request: web.Request) -> web.Response:
        """The JPEG of the frame the bill closed on."""
        bill_id = request.match_info["bill_id"]
        try:
            jpeg = await self.service.snapshot(bill_id)
            if jpeg is None:
                known = await self.service.get(bill_id) is not None
                return error(404, f"bill {bill_id!r} has no snapshot" if known
                              else f"no bill {bill_id!r}")
        except JournalError as err:
            return _unavailable(err)
        # a bill's snapshot never changes
        return web.Response(body=jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=86400, immutable"})

    @operation("Correct a bill", "bills", {
        200: Reply("stored; the bill after it", BillView),
        404: Reply("no such bill", ErrorBody),
        409: Reply("the bill is void (only undo), or there is nothing to undo", ConflictBody),
        422: Reply("invalid, or does not fit the bill or the menu", ValidationErrorBody),
        503: Reply("the journal failed; nothing stored", ErrorBody)},
        body=Correction, body_limit=MAX_CORRECTION_BYTES)
    async def post_correction(self, request: web.Request) -> web.Response:
        """Add a correction; returns the updated bill (with ``effective``).

        Status codes: 200 stored; 400 body is not JSON; 404 unknown bill; 408
        body too slow; 409 the bill is void and the correction is not an
        undo, or there is nothing to undo; 413 body over
        :data:`MAX_CORRECTION_BYTES`; 422 invalid or does not fit the bill or
        the menu (``errors`` lists ``field: reason``); 503 the journal failed
        (nothing stored).
        """
        bill_id = request.match_info["bill_id"]
        data = await read_json(request, MAX_CORRECTION_BYTES, "a correction")
        if isinstance(data, web.Response):
            return data
        try:
            _strict_ints(data)
            correction = parse_correction(data)
            view = await self.service.correct(bill_id, correction, self.menu_source(),
                                              actor=actor_name(request))
        except CorrectionConflict as err:
            return _conflict(err)
        except CorrectionError as err:
            return invalid(err.errors, "the correction")
        except JournalError as err:
            return _unavailable(err)
        return _bill_or_404(view, bill_id)

    @operation("Hand a bill over to the POS", "bills", {
        200: Reply("handed over (now or by an earlier call); the bill", BillView),
        404: Reply("no such bill", ErrorBody),
        409: Reply("the bill is void", ConflictBody),
        422: Reply("the body is not empty or {}", ValidationErrorBody),
        503: Reply("the journal failed; nothing stored", ErrorBody)},
        body=_EmptyBody, body_limit=MAX_CORRECTION_BYTES)
    async def handover(self, request: web.Request) -> web.Response:
        """Mark the bill handed over to the POS; idempotent (a second call
        answers the first hand-over). Queues it for the POS webhook when
        ``till.pos_webhook_url`` is set, and for the fleet when it is on."""
        bill_id = request.match_info["bill_id"]
        refused = await _empty_body(request)
        if refused is not None:
            return refused
        try:
            view = await self.service.handover(
                bill_id, actor=actor_name(request),
                pos=self.till().pos_webhook_url is not None)
        except CorrectionConflict as err:
            return _conflict(err)
        except JournalError as err:
            return _unavailable(err)
        return _bill_or_404(view, bill_id)

    @operation("Live events (server-sent events)", "bills", {
        200: Reply("bill, bill_corrected, journal, tray and resync events; a comment when "
                   "idle", media_type="text/event-stream", schema={"type": "string"}),
        422: Reply("after is not an integer", ValidationErrorBody),
        429: Reply("server.event_streams_per_address streams without the token are open "
                   "from this address", ErrorBody, headers=("Retry-After",)),
        503: Reply("too many event streams open (without the token: all but the slots kept "
                   "for token holders)", ErrorBody, headers=("Retry-After",))},
        query=_EventsQuery,
        headers={"Last-Event-ID": "seq of the last bill received; replays the bills after it"})
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
        slots = request.app[EVENT_SLOTS_KEY]
        claim = slots.claim(request.remote or "unknown", tokened=carries_token(request),
                            capacity=hub.max_subscribers)
        if isinstance(claim, Refusal):
            log.info("sse_stream_refused", peer=request.remote, status=claim.status)
            return error(claim.status, claim.reason, headers=retry_after(RETRY_AFTER_S))
        sub = hub.subscribe()
        if sub is None:
            slots.release(claim)
            return error(503, f"too many event streams open ({hub.max_subscribers})",
                         headers=retry_after(RETRY_MS / 1000))
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
            slots.release(claim)
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
                    heartbeat_s: float = HEARTBEAT_S, till: TillSource | None = None,
                    pos_retry_s: tuple[float, float] = (1.0, 60.0)) -> BillsApi:
    """Add the bills API to ``app``.

    Routes: ``GET /api/menu``, ``GET /api/bills``, ``GET /api/bills/{id}``,
    ``GET /api/bills/{id}/snapshot.jpg``, ``POST /api/bills/{id}/corrections``,
    ``POST /api/bills/{id}/handover``, ``GET /api/events``, and the day's
    report (:mod:`edge.web.report`). On the application's shutdown every
    event stream ends, so the server stops without waiting for them. The
    correction, the hand-over, the report and the snapshot need the bearer
    token (:mod:`edge.web.access`; cashier or manager); the rest is open.
    While the application runs, a :class:`~edge.billing.pos.PosDelivery`
    sends hand-overs to ``till.pos_webhook_url``.

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
    till
        Returns the ``till`` config in force; default: that of the control
        plane's daemon (:func:`edge.web.app.make_app`), else the defaults.
    pos_retry_s
        First and longest backoff between failed POS webhook attempts, seconds.
    """
    if till is None:
        till = _till_of(app)
    api = BillsApi(service, menu, heartbeat_s=heartbeat_s, till=till)
    app[BILLS_KEY] = api
    if EVENT_SLOTS_KEY not in app:  # an application not made by make_app: default shares
        app[EVENT_SLOTS_KEY] = EventSlots(ServerConfig)
    r = app.router
    r.add_get("/api/menu", api.menu)
    r.add_get("/api/bills", api.list_bills)
    r.add_get("/api/bills/{bill_id}", api.get_bill)
    r.add_get("/api/bills/{bill_id}/snapshot.jpg", api.snapshot)
    r.add_post("/api/bills/{bill_id}/corrections", api.post_correction)
    r.add_post("/api/bills/{bill_id}/handover", api.handover)
    r.add_get("/api/events", api.events)
    # camera frames: as private as the live video, which needs the token too
    protect_reads(app, "/api/bills/{bill_id}/snapshot.jpg")
    for path in ("/api/bills/{bill_id}/corrections", "/api/bills/{bill_id}/handover"):
        allow(app, "POST", path, "cashier", "manager")
    allow(app, "GET", "/api/bills/{bill_id}/snapshot.jpg", "cashier", "manager")
    add_report_routes(app, service, till)

    async def end_streams(_: web.Application) -> None:
        service.hub.close()

    async def deliver_to_pos(_: web.Application) -> AsyncIterator[None]:
        delivery = PosDelivery(service, lambda: till().pos_webhook_url,
                               retry_initial_s=pos_retry_s[0], retry_max_s=pos_retry_s[1])
        service.add_pos_listener(delivery.wake)
        delivery.start()
        yield
        await delivery.close()

    app.on_shutdown.append(end_streams)
    app.cleanup_ctx.append(deliver_to_pos)
    return api


def _till_of(app: web.Application) -> TillSource:
    """The ``till`` config of the control plane's daemon, or the defaults."""
    from edge.web.app import CONTROL_KEY  # noqa: PLC0415  # edge.web.app imports this package's peers

    control = app.get(CONTROL_KEY)
    if control is None:
        return TillConfig
    return lambda: control.daemon.config.till


def _after(request: web.Request) -> int | web.Response | None:
    header = request.headers.get("Last-Event-ID")
    if header is not None:
        return _seq(header)  # None: not one of ours, no replay
    value = request.query.get("after")
    if value is None:
        return None
    seq = _seq(value)
    if seq is None:
        return invalid([f"after: expected the seq of a bill (an integer up to {MAX_SEQ}), "
                        f"got {value!r}"], "the query")
    return seq


def _seq(text: str) -> int | None:
    """``text`` as a bill seq (negative: 0), or None when it is not one."""
    try:
        seq = int(text)
    except ValueError:  # not a number, or over Python's 4300-digit limit
        return None
    return max(0, seq) if seq <= MAX_SEQ else None


def _strict_ints(data: Any) -> None:
    """Refuse a ``line`` or ``quantity`` that is not a JSON integer.

    pydantic's lax mode, which the correction model uses, would read ``true``
    as line 1 and ``1.0`` or ``"1"`` as line 1: a client's bug would then
    correct a line nobody named.

    Raises
    ------
    CorrectionError
        ``line`` or ``quantity`` is present and a boolean, a float or a string.
    """
    what = {"line": "a line number of the bill", "quantity": "how many of the dish"}
    errors = []
    for field, meaning in what.items():
        value = data.get(field) if isinstance(data, dict) else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append(f"{field}: must be an integer ({meaning}), got "
                          f"{json.dumps(value)[:40]}")
    if errors:
        raise CorrectionError(errors)


async def _empty_body(request: web.Request) -> web.Response | None:
    """None for an empty body or ``{}``, else the error answer to send."""
    raw = await read_body(request, MAX_CORRECTION_BYTES)
    if raw is None:
        return too_large(MAX_CORRECTION_BYTES, "a hand-over")
    if not raw.strip():
        return None
    data = decode_json(raw)
    if isinstance(data, web.Response):
        return data
    try:
        _EmptyBody.model_validate(data)
    except ValidationError as err:
        return invalid(format_errors(err), "the hand-over")
    return None


def _conflict(err: CorrectionConflict) -> web.Response:
    return error(409, err.errors[0].partition(": ")[2], errors=err.errors)


def _bill_or_404(view: dict[str, Any] | None, bill_id: str) -> web.Response:
    return error(404, f"no bill {bill_id!r}") if view is None else web.json_response(view)


def _unavailable(err: JournalError) -> web.Response:
    return error(503, f"the bill journal is unavailable: {err}")
