"""``GET /api/learning``: what learning on the job holds now, read-only.

Beside the control plane (``… ─▶ events (HTTP/SSE)``), in front of
:class:`edge.learn.service.LearningService`: whether learning is on, the
serving model and its bank, the site's examples per menu entry (held, and
in use within ``learning.examples_per_class``), the index's version (it
moves each time a correction, an undo or the fleet changes the examples the
next tray is named with) and the last correction-to-effect time. The
``labeller``'s and the ``manager``'s (:mod:`edge.web.roles`), as the
questions are; ``bench/learning.py`` reads it to time a correction's effect.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from edge.learn.service import LearningService
from edge.web.openapi import Reply, operation
from edge.web.payloads import ErrorBody, error
from edge.web.roles import allow

LEARNING = "/api/learning"

LearningSource = Callable[[], object]
"""Returns the daemon's :class:`LearningService` (anything else: none runs)."""


class LearningStatus(BaseModel):
    """``GET /api/learning``."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(description="[learning] enabled: the site's examples name dishes")
    flag_unknown: bool = Field(description="[learning] flag_unknown")
    model: str = Field(description="registry id of the serving model the examples belong to")
    bank: bool = Field(description="the serving model has its known-class bank (unknown "
                                   "dishes can be flagged)")
    examples: dict[str, int] = Field(description="examples held per menu key for the "
                                                 "serving model, beyond the cap too")
    in_use: dict[str, int] = Field(description="examples per menu key that name dishes "
                                               "(at most learning.examples_per_class)")
    examples_all_models: int = Field(description="examples held for every model")
    index_version: int = Field(description="moves each time the examples in use change "
                                           "(a correction, an undo, the fleet)")
    last_effect_s: float | None = Field(description="seconds from the last stored correction "
                                                    "to the index holding its examples; null "
                                                    "before the first")


class LearningApi:
    """The handler, bound to where the daemon keeps its learning service."""

    def __init__(self, source: LearningSource) -> None:
        self.source = source

    @operation("What learning on the job holds now (labeller)", "label", {
        200: Reply("the learning service's state", LearningStatus),
        503: Reply("no learning service runs on this box", ErrorBody)})
    async def learning_status(self, request: web.Request) -> web.Response:
        """Whether learning is on, the serving model and its bank, the site's
        examples per menu entry and the index's version, and the last
        correction-to-effect time."""
        service = self.source()
        if not isinstance(service, LearningService):
            return error(503, "learning on the job is not running on this box")
        body = LearningStatus(**service.status(), index_version=service.index.version)
        return web.json_response(body.model_dump())


def add_learning_routes(app: web.Application, source: LearningSource) -> LearningApi:
    """Add ``GET /api/learning`` (labeller and manager), reading ``source()`` at
    each request."""
    api = LearningApi(source)
    app.router.add_get(LEARNING, api.learning_status)
    allow(app, "GET", LEARNING, "labeller", "manager")
    return api
