"""Who may change things: the bearer token of the control plane.

It guards the HTTP side (``… ─▶ events (HTTP/SSE)`` and ``annotate ─▶ WebRTC``):
every request that can change state (any method but GET and HEAD: config,
bill corrections, WebRTC offers) and the few reads that disclose secrets or
pictures (``GET /api/config`` holds camera passwords; bill snapshots are
camera frames) need ``Authorization: Bearer <token>``. The rest of the reads
(health, metrics, bills, events, the page itself) stay open on the LAN; see
``docs/SECURITY.md`` for why.

The token lives in a file readable by its owner only: ``server.token_file``,
or ``storage.dir/token``, which the daemon generates on its first start. A
token file that others may read is refused, as ssh refuses a private key.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import stat
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from edge.config import ServerConfig, StorageConfig
from edge.errors import ConfigError

TOKEN_FILE = "token"
"""Name of the generated token file under ``storage.dir``."""

TOKEN_BYTES = 32
"""Random bytes of a generated token (``secrets.token_urlsafe``: 43 characters)."""

MIN_TOKEN_CHARS = 16
"""Shortest token accepted from an operator's file."""

SAFE_METHODS = frozenset({"GET", "HEAD"})
"""Methods that change nothing; every other method needs the token."""

REALM = "dishtracker"

# RFC 6750 b64token: fits an Authorization header and a URL fragment unescaped
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

_log = structlog.get_logger("edge.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROTECTED_READS_KEY = web.AppKey("protected_reads", set)
"""Canonical paths of GET routes that need the token as well (see :func:`protect_reads`)."""
TOKEN_BYTES_KEY = web.AppKey("access_token_bytes", bytes)
"""The token of :func:`protect`, for :func:`carries_token` (never logged or answered)."""


class TokenFileError(ConfigError):
    """The token file cannot be used (loose permissions, foreign owner, bad content)."""


@dataclass(frozen=True, slots=True, repr=False)
class AccessToken:
    """The bearer token in force.

    Attributes
    ----------
    value : str
        The token itself (never logged).
    path : Path
        The file it came from.
    created : bool
        True when this start generated the file.
    """

    value: str
    path: Path
    created: bool

    def __repr__(self) -> str:  # keep the secret out of tracebacks and logs
        return f"AccessToken(path={str(self.path)!r}, created={self.created})"

    def url(self, base: str) -> str:
        """``base`` with the token in its fragment (``#token=…``).

        Browsers never send the fragment to the server, so the token does not
        reach access logs or proxies; the cashier page reads it, keeps it for
        the session and removes it from the address bar.
        """
        return f"{base}#token={quote(self.value, safe='')}"


def token_path(server: ServerConfig, storage: StorageConfig) -> Path:
    """Where the token file is: ``server.token_file`` or ``storage.dir/token``."""
    return server.token_file if server.token_file is not None else storage.dir / TOKEN_FILE


def load_token(server: ServerConfig, storage: StorageConfig) -> AccessToken:
    """Read the token file, generating ``storage.dir/token`` when it is absent.

    A ``server.token_file`` the operator named must exist; only the default
    file is generated (``secrets.token_urlsafe``, mode 0600, written to a
    temporary file and linked into place, so a crash never leaves a partial
    token and two starts never both write one).

    Raises
    ------
    TokenFileError
        The file is not a regular file, others than its owner may read or
        write it, it belongs to another user, it cannot be read or created,
        or it holds no usable token (at least 16 characters of
        ``A-Z a-z 0-9 - . _ ~ + /``).
    """
    path = token_path(server, storage)
    try:
        return AccessToken(_read_token(path), path, created=False)
    except FileNotFoundError:
        if server.token_file is not None:
            raise TokenFileError(
                f"server.token_file: {path} does not exist; create it with "
                f"`umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' "
                f"> {path}`, or remove server.token_file to use a generated "
                f"{storage.dir / TOKEN_FILE}") from None
    created = _create_token(path)
    value = _read_token(path)
    if created:
        _log.info("access_token_created", path=str(path))
    return AccessToken(value, path, created=created)


def _read_token(path: Path) -> str:
    """The token in ``path`` after checking the file's type, owner and mode.

    Raises
    ------
    FileNotFoundError
        No such file.
    TokenFileError
        Anything else that makes the file unusable.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as err:
        hint = " (a symbolic link is not accepted)" if path.is_symlink() else ""
        raise TokenFileError(f"cannot open the token file {path}: {err.strerror}{hint}") from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TokenFileError(f"the token file {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise TokenFileError(
                f"the token file {path} has mode {mode:04o}: others than its owner may "
                f"read or change it; run `chmod 600 {path}` (or delete it to have a new "
                "token generated)")
        if st.st_uid != os.geteuid():
            raise TokenFileError(
                f"the token file {path} belongs to uid {st.st_uid}, not to the daemon's "
                f"user (uid {os.geteuid()}); chown it to that user")
        raw = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        value = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        value = ""
    if len(value) < MIN_TOKEN_CHARS or not _TOKEN_RE.fullmatch(value):
        raise TokenFileError(
            f"the token file {path} holds no usable token: expected one line of at least "
            f"{MIN_TOKEN_CHARS} characters from A-Z a-z 0-9 - . _ ~ + / (delete the file to "
            "have one generated)")
    return value


def _create_token(path: Path) -> bool:
    """Generate a token into ``path``; False when another start was quicker."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            os.write(fd, (secrets.token_urlsafe(TOKEN_BYTES) + "\n").encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # fails if the file appeared meanwhile: never overwrite
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as err:
        raise TokenFileError(f"cannot create the token file {path} (storage.dir): "
                             f"{err.strerror}") from err
    return True


def protect_reads(app: web.Application, *paths: str) -> None:
    """Make the GET routes with these canonical paths need the token too.

    Parameters
    ----------
    app
        The application (:func:`protect` installs the check).
    paths
        Canonical resource paths, e.g. ``/api/bills/{bill_id}/snapshot.jpg``.
    """
    app.setdefault(PROTECTED_READS_KEY, set()).update(paths)


def needs_token(request: web.Request) -> bool:
    """Whether ``request`` must carry the token.

    Everything but GET and HEAD does (so a route added later is guarded
    without anyone remembering to), and so do the reads named by
    :func:`protect_reads`. Requests that match no route (404, 405) change
    nothing and answer as usual.
    """
    match = request.match_info
    if match.http_exception is not None:
        return False
    canonical = getattr(match.route.resource, "canonical", None)
    protected: set[str] = request.app.get(PROTECTED_READS_KEY, set())
    return route_needs_token(request.method, canonical, protected)


def route_needs_token(method: str, canonical: str | None,
                      protected_reads: Collection[str]) -> bool:
    """The rule of :func:`needs_token` for a route: every method but GET and
    HEAD, and the reads in ``protected_reads`` (canonical paths).

    :mod:`edge.web.openapi` writes the ``security`` of each operation from
    this same rule, so the published description cannot disagree with it.
    """
    return method not in SAFE_METHODS or canonical in protected_reads


def bearer_auth(token: str) -> Middleware:
    """Middleware that refuses guarded requests without ``Authorization: Bearer <token>``.

    Missing or malformed credentials: 401 with ``WWW-Authenticate: Bearer
    realm="dishtracker"``; a wrong token: 401 with ``error="invalid_token"``
    (RFC 6750). Bodies are JSON (``{"error": "…"}``). The comparison takes
    constant time (``hmac.compare_digest``).
    """
    expected = token.encode("ascii")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not needs_token(request):
            return await handler(request)
        scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return _unauthorized(
                "this request needs the access token: send 'Authorization: Bearer <token>' "
                "(the token is in the daemon's token file; see docs/SECURITY.md)",
                f'Bearer realm="{REALM}"')
        if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected):
            _log.warning("access_denied", method=request.method, path=request.path,
                         peer=request.remote)
            return _unauthorized("wrong access token",
                                 f'Bearer realm="{REALM}", error="invalid_token"')
        return await handler(request)

    return middleware


def carries_token(request: web.Request) -> bool:
    """Whether ``request`` carries the right token (on any route, open ones too).

    Open routes use it to tell a token holder's request from an anonymous one
    (``GET /api/events`` keeps slots for token holders); False in an
    application without :func:`protect`.
    """
    expected = request.app.get(TOKEN_BYTES_KEY)
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    if expected is None or scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected)


def protect(app: web.Application, token: str) -> None:
    """Install :func:`bearer_auth` on ``app`` (before it starts).

    Parameters
    ----------
    app
        An application not yet started; the middleware is appended, so it
        runs inside the ones already there (e.g. the JSON error middleware).
    token
        The bearer token.
    """
    app.setdefault(PROTECTED_READS_KEY, set())
    app[TOKEN_BYTES_KEY] = token.encode("ascii")
    app.middlewares.append(bearer_auth(token))


def _unauthorized(message: str, challenge: str) -> web.Response:
    return web.json_response({"error": message}, status=401,
                             headers={"WWW-Authenticate": challenge})
