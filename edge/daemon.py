"""``dishtracker run``: the daemon's lifecycle around the pipeline.

Start: logging → config → pipeline (model, streams) → HTTP + WebRTC →
print the URL → ``READY=1``. One supervisor watches every stage task: a
crashed stage stops the process with a non-zero exit so systemd restarts it
(never a half-alive daemon). SIGTERM/SIGINT shut down in uvicorn's order:
stop listening → close peers → stop sources and drain → ``STOPPING=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from pathlib import Path

import structlog
from aiohttp import web

from edge.config import SiteConfig
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.systemd import Notifier
from edge.web.app import make_app
from edge.web.webrtc import WebRtcHub, add_webrtc_routes

log = structlog.get_logger()
STATIC_DIR = Path(__file__).parent / "web" / "static"


class StageCrashed(RuntimeError):
    """A pipeline task ended with an exception; the daemon must restart."""


def browse_urls(host: str, port: int) -> list[str]:
    """URLs a person can open for a server bound to ``host``."""
    if host in ("0.0.0.0", "::", ""):  # describing a wildcard bind, not binding
        names = ["127.0.0.1"]
        with contextlib.suppress(OSError):
            names.append(socket.gethostbyname(socket.gethostname()))
        return [f"http://{n}:{port}/" for n in dict.fromkeys(names)]
    return [f"http://{host}:{port}/"]


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
    """Run the daemon until ``stop`` is set or a signal arrives; returns the exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()
    metrics = Metrics()
    pipeline = Pipeline(config, metrics)
    await pipeline.start()
    hub = WebRtcHub(pipeline.views, config.server, metrics)
    app = make_app(pipeline, config_path=config_path, static_dir=STATIC_DIR)
    add_webrtc_routes(app, hub)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    try:
        await site.start()
    except OSError as err:
        await pipeline.stop()
        await runner.cleanup()
        log.error("http_bind_failed", host=config.server.host, port=config.server.port,
                  error=str(err))
        return 1
    urls = browse_urls(config.server.host, config.server.port)
    print(f"DishTracker is running: open {urls[0]}", flush=True)
    log.info("daemon_ready", urls=urls, streams=[s.id for s in config.streams])
    progress = _Progress(pipeline)
    notifier.ready("started")
    watchdog = asyncio.create_task(
        notifier.run_watchdog(progress, summary=progress.summary), name="watchdog")
    stopper = asyncio.create_task(stop.wait(), name="stop-signal")
    code = 0
    try:
        ended: set[asyncio.Task[None]] = set()  # e.g. the loop of a file stream played once
        while not stop.is_set():
            watched = [t for t in (*pipeline.tasks(), watchdog, stopper) if t not in ended]
            done, _ = await asyncio.wait(watched, timeout=1.0,
                                         return_when=asyncio.FIRST_COMPLETED)
            crashed = [t for t in done if t is not stopper and not t.cancelled()
                       and t.exception() is not None]
            if crashed:
                err = crashed[0].exception()
                log.error("stage_crashed", task=crashed[0].get_name(), error=repr(err),
                          exc_info=err)
                code = 1
                break
            ended |= {t for t in done if t is not stopper}
    finally:
        log.info("daemon_stopping")
        notifier.stopping("shutting down")
        await site.stop()  # stop listening
        await hub.close()  # close peers
        await pipeline.stop()  # stop sources, drain, release the model
        for task in (watchdog, stopper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.cleanup()
        notifier.close()
        log.info("daemon_stopped", exit_code=code)
    return code
