"""Response headers that tell the browser what the cashier page may do.

Set on every response of the control plane (pages, static files, JSON, errors,
the event stream) through ``on_response_prepare``, so no route can forget
them. The page loads only its own scripts and styles (no inline script, no
``eval``), talks only to its origin (fetch, EventSource; WebRTC media comes
over the peer connection, which ``connect-src`` does not govern), shows bill
snapshots as ``blob:`` images, and may not be framed.
"""

from __future__ import annotations

from aiohttp import web

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    # data: for the page's empty favicon; blob: for snapshots fetched with the token
    "img-src 'self' data: blob:",
    "media-src 'self' blob:",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
))

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP 2
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}
"""Headers every response carries (a handler's own value wins)."""


async def _set_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


def add_security_headers(app: web.Application) -> None:
    """Send :data:`SECURITY_HEADERS` with every response of ``app``.

    Parameters
    ----------
    app
        An application not yet started.
    """
    app.on_response_prepare.append(_set_headers)
