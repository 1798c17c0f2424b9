"""The HTTP route of the WebRTC view: ``POST /api/streams/{id}/webrtc``.

Where it sits: in front of :class:`~edge.web.hub.WebRtcHub`, behind the bearer
token of :func:`edge.web.access.protect`. Signalling is one HTTP round trip
without trickle ICE: the client posts its complete offer
(:class:`~edge.web.signalling.OfferBody`) and gets the complete answer
(:class:`~edge.web.signalling.AnswerBody`). Offers are rate limited per client
address before anything is parsed, bounded in m-lines and ICE candidates,
and parsed off the event loop (:func:`~edge.web.signalling.offer_problem`).
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from pydantic import ValidationError

from edge.config import format_errors
from edge.web.hub import OfferError, WebRtcHub
from edge.web.limits import RateLimiter, read_json, retry_after
from edge.web.openapi import Reply, operation
from edge.web.payloads import ErrorBody, error, invalid
from edge.web.roles import allow
from edge.web.signalling import AnswerBody, OfferBody, offer_problem

log = structlog.get_logger()

MAX_OFFER_BYTES = 64 * 1024
"""Largest offer body accepted (413 above)."""

HUB_KEY = web.AppKey("webrtc_hub", WebRtcHub)
OFFER_LIMITER_KEY = web.AppKey("webrtc_offer_limiter", RateLimiter)


def _rate_limited(request: web.Request) -> web.Response | None:
    """The 429 answer when this client address sent too many offers, else None.

    Keyed by the TCP peer address: behind a reverse proxy every client shares
    the proxy's bucket (``X-Forwarded-For`` is not trusted; docs/SECURITY.md).
    """
    client = request.remote or "unknown"
    wait_s = request.app[OFFER_LIMITER_KEY].take(client)
    if wait_s <= 0:
        return None
    config = request.app[HUB_KEY].config
    log.warning("webrtc_offer_rate_limited", peer=client, retry_after_s=round(wait_s, 1))
    return web.json_response(
        {"error": f"too many offers from {client}: at most {config.offer_burst} at once and "
                  f"{config.offers_per_minute:g} a minute (server.offer_burst, "
                  "server.offers_per_minute)"},
        status=429, headers=retry_after(wait_s))


@operation("Watch a stream (WebRTC offer/answer)", "webrtc", {
    200: Reply("the answer", AnswerBody),
    400: Reply("not JSON, or an SDP offer that cannot be applied, has no video m-line, or "
               "more m-lines or ICE candidates than accepted", ErrorBody),
    404: Reply("no such stream", ErrorBody),
    429: Reply("too many offers from this address", ErrorBody, headers=("Retry-After",)),
    503: Reply("server.max_peers viewers already, or shutting down", ErrorBody,
               headers=("Retry-After",))},
    body=OfferBody, body_limit=MAX_OFFER_BYTES)
async def _post_offer(request: web.Request) -> web.Response:
    """Answer a viewer's offer to receive the stream ``id`` (no trickle ICE)."""
    hub = request.app[HUB_KEY]
    limited = _rate_limited(request)
    if limited is not None:
        return limited
    body = await _read_offer(request)
    if isinstance(body, web.Response):
        return body
    try:
        sdp, _ = await hub.offer(request.match_info["id"], body.sdp, body.type,
                                 overlay=body.overlay)
    except OfferError as err:
        headers = retry_after(err.retry_after_s) if err.retry_after_s is not None else None
        return error(err.status, str(err), headers=headers)
    return web.json_response(AnswerBody(sdp=sdp, type="answer").model_dump())


async def _read_offer(request: web.Request) -> OfferBody | web.Response:
    """The offer of the body, within its bounds, or the error answer to send."""
    data = await read_json(request, MAX_OFFER_BYTES, "an SDP offer")
    if isinstance(data, web.Response):
        return data
    try:
        body = OfferBody.model_validate(data)
    except ValidationError as err:
        return invalid(format_errors(err), "the offer")
    problem = await asyncio.to_thread(offer_problem, body.sdp)
    return body if problem is None else error(400, problem)


async def _close_hub(app: web.Application) -> None:
    await app[HUB_KEY].close()


def add_webrtc_routes(app: web.Application, hub: WebRtcHub) -> None:
    """Serve ``POST /api/streams/{id}/webrtc`` from ``hub``; close it on shutdown.

    The body is ``{"sdp": str, "type": "offer"}`` with an optional
    ``"overlay": "cashier" | "engineer"`` (default ``server.overlay``), at most
    64 KiB, no other keys; the reply ``{"sdp": str, "type": "answer"}``. Errors answer
    ``{"error": reason}`` with 400 (not JSON, bad SDP), 404 (unknown stream),
    413 (too large), 422 (invalid body, with ``errors``: ``field: reason``
    lines), 429 (this client address sent more than ``server.offer_burst``
    offers at once or ``server.offers_per_minute`` on average; with
    ``Retry-After``) or 503 (``max_peers`` reached, shutting down; with
    ``Retry-After``). The bearer token is checked before any of this by
    :func:`edge.web.access.protect` on the daemon's application.
    """
    app[HUB_KEY] = hub
    app[OFFER_LIMITER_KEY] = RateLimiter(hub.config.offers_per_minute / 60.0,
                                         hub.config.offer_burst)
    app.router.add_post("/api/streams/{id}/webrtc", _post_offer)
    allow(app, "POST", "/api/streams/{id}/webrtc", "cashier", "manager")
    app.on_shutdown.append(_close_hub)
