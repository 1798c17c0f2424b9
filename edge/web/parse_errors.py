"""Requests that never reach a route: one answer and one quiet log line for all of them.

In front of the control plane. A request aiohttp's parser refuses (a bad
method, an over-long request line or header, broken framing) is answered by
``RequestHandler.handle_error`` before any middleware or signal runs:
``text/plain`` that quotes the request bytes back, without the security
headers every other answer carries, and an ERROR log line with a traceback
(about 1.5 KB) per request, which lets anyone flood the journal. aiohttp
offers no hook for it (aio-libs/aiohttp#3287, open since 2018), so
:func:`install_parse_errors` gives the application's server a request handler
whose ``handle_error`` answers:

- JSON ``{"error": "bad request: <what kind of problem>"}``, never an echo
  of what was sent, with :data:`edge.web.headers.SECURITY_HEADERS`, and
  ``Connection: close`` as before;
- one ``http_request_malformed`` WARNING line without traceback at most
  every :data:`LOG_INTERVAL_S` seconds, counting the ones it stood for.

The hook is the application's ``_make_handler`` (what ``AppRunner`` and the
test server call); ``tests/test_hardening_web.py`` fails if an aiohttp
upgrade bypasses it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

import structlog
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from edge.web.headers import SECURITY_HEADERS

LOG_INTERVAL_S = 10.0
"""At most one log line about malformed requests per this many seconds."""

_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (http_exceptions.BadHttpMethod, "unknown HTTP method"),
    (http_exceptions.LineTooLong, "request line or header too long"),
    (http_exceptions.BadStatusLine, "malformed request line"),
    (http_exceptions.InvalidHeader, "malformed header"),
    (http_exceptions.InvalidURLError, "malformed URL"),
    (http_exceptions.ContentLengthError, "body does not match its framing"),
    (http_exceptions.TransferEncodingError, "body does not match its framing"),
    (http_exceptions.ContentEncodingError, "body encoding not understood"),
    (http_exceptions.HttpProcessingError, "malformed request"),
)

_log = structlog.get_logger("edge.web")


def kind_of(exc: BaseException | None, status: int) -> str:
    """What went wrong, in words that quote nothing of the request."""
    for cls, kind in _KINDS:
        if isinstance(exc, cls):
            return kind
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return "malformed request"


class ParseErrorLog:
    """Rate-limited logging of requests that never reached a route.

    Parameters
    ----------
    interval_s
        Seconds between two log lines at least.
    clock
        Monotonic seconds (tests pass their own).
    """

    def __init__(self, interval_s: float = LOG_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._next_at = 0.0
        self._held = 0

    def note(self, status: int, exc: BaseException | None, peer: str | None) -> None:
        """Log this refusal, unless one was logged within :attr:`interval_s`."""
        now = self._clock()
        if now < self._next_at:
            self._held += 1
            return
        self._next_at = now + self.interval_s
        held, self._held = self._held, 0
        if status >= 500:  # not the client's fault: keep the traceback for the fix
            _log.error("http_request_failed", status=status, peer=peer, not_logged=held,
                       exc_info=exc)
            return
        _log.warning("http_request_malformed", status=status, reason=kind_of(exc, status),
                     peer=peer, not_logged=held)

    def answer(self, request: BaseRequest, status: int,
               exc: BaseException | None) -> web.StreamResponse:
        """The response to a request that never reached a route."""
        self.note(status, exc, request.remote)
        if request.writer.output_size > 0:  # as aiohttp: a response is on its way already
            raise ConnectionError("response already started; cannot send the error")
        prefix = "internal server error" if status >= 500 else "bad request"
        reason = "see the daemon's log" if status >= 500 else kind_of(exc, status)
        resp = web.json_response({"error": f"{prefix}: {reason}"}, status=status,
                                 headers=SECURITY_HEADERS)
        resp.force_close()
        return resp


def install_parse_errors(app: web.Application, log: ParseErrorLog | None = None) -> None:
    """Serve ``app`` with a request handler whose errors follow the module docstring.

    Parameters
    ----------
    app
        An application not yet started.
    log
        Where refusals are counted and logged (one per application by default).
    """
    errors = log if log is not None else ParseErrorLog()

    class _Protocol(RequestHandler):
        __slots__ = ()

        def handle_error(self, request: BaseRequest, status: int = 500,
                         exc: BaseException | None = None,
                         message: str | None = None) -> web.StreamResponse:
            return errors.answer(request, status, exc)

    class _Server(Server):
        def __call__(self) -> RequestHandler:
            return _Protocol(self, loop=self._loop, **self._kwargs)

    make_handler = app._make_handler

    def make_server(**kwargs: Any) -> Server:
        server = make_handler(**kwargs)
        server.__class__ = _Server  # same state, one method more: nothing else changes
        return server

    app._make_handler = make_server  # type: ignore[method-assign]
