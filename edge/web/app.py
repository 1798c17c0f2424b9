"""The HTTP control plane: health, readiness, metrics, streams and the live site config.

It sits beside the right end of the pipeline (``… ─▶ annotate ─▶ WebRTC``) and
only *reads* the pipeline through :class:`DaemonControl`, except for
``PUT /api/config``, which hands a validated config to the daemon and, once
the daemon has taken it, saves it. The cashier page's WebRTC routes
(:mod:`edge.web.webrtc`) and the bills API (:mod:`edge.web.bills`) are added
to the same application.

Every error is a JSON body (``{"error": "…"}``; validation errors
``{"errors": ["field.path: reason", …]}``), never an HTML page or a traceback.
Every response carries the security headers of :mod:`edge.web.headers`, and
whatever changes state needs the bearer token (:mod:`edge.web.access`).
State lives under typed ``web.AppKey`` s; the module has no globals besides
constants.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog
from aiohttp import web

from edge.config import SiteConfig, json_schema, parse_config, to_toml, write_config_atomic
from edge.errors import ConfigError
from edge.learn.questions import QuestionQueue
from edge.metrics import Metrics
from edge.web.access import Keyring, protect, protect_reads
from edge.web.config_history import record_change
from edge.web.event_slots import EVENT_SLOTS_KEY, EventSlots
from edge.web.headers import add_security_headers
from edge.web.hosts import HostCheck
from edge.web.learning_routes import add_learning_routes
from edge.web.limits import (
    BODY_TIMEOUT_KEY,
    BODY_TIMEOUT_S,
    IDLE_TIMEOUT_S,
    read_json,
)
from edge.web.masking import masked_config, masked_status, unmask_config
from edge.web.menu_routes import add_menu_routes
from edge.web.openapi import Reply, add_openapi_route, operation
from edge.web.pages import add_pages
from edge.web.parse_errors import install_parse_errors
from edge.web.payloads import (
    ConfigApplied,
    ErrorBody,
    Health,
    Readiness,
    StreamStatus,
    ValidationErrorBody,
    error,
    invalid,
)
from edge.web.question_routes import add_question_routes
from edge.web.roles import actor_name
from edge.web.whoami import add_whoami_route

MAX_BODY_BYTES = 256 * 1024
"""Largest request body accepted (a site config is a few KiB; SDP offers too)."""

HEARTBEAT_STALE_S = 2.0
"""``/healthz`` fails once the event loop's heartbeat is older than this."""

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# prometheus-client >= 0.22 names 1.0.0 as CONTENT_TYPE_LATEST, but generate_latest()
# still writes the 0.0.4 text format, which every Prometheus scrapes.

_log = structlog.get_logger("edge.web")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ReadinessCheck = Callable[[], list[str]]
"""Returns the reasons the daemon is not ready (empty when this part is fine)."""


class DaemonControl(Protocol):
    """What the control plane needs from the running daemon (``edge.pipeline``)."""

    metrics: Metrics

    @property
    def config(self) -> SiteConfig:
        """The config in force: the last one that was applied successfully."""
        ...

    def stream_status(self) -> list[dict[str, Any]]:
        """One dict per configured stream.

        Keys: ``id``, ``url`` (password masked), ``enabled``, ``state``, ``fps``,
        ``detect_rate_hz``, ``last_frame_age_s`` (seconds), ``peers``, ``last_error``.
        """
        ...

    def readiness(self) -> tuple[bool, list[str]]:
        """``(ready, reasons)``: ready once the model is loaded and every enabled
        stream delivers; ``reasons`` says what is missing when not."""
        ...

    def heartbeat_age_s(self) -> float:
        """Seconds since the event loop's heartbeat task last ran."""
        ...

    async def apply_config(self, new: SiteConfig) -> dict[str, list[str]]:
        """Take a validated config.

        Returns
        -------
        dict
            ``{"applied": [field paths], "restart_required": [field paths]}``
            (see :func:`edge.config.classify_changes`).

        Raises
        ------
        ConfigError
            When the config cannot be applied; the old config stays in force.
        """
        ...


class ControlPlane:
    """Route handlers of the control plane, bound to one daemon.

    Parameters
    ----------
    daemon
        The running daemon.
    config_path
        The site config file the daemon was started with; a successful
        ``PUT /api/config`` rewrites it atomically. ``None``: changes live in
        memory only, and the response says so.
    static_dir
        Folder of the cashier page (``index.html`` and assets), or ``None``.
    heartbeat_stale_s
        Heartbeat age (seconds) above which ``/healthz`` answers 503.
    readiness_checks
        More parts whose problems make ``/readyz`` fail (e.g. the bill journal).
    history
        The config change history (:mod:`edge.web.config_history`) to append
        each applied change to, with who made it; ``None``: none kept.
    """

    def __init__(self, daemon: DaemonControl, *, config_path: Path | None,
                 static_dir: Path | None, heartbeat_stale_s: float = HEARTBEAT_STALE_S,
                 readiness_checks: Sequence[ReadinessCheck] = (),
                 history: Path | None = None) -> None:
        self.daemon = daemon
        self.config_path = config_path
        self.history = history
        self.static_dir = static_dir
        self.heartbeat_stale_s = heartbeat_stale_s
        self.readiness_checks = list(readiness_checks)
        # One PUT at a time: apply and save must not interleave, or the file
        # could end up holding a different config from the one in force.
        self.config_lock = asyncio.Lock()

    @operation("Liveness", "health", {200: Reply("the event loop runs", Health),
                                      503: Reply("the event loop is stalled", Health)})
    async def healthz(self, request: web.Request) -> web.Response:
        """Liveness: 200 while the event loop's heartbeat is fresh, else 503."""
        age = self.daemon.heartbeat_age_s()
        if age < self.heartbeat_stale_s:
            return web.json_response(Health(status="ok").model_dump(exclude_none=True))
        return web.json_response(
            Health(status="stalled", heartbeat_age_s=round(age, 3)).model_dump(), status=503)

    @operation("Readiness", "health", {200: Reply("ready", Readiness),
                                       503: Reply("not ready; reasons say why", Readiness)})
    async def readyz(self, request: web.Request) -> web.Response:
        """Readiness: model loaded, every enabled stream delivering, and every
        extra check (the bill journal) without problems."""
        ready, reasons = self.daemon.readiness()
        reasons = list(reasons)
        for check in self.readiness_checks:
            problems = check()
            ready = ready and not problems
            reasons += problems
        return web.json_response(Readiness(ready=ready, reasons=reasons).model_dump(),
                                 status=200 if ready else 503)

    @operation("Prometheus metrics", "health", {200: Reply(
        "text exposition format 0.0.4", media_type="text/plain", schema={"type": "string"})})
    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text exposition of the daemon's private registry."""
        return web.Response(body=self.daemon.metrics.render(),
                            headers={"Content-Type": METRICS_CONTENT_TYPE})

    @operation("Status of every stream", "health",
               {200: Reply("one entry per configured stream", list[StreamStatus])})
    async def streams(self, request: web.Request) -> web.Response:
        """Status of every configured stream (credentials masked: the route is open)."""
        return web.json_response(masked_status(self.daemon.stream_status()))

    @operation("The site config in force", "config",
               {200: Reply("the config, as PUT accepts it back", SiteConfig)})
    async def get_config(self, request: web.Request) -> web.Response:
        """The config in force, as JSON that ``PUT /api/config`` accepts back
        (camera credentials masked; :mod:`edge.web.masking` restores them)."""
        return web.json_response(masked_config(self.daemon.config))

    @operation("JSON schema of the site config", "config",
               {200: Reply("a JSON schema (draft 2020-12)", schema={"type": "object"})})
    async def get_schema(self, request: web.Request) -> web.Response:
        """JSON schema of the site config."""
        return web.json_response(json_schema())

    @operation("Replace the site config", "config", {
        200: Reply("applied (and saved when the daemon has a config file)", ConfigApplied),
        409: Reply("the config file cannot be written; nothing changed", ErrorBody),
        422: Reply("invalid, or refused by the daemon; nothing changed", ValidationErrorBody),
        500: Reply("applied, but the config file could not be written", ErrorBody),
    }, body=SiteConfig, body_limit=MAX_BODY_BYTES)
    async def put_config(self, request: web.Request) -> web.Response:
        """Replace the whole site config (PUT semantics: omitted fields take defaults).

        Status codes: 200 applied (and saved when there is a config file);
        400 body is not JSON; 408 body too slow; 413 body over
        :data:`MAX_BODY_BYTES`; 422 invalid or refused by the daemon
        (``errors`` lists ``field.path: reason``; nothing changed); 409 the
        config file cannot be written (nothing changed); 500 applied but the
        file could not be written.
        """
        parsed = await _read_config(request)
        if isinstance(parsed, web.Response):
            return parsed
        async with self.config_lock:
            return await self._apply(parsed, actor_name(request))

    async def replace_config(
            self, build: Callable[[SiteConfig], Awaitable[SiteConfig | web.Response]],
            actor: str | None = None,
    ) -> web.Response:
        """Apply and save the config that ``build`` makes from the one in force,
        as ``PUT /api/config`` does, under the same lock (a menu edit,
        :mod:`edge.web.menu_routes`); ``build`` may answer an error instead.
        ``actor`` names who asked (recorded in the change history)."""
        async with self.config_lock:
            new = await build(self.daemon.config)
            return new if isinstance(new, web.Response) else await self._apply(new, actor)

    async def _apply(self, new: SiteConfig, actor: str | None) -> web.Response:
        path = self.config_path if new != self.daemon.config else None
        if path is not None and not _writable(path):
            return error(409, f"cannot save the config: {path.parent} is not writable by "
                               "the daemon; nothing was applied")
        try:
            result = await self.daemon.apply_config(new)
        except ConfigError as err:
            _log.warning("config_refused", errors=_error_lines(err))
            return invalid(_error_lines(err), "the config")
        body: dict[str, Any] = {
            "applied": list(result.get("applied", [])),
            "restart_required": list(result.get("restart_required", [])),
        }
        if self.history is not None:  # applied: attributable, whether or not it is saved
            await self._record(new, actor, body)
        if path is not None:
            try:
                await asyncio.to_thread(write_config_atomic, path, new)
            except OSError as err:
                _log.error("config_save_failed", path=str(path), error=str(err), **body)
                return web.json_response(
                    {"error": f"config applied but not saved to {path}: {err}", **body},
                    status=500)
        _log.info("config_applied", saved=path is not None, actor=actor, **body)
        body["saved_to"] = str(self.config_path) if self.config_path is not None else None
        if self.config_path is None:
            body["note"] = "no config file: the change lasts until the daemon restarts"
        return web.json_response(body)

    async def _record(self, new: SiteConfig, actor: str | None, body: dict[str, Any]) -> None:
        """Append the applied change to the history (a failure is logged: the
        change is in force already and its answer must say so)."""
        assert self.history is not None
        try:
            await asyncio.to_thread(
                record_change, self.history, actor=actor, applied=body["applied"],
                restart_required=body["restart_required"], config=new,
                masked=masked_config(new))
        except OSError as err:
            _log.error("config_history_failed", path=str(self.history), error=str(err),
                       actor=actor)

    @operation("The cashier page", "page", {
        200: Reply("index.html", media_type="text/html", schema={"type": "string"}),
        404: Reply("no page installed", ErrorBody)})
    async def index(self, request: web.Request) -> web.StreamResponse:
        """The cashier page (``index.html`` of the static folder)."""
        if self.static_dir is None or not (self.static_dir / "index.html").is_file():
            return error(404, "no cashier page installed")
        # no-cache: after an upgrade the browser must revalidate, not run the old page
        return web.FileResponse(self.static_dir / "index.html",
                                headers={"Cache-Control": "no-cache"})

    @operation("A file of the cashier page", "page", {
        200: Reply("the file", media_type="*/*", schema={}),
        403: Reply("the path resolves outside the static folder", ErrorBody),
        404: Reply("no such file", ErrorBody)})
    async def static(self, request: web.Request) -> web.StreamResponse:
        """A file of the static folder; 403 for anything that resolves outside it.

        Not ``router.add_static``: its ``FileResponse`` answers a missing file
        with an empty ``application/octet-stream`` 404 after the middleware
        has run, and every error here is JSON.
        """
        if self.static_dir is None:
            return error(404, "Not Found")
        try:
            target = (self.static_dir / request.match_info["path"]).resolve()
        except (OSError, ValueError):  # NUL byte, symlink loop
            return error(404, "Not Found")
        # resolve() has followed every symlink and "..": what is left must lie inside
        if not target.is_relative_to(self.static_dir):
            return error(403, "Forbidden")
        if not target.is_file():
            return error(404, "Not Found")
        return web.FileResponse(target)


CONTROL_KEY = web.AppKey("control", ControlPlane)


def make_app(daemon: DaemonControl, *, config_path: Path | None, token: str | Keyring,
             static_dir: Path | None = None,
             heartbeat_stale_s: float = HEARTBEAT_STALE_S,
             readiness_checks: Sequence[ReadinessCheck] = (),
             idle_timeout_s: float = IDLE_TIMEOUT_S,
             body_timeout_s: float = BODY_TIMEOUT_S,
             history: Path | None = None,
             questions: QuestionQueue | None = None) -> web.Application:
    """Build the aiohttp application of the control plane.

    Parameters
    ----------
    daemon
        The running daemon (see :class:`DaemonControl`).
    config_path
        Site config file to rewrite on a successful ``PUT /api/config``, or
        ``None`` to keep changes in memory.
    token
        The tokens in force (or the owner's token alone): every
        state-changing request (PUT, POST, …, on routes added later too) and
        ``GET /api/config`` (camera passwords) must carry one whose role the
        route allows (:func:`edge.web.access.protect`).
    static_dir
        Folder served at ``/static/`` with ``index.html`` at ``/``; must exist.
        Paths that resolve outside it (``..``, symlinks) are refused.
    heartbeat_stale_s
        ``/healthz`` threshold in seconds.
    readiness_checks
        More parts ``/readyz`` asks (each returns its problems, empty when fine).
    idle_timeout_s
        Seconds a connection may go without a complete request, from its start
        and between keep-alive requests (:data:`edge.web.limits.IDLE_TIMEOUT_S`).
    body_timeout_s
        Seconds a client may take to send a request body; then 408
        (:data:`edge.web.limits.BODY_TIMEOUT_S`).
    history
        Where to append each applied config change and who made it
        (:mod:`edge.web.config_history`); ``None``: no history.
    questions
        The box's question queue (:mod:`edge.web.question_routes`), the one the
        pipeline offers its bills to; ``None``: an empty one of
        ``learning.max_questions``.

    Returns
    -------
    web.Application
        Routes: ``/healthz``, ``/readyz``, ``/metrics``, ``/api/streams``,
        ``/api/config`` (GET, PUT), ``/api/config/schema``, ``/api/questions``
        (:mod:`edge.web.question_routes`), ``/api/learning``
        (:mod:`edge.web.learning_routes`), ``/api/openapi.json``
        (:mod:`edge.web.openapi`, built from the routes present at the first
        request), and with a static
        folder ``/`` and ``/static/*``. WebRTC routes (:mod:`edge.web.webrtc`)
        and bill routes (:mod:`edge.web.bills`) are added by the caller.
    """
    # keepalive_timeout runs from the connection's start too: it also cuts a client
    # that sends nothing or dribbles its headers (aiohttp's default is an hour)
    hosts = HostCheck(lambda: daemon.config.server.allowed_hosts)
    app = web.Application(client_max_size=MAX_BODY_BYTES,
                          middlewares=[hosts.middleware(), json_errors],
                          handler_args={"keepalive_timeout": idle_timeout_s})
    app[BODY_TIMEOUT_KEY] = body_timeout_s
    app[EVENT_SLOTS_KEY] = EventSlots(lambda: daemon.config.server)
    install_parse_errors(app)
    add_security_headers(app)
    protect(app, token)
    protect_reads(app, "/api/config")
    resolved = static_dir.resolve(strict=True) if static_dir is not None else None
    cp = ControlPlane(daemon, config_path=config_path, static_dir=resolved,
                      heartbeat_stale_s=heartbeat_stale_s, readiness_checks=readiness_checks,
                      history=history)
    app[CONTROL_KEY] = cp
    r = app.router
    r.add_get("/healthz", cp.healthz)
    r.add_get("/readyz", cp.readyz)
    r.add_get("/metrics", cp.metrics)
    r.add_get("/api/streams", cp.streams)
    r.add_get("/api/config", cp.get_config)
    r.add_put("/api/config", cp.put_config)
    r.add_get("/api/config/schema", cp.get_schema)
    add_openapi_route(app)
    add_whoami_route(app)
    add_menu_routes(app, cp)
    add_question_routes(app, questions if questions is not None
                        else QuestionQueue(daemon.config.learning.max_questions))
    # the pipeline holds the learning service (edge.pipeline.Pipeline.learning); a
    # DaemonControl without one answers 503 there
    add_learning_routes(app, lambda: getattr(daemon, "learning", None))
    if resolved is not None:
        r.add_get("/", cp.index)
        r.add_get("/static/{path:.+}", cp.static)
        add_pages(app, resolved)
    return app


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn HTTP errors and unexpected exceptions into JSON bodies."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        text = exc.text or ""
        message = exc.reason if text.startswith(f"{exc.status}:") or not text else text
        headers = {k: v for k, v in exc.headers.items()
                   if k.lower() not in ("content-type", "content-length")}
        return error(exc.status, message, headers=headers)
    except Exception:
        _log.exception("http_handler_failed", method=request.method, path=request.path)
        return error(500, "internal server error")


async def _read_config(request: web.Request) -> SiteConfig | web.Response:
    """The validated config of a PUT body, or the error response to send."""
    data = await read_json(request, MAX_BODY_BYTES, "a site config")
    if isinstance(data, web.Response):
        return data
    # a masked URL sent back for its stream keeps the credentials in force
    problems = ([f"(root): expected a JSON object, got {type(data).__name__}"]
                if not isinstance(data, dict)
                else unmask_config(data, request.app[CONTROL_KEY].daemon.config))
    if problems:
        return invalid(problems, "the config")
    try:
        # off the loop: streams' scene files are read from disk
        new = await asyncio.to_thread(parse_config, data, source="PUT /api/config")
        to_toml(new).encode("utf-8")  # lone surrogates from JSON escapes cannot be saved
    except ConfigError as err:
        return invalid(_error_lines(err), "the config")
    except UnicodeEncodeError as err:
        return invalid([f"(root): a string cannot be stored as UTF-8: {err.reason}"],
                       "the config")
    return new


def _error_lines(err: ConfigError) -> list[str]:
    lines = getattr(err, "errors", None)
    return list(lines) if lines else [str(err)]


def _writable(path: Path) -> bool:
    """Whether the daemon can create a temp file beside ``path`` and rename it over."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK)
