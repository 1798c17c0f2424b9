"""``dishtracker models``: the model registry from the shell, through the running daemon.

Beside :mod:`edge.web.model_routes`, whose routes it calls (so every change
goes through the daemon's controller and lands in its history with the
token's name), as ``dishtracker token`` sits beside the token store. The
address comes from the site config (``server.host``, ``server.port``, HTTPS
when ``server.tls_cert`` is set) or ``--url``; the token is the owner's
(``storage.dir/token`` or ``server.token_file``), or ``DISHTRACKER_TOKEN``
for a named manager token.

On the box itself the certificate is pinned: the connection is trusted when
the daemon shows the very certificate the config names, whatever host name
it carries (``127.0.0.1`` is rarely in it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from edge.config import SiteConfig, load_config
from edge.errors import DishTrackerError
from edge.web.access import token_path
from edge.web.addresses import browse_urls
from edge.web.tokens import read_token_file

TOKEN_ENV = "DISHTRACKER_TOKEN"
"""Environment variable with a manager token to use instead of the owner's."""
DEFAULT_TIMEOUT_S = 300.0
"""A promotion loads the model first (a TensorRT engine may be built): minutes, not seconds."""
_COLUMNS = ("ID", "VERSION", "STATE", "SOURCE", "ADDED", "SIZE", "NAME")


class DaemonRequestError(DishTrackerError):
    """The daemon did not answer, or refused the request; the message says why."""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help="site config (TOML) whose server and storage.dir to use "
                        "(default: built-in defaults, as `dishtracker run`)")
    p.add_argument("--url", default=None,
                   help="the daemon's address, e.g. https://box.local:8080 "
                        "(default: from the config)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"seconds to wait for an answer (default {DEFAULT_TIMEOUT_S:g})")


def add_list_arguments(p: argparse.ArgumentParser) -> None:
    """``models list``."""
    _add_common(p)


def add_add_arguments(p: argparse.ArgumentParser) -> None:
    """``models add FILE [--name N]``."""
    _add_common(p)
    p.add_argument("file", type=Path, help="the ONNX model (detector contract)")
    p.add_argument("--name", default=None,
                   help="name it by (default: the file's name; the model's own 'name' "
                        "metadata wins)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """``models shadow|promote|retire ID``."""
    _add_common(p)
    p.add_argument("id", help="the model's id (`dishtracker models list`), or 6+ of its "
                              "first characters")


def add_rollback_arguments(p: argparse.ArgumentParser) -> None:
    """``models rollback``."""
    _add_common(p)


class Daemon:
    """The running daemon's model routes.

    Parameters
    ----------
    url : str
        Base URL, e.g. ``http://127.0.0.1:8080``.
    token : str or DaemonRequestError
        A manager's bearer token, or why there is none (raised once the daemon
        is known to answer: that it does not run is the likelier news).
    context : ssl.SSLContext, optional
        For HTTPS.
    timeout_s : float
        Per request.
    tls_hint : str
        What to do when the TLS handshake fails.
    """

    def __init__(self, url: str, token: str | DaemonRequestError, *,
                 context: ssl.SSLContext | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 tls_hint: str = "give --url with the name in the daemon's certificate",
                 ) -> None:
        self.url = url.rstrip("/")
        self._tls_hint = tls_hint
        self._token = token
        self._context = context
        self._timeout_s = timeout_s

    def request(self, method: str, path: str, *, body: BinaryIO | None = None,
                size: int | None = None) -> Any:
        """The JSON answer of ``method path``.

        Raises
        ------
        DaemonRequestError
            Nothing answers (with how to start the daemon), or an error status
            (with the daemon's own message).
        """
        if isinstance(self._token, DaemonRequestError):
            self._send(urllib.request.Request(self.url + "/healthz"))
            raise self._token
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            headers |= {"Content-Type": "application/octet-stream",
                        "Content-Length": str(size)}
        return self._send(urllib.request.Request(self.url + path, data=body, method=method,
                                                 headers=headers))

    def _send(self, req: urllib.request.Request) -> Any:
        method, path = req.get_method(), req.selector
        try:
            with urllib.request.urlopen(req, timeout=self._timeout_s,
                                        context=self._context) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as err:
            raise DaemonRequestError(f"{method} {path}: {err.code} {_message(err)}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            reason = getattr(err, "reason", err)
            if isinstance(reason, ssl.SSLError):
                raise DaemonRequestError(f"{self.url}: TLS failed ({reason}); "
                                         f"{self._tls_hint}") from None
            raise DaemonRequestError(
                f"no daemon answers at {self.url} ({reason}): start it with `dishtracker run "
                "--config SITE.toml` (or `systemctl start dishtracker`), or give --url") from None


def _message(err: urllib.error.HTTPError) -> str:
    raw = err.read()
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace").strip()[:300] or str(err.reason)


def daemon_for(args: argparse.Namespace) -> Daemon:
    """The :class:`Daemon` that ``--config``, ``--url`` and the token point at."""
    config = load_config(args.config)
    tls = config.server.tls_cert is not None
    url = args.url or browse_urls(config.server.host, config.server.port, tls=tls)[0]
    if not url.startswith(("http://", "https://")):
        raise DaemonRequestError(f"--url: {url!r} is not an http:// or https:// address")
    pinned = args.url is None
    context = _tls_context(config, pinned=pinned) if url.startswith("https") else None
    hint = (f"the daemon does not show server.tls_cert ({config.server.tls_cert}) of this "
            "config: is --config the daemon's?") if pinned else (
        "give --url with the name in the daemon's certificate")
    return Daemon(url, _token(config), context=context, timeout_s=args.timeout,
                  tls_hint=hint)


def _token(config: SiteConfig) -> str | DaemonRequestError:
    if os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    path = token_path(config.server, config.storage)
    try:
        return read_token_file(path)
    except FileNotFoundError:
        return DaemonRequestError(
            f"no token file at {path}: the daemon makes it on its first start (is --config "
            f"the daemon's?), or set {TOKEN_ENV} to a manager's token")


def _tls_context(config: SiteConfig, *, pinned: bool) -> ssl.SSLContext:
    """Trust the config's certificate itself (``pinned``: whatever name it carries),
    and the system's authorities for another ``--url``."""
    cert = config.server.tls_cert
    if not pinned or cert is None:
        context = ssl.create_default_context()
        if cert is not None:
            context.load_verify_locations(cert)
        return context
    context = ssl.create_default_context(cafile=cert)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # the leaf itself is the anchor
    context.check_hostname = False  # pinned to this certificate, not to a name
    return context


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} kB"


def _added(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M")


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


def _said(entry: dict[str, Any]) -> str:
    return f"model {entry['id']} ({entry['version']})"


def run_list(args: argparse.Namespace) -> int:
    """Print the registry as a table, and what shadows."""
    answer = daemon_for(args).request("GET", "/api/models")
    models = answer["models"]
    if not models:
        print("no models in the registry")
        return 0
    print(_table([_COLUMNS, *((m["id"], m["version"], m["state"], m["source"],
                               _added(m["added_at"]), _size(m["size_bytes"]), m["name"])
                              for m in models)]))
    shadow = (answer.get("rollout") or {}).get("shadow")
    if shadow:
        stats = dict(shadow.get("stats") or {})
        since = stats.pop("since", None)
        age = (f" for {max(0, round(time.time() - since))} s"
               if isinstance(since, int | float) else "")
        figures = ", ".join(f"{k.replace('_', ' ')} {_figure(v)}" for k, v in stats.items()
                            if not isinstance(v, dict | list))
        print(f"\nshadowing {shadow.get('id')} ({shadow.get('version')}){age}: {figures}"
              "\n(every figure: the models page, or GET /api/models)")
    return 0


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_add(args: argparse.Namespace) -> int:
    """Upload a model file as a candidate."""
    daemon = daemon_for(args)
    path: Path = args.file
    try:
        fh = path.open("rb")
    except OSError as err:
        raise DaemonRequestError(f"{path}: {err.strerror}") from None
    with fh:
        name = quote(args.name or path.name, safe="")
        entry = daemon.request("POST", f"/api/models?name={name}", body=fh,
                               size=os.fstat(fh.fileno()).st_size)
    print(f"{_said(entry)} is in the registry ({entry['state']}, {_size(entry['size_bytes'])}); "
          f"shadow it with `dishtracker models shadow {entry['id']}`")
    return 0


def _act(args: argparse.Namespace, action: str) -> int:
    entry = daemon_for(args).request("POST", f"/api/models/{quote(args.id, safe='')}/{action}")
    print(f"{_said(entry)} is {entry['state']}")
    return 0


def run_shadow(args: argparse.Namespace) -> int:
    """Shadow a model beside the serving one."""
    return _act(args, "shadow")


def run_promote(args: argparse.Namespace) -> int:
    """Make a model serve every stream."""
    return _act(args, "promote")


def run_retire(args: argparse.Namespace) -> int:
    """Retire a model."""
    return _act(args, "retire")


def run_rollback(args: argparse.Namespace) -> int:
    """Serve the model that served before the serving one again."""
    daemon = daemon_for(args)
    serving = [m for m in daemon.request("GET", "/api/models")["models"]
               if m["state"] == "serving"]
    if not serving:
        raise DaemonRequestError("no model serves: nothing to roll back")
    entry = daemon.request("POST", f"/api/models/{serving[0]['id']}/rollback")
    print(f"rolled back from {_said(serving[0])}: {_said(entry)} is {entry['state']}")
    return 0
