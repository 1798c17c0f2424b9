"""A till on a real socket: the control plane, the bills API and the report on one
application (127.0.0.1), a real billing service on a journal in ``tmp_path``,
and :class:`test_http_api.MemoryDaemon` as the pipeline (a config in memory,
applied as the daemon would). For tests/test_till.py, tests/test_report.py
and tests/test_menu_api.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from bills_support import make_bill
from test_http_api import MemoryDaemon
from test_webrtc_support import AUTH, TOKEN

from edge.billing.service import BillingService
from edge.config import SiteConfig
from edge.metrics import Metrics
from edge.web.app import make_app
from edge.web.bills import add_bill_routes
from edge.web.config_history import HISTORY_FILE

Client = TestClient[Any, Any]
STATIC = Path(__file__).resolve().parents[1] / "edge" / "web" / "static"


@dataclass
class Till:
    """The running till of :func:`serve`."""

    client: Client
    service: BillingService
    daemon: MemoryDaemon

    async def bill(self, bill_id: str, **kwargs: Any) -> dict[str, Any]:
        """Submit :func:`bills_support.make_bill` and wait for its commit; its view."""
        self.service.submit(make_bill(bill_id, **kwargs))
        await until(lambda: self.service.pending == 0)
        view = await self.service.get(bill_id)
        assert view is not None
        return view

    async def correct(self, bill_id: str, body: Any, status: int = 200) -> dict[str, Any]:
        """POST a correction; asserts the status, returns the JSON answer."""
        resp = await self.client.post(f"/api/bills/{bill_id}/corrections", json=body)
        answer: dict[str, Any] = await resp.json()
        assert resp.status == status, answer
        return answer


@asynccontextmanager
async def serve(folder: Path, *, config: SiteConfig | None = None, token: Any = TOKEN,
                config_path: Path | None = None, outbox: bool = False,
                pos_retry_s: tuple[float, float] = (0.05, 0.2)) -> AsyncIterator[Till]:
    """A :class:`Till` whose client sends the owner's token (a manager)."""
    metrics = Metrics()
    service = BillingService(folder / "var" / "journal.sqlite3", metrics,
                             retry_initial_s=0.05, retry_max_s=0.2, outbox=outbox)
    await service.open()
    daemon = MemoryDaemon(config or SiteConfig())
    daemon.metrics = metrics
    app = make_app(daemon, config_path=config_path, token=token, static_dir=STATIC,
                   readiness_checks=[service.readiness],
                   history=folder / "var" / HISTORY_FILE)
    add_bill_routes(app, service, menu=lambda: daemon.config.menu, pos_retry_s=pos_retry_s)
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0),
                              headers=AUTH) as client:
            yield Till(client, service, daemon)
    finally:
        await service.close()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
