"""Who may do what: the bearer tokens of the control plane and their roles.

It guards the HTTP side (``… ─▶ events (HTTP/SSE)`` and ``annotate ─▶ WebRTC``):
every request that can change state (any method but GET and HEAD: config,
bill corrections, WebRTC offers) and the few reads that disclose secrets or
pictures (``GET /api/config`` holds camera passwords; bill snapshots are
camera frames) need ``Authorization: Bearer <token>``. The rest of the reads
(health, metrics, bills, events, the page itself) stay open on the LAN; see
``docs/SECURITY.md`` for why.

A token carries a role (:mod:`edge.web.roles`); a guarded route allows some
roles (``manager`` only unless it names others with
:func:`edge.web.roles.allow`), and a token of another role gets 403. The
owner's token lives in a file readable by its owner only:
``server.token_file``, or ``storage.dir/token``, which the daemon generates on
its first start; it is the ``manager`` named ``owner``. Named tokens of any
role are in ``storage.dir/tokens.json`` (:mod:`edge.web.tokens`). A file that
others may read is refused, as ssh refuses a private key.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from edge.config import ServerConfig, StorageConfig
from edge.web.roles import (
    ACTOR_KEY,
    PROTECTED_READS_KEY,
    refusal,
    route_roles,
)
from edge.web.tokens import (
    MIN_TOKEN_CHARS,
    OWNER,
    TOKEN_BYTES,
    TOKENS_FILE,
    Keyring,
    TokenFileError,
    TokenStore,
    read_token_file,
)

__all__ = ["KEYRING_KEY", "MIN_TOKEN_CHARS", "OWNER", "PROTECTED_READS_KEY",
           "REALM", "SAFE_METHODS", "TOKEN_BYTES", "TOKEN_FILE", "AccessToken", "Keyring",
           "TokenFileError", "bearer_auth", "carries_token", "load_keyring", "load_token",
           "needs_token", "protect", "protect_reads", "route_needs_token", "token_path",
           "token_url"]

TOKEN_FILE = "token"
"""Name of the generated token file under ``storage.dir``."""

SAFE_METHODS = frozenset({"GET", "HEAD"})
"""Methods that change nothing; every other method needs the token."""

REALM = "dishtracker"


_log = structlog.get_logger("edge.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEYRING_KEY = web.AppKey("access_keyring", Keyring)
"""The tokens in force (:func:`protect`), for :func:`carries_token`."""


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
        return token_url(base, self.value)


def token_url(base: str, token: str) -> str:
    """``base`` with ``token`` in its fragment (``#token=…``; see :meth:`AccessToken.url`)."""
    return f"{base}#token={quote(token, safe='')}"


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
        return AccessToken(read_token_file(path), path, created=False)
    except FileNotFoundError:
        if server.token_file is not None:
            raise TokenFileError(
                f"server.token_file: {path} does not exist; create it with "
                f"`umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' "
                f"> {path}`, or remove server.token_file to use a generated "
                f"{storage.dir / TOKEN_FILE}") from None
    created = _create_token(path)
    value = read_token_file(path)
    if created:
        _log.info("access_token_created", path=str(path))
    return AccessToken(value, path, created=created)


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


def bearer_auth(keyring: Keyring) -> Middleware:
    """Middleware that refuses guarded requests without a token of an allowed role.

    Missing or malformed credentials: 401 with ``WWW-Authenticate: Bearer
    realm="dishtracker"``; a wrong token: 401 with ``error="invalid_token"``
    (RFC 6750); a token whose role the route does not allow
    (:func:`edge.web.roles.route_roles`): 403 with
    ``error="insufficient_scope"``. Bodies are JSON (``{"error": "…"}``). The
    :class:`~edge.web.roles.Actor` of an accepted token is put on the request
    (``request[ACTOR_KEY]``); open routes are not looked at (one that wants to
    know asks :func:`carries_token`). The comparison takes constant time
    (:meth:`Keyring.identify`).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not needs_token(request):  # open: whoever asks (carries_token looks if needed)
            return await handler(request)
        given = _bearer(request)
        actor = keyring.identify(given) if given is not None else None
        if actor is not None:
            request[ACTOR_KEY] = actor
        if given is None:
            return _refused(401, "this request needs the access token: send 'Authorization: "
                                 "Bearer <token>' (the token is in the daemon's token file, "
                                 "or from `dishtracker token`; see docs/SECURITY.md)",
                            f'Bearer realm="{REALM}"')
        if actor is None:
            _log.warning("access_denied", method=request.method, path=request.path,
                         peer=request.remote)
            return _refused(401, "wrong access token",
                            f'Bearer realm="{REALM}", error="invalid_token"')
        needed = route_roles(request.app, request.method, _canonical(request))
        if actor.role not in needed:
            _log.warning("access_forbidden", method=request.method, path=request.path,
                         peer=request.remote, token=actor.name, role=actor.role)
            return _refused(403, refusal(needed, actor),
                            f'Bearer realm="{REALM}", error="insufficient_scope"')
        return await handler(request)

    return middleware


def _bearer(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, or None."""
    scheme, _, given = request.headers.get("Authorization", "").strip().partition(" ")
    given = given.strip()
    return given if scheme.lower() == "bearer" and given else None


def _canonical(request: web.Request) -> str | None:
    return getattr(request.match_info.route.resource, "canonical", None)


def carries_token(request: web.Request) -> bool:
    """Whether ``request`` carries a token in force, of any role (on any route,
    open ones too).

    Open routes use it to tell a token holder's request from an anonymous one
    (``GET /api/events`` keeps slots for token holders); False in an
    application without :func:`protect`.
    """
    if request.get(ACTOR_KEY) is not None:  # the middleware has looked already
        return True
    keyring = request.app.get(KEYRING_KEY)
    given = _bearer(request)
    return keyring is not None and given is not None and keyring.identify(given) is not None


def load_keyring(server: ServerConfig, storage: StorageConfig) -> tuple[AccessToken, Keyring]:
    """The owner's token (:func:`load_token`) and every token in force.

    Raises
    ------
    TokenFileError
        The token file or the token store (``storage.dir/tokens.json``) is
        unusable; the daemon does not start then.
    """
    token = load_token(server, storage)
    store = TokenStore(storage.dir / TOKENS_FILE)
    store.entries()  # a loose or broken store stops the start, as the token file does
    return token, Keyring(token.value, owner_path=token.path, store=store)


def protect(app: web.Application, token: str | Keyring) -> None:
    """Install :func:`bearer_auth` on ``app`` (before it starts).

    Parameters
    ----------
    app
        An application not yet started; the middleware is appended, so it
        runs inside the ones already there (e.g. the JSON error middleware).
    token
        The tokens in force, or one token (the ``manager`` named ``owner``).
    """
    keyring = token if isinstance(token, Keyring) else Keyring(token)
    app.setdefault(PROTECTED_READS_KEY, set())
    app[KEYRING_KEY] = keyring
    app.middlewares.append(bearer_auth(keyring))


def _refused(status: int, message: str, challenge: str) -> web.Response:
    return web.json_response({"error": message}, status=status,
                             headers={"WWW-Authenticate": challenge})
