"""Camera credentials out of sight: URLs and free text with their secrets masked.

A stream URL is the one place a site config holds camera passwords, and
cameras put them in many places: the user info (``rtsp://admin:pw@cam/1``),
the query (``http://cam/video.cgi?user=admin&pwd=pw``), path parameters
(``rtsp://cam/live;password=pw``) and path segments that NVRs of the
XMEye/Xiongmai family invent (``rtsp://cam:554/user=admin&password=pw&channel=1``,
``…/user=admin_password=pw_channel=1_stream=0.sdp``). Whatever leaves the
box about a stream (``GET /api/streams``, ``GET /api/config``, every log line
through :mod:`edge.observability`, error texts that FFmpeg builds from the
URL) goes through :func:`mask_url` or :func:`mask_text` first.

The rule is by name, not by position: a ``name=value`` anywhere after the
host whose name ends in a secret word (``password``, ``passwd``, ``pwd``,
``pass``, ``token``, ``secret``, ``auth``, ``key``, ``credential``;
``loginpas``, ``adminpwd``, ``user_password`` included) keeps its name and
loses its value. Erring towards masking costs a readable value; erring the
other way leaks a password.
"""

from __future__ import annotations

import re

MASK = "***"
"""What a secret becomes."""

_SECRET_NAME = (r"[A-Za-z]*(?:pas(?:s(?:word|wd|wort)?)?|pwd|pswd?|secret|token|auth|key"
                r"|credentials?)")
# value: up to the next separator of a URL's path, params or query; in the XMEye
# style "…_password=pw_channel=1" an underscore starts the next name=value
_SECRET_PAIR = re.compile(
    rf"(?<![A-Za-z0-9])(?P<name>{_SECRET_NAME})(?P<eq>=|%3[Dd])"
    r"(?P<value>(?:(?!_[A-Za-z]+=)[^&;/?#\s'\"<>,])*)",
    re.IGNORECASE)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{1,15}://[^\s'\"<>]+")
_AUTHORITY = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<netloc>[^/?#]*)(?P<rest>.*)$",
                        re.DOTALL)


def mask_url(url: str) -> str:
    """``url`` with every credential replaced by :data:`MASK`.

    ``rtsp://admin:hunter2@10.0.0.5/s1`` becomes ``rtsp://admin:***@10.0.0.5/s1``,
    ``rtsp://cam/user=admin&password=pw&channel=1`` becomes
    ``rtsp://cam/user=admin&password=***&channel=1``. The user name stays (it
    tells the operator which account); a URL without credentials comes back
    unchanged, character for character. A string that is not a URL (a file
    path, ``/dev/video0``) gets the ``name=value`` rule alone.
    """
    match = _AUTHORITY.match(url)
    if match is None:
        return _mask_pairs(url)
    netloc = match["netloc"]
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        if has_password:
            netloc = f"{user}:{MASK}@{host}"
    return f"{match['scheme']}{netloc}{_mask_pairs(match['rest'])}"


def mask_text(text: str) -> str:
    """``text`` with :func:`mask_url` applied to every URL in it.

    For error messages and log lines, which quote URLs among other words
    (``rtsp://…: no answer within 5 s``). Outside URLs, ``password=…`` pairs
    are masked as well (FFmpeg options, a pasted query).
    """
    if "=" not in text and "@" not in text and "%3" not in text.casefold():
        return text  # the common case: nothing that could hold a secret
    return _mask_pairs(_URL.sub(lambda m: mask_url(m.group(0)), text))


def has_mask(url: str) -> bool:
    """Whether a credential of ``url`` is :data:`MASK` itself: the URL is one
    that :func:`mask_url` answered, sent back instead of the real one."""
    match = _AUTHORITY.match(url)
    rest = url
    if match is not None:
        userinfo, at, _ = match["netloc"].rpartition("@")
        if at and userinfo.partition(":")[2] == MASK:
            return True
        rest = match["rest"]
    return any(m["value"] == MASK for m in _SECRET_PAIR.finditer(rest))


def _mask_pairs(text: str) -> str:
    return _SECRET_PAIR.sub(lambda m: f"{m['name']}{m['eq']}{MASK}" if m["value"] else m[0], text)
