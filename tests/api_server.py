"""The daemon's HTTP application on a real socket, in a thread of its own.

For the API fuzzing (``tests/test_api_fuzz.py``, ``bench/fuzz_api.py``) and the
OpenAPI checks: ``edge.daemon._web_app`` (control plane, WebRTC, bills, the
page) with a real billing service on a journal in a temporary folder, a real
WebRTC hub fed by a synthetic camera, and bills with snapshots in the journal.
The pipeline is :class:`test_http_api.MemoryDaemon`: a fuzzed ``PUT
/api/config`` would otherwise start cameras at whatever URLs the fuzzer
invents, and nothing here may reach addresses outside this machine.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from aiohttp import web
from bills_support import jpeg, make_bill
from test_http_api import MemoryDaemon
from test_webrtc_support import TOKEN, CameraView

from edge.billing.model import UNKNOWN_KEY, UNKNOWN_NAME, BillItem, Proposal
from edge.billing.service import BillingService
from edge.config import (
    DEFAULT_MODEL,
    ServerConfig,
    SiteConfig,
    StorageConfig,
    write_config_atomic,
)
from edge.daemon import _web_app
from edge.fleet import FleetOff
from edge.fleet.routes import add_fleet_routes
from edge.label.importer import import_folder
from edge.label.store import LABELS_SUBDIR, LabelStore
from edge.learn.questions import question_id
from edge.learn.service import LearningService
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.rollout.store import MODELS_SUBDIR, ModelStore
from edge.web.openapi import build_spec
from edge.web.question_routes import QUESTIONS_KEY
from edge.web.webrtc import WebRtcHub

BILL_IDS = ("cam1-1-1", "cam1-1-2", "cam2-1-3")
"""Bills in the journal (the first two with a snapshot)."""

STREAM_ID = "cam1"
"""The stream the hub serves."""

MODEL_ID = hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()[:12]
"""The model in the registry (the shipped one, serving in the registry's eyes)."""

QUESTION_ID = question_id(BILL_IDS[0])
"""The open question (the first bill's frame, with an unknown dish)."""


def daemon_app(folder: Path, *, token: str = TOKEN, views: dict[str, Any] | None = None,
               max_peers: int = 4) -> tuple[web.Application, BillingService]:
    """The daemon's application and its (unopened) billing service, on ``folder``.

    The hub lets one address send many offers (the fuzzer is one address).
    """
    config = SiteConfig(storage=StorageConfig(dir=folder))
    _label_frame(folder)
    metrics = Metrics()
    service = BillingService(folder / "journal.sqlite3", metrics)
    server = ServerConfig(offers_per_minute=6000, offer_burst=1000, max_peers=max_peers)
    hub = WebRtcHub(views or {}, server, metrics, connect_timeout_s=2.0)
    site = folder / "site.toml"
    write_config_atomic(site, config)
    # the model registry's routes act on a real controller of a pipeline that never
    # starts (no model loaded: its changes answer 409)
    store = ModelStore(folder / MODELS_SUBDIR)
    store.open()
    store.adopt(DEFAULT_MODEL)  # MODEL_ID
    rollout = Pipeline(config, metrics, store=store).rollout
    # MemoryDaemon stands in for the pipeline: _web_app reads only what DaemonControl offers
    daemon = MemoryDaemon(config)
    daemon.learning = LearningService(config.learning)  # type: ignore[attr-defined]  # as the pipeline
    app = _web_app(daemon, hub, service, site, token,  # type: ignore[arg-type]
                   rollout)
    add_fleet_routes(app, FleetOff().status)  # as edge.daemon adds it
    unknown = BillItem(class_id=-1, key=UNKNOWN_KEY, name=UNKNOWN_NAME, price=0.0,
                       confidence=0.5, track_id=9, needs_review=True, unknown=True,
                       proposals=(Proposal("burger", "Burger", 8.5, 0.3),), source="unknown")
    app[QUESTIONS_KEY].offer(dataclasses.replace(
        make_bill(BILL_IDS[0]), items=(unknown,), line_boxes=((10.0, 10.0, 60.0, 50.0),),
        frame_jpeg=jpeg(9)))
    return app, service


def _label_frame(folder: Path) -> None:
    """The labelling workspace under ``folder`` with one frame (``frame_id`` 1)."""
    frames = folder / "selected"
    frames.mkdir()
    shutil.copyfile(DEFAULT_MODEL.parent / "probe-frame.jpg", frames / "frame_000001.jpg")
    store = LabelStore(folder / LABELS_SUBDIR)
    import_folder(store, frames)
    store.close()


class ApiServer:
    """:func:`daemon_app` served on 127.0.0.1 (a free port) by a background thread.

    Use as a context manager; ``url`` is the base URL once entered.
    """

    def __init__(self, folder: Path, *, token: str = TOKEN) -> None:
        self.folder = folder
        self.token = token
        self.url = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="api-server", daemon=True)

    def __enter__(self) -> ApiServer:
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise RuntimeError(f"the API server did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as err:
            self._error = err
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        view = CameraView(STREAM_ID, fps=10, size=(320, 240))
        app, service = daemon_app(self.folder, token=self.token, views={STREAM_ID: view})
        await service.open()
        for n, bill_id in enumerate(BILL_IDS):
            service.submit(make_bill(bill_id, stream=bill_id.split("-")[0], tray_id=n + 1,
                                     snapshot=jpeg(n) if n < 2 else None))
        runner = web.AppRunner(app, access_log=None)
        try:
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            host, port = runner.addresses[0][:2]
            for _ in range(200):
                if not service.pending:
                    break
                await asyncio.sleep(0.05)
            self.url = f"http://{host}:{port}"
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await service.close()
            view.close()


def openapi_document() -> dict[str, Any]:
    """The OpenAPI description of the daemon's application (``docs/openapi.json``)."""
    with tempfile.TemporaryDirectory() as folder:
        app, _ = daemon_app(Path(folder))
        return build_spec(app)


if __name__ == "__main__":
    import sys

    from edge.observability import configure_logging

    configure_logging("warning", stream=sys.stderr)  # stdout is the document
    print(json.dumps(openapi_document(), indent=1, ensure_ascii=False))
