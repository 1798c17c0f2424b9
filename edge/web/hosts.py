"""Which names the daemon answers to: the Host check against DNS rebinding.

In front of every route of the control plane. The open reads (bills, events,
metrics, the page) rely on the browser's same-origin rule to keep other web
pages out; DNS rebinding defeats that rule: a page at ``attacker.example``
re-points its own name at the box's address, and the cashier's browser then
sends it the box's answers as same-origin, with ``Host: attacker.example``.
So a request is served only when its ``Host`` names this box:

- localhost: ``localhost``, ``*.localhost``, loopback addresses;
- this box: its host name (``gethostname()``, also with ``.local`` for mDNS),
  the addresses that name resolves to, and the local address of the
  connection itself (whatever interface the client reached);
- ``server.allowed_hosts`` of the config in force: names, addresses,
  ``.example.org`` for a domain and its subdomains, ``*`` for no check
  (behind a reverse proxy that checks the name itself).

Anything else answers ``421 Misdirected Request`` before any route runs, the
token check included. A request without ``Host`` (HTTP/1.0 tools) is served:
browsers always send it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Collection

from aiohttp import web
from aiohttp.typedefs import Middleware

from edge.web.payloads import error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AllowedNames = Callable[[], Collection[str]]
"""Returns ``server.allowed_hosts`` of the config in force."""

MAX_SHOWN = 80
"""Characters of a refused Host quoted back in the answer."""


def host_name(header: str) -> str:
    """The name or address of a ``Host`` header: no port, no brackets, lower case,
    no trailing dot (``[::1]:8080`` -> ``::1``, ``Box.LAN.:80`` -> ``box.lan``)."""
    value = header.strip()
    if value.startswith("["):
        value = value[1:].partition("]")[0]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".").lower()


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(name.partition("%")[0])  # fe80::1%eth0
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class HostCheck:
    """The rule of the module docstring, for one application.

    Parameters
    ----------
    allowed
        Returns the operator's ``server.allowed_hosts`` (read per request, so
        a ``PUT /api/config`` takes effect at once).
    """

    def __init__(self, allowed: AllowedNames) -> None:
        self.allowed = allowed
        self._own: frozenset[str] | None = None

    def own_names(self) -> frozenset[str]:
        """This box's host name (with ``.local``) and the addresses it resolves to."""
        if self._own is None:
            host = socket.gethostname().lower()
            names = {host, f"{host}.local"}
            with contextlib.suppress(OSError, UnicodeError):
                names |= {str(_address(str(info[4][0])))
                          for info in socket.getaddrinfo(host, None)}
            self._own = frozenset(names)
        return self._own

    def accepts(self, header: str, local_address: str | None) -> bool:
        """Whether a request with ``Host: header``, received on ``local_address``,
        names this box."""
        name = host_name(header)
        addr = _address(name)
        if addr is not None:
            if addr.is_loopback or (local_address is not None
                                    and addr == _address(local_address)):
                return True
            name = str(addr)
        elif name == "localhost" or name.endswith(".localhost"):
            return True
        if name in self.own_names():
            return True
        for entry in self.allowed():
            if entry in ("*", name):
                return True
            if entry.startswith(".") and (name.endswith(entry) or name == entry[1:]):
                return True
        return False

    def middleware(self) -> Middleware:
        """The aiohttp middleware: 421 with a JSON reason for a foreign Host."""

        @web.middleware
        async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
            header = request.headers.get("Host")
            if header is None:
                return await handler(request)
            sockname = request.transport.get_extra_info("sockname") if request.transport else None
            local = str(sockname[0]) if isinstance(sockname, tuple) and sockname else None
            if self.accepts(header, local):
                return await handler(request)
            shown = header if len(header) <= MAX_SHOWN else header[:MAX_SHOWN] + "…"
            return error(421, f"this box does not answer to the host {shown!r}: open it by "
                              "its address or host name, or add the name to "
                              "server.allowed_hosts (docs/SECURITY.md)")

        return check_host
