"""``dishtracker token``: the operator's shell for the box's access tokens.

Beside :mod:`edge.web.tokens` (the store) and :mod:`edge.web.access` (the
owner's token file). ``show`` prints the page's links with the owner's token
again (it lives in clear in its file); ``create`` and ``rotate`` print a new
token once, with the links; ``revoke`` removes one; ``list`` names them
without any secret. A running daemon picks every change up at its next
request (:class:`edge.web.tokens.Keyring`), without a restart.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from edge.config import SiteConfig, load_config
from edge.web.access import token_path, token_url
from edge.web.addresses import browse_urls
from edge.web.roles import ROLES
from edge.web.tokens import (
    OWNER,
    TOKENS_FILE,
    TokenFileError,
    TokenStore,
    new_token,
    read_token_file,
    write_private,
)

_HASHED = "shown this once: the box keeps only its hash"


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help="site config (TOML) whose storage.dir and server to use "
                        "(default: built-in defaults, as `dishtracker run`)")


def add_show_arguments(p: argparse.ArgumentParser) -> None:
    """``token show [--name N]``."""
    _add_config(p)
    p.add_argument("--name", default=OWNER, help=f"which token (default {OWNER!r}, the "
                                                  "token file's; named tokens are stored "
                                                  "hashed and cannot be shown)")


def add_rotate_arguments(p: argparse.ArgumentParser) -> None:
    """``token rotate [--name N]``."""
    _add_config(p)
    p.add_argument("--name", default=OWNER, help=f"which token (default {OWNER!r})")


def add_create_arguments(p: argparse.ArgumentParser) -> None:
    """``token create --role R --name N``."""
    _add_config(p)
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--name", required=True,
                   help="who holds it (recorded with every change it makes), e.g. till-1")


def add_revoke_arguments(p: argparse.ArgumentParser) -> None:
    """``token revoke --name N``."""
    _add_config(p)
    p.add_argument("--name", required=True)


def add_list_arguments(p: argparse.ArgumentParser) -> None:
    """``token list``."""
    _add_config(p)


def _site(args: argparse.Namespace) -> tuple[SiteConfig, TokenStore]:
    config = load_config(args.config)
    return config, TokenStore(config.storage.dir / TOKENS_FILE)


def _owner_file(config: SiteConfig) -> Path:
    return token_path(config.server, config.storage)


def _links(config: SiteConfig, token: str) -> list[str]:
    server = config.server
    urls = browse_urls(server.host, server.port, tls=server.tls_cert is not None)
    return [token_url(u, token) for u in urls]


def _print_links(config: SiteConfig, token: str) -> None:
    print("Open the page with it:")
    for link in _links(config, token):
        print(f"  {link}")


def _print_new(config: SiteConfig, what: str, token: str, kept: str) -> int:
    """``what`` happened; the new ``token`` (``kept``: where it lives) and the links."""
    print(f"{what} The new token ({kept}):")
    print(f"  {token}")
    _print_links(config, token)
    return 0


def run_show(args: argparse.Namespace) -> int:
    """Print the links with the owner's token."""
    config, store = _site(args)
    if args.name != OWNER:
        known = {t.name for t in store.entries()}
        where = "is stored hashed" if args.name in known else "does not exist"
        raise TokenFileError(
            f"--name: the token {args.name!r} {where}: a named token is shown once, when "
            f"it is made; `dishtracker token rotate --name {args.name}` gives it a new "
            "value and shows that")
    path = _owner_file(config)
    try:
        token = read_token_file(path)
    except FileNotFoundError:
        raise TokenFileError(f"no token file at {path} yet: the daemon makes it on its first "
                             "start (or run `dishtracker token rotate`)") from None
    print(f"The token {OWNER!r} (manager), from {path}.")
    _print_links(config, token)
    return 0


def run_rotate(args: argparse.Namespace) -> int:
    """Give a token a new value; print it once with the links."""
    config, store = _site(args)
    if args.name == OWNER:
        path = _owner_file(config)
        token = new_token()
        write_private(path, (token + "\n").encode("ascii"))
        role, kept = "manager", f"also in {path}; `dishtracker token show` prints it again"
    else:
        entry, token = store.rotate(args.name)
        role, kept = entry.role, _HASHED
    return _print_new(config, f"Rotated the token {args.name!r} ({role}): the old value "
                              "no longer opens the box.", token, kept)


def run_create(args: argparse.Namespace) -> int:
    """Make a named token; print it once with the links."""
    config, store = _site(args)
    token = store.create(args.name, args.role)
    return _print_new(config, f"Created the token {args.name!r} ({args.role}) in "
                              f"{store.path}.", token, _HASHED)


def run_revoke(args: argparse.Namespace) -> int:
    """Remove a named token; its holder gets 401 from the next request."""
    _, store = _site(args)
    if args.name == OWNER:
        raise TokenFileError(f"--name: {OWNER!r} is the token file's token and cannot be "
                             "revoked; `dishtracker token rotate` replaces it")
    gone = store.revoke(args.name)
    print(f"Revoked the token {gone.name!r} ({gone.role}).")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Name every token and its role; never a secret."""
    config, store = _site(args)
    rows = [("NAME", "ROLE", "SINCE", "KEPT IN")]
    path = _owner_file(config)
    if path.exists():
        since = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
        rows.append((OWNER, "manager", since.replace(microsecond=0).isoformat(),
                     f"{path} (clear)"))
    rows += [(t.name, t.role, t.created, f"{store.path} (SHA-256)") for t in store.entries()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join([*(row[i].ljust(widths[i]) for i in range(3)), row[3]]))
    return 0
