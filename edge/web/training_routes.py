"""``/api/label/training``: a fine-tune job from the workspace's labels (docs/LABELLING.md).

``labelling workspace ─▶ training job (edge.label.training) ─▶ model registry``.
Managers start and cancel a job (it costs the box's CPU while the counter
runs); labellers and managers follow it and read its log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.config import format_errors
from edge.label.training import JobRefused, TrainingJobs, TrainOptions
from edge.web.label_routes import LabelApi
from edge.web.limits import read_json
from edge.web.openapi import Reply, operation
from edge.web.payloads import ConflictBody, ErrorBody, ValidationErrorBody, error, invalid
from edge.web.roles import actor_name, allow

LOG_TAIL_BYTES = 16_000
BODY_LIMIT = 4096


class TrainBody(BaseModel):
    """``POST /api/label/training``: how long and on what to fine-tune."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(6, ge=1, le=200)
    epoch_images: int = Field(320, ge=1, le=100000,
                              description="a small labelled set repeats to this many "
                                          "images per epoch")
    time_budget_s: float = Field(1800.0, gt=0.0, le=7 * 86400.0)
    threads: int = Field(1, ge=1, le=64, description="the trainer's CPU threads (the "
                                                     "streams share the box)")
    val_every: int = Field(5, ge=2, le=100, description="every N-th complete frame is held "
                                                        "back to measure the new model")
    replay: str | None = Field(None, max_length=1000,
                               description="a COCO split (folder with annotations.json) of the "
                                           "classes the model knows, mixed into every epoch; "
                                           "without it the model forgets them")
    noisy_labels: Literal["drop", "trust"] = Field(
        "drop", description="drop: labels the model keeps contradicting while it trains weigh "
                            "nothing in the class loss and are listed in the job's "
                            "figures.doubted; trust: every label counts")
    unlabelled: Literal["proposals", "background"] = Field(
        "proposals", description="proposals: on a frame not complete, the serving model's "
                                 "boxes no label covers are ignored, not taught as background")
    resume: bool = Field(False, description="start the interrupted newest job again from "
                                            "its last checkpoint")


class JobBody(BaseModel):
    """The newest job (``job`` null before the first)."""

    model_config = ConfigDict(extra="allow")

    job: dict[str, Any] | None = Field(
        description='{"id", "state", "progress", "epochs_done", "frames", "figures": '
                    '{"new", "serving"}, "candidate", "detail", …}')


class TrainingApi:
    """Handlers of the job routes."""

    def __init__(self, labels: LabelApi, jobs: TrainingJobs) -> None:
        self.labels = labels
        self.jobs = jobs

    @operation("The newest fine-tune job (labeller)", "label",
               {200: Reply("the job and its progress", JobBody)})
    async def status(self, request: web.Request) -> web.Response:
        """The newest job: state, epochs done, the held-back frames' figures of the
        new and the serving model, the candidate it became."""
        return web.json_response(self.jobs.status())

    @operation("Start a fine-tune job on the workspace's complete frames (manager)", "label", {
        200: Reply("started", JobBody),
        409: Reply("a job runs, or nothing to resume", ConflictBody),
        422: Reply("too few complete frames, a bad replay or an invalid body",
                   ValidationErrorBody),
        503: Reply("the workspace cannot be opened", ErrorBody)}, body=TrainBody)
    async def start(self, request: web.Request) -> web.Response:
        """Export the complete frames (every ``val_every``-th held back), fine-tune the
        serving model on them in a child process, measure both models on the
        held-back frames, and put the new one into the model registry."""
        data = await read_json(request, BODY_LIMIT, "the job")
        if isinstance(data, web.Response):
            return data
        try:
            body = TrainBody.model_validate(data)
        except ValidationError as err:
            return invalid(format_errors(err), "the job")
        refused = await self.labels._ready()  # the workspace opens on first use
        if refused is not None:
            return refused
        options = TrainOptions(**body.model_dump(exclude={"resume"}))
        try:
            job = await self.jobs.start(options, actor_name(request), resume=body.resume)
        except JobRefused as err:
            if err.status == 422:
                return error(422, str(err), errors=[f"(root): {err}"])
            return error(err.status, str(err))
        return web.json_response({"job": job})

    @operation("Cancel the running fine-tune job (manager)", "label", {
        200: Reply("cancelled", JobBody), 409: Reply("no job runs", ErrorBody)})
    async def cancel(self, request: web.Request) -> web.Response:
        """Stop the trainer; the job's files stay (``resume`` goes on from them)."""
        try:
            return web.json_response({"job": await self.jobs.cancel(actor_name(request))})
        except JobRefused as err:
            return error(err.status, str(err))

    @operation("The trainer's log, its last 16 kB (labeller)", "label", {
        200: Reply("the log's end", media_type="text/plain", schema={"type": "string"}),
        404: Reply("no job yet", ErrorBody)})
    async def log(self, request: web.Request) -> web.Response:
        """What the trainer printed (epochs, losses, validation), newest last."""
        job = self.jobs.job
        if job is None:
            return error(404, "no job yet: start one with POST /api/label/training")
        path = self.jobs.root / job.id / "train.log"
        text = _tail(path)
        return web.Response(text=text, content_type="text/plain")


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - LOG_TAIL_BYTES))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def add_training_routes(app: web.Application, labels: LabelApi, jobs: TrainingJobs) -> None:
    """``GET``/``POST /api/label/training``, ``POST /api/label/training/cancel``,
    ``GET /api/label/training/log``; the jobs are read at startup and a job still
    running is followed again."""
    api = TrainingApi(labels, jobs)

    async def on_startup(_: web.Application) -> None:
        jobs.open()
        jobs.follow()

    async def on_cleanup(_: web.Application) -> None:
        await jobs.close()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    for method, path, handler, roles in (
            ("GET", "/api/label/training", api.status, ("labeller", "manager")),
            ("POST", "/api/label/training", api.start, ("manager",)),
            ("POST", "/api/label/training/cancel", api.cancel, ("manager",)),
            ("GET", "/api/label/training/log", api.log, ("labeller", "manager"))):
        app.router.add_route(method, path, handler)
        allow(app, method, path, *roles)
