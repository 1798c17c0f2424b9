"""Where a person reaches the box: the URLs of the page for the server's bind address.

Beside the HTTP side: the daemon's start line and ``dishtracker token``
print these, so a cashier's screen on the LAN gets an address it can open.
A server bound to a wildcard (``0.0.0.0``, ``::``) answers on every
interface, so every interface's IPv4 address is listed (after
``127.0.0.1``), then the host name; the Host check
(:mod:`edge.web.hosts`) accepts all of these. Interface addresses come from
the kernel (``SIOCGIFADDR`` per interface of ``socket.if_nameindex``, Linux);
elsewhere the host name's address stands in.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct

WILDCARDS = frozenset({"0.0.0.0", "::", ""})
"""Bind addresses that mean every interface."""

_SIOCGIFFLAGS = 0x8913  # <linux/sockios.h>
_SIOCGIFADDR = 0x8915
_IFF_UP = 0x1  # <net/if.h>
_IFREQ = struct.Struct("16s16x")  # struct ifreq: name, then a 16-byte union
_IFNAMSIZ = 16


def interface_addresses() -> list[str]:
    """IPv4 addresses of the interfaces that are up, loopback left out, in
    interface order; empty where the kernel does not answer (not Linux)."""
    found: list[str] = []
    try:
        names = [name for _, name in socket.if_nameindex()]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return found
    with sock:
        for name in names:
            req = _IFREQ.pack(name.encode()[:_IFNAMSIZ - 1])
            try:
                flags = struct.unpack_from("H", fcntl.ioctl(sock, _SIOCGIFFLAGS, req), 16)[0]
                if not flags & _IFF_UP:
                    continue
                # struct sockaddr_in in the union: family (2), port (2), address (4)
                raw = fcntl.ioctl(sock, _SIOCGIFADDR, req)[20:24]
            except OSError:  # no IPv4 address on this interface
                continue
            address = ipaddress.IPv4Address(raw)
            if not address.is_loopback and not address.is_unspecified:
                found.append(str(address))
    return list(dict.fromkeys(found))


def browse_urls(host: str, port: int, *, tls: bool = False) -> list[str]:
    """URLs a person can open for a server bound to ``host`` (``https`` with ``tls``).

    Parameters
    ----------
    host
        ``server.host``: an address, a name, or a wildcard.
    port
        ``server.port``.
    tls
        Whether the server speaks HTTPS.

    Returns
    -------
    list of str
        ``http://127.0.0.1:8080/`` first for a wildcard, then each interface
        address, then the host name; ``host`` alone otherwise.
    """
    scheme = "https" if tls else "http"
    if host in WILDCARDS:  # describing a wildcard bind, not binding
        names = ["127.0.0.1", *interface_addresses()]
        hostname = socket.gethostname()
        if len(names) == 1:  # no interface list (not Linux): what the name resolves to
            with contextlib.suppress(OSError):
                names.append(socket.gethostbyname(hostname))
        if hostname and hostname != "localhost":
            names.append(hostname)
        return [f"{scheme}://{_bracketed(n)}:{port}/" for n in dict.fromkeys(names)]
    return [f"{scheme}://{_bracketed(host)}:{port}/"]


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host
