"""Named tokens with roles: the token store and the keyring the access check asks.

It sits with :mod:`edge.web.access` on the HTTP side. Two kinds of token let
a request in:

- the **owner's** token, in clear in ``storage.dir/token`` (or
  ``server.token_file``) as before roles existed: a ``manager`` named
  ``owner``, so a box set up earlier keeps working unchanged;
- **named tokens** in ``storage.dir/tokens.json``, each with a role
  (:data:`edge.web.roles.ROLES`), made and revoked by ``dishtracker token``.
  The store keeps each token's SHA-256, never the token: it is shown once,
  when it is made or rotated. A token is 256 random bits, so a plain hash is
  as hard to reverse as the token is to guess (no slow KDF needed).

Both files are the owner's only (0600, a regular file, not a link, this
user's — or, for root, the folder owner's, who could replace it anyway);
one that others may read or change is refused, as ssh refuses a private key.
The store is written whole through a temp file, fsync and rename, under a
lock, so a reader sees the old list or the new one. The running daemon's
:class:`Keyring` looks at both files' ``stat`` on each guarded request and
re-reads one that changed: a created, rotated or revoked token counts from
the next request, without a restart.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.config import format_errors
from edge.errors import ConfigError
from edge.fsutil import make_private_dir, write_atomic
from edge.web.roles import ROLES, Actor

TOKENS_FILE = "tokens.json"
"""Name of the token store under ``storage.dir``."""

OWNER = "owner"
"""Name of the token in the token file (role ``manager``)."""

TOKEN_BYTES = 32
"""Random bytes of a generated token (``secrets.token_urlsafe``: 43 characters)."""

MIN_TOKEN_CHARS = 16
"""Shortest token accepted from an operator's file."""

MAX_STORE_BYTES = 1 << 20
"""Largest token store read (a few thousand tokens)."""

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A token's name: recorded with every change its holder makes."""

# RFC 6750 b64token: fits an Authorization header and a URL fragment unescaped
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")

_log = structlog.get_logger("edge.web")


class TokenFileError(ConfigError):
    """A token file or the token store cannot be used (loose permissions,
    foreign owner, bad content), or a store change is not possible."""


def new_token() -> str:
    """A fresh random token (``secrets.token_urlsafe``, 256 bits)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(token: str) -> str:
    """The SHA-256 of ``token`` as the store keeps it (hex)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def read_private(path: Path, what: str, limit: int) -> bytes:
    """The bytes of ``path`` after checking its type, owner and mode.

    Parameters
    ----------
    path
        The file.
    what
        How messages name it ("the token file", "the token store").
    limit
        Bytes read at most.

    Raises
    ------
    FileNotFoundError
        No such file.
    TokenFileError
        Not a regular file, a symbolic link, others than its owner may read or
        write it, or it belongs to another user.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as err:
        hint = " (a symbolic link is not accepted)" if path.is_symlink() else ""
        raise TokenFileError(f"cannot open {what} {path}: {err.strerror}{hint}") from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TokenFileError(f"{what} {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise TokenFileError(
                f"{what} {path} has mode {mode:04o}: others than its owner may "
                f"read or change it; run `chmod 600 {path}`")
        if st.st_uid not in _trusted_owners(path):
            raise TokenFileError(
                f"{what} {path} belongs to uid {st.st_uid}, not to the daemon's "
                f"user (uid {os.geteuid()}); chown it to that user")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _trusted_owners(path: Path) -> set[int]:
    """This user; for root also the owner of the file's folder (who may replace
    the file anyway), so ``sudo dishtracker token …`` reads the daemon's files."""
    uid = os.geteuid()
    if uid != 0:
        return {uid}
    try:
        return {uid, path.parent.stat().st_uid}
    except OSError:
        return {uid}


def read_token_file(path: Path) -> str:
    """The token in the token file ``path`` (see :func:`read_private`).

    Raises
    ------
    FileNotFoundError
        No such file.
    TokenFileError
        The file is unusable, or holds no token of at least 16 characters
        from ``A-Z a-z 0-9 - . _ ~ + /``.
    """
    raw = read_private(path, "the token file", 4096)
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


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, mode 0600; run as root, the new
    file gets the owner of its folder (the daemon's user, under systemd)."""
    make_private_dir(path.parent)  # storage.dir, as the daemon makes it
    write_atomic(path, data, mode=0o600)
    if os.geteuid() == 0:
        folder = path.parent.stat()
        if folder.st_uid != 0:
            os.chown(path, folder.st_uid, folder.st_gid)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_RE.pattern)
    role: Literal["cashier", "manager", "labeller"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created: str


class _Store(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    tokens: list[_Entry] = []


@dataclass(frozen=True, slots=True, repr=False)
class StoredToken:
    """One named token of the store (its hash, never the token).

    Attributes
    ----------
    name : str
        Unique in the store; ``owner`` is the token file's.
    role : str
        One of :data:`edge.web.roles.ROLES`.
    sha256 : str
        SHA-256 of the token, hex.
    created : str
        When this token value was made (ISO 8601, UTC, seconds).
    """

    name: str
    role: str
    sha256: str
    created: str

    def __repr__(self) -> str:
        return f"StoredToken(name={self.name!r}, role={self.role!r}, created={self.created!r})"


class TokenStore:
    """``storage.dir/tokens.json``: the named tokens and their roles.

    Parameters
    ----------
    path
        The store file (absent: no named tokens).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def entries(self) -> tuple[StoredToken, ...]:
        """Every named token, in the order they were made.

        Raises
        ------
        TokenFileError
            The file is unusable (:func:`read_private`), or not a store.
        """
        try:
            raw = read_private(self.path, "the token store", MAX_STORE_BYTES + 1)
        except FileNotFoundError:
            return ()
        if len(raw) > MAX_STORE_BYTES:
            raise TokenFileError(f"the token store {self.path} is over {MAX_STORE_BYTES} bytes")
        try:
            store = _Store.model_validate(json.loads(raw))
        except (ValueError, UnicodeDecodeError) as err:
            lines = format_errors(err) if isinstance(err, ValidationError) else [str(err)]
            raise TokenFileError(f"the token store {self.path} is not valid: "
                                 + "; ".join(lines)) from None
        return tuple(StoredToken(e.name, e.role, e.sha256, e.created) for e in store.tokens)

    def create(self, name: str, role: str) -> str:
        """Add a token named ``name`` with ``role``; returns the token (shown once).

        Raises
        ------
        TokenFileError
            A bad name or role, a name in use (``owner`` included), or an
            unusable store.
        """
        _check_name(name)
        if role not in ROLES:
            raise TokenFileError(f"--role: {role!r} is not a role; use one of "
                                 f"{', '.join(ROLES)}")
        if name == OWNER:
            raise TokenFileError(f"--name: {OWNER!r} is the token file's token; "
                                 "choose another name")
        token = new_token()
        with self._locked() as tokens:
            if any(t.name == name for t in tokens):
                raise TokenFileError(f"--name: a token named {name!r} exists; revoke it "
                                     "first, or rotate it for a new value")
            tokens.append(StoredToken(name, role, digest(token), _now()))
            self._write(tokens)
        return token

    def rotate(self, name: str) -> tuple[StoredToken, str]:
        """Give the token ``name`` a new value (same role); the old one stops working.

        Returns
        -------
        tuple
            The updated entry and the new token (shown once).
        """
        token = new_token()
        with self._locked() as tokens:
            i = self._index(tokens, name)
            tokens[i] = StoredToken(name, tokens[i].role, digest(token), _now())
            self._write(tokens)
            return tokens[i], token

    def revoke(self, name: str) -> StoredToken:
        """Remove the token ``name``; returns what was removed."""
        with self._locked() as tokens:
            gone = tokens.pop(self._index(tokens, name))
            self._write(tokens)
            return gone

    def _index(self, tokens: list[StoredToken], name: str) -> int:
        for i, t in enumerate(tokens):
            if t.name == name:
                return i
        known = ", ".join(t.name for t in tokens) or "none"
        raise TokenFileError(f"--name: no token named {name!r} in {self.path} "
                             f"(named tokens: {known})")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[list[StoredToken]]:
        """The entries, read under an exclusive lock that two shells share
        (on the folder itself: no lock file whose owner could shut a user out)."""
        make_private_dir(self.path.parent)
        fd = os.open(self.path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield list(self.entries())
        finally:
            os.close(fd)

    def _write(self, tokens: list[StoredToken]) -> None:
        body = {"version": 1, "tokens": [
            {"name": t.name, "role": t.role, "sha256": t.sha256, "created": t.created}
            for t in tokens]}
        write_private(self.path, (json.dumps(body, indent=2) + "\n").encode("utf-8"))


def _check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise TokenFileError(f"--name: {name!r} is not a token name; use 1-64 of "
                             "A-Z a-z 0-9 . _ - (starting with a letter or digit)")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when a file is replaced, rewritten or chmod-ed (None: absent)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


class Keyring:
    """The tokens in force, for the access middleware.

    Parameters
    ----------
    owner
        The owner's token as read at start (None: none).
    owner_path
        Its file, re-read when it changes (``dishtracker token rotate``);
        None keeps ``owner`` for good.
    store
        The named tokens (None: the owner's token only).

    Notes
    -----
    A file that becomes unusable (loose mode, bad content, gone) lets none of
    its tokens in until it is fixed, and is logged (``token_store_refused``):
    failing closed, never on a stale list.
    """

    def __init__(self, owner: str | None, *, owner_path: Path | None = None,
                 store: TokenStore | None = None) -> None:
        self._owner = owner.encode("ascii") if owner is not None else None
        self.owner_path = owner_path
        self.store = store
        self._owner_sig = _signature(owner_path) if owner_path is not None else None
        self._store_sig: tuple[int, int, int, int] | None = None
        self._named: tuple[tuple[bytes, Actor], ...] = ()
        self._refresh_store(force=True)

    def identify(self, given: str) -> Actor | None:
        """The holder of ``given``, or None when it is no token in force.

        Every token in force is compared, in constant time each
        (``hmac.compare_digest``): the owner's against ``given`` itself, the
        named ones by their SHA-256.
        """
        self._refresh_owner()
        self._refresh_store()
        raw = given.encode("utf-8", "surrogateescape")
        found: Actor | None = None
        if self._owner is not None and hmac.compare_digest(raw, self._owner):
            found = Actor(OWNER, "manager")
        if self._named:
            hashed = hashlib.sha256(raw).hexdigest().encode("ascii")
            for expected, actor in self._named:  # all of them: no early exit
                if hmac.compare_digest(hashed, expected) and found is None:
                    found = actor
        return found

    def _refresh_owner(self) -> None:
        if self.owner_path is None:
            return
        sig = _signature(self.owner_path)
        if sig == self._owner_sig:
            return
        self._owner_sig = sig
        try:
            self._owner = read_token_file(self.owner_path).encode("ascii")
        except (OSError, TokenFileError) as err:
            self._owner = None
            _log.error("token_file_refused", path=str(self.owner_path), error=str(err))
        else:
            _log.info("token_file_reloaded", path=str(self.owner_path))

    def _refresh_store(self, *, force: bool = False) -> None:
        if self.store is None:
            return
        sig = _signature(self.store.path)
        if sig == self._store_sig and not force:
            return
        self._store_sig = sig
        try:
            entries = self.store.entries()
        except (OSError, TokenFileError) as err:
            self._named = ()
            _log.error("token_store_refused", path=str(self.store.path), error=str(err))
            return
        self._named = tuple((t.sha256.encode("ascii"), Actor(t.name, t.role))
                            for t in entries)
        if not force:
            _log.info("token_store_reloaded", path=str(self.store.path), tokens=len(entries))
