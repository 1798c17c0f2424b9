"""``dishtracker run``: the daemon's lifecycle around the pipeline.

Start: logging → config → bill journal (``storage.dir/journal.sqlite3``) →
pipeline (model, streams) → HTTP(S) + WebRTC + bills API → print the URL →
``READY=1``. The access token (``storage.dir/token``, generated on the first
start) and the TLS certificate are read before anything else starts. One
supervisor watches every stage task (the journal writer too): a crashed
stage stops the process with a non-zero exit so systemd restarts it (never a
half-alive daemon). SIGTERM/SIGINT shut down in
uvicorn's order: ``STOPPING=1`` → stop listening → close peers → stop
sources and drain (the last bills close) → publish the fleet outbox and the
``offline`` status (bounded; only with ``fleet.enabled``) → flush the journal
and end the event streams → close the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from edge.billing.service import JOURNAL_FILE, BillingService
from edge.checks import check_config
from edge.config import SiteConfig, refuse_on
from edge.errors import JournalError
from edge.fleet import create_fleet
from edge.fleet.routes import add_fleet_routes
from edge.label.store import LABELS_SUBDIR
from edge.label.training import JOBS_SUBDIR, TrainingJobs
from edge.learn.questions import QuestionQueue
from edge.learn.service import LearningService
from edge.memory import DEFAULT_INTERVAL_S, HeapTrimmer, interval_from_env
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.rollout import RolloutControl
from edge.rollout.store import MODELS_SUBDIR, ModelStore
from edge.systemd import Notifier
from edge.web.access import AccessToken, Keyring, load_keyring
from edge.web.addresses import browse_urls
from edge.web.app import make_app
from edge.web.bills import add_bill_routes
from edge.web.config_history import history_path
from edge.web.label_routes import add_label_routes
from edge.web.model_routes import add_model_routes
from edge.web.tls import server_ssl_context
from edge.web.training_routes import add_training_routes
from edge.web.webrtc import WebRtcHub, add_webrtc_routes

log = structlog.get_logger()
STATIC_DIR = Path(__file__).parent / "web" / "static"


class StageCrashed(RuntimeError):
    """A pipeline task ended with an exception; the daemon must restart."""


def start_line(urls: str | Sequence[str], token: AccessToken, *, interactive: bool) -> str:
    """What the daemon prints when it serves: the URLs to open, one a line.

    The URLs (:func:`edge.web.addresses.browse_urls`: every interface of a
    wildcard bind) carry the owner's token in their fragment (``#token=…``,
    which browsers never send to a server) when a person reads the terminal,
    or when this start generated the token; otherwise (stdout is the systemd
    journal) the first line names the token file and the last ``dishtracker
    token show`` instead, so the secret lands in the journal at most once per
    token.
    """
    links = [urls] if isinstance(urls, str) else list(urls)
    if interactive or token.created:
        links = [token.url(u) for u in links]
        return "\n".join([f"DishTracker is running: open {links[0]}",
                          *(f"  or {u}" for u in links[1:])])
    return "\n".join([f"DishTracker is running: open {links[0]} (access token: {token.path})",
                      *(f"  or {u}" for u in links[1:]),
                      "  (`dishtracker token show` prints these links with the token)"])


class _Progress:
    """Tells the watchdog whether frames moved since the last check."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.last = -1

    def __call__(self) -> bool:
        now = self.pipeline.progress_marker()
        moved = now != self.last
        self.last = now
        if not moved:
            # every source down (reconnecting) is not a stuck daemon: nothing can move
            states = {str(s.get("state")) for s in self.pipeline.stream_status()}
            return not states & {"running"}
        return True

    def summary(self) -> str:
        streams = self.pipeline.stream_status()
        running = sum(1 for s in streams if s.get("state") == "running")
        peers = sum(int(s.get("peers") or 0) for s in streams)
        return f"{running}/{len(streams)} streams running, {peers} viewers"


async def serve(config: SiteConfig, *, config_path: Path | None,
                stop: asyncio.Event | None = None) -> int:
    """Run the daemon until ``stop`` is set or a signal arrives; returns the exit code.

    Raises
    ------
    JournalError
        The bill journal cannot be opened (folder not writable, not a journal,
        newer schema); nothing else has started then.
    ConfigError
        The start check (:func:`edge.checks.check_config`, what ``check-config``
        runs) found problems, listed all at once: model, stream files, scene
        files, ``storage.dir``, token file, TLS pair, fleet; nothing has started
        then.
    """
    refuse_on(check_config(config), source=str(config_path or "built-in config"))
    # whoever starts the daemon, with whatever umask: what it creates (journal,
    # engine cache, token, under storage.dir) is owner-only (the journal holds
    # bill photos); put back on return for an in-process caller
    umask = os.umask(0o077)
    try:
        return await _serve(config, config_path=config_path, stop=stop)
    finally:
        os.umask(umask)


async def _serve(config: SiteConfig, *, config_path: Path | None,  # noqa: PLR0915  # start/stop order in one place
                 stop: asyncio.Event | None) -> int:
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()
    metrics = Metrics()
    ssl_context = server_ssl_context(config.server)  # before the model: fail fast
    billing = await _open_billing(config, metrics)
    learning = LearningService(config.learning, billing,
                               search=[config.storage.dir / MODELS_SUBDIR], metrics=metrics)
    pipeline = Pipeline(config, metrics, billing=billing,
                        store=ModelStore(config.storage.dir / MODELS_SUBDIR), learning=learning)
    if pipeline.rollout is not None:
        billing.add_correction_listener(pipeline.rollout.correction)
    try:
        token, keyring = load_keyring(config.server, config.storage)  # storage.dir exists
        fleet = create_fleet(  # a missing mqtt extra fails here, before the model loads
            config.fleet, billing, metrics,
            health=lambda: {"streams": pipeline.stream_status(), "journal": billing.status()},
            rollout=pipeline.rollout,
            max_model_bytes=int(config.rollout.max_upload_mb * 1024 * 1024),
            learning=learning)  # fleet.share_examples: the site's examples both ways
        await pipeline.start()
    except BaseException:
        await billing.close()
        raise
    hub = WebRtcHub(pipeline.views, config.server, metrics)
    app = _web_app(pipeline, hub, billing, config_path, keyring, pipeline.rollout,
                   questions=learning.questions)
    add_fleet_routes(app, fleet.status)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as err:
        await pipeline.stop()
        await billing.close()
        await runner.cleanup()
        log.error("http_bind_failed", host=config.server.host, port=config.server.port,
                  error=str(err))
        return 1
    _announce(config, token, tls=ssl_context is not None)
    fleet.start()
    trimmer = HeapTrimmer(_heap_trim_interval(), observe=metrics.heap_trim_seconds.observe)
    trimmer.start()
    progress = _Progress(pipeline)
    notifier.ready("started")
    watchdog = asyncio.create_task(
        notifier.run_watchdog(progress, summary=progress.summary), name="watchdog")
    code = 0
    try:
        code = await _supervise(stop, lambda: [*pipeline.tasks(), *billing.tasks(), watchdog,
                                               *fleet.tasks()])
    finally:
        log.info("daemon_stopping")
        notifier.stopping("shutting down")
        await site.stop()  # stop listening
        await hub.close()  # close peers
        await pipeline.stop()  # stop sources, drain, release the model
        await fleet.close()  # the last bills to the broker (bounded), then "offline"
        await billing.close()  # commit the last bills, end the event streams
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        await trimmer.close()
        await runner.cleanup()
        notifier.close()
        log.info("daemon_stopped", exit_code=code)
    return code


def _heap_trim_interval() -> float:
    """The heap trim interval (:mod:`edge.memory`); a bad environment value is
    reported and replaced by the default, not fatal."""
    try:
        return interval_from_env()
    except ValueError as err:
        log.warning("heap_trim_env_invalid", error=str(err), using_s=DEFAULT_INTERVAL_S)
        return DEFAULT_INTERVAL_S


def _announce(config: SiteConfig, token: AccessToken, *, tls: bool) -> None:
    """Print the URLs to open (see :func:`start_line`) and log that the daemon serves."""
    urls = browse_urls(config.server.host, config.server.port, tls=tls)
    print(start_line(urls, token, interactive=sys.stdout.isatty()), flush=True)
    log.info("daemon_ready", urls=urls, streams=[s.id for s in config.streams],
             token_file=str(token.path))


async def _open_billing(config: SiteConfig, metrics: Metrics) -> BillingService:
    """The billing service on ``storage.dir/journal.sqlite3``, opened."""
    billing = BillingService(config.storage.dir / JOURNAL_FILE, metrics,
                             outbox=config.fleet.enabled)
    try:
        await billing.open()
    except JournalError as err:
        log.error("journal_open_failed", error=str(err))
        raise
    return billing


def _web_app(pipeline: Pipeline, hub: WebRtcHub, billing: BillingService,  # noqa: PLR0917
             config_path: Path | None, token: str | Keyring,
             rollout: RolloutControl | None = None, *,
             questions: QuestionQueue | None = None) -> web.Application:
    """Control plane, WebRTC, bills API, labelling workspace and (with ``rollout``) the
    model registry in one application, guarded by ``token`` (the tokens in force, or
    the owner's alone)."""
    app = make_app(pipeline, config_path=config_path, token=token, static_dir=STATIC_DIR,
                   readiness_checks=[billing.readiness],
                   history=history_path(pipeline.config), questions=questions)
    add_webrtc_routes(app, hub)
    add_bill_routes(app, billing, menu=lambda: pipeline.config.menu)
    labels_dir = pipeline.config.storage.dir / LABELS_SUBDIR

    def serving_model() -> Path:  # what proposes labels and what a job fine-tunes
        entry = rollout.store.serving() if rollout is not None else None
        return entry.path if entry is not None else pipeline.config.detector.model

    labels = add_label_routes(app, labels_dir, serving_model,
                              classes=lambda: pipeline.config.menu)
    register = None
    if rollout is not None:
        add_model_routes(app, rollout, max_upload_bytes=int(
            pipeline.config.rollout.max_upload_mb * 1024 * 1024))
        store = rollout.store

        def register(model: Path, name: str, actor: str | None) -> dict[str, Any]:
            return store.add_file(model, source="training", actor=actor, name=name)[0].to_json()

    add_training_routes(app, labels, TrainingJobs(
        labels_dir / JOBS_SUBDIR, lambda: labels.workspace.store.frames_dir,
        labels.workspace.export, serving_model, register))
    return app


async def _supervise(stop: asyncio.Event,
                     tasks: Callable[[], list[asyncio.Task[None]]]) -> int:
    """Wait until ``stop`` is set (0) or one of ``tasks()`` crashes (1)."""
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        ended: set[asyncio.Task[Any]] = set()  # e.g. the loop of a file stream played once
        while not stop.is_set():
            watched = [t for t in (*tasks(), stopper) if t not in ended]
            done, _ = await asyncio.wait(watched, timeout=1.0,
                                         return_when=asyncio.FIRST_COMPLETED)
            crashed = [t for t in done if t is not stopper and not t.cancelled()
                       and t.exception() is not None]
            if crashed:
                err = crashed[0].exception()
                log.error("stage_crashed", task=crashed[0].get_name(), error=repr(err),
                          exc_info=err)
                return 1
            ended |= {t for t in done if t is not stopper}
        return 0
    finally:
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopper
