"""The box's questions over HTTP: the closed frames most worth a label, and their pictures.

Beside the control plane (``… ─▶ events (HTTP/SSE)``), in front of
:class:`edge.learn.questions.QuestionQueue`. Both routes are the
``labeller``'s and the ``manager``'s (:mod:`edge.web.roles`); a cashier
answers questions by correcting the bill, not here.

- ``GET /api/questions``: the open questions, most worth a label first,
  without their frames (``?limit=``).
- ``GET /api/questions/{question_id}/frame``: a question's frame (JPEG).

The labelling workspace takes them into its queue with ``POST
/api/label/questions/import`` (:mod:`edge.web.label_routes`), which finds
the queue under :data:`QUESTIONS_KEY`.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from edge.learn.questions import QuestionQueue
from edge.web.openapi import Reply, operation
from edge.web.payloads import ErrorBody, Question, ValidationErrorBody, error
from edge.web.queries import parse_query
from edge.web.roles import allow

QUESTIONS_KEY = web.AppKey("questions", QuestionQueue)
"""The application's question queue."""

_QUESTION_ID = {"type": "string", "pattern": "^[0-9a-f]{16}$",
                "description": "the question's id (GET /api/questions)"}


class QuestionQuery(BaseModel):
    """Query of ``GET /api/questions``."""

    model_config = ConfigDict(extra="forbid")

    limit: int | None = Field(None, ge=1, le=100000,
                              description="at most this many (default: every open question)")


class QuestionApi:
    """Handlers of the question routes, bound to one queue."""

    def __init__(self, queue: QuestionQueue) -> None:
        self.queue = queue

    @operation("The frames most worth a label (labeller)", "label", {
        200: Reply("open questions, most worth a label first", list[Question]),
        422: Reply("an unknown or invalid query parameter", ValidationErrorBody)},
        query=QuestionQuery)
    async def open_questions(self, request: web.Request) -> web.Response:
        """The open questions: unknown dishes first, then lines where the site's
        examples and the detector disagree, then low margins; weaker proposals and
        newer frames first within each. Without their frames."""
        q = parse_query(request, QuestionQuery)
        if isinstance(q, web.Response):
            return q
        return web.json_response([x.to_json() for x in self.queue.questions(q.limit)])

    @operation("A question's frame (labeller)", "label", {
        200: Reply("the JPEG, as the camera saw it (no marks)", media_type="image/jpeg",
                   schema={"type": "string", "contentMediaType": "image/jpeg"}),
        404: Reply("no such open question (answered, taken or dropped)", ErrorBody)},
        path_params={"question_id": _QUESTION_ID})
    async def frame(self, request: web.Request) -> web.Response:
        """The closing frame of the question's bill."""
        qid = request.match_info["question_id"]
        question = self.queue.get(qid)
        if question is None:
            return error(404, f"no open question {qid!r} (answered, taken into the labelling "
                              "workspace, or dropped for a better one)")
        # a question's frame never changes
        return web.Response(body=question.jpeg, content_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=3600, immutable"})


def add_question_routes(app: web.Application, queue: QuestionQueue) -> QuestionApi:
    """Add the question routes (labeller and manager) on ``queue``, kept under
    :data:`QUESTIONS_KEY`."""
    api = QuestionApi(queue)
    app[QUESTIONS_KEY] = queue
    for path, handler in (("/api/questions", api.open_questions),
                          ("/api/questions/{question_id}/frame", api.frame)):
        app.router.add_get(path, handler)
        allow(app, "GET", path, "labeller", "manager")
    return api
