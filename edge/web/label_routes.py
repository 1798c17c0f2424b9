"""The labelling workspace over HTTP: take a frame, label it, watch the counts, export.

Beside the control plane (``… ─▶ events (HTTP/SSE)``), in front of
:class:`edge.label.workspace.Workspace`; the page is ``/label.html``. Every
route is the ``labeller``'s and the ``manager``'s (:mod:`edge.web.roles`);
the labeller's name (the token's) goes with every lease and label.

- ``POST /api/label/lease``: lease the next frame to label (or the previous
  one this labeller wrote) and show it; the frame held before is given back.
- ``GET /api/label/frames/{frame_id}`` and ``…/image``: the frame, its boxes
  and each box's three candidates ranked now, and its picture.
- ``PUT /api/label/frames/{frame_id}``: a new revision from the version the
  labeller saw; 409 when that version is no longer the newest (the answer
  carries the newest, nothing is lost: the page reloads it) or when another
  labeller holds the frame.
- ``GET /api/label/status``: frames done, labels per class, agreement per labeller.
- ``GET /api/label/export``: the COCO document (``docs/FORMATS.md``).
- ``POST /api/label/questions/import``: the daemon's open questions
  (``GET /api/questions``, :mod:`edge.web.question_routes`) join the queue
  as frames with their boxes drawn; each leaves the question queue once
  stored, and none is imported twice.

The workspace opens on first use: a broken ``labels.sqlite3`` answers 503
with the reason, and the rest of the daemon goes on billing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.config import format_errors
from edge.errors import DishTrackerError, JournalError
from edge.label.store import LeaseTaken, StaleWrite
from edge.label.workspace import Workspace
from edge.web.limits import read_json
from edge.web.openapi import Reply, operation
from edge.web.payloads import ConflictBody, ErrorBody, ValidationErrorBody, error, invalid
from edge.web.queries import parse_query
from edge.web.question_routes import QUESTIONS_KEY
from edge.web.roles import actor_name, allow

MAX_LABEL_BODY_BYTES = 256 * 1024
"""Largest write accepted (a frame's boxes are a few kB)."""
MAX_BOXES = 500
_FRAME_ID = {"type": "string", "pattern": "^[0-9]{1,12}$",
             "description": "the frame's number in the workspace"}

_log = structlog.get_logger("edge.web")

B = TypeVar("B", bound=BaseModel)
Coord = Annotated[float, Field(allow_inf_nan=False)]


class LabelBox(BaseModel):
    """One box of a write."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    box: list[Coord] = Field(min_length=4, max_length=4,
                             description="x1, y1, x2, y2 in frame pixels")
    class_: str | None = Field(None, alias="class", max_length=80,
                               description="the class; null: not labelled yet")
    proposal: int | None = Field(None, ge=0, description="the proposal it came from (its "
                                                         "index); null: drawn by hand")
    rank: int | None = Field(None, ge=1, le=3, description="which candidate was accepted "
                                                          "(1-3); null: chosen from the menu")


class LabelWrite(BaseModel):
    """Body of ``PUT /api/label/frames/{frame_id}``: the frame's boxes as they are now."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)

    pass_: int = Field(1, alias="pass", ge=1, le=2, description="1, or 2 on a frame "
                                                                "labelled twice")
    version: int = Field(ge=0, le=2**53, description="the version the labeller saw")
    boxes: list[LabelBox] = Field(max_length=MAX_BOXES)
    complete: bool = Field(False, description="every object on the frame is labelled")


class LeaseRequest(BaseModel):
    """Body of ``POST /api/label/lease``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    step: Literal["next", "previous"] = Field(
        "next", description="next: the next frame to label; previous: the nearest frame "
                            "before 'after' that this labeller wrote")
    after: int | None = Field(None, ge=1, le=2**53, description="the frame the labeller is "
                                                               "on (null: the queue's start, "
                                                               "or the frame held already)")


class QuestionImport(BaseModel):
    """Body of ``POST /api/label/questions/import``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    limit: int | None = Field(None, ge=1, le=100000, description="the most worth this many "
                                                                 "(null: every open question)")


class QuestionsImported(BaseModel):
    """``POST /api/label/questions/import``: what joined the queue."""

    model_config = ConfigDict(extra="allow")

    imported: int = Field(description="frames new in the workspace")
    frames: list[int] = Field(description="the questions' frames, most worth a label first "
                                          "(new or imported before)")
    questions: list[str] = Field(description="the ids of the questions taken, in that order")
    open: int = Field(description="questions still open (beyond the limit)")


class FrameQuery(BaseModel):
    """Query of ``GET /api/label/frames/{frame_id}``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    pass_: int = Field(1, alias="pass", ge=1, le=2, description="which labelling of the frame")


class LabelFrame(BaseModel):
    """A frame as the page shows it (:meth:`edge.label.workspace.Workspace.view`)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    frame: int
    pass_: int = Field(alias="pass")
    version: int = Field(description="0: nothing written yet (the detector's proposals)")
    width: int
    height: int
    complete: bool
    boxes: list[dict[str, Any]] = Field(
        description='{"box", "class", "proposal", "rank", "detector": {"class", "score"} | '
                    'null, "candidates": [{"class", "score"}], best first, "asked": {"line", '
                    '"reason", "proposals": [{"class", "score"}]} | null}')
    lease: dict[str, Any] | None = Field(description='{"actor", "expires_at"} or null')
    mine: bool = Field(description="the asking labeller holds the lease")
    origin: Literal["selection", "question"] = Field(
        "selection", description="selection: an imported frame; question: a frame the daemon "
                                 "asked about (its asked boxes carry 'asked')")
    question: dict[str, Any] | None = Field(
        None, description='{"id", "bill_id", "stream_id", "closed_at"} of a question frame')


class LeaseAnswer(BaseModel):
    """``POST /api/label/lease``: the frame leased, or none left."""

    model_config = ConfigDict(extra="allow")

    item: LabelFrame | None
    message: str


class LabelStatus(BaseModel):
    """``GET /api/label/status`` (:func:`edge.label.progress.summary`)."""

    model_config = ConfigDict(extra="allow")

    frames: int
    items: int = Field(description="frames plus the second labellings")
    complete: int
    classes: list[dict[str, Any]] = Field(
        description='{"name", "labelled", "frames", "top1", "needed"}, most labelled first')
    labellers: list[dict[str, Any]] = Field(
        description='{"name", "frames", "complete", "boxes", "compared", "agreement"}')
    class_names: list[str]


class LabelExport(BaseModel):
    """``GET /api/label/export``: COCO (``docs/FORMATS.md``) with ``complete`` per image."""

    model_config = ConfigDict(extra="allow")

    images: list[dict[str, Any]]
    annotations: list[dict[str, Any]]
    categories: list[dict[str, Any]]


_UNAVAILABLE = Reply("the workspace cannot be opened (the reason)", ErrorBody)
_NO_FRAME = Reply("no such frame (or pass of it)", ErrorBody)


class LabelApi:
    """Handlers of the workspace routes; the workspace opens on first use."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._opened: asyncio.Future[None] | None = None

    async def _ready(self) -> web.Response | None:
        """None once the workspace is open, else the 503 to send."""
        if self._opened is None:
            self._opened = asyncio.ensure_future(self.workspace.open())
        try:
            await asyncio.shield(self._opened)
        except JournalError as err:
            self._opened = None  # try again on the next request (the file may be fixed)
            return error(503, str(err))
        return None

    async def close(self, _: web.Application) -> None:
        """Close the workspace (``on_cleanup``)."""
        if self._opened is not None and self._opened.done() and not self._opened.exception():
            await self.workspace.close()

    async def _answer(self, make: Callable[[], Awaitable[Any]]) -> web.Response:
        refused = await self._ready()
        if refused is not None:
            return refused
        try:
            return web.json_response(await make())
        except KeyError:
            return error(404, "no such frame in the workspace (or no such pass of it)")
        except DishTrackerError as err:  # the model cannot load or run, an image is damaged
            _log.warning("label_failed", error=str(err))
            return error(503, f"the workspace cannot propose for this frame: {err}")

    @operation("Lease the next frame to label (labeller)", "label", {
        200: Reply("the frame now leased to you (the one held before is given back), or "
                   "none left", LeaseAnswer),
        503: _UNAVAILABLE}, body=LeaseRequest, body_limit=1024)
    async def lease(self, request: web.Request) -> web.Response:
        """Lease a frame: ``{"step": "next"}`` the next frame that needs labelling after
        ``after`` (wrapping around; with no ``after``, the frame held already),
        ``{"step": "previous", "after": N}`` the nearest frame before N this labeller
        wrote. Nobody else holds a frame leased to you until it expires
        (5 minutes without activity)."""
        body = await _parse(request, LeaseRequest, 1024, "the lease request")
        if isinstance(body, web.Response):
            return body
        actor = _actor(request)

        async def make() -> dict[str, Any]:
            item = await self.workspace.take(actor, step=body.step, after=body.after)
            message = ("" if item is not None else
                       "no frame left to label" if body.step == "next" else
                       "no earlier frame of yours")
            return {"item": item, "message": message}

        return await self._answer(make)

    @operation("A frame with its boxes and ranked candidates (labeller)", "label", {
        200: Reply("the frame; your lease on it is renewed", LabelFrame),
        404: _NO_FRAME, 422: Reply("an invalid query", ValidationErrorBody),
        503: _UNAVAILABLE},
        query=FrameQuery, path_params={"frame_id": _FRAME_ID})
    async def frame(self, request: web.Request) -> web.Response:
        """The frame's newest labels (or the detector's proposals), each box's three
        best candidates ranked over every label accepted so far."""
        frame_id = _frame_id(request)
        query = parse_query(request, FrameQuery)
        if isinstance(query, web.Response):
            return query
        if frame_id is None:
            return error(404, "no such frame in the workspace")
        actor = _actor(request)
        return await self._answer(lambda: self.workspace.view(frame_id, query.pass_, actor))

    @operation("The frame's picture (labeller)", "label", {
        200: Reply("the image", media_type="image/jpeg", schema={"type": "string",
                                                                 "format": "binary"}),
        404: _NO_FRAME, 503: _UNAVAILABLE}, path_params={"frame_id": _FRAME_ID})
    async def image(self, request: web.Request) -> web.StreamResponse:
        """The frame's image as imported (JPEG or PNG)."""
        frame_id = _frame_id(request)
        refused = await self._ready()
        if refused is not None:
            return refused
        path = None if frame_id is None else await self.workspace.image(frame_id)
        if path is None or not path.is_file():
            return error(404, "no such frame in the workspace")
        return web.FileResponse(path, headers={"Cache-Control": "private, max-age=3600"})

    @operation("Write a frame's labels (labeller)", "label", {
        200: Reply("written; the frame as it is now (new version)", LabelFrame),
        404: _NO_FRAME,
        409: Reply("the version is not the newest (the newest is in 'current': reload), "
                   "or another labeller holds the frame; nothing written", ConflictBody),
        422: Reply("invalid; nothing written", ValidationErrorBody),
        503: _UNAVAILABLE},
        body=LabelWrite, body_limit=MAX_LABEL_BODY_BYTES, path_params={"frame_id": _FRAME_ID})
    async def write(self, request: web.Request) -> web.Response:
        """Replace the frame's boxes by ``boxes``, made from ``version``; ``complete``
        says every object on the frame is labelled (then every box needs a class)."""
        frame_id = _frame_id(request)
        body = await _parse(request, LabelWrite, MAX_LABEL_BODY_BYTES, "the labels")
        if isinstance(body, web.Response):
            return body
        if frame_id is None:
            return error(404, "no such frame in the workspace")
        refused = await self._ready()
        return refused if refused is not None else await self._write(
            frame_id, body, _actor(request))

    async def _write(self, frame_id: int, body: LabelWrite, actor: str) -> web.Response:
        boxes = [{"box": list(b.box), "class": b.class_, "proposal": b.proposal,
                  "rank": b.rank} for b in body.boxes]
        try:
            view = await self.workspace.write(frame_id, body.pass_, actor, body.version, boxes,
                                              complete=body.complete)
        except KeyError:
            return error(404, "no such frame in the workspace (or no such pass of it)")
        except ValueError as err:
            return invalid(list(err.args[0]), "the labels")
        except StaleWrite as err:
            current = await self.workspace.view(frame_id, body.pass_, actor)
            return error(409, str(err), errors=[f"version: {body.version} is not the newest "
                                                f"({err.current.version})"], current=current)
        except LeaseTaken as err:
            return error(409, str(err), errors=[f"(root): leased to {err.holder!r}"])
        return web.json_response(view)

    @operation("Frames done, labels per class, agreement per labeller (labeller)", "label", {
        200: Reply("the figures", LabelStatus), 503: _UNAVAILABLE})
    async def status(self, request: web.Request) -> web.Response:
        """Counts of the workspace and the class names a labeller may choose."""
        return await self._answer(self.workspace.status)

    @operation("The labels as COCO (labeller)", "label", {
        200: Reply("the COCO document; images carry 'complete'", LabelExport),
        503: _UNAVAILABLE})
    async def export(self, request: web.Request) -> web.Response:
        """The workspace's labels in the project's COCO format (pass 1 of every frame
        somebody wrote; ``dishtracker label export`` writes it with the images)."""
        return await self._answer(self.workspace.export)


    @operation("Take the daemon's questions into the queue (labeller)", "label", {
        200: Reply("the questions' frames, now in the queue", QuestionsImported),
        503: _UNAVAILABLE}, body=QuestionImport, body_limit=1024)
    async def import_questions(self, request: web.Request) -> web.Response:
        """The open questions (``GET /api/questions``), most worth a label first, become
        frames of the workspace, labelled once: the detector proposes on them as on
        every frame, and the boxes the daemon asked about are drawn with their
        proposals among the candidates. A question leaves the question queue once its
        frame is stored; a question (or bill) imported before is not imported again."""
        body = await _parse(request, QuestionImport, 1024, "the import request")
        if isinstance(body, web.Response):
            return body
        refused = await self._ready()
        if refused is not None:
            return refused
        queue = request.app.get(QUESTIONS_KEY)
        questions = [] if queue is None else queue.questions(body.limit)
        try:
            done = await self.workspace.import_questions(questions)
        except (DishTrackerError, OSError) as err:
            _log.error("questions_import_failed", error=str(err))
            return error(503, f"the questions cannot be stored in the workspace: {err}")
        if queue is not None:
            for q in questions:
                queue.take(q.id)
        added = sum(new for _, new in done)
        if added:
            _log.info("questions_imported", added=added, frames=[f for f, _ in done],
                      actor=_actor(request))
        return web.json_response({"imported": added, "frames": [f for f, _ in done],
                                  "questions": [q.id for q in questions],
                                  "open": 0 if queue is None else len(queue)})


async def _parse(request: web.Request, model: type[B], limit: int, what: str) -> B | web.Response:
    """The JSON body as ``model``, or the 400/413/422 answer to send."""
    data = await read_json(request, limit, what)
    if isinstance(data, web.Response):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as err:
        return invalid(format_errors(err), what)


def _actor(request: web.Request) -> str:
    return actor_name(request) or "owner"


def _frame_id(request: web.Request) -> int | None:
    raw = request.match_info.get("frame_id", "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else None


LABEL_KEY = web.AppKey("label", LabelApi)


def add_label_routes(app: web.Application, root: Path, model: Callable[[], Path], *,
                     classes: Callable[[], Iterable[str]] = tuple) -> LabelApi:
    """Add the workspace's routes (labeller and manager) on the store under ``root``
    (``storage.dir/labels``), proposing with ``model`` and offering ``classes``
    (the menu's keys) besides the model's."""
    api = LabelApi(Workspace(root, model, extra_classes=classes))
    app[LABEL_KEY] = api
    app.on_cleanup.append(api.close)
    routes = (("POST", "/api/label/lease", api.lease),
              ("GET", "/api/label/status", api.status),
              ("GET", "/api/label/export", api.export),
              ("GET", "/api/label/frames/{frame_id}", api.frame),
              ("PUT", "/api/label/frames/{frame_id}", api.write),
              ("GET", "/api/label/frames/{frame_id}/image", api.image),
              ("POST", "/api/label/questions/import", api.import_questions))
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
        allow(app, method, path, "labeller", "manager")
    return api

