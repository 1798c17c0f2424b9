"""How much one client may ask of the HTTP side: request rates and body sizes.

Beside ``annotate ─▶ WebRTC``: an offer makes the daemon set up DTLS and
an encoder, the dearest thing a client can trigger, so offers are limited per
client address by a token bucket (:class:`RateLimiter`), on top of the
``server.max_peers`` cap of the hub. Bodies are read with a hard limit
(:func:`read_body`), chunked bodies too, so nobody makes the daemon buffer
more than a route needs, and within a deadline, so a client that dribbles
its body holds a handler for :data:`BODY_TIMEOUT_S` at most. A connection
that sends no complete request (nothing at all, or headers byte by byte) is
closed after :data:`IDLE_TIMEOUT_S` (aiohttp's keep-alive timer, which runs
from the connection's start; see :func:`edge.web.app.make_app`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from edge.web.payloads import decode_json

MAX_CLIENTS = 4096
"""Client addresses a limiter remembers; the least recently seen are forgotten first."""

BODY_TIMEOUT_S = 10.0
"""Seconds a client may take to send a whole request body (the largest, a 256 KiB
config, takes milliseconds on a LAN); slower: 408 and the connection closes."""

IDLE_TIMEOUT_S = 15.0
"""Seconds a connection may stay without a complete request: from its start (a
client that sends nothing, or its headers byte by byte) and between keep-alive
requests. aiohttp's default is an hour, which lets idle sockets pile up."""

BODY_TIMEOUT_KEY = web.AppKey("body_timeout_s", float)
"""Per-application override of :data:`BODY_TIMEOUT_S` (tests use a short one)."""


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key (a client address).

    Each key starts with ``burst`` tokens; a request takes one; tokens come
    back at ``rate_per_s`` up to ``burst``. Memory stays bounded: at most
    :data:`MAX_CLIENTS` keys, the least recently used dropped first (a
    dropped key starts full again, which only ever errs towards allowing).

    Parameters
    ----------
    rate_per_s : float
        Tokens regained per second (> 0).
    burst : int
        Bucket size (>= 1).
    clock : callable, optional
        Monotonic seconds; ``time.monotonic`` by default (tests pass their own).
    max_keys : int
        Keys remembered at most.
    """

    def __init__(self, rate_per_s: float, burst: int, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = MAX_CLIENTS) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"rate_per_s must be > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def take(self, key: str) -> float:
        """Take a token for ``key``.

        Returns
        -------
        float
            0.0 when the request may go ahead; otherwise the seconds until
            ``key`` has a token again (nothing was taken).
        """
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            bucket = _Bucket(float(self.burst), now)
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now
        self._buckets[key] = bucket  # most recently used last
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.rate_per_s


def retry_after(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` header (whole seconds, at least 1)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def too_large(limit: int, what: str) -> web.Response:
    """The JSON 413 answer for a body over ``limit`` bytes."""
    return web.json_response(
        {"error": f"request body too large: {what} may be at most {limit} bytes"}, status=413)


async def read_body(request: web.Request, limit: int) -> bytes | None:
    """The request body, or ``None`` when it exceeds ``limit`` bytes.

    A declared ``Content-Length`` over the limit is refused before anything is
    read; a chunked body is read until it passes the limit, never further.

    Raises
    ------
    web.HTTPRequestTimeout
        The body did not arrive within :data:`BODY_TIMEOUT_S` (or the
        application's ``BODY_TIMEOUT_KEY``); the answer closes the connection.
    """
    if request.content_length is not None and request.content_length > limit:
        return None
    timeout_s = request.app.get(BODY_TIMEOUT_KEY, BODY_TIMEOUT_S)
    try:
        return await asyncio.wait_for(_read_limited(request, limit), timeout_s)
    except asyncio.TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"the request body did not arrive within {timeout_s:g} s",
            headers={"Connection": "close"}) from None


async def read_json(request: web.Request, limit: int, what: str) -> Any | web.Response:
    """The JSON document of the request body, or the answer to send: 413 over
    ``limit`` bytes (``what`` names the body), 400/422 for what
    :func:`edge.web.payloads.decode_json` refuses."""
    raw = await read_body(request, limit)
    if raw is None:
        return too_large(limit, what)
    return decode_json(raw)


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None
