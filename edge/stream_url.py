"""The syntax of a stream's URL, per scheme, checked where the config is validated.

Before the source stage: :class:`edge.config.StreamConfig` calls
:func:`check_stream_url`, so a malformed camera URL is refused with its field
path (``streams.0.url``) by ``dishtracker check-config``, at the daemon's start
and by ``PUT /api/config``, instead of surfacing later as a camera that never
connects. Syntax only: nothing here touches the network or the disk (whether a
file exists is :mod:`edge.checks`' business, the ``synthetic://`` query is the
simulator source's).

Messages never repeat the URL: it may hold a camera password.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

NETWORK_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https"})
"""Schemes that name a camera or server by host (port optional)."""

DATAGRAM_SCHEMES = frozenset({"udp", "rtp"})
"""Schemes that name a port to receive on (host optional: FFmpeg's ``udp://@:5000``)."""

SCHEMES = NETWORK_SCHEMES | DATAGRAM_SCHEMES | {"file", "synthetic"}
"""Every scheme a stream URL may have (without one it is a path, or ``/dev/videoN``)."""

_UNSAFE = re.compile(r"[\s\x00-\x1f\x7f]")
# a DNS name or an IPv4 address, or (bracketed in the URL) an IPv6 address with its zone
_HOST = re.compile(r"[A-Za-z0-9_.-]{1,253}|[0-9A-Fa-f:.]{2,45}(%[A-Za-z0-9_.-]+)?")


def check_stream_url(url: str) -> None:
    """Check the syntax of a stream URL for its scheme.

    ``rtsp``/``rtsps``/``http``/``https``: a host, a port in 1-65535 when one
    is given, no spaces or control characters (percent-encode them).
    ``udp``/``rtp``: a port in 1-65535, the same characters rule. ``file``: a
    path. ``synthetic``: anything (its query is checked by its source). A URL
    without ``://`` is a local path or ``/dev/videoN`` and passes.

    Raises
    ------
    ValueError
        Naming what is wrong and what would be valid; never the URL itself.
    """
    if "://" not in url:
        return
    scheme = url.split("://", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported URL scheme {scheme!r}; valid: {sorted(SCHEMES)}, "
                         "a path or /dev/videoN")
    if scheme == "synthetic":
        return
    if scheme == "file":
        if not url.split("://", 1)[1].strip("/"):
            raise ValueError("file URL without a path (file:///path/to/clip.mp4)")
        return
    bad = _UNSAFE.search(url)
    if bad:
        raise ValueError(f"{scheme} URL contains a space or control character "
                         f"({bad.group()!r} at position {bad.start()}); percent-encode it "
                         "(a space is %20)")
    parts = _split(url, scheme)
    port = _port(parts, scheme)
    if scheme in NETWORK_SCHEMES and not parts.hostname:
        raise ValueError(f"{scheme} URL without a host ({scheme}://host[:port]/path)")
    if parts.hostname and not _HOST.fullmatch(parts.hostname):
        raise ValueError(f"{scheme} URL host is not a host name or an address (letters, "
                         "digits, '.', '-', '_'; an IPv6 address in brackets)")
    if scheme in DATAGRAM_SCHEMES and port is None:
        raise ValueError(f"{scheme} URL without a port ({scheme}://host:port, or "
                         f"{scheme}://@:port to listen on every interface)")


def _split(url: str, scheme: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as err:  # "Invalid IPv6 URL": an unbalanced '[' or ']'
        raise ValueError(f"{scheme} URL cannot be parsed: {err}") from None


def _port(parts: SplitResult, scheme: str) -> int | None:
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 1 <= port <= 65535:  # TCP/UDP port range
        raw = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise ValueError(f"{scheme} URL port {raw!r} is not a number in 1-65535")
    return port
