"""``GET /api/learning`` on the control plane: the learning service's state, read-only.

The app is :func:`edge.web.app.make_app` on a real aiohttp server, guarded by a
real keyring (the owner's token file and a ``tokens.json``), over a real
:class:`edge.learn.service.LearningService` whose index the test changes as a
correction would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp.test_utils import TestClient, TestServer
from test_http_api import MemoryDaemon
from test_roles import OWNER, Box, bearer

from edge.config import LearningConfig, SiteConfig
from edge.learn.examples import Example
from edge.learn.service import LearningService
from edge.web.app import make_app


class _LearningDaemon(MemoryDaemon):
    """The stand-in pipeline, holding a learning service as ``Pipeline.learning`` does."""

    def __init__(self, config: SiteConfig, learning: LearningService | None) -> None:
        super().__init__(config)
        self.learning = learning


async def _get(client: TestClient[Any, Any], headers: dict[str, str]) -> tuple[int, Any]:
    async with client.get("/api/learning", headers=headers) as resp:
        return resp.status, await resp.json()


def test_learning_status_shows_the_examples_a_correction_put_in_use(tmp_path: Path) -> None:
    box = Box(tmp_path)
    labeller = box.store.create("lab-1", "labeller")
    cashier = box.store.create("till-1", "cashier")
    service = LearningService(LearningConfig(examples_per_class=2))
    service.learner.use_model("m1", None, ("coffee", "tea"))
    vec = np.zeros(8, np.float32)
    vec[0] = 1.0

    async def main() -> None:
        app = make_app(_LearningDaemon(SiteConfig(), service), config_path=None,
                       token=box.keyring())
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            status, before = await _get(client, OWNER)
            assert status == 200
            assert before["enabled"] is True and before["model"] == "m1"
            assert before["bank"] is False and before["in_use"] == {}
            assert before["last_effect_s"] is None
            service.index.update(add=[Example(f"b/0/{k}/ramen", "ramen", "m1", vec)
                                      for k in range(3)])
            status, after = await _get(client, bearer(labeller))
            assert status == 200
            assert after["index_version"] > before["index_version"]
            assert after["examples"] == {"ramen": 3} and after["in_use"] == {"ramen": 2}
            status, body = await _get(client, bearer(cashier))
            assert status == 403 and "labeller" in body["error"]

        bare = make_app(_LearningDaemon(SiteConfig(), None), config_path=None,
                        token=box.keyring())
        async with TestClient(TestServer(bare, host="127.0.0.1", port=0)) as client:
            status, body = await _get(client, OWNER)
            assert status == 503 and "not running" in body["error"]

    asyncio.run(main())
