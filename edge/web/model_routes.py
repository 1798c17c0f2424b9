"""The model registry over HTTP: list, upload, shadow, promote, roll back, retire.

Beside the control plane (``… ─▶ events (HTTP/SSE)``), in front of
:class:`edge.rollout.RolloutControl`: an upload goes into the registry
(:class:`edge.rollout.store.ModelStore`) as a candidate; the actions go to
the controller, which loads, shadows and swaps models on the running
pipeline. Every route is the manager's (:mod:`edge.web.roles`), the list too:
it names what the box runs.

An upload is the model file as the raw request body
(``Content-Type: application/octet-stream``), streamed to a temporary file
under the store's ``incoming/`` folder with the ``rollout.max_upload_mb``
cap, then checked against the detector contract off the event loop. A
declared size over the cap is refused before anything is read; a body that
grows past it, stalls or breaks off is refused and its temporary file
removed, so a refused upload leaves nothing behind. Unlike the JSON bodies
(:func:`edge.web.limits.read_body`), the deadline is per read, not for the
whole body: a 100 MB model takes longer than a config on a slow link, and a
client that stops sending is still cut after :data:`edge.web.limits.BODY_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, BinaryIO

import structlog
from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from pydantic import BaseModel, ConfigDict, Field

from edge.rollout import MODEL_STATES, RolloutControl, RolloutError
from edge.web.limits import BODY_TIMEOUT_KEY, BODY_TIMEOUT_S
from edge.web.openapi import Reply, operation
from edge.web.payloads import ErrorBody, ValidationErrorBody, error
from edge.web.queries import parse_query
from edge.web.roles import actor_name, allow

UPLOAD_MEDIA_TYPE = "application/octet-stream"
_WRITE_BYTES = 1 << 20
"""Bytes gathered before one write to the temporary file (off the loop)."""
_MODEL_ID = {"type": "string", "pattern": "^[0-9a-fA-F]{6,64}$",
             "description": "the model's id (12 hex characters), sha256 or a unique prefix "
                            "of at least 6"}

_log = structlog.get_logger("edge.web")


class UploadQuery(BaseModel):
    """Query of ``POST /api/models``."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=255,
                             description="the file's name; its stem names the model unless "
                                         "the model's metadata has a 'name'")


class ModelBody(BaseModel):
    """One model of the registry (:meth:`edge.rollout.store.ModelEntry.to_json`)."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(description="first 12 hex characters of sha256")
    sha256: str
    name: str
    version: str = Field(description="the model's model_version")
    classes: list[str]
    input_size: tuple[int, int] = Field(description="network input (width, height), pixels")
    embedding_dim: int | None
    provenance: dict[str, str] = Field(description="the model's other metadata "
                                                   "(training run, data), 500 characters each")
    size_bytes: int
    added_at: float = Field(description="unix seconds")
    source: str = Field(description="config, upload, fleet (recovered: taken in again "
                                    "without its index entry)")
    state: str = Field(description=" | ".join(MODEL_STATES))
    file: str


class ModelList(BaseModel):
    """``GET /api/models``."""

    model_config = ConfigDict(extra="allow")

    models: list[ModelBody] = Field(description="newest first")
    history: list[dict[str, Any]] = Field(
        description='the last 20 state changes, newest first: {"at", "model", "version", '
                    '"from", "to", "actor", "reason"}')
    rollout: dict[str, Any] = Field(
        description='{"serving", "shadow": {…, "stats"} | null, "swapping", "rollback_to", '
                    '"probation_s_left"}: what runs now (docs/MODELS.md)')


_ACTION_REPLIES = {
    200: Reply("done; the model as it is now", ModelBody),
    404: Reply("no such model", ErrorBody),
    409: Reply("not possible now (another change under way, the serving model)", ErrorBody),
    422: Reply("the model does not load; the serving model goes on", ErrorBody),
}

Action = Callable[[str, str | None], Awaitable[dict[str, Any]]]


class ModelApi:
    """Handlers of the model routes.

    Parameters
    ----------
    control
        The rollout controller; ``control.store`` is the registry.
    max_upload_bytes
        Largest model accepted (``rollout.max_upload_mb``).
    """

    def __init__(self, control: RolloutControl, *, max_upload_bytes: int) -> None:
        self.control = control
        self.max_upload_bytes = max_upload_bytes

    @operation("The models on the box, their history and what runs (manager)", "models", {
        200: Reply("the registry", ModelList)})
    async def list_models(self, request: web.Request) -> web.Response:
        """Every model (newest first), the last state changes and the rollout status."""
        store = self.control.store
        return web.json_response({"models": [e.to_json() for e in store.entries()],
                                  "history": store.history(20),
                                  "rollout": self.control.status()})

    @operation("Upload a model as a candidate (manager)", "models", {
        200: Reply("the model was there already; its entry", ModelBody),
        201: Reply("stored as a candidate; its entry", ModelBody),
        400: Reply("the body broke off", ErrorBody),
        413: Reply("the model is over rollout.max_upload_mb; nothing kept", ErrorBody),
        415: Reply("the body is not application/octet-stream", ErrorBody),
        422: Reply("not a model that meets the detector contract (every problem "
                   "listed), or an invalid query; nothing kept", ValidationErrorBody),
        507: Reply("the store's disk is full; nothing kept", ErrorBody)},
        raw_body=UPLOAD_MEDIA_TYPE, query=UploadQuery)
    async def upload(self, request: web.Request) -> web.Response:
        """Store the ONNX file sent as the body (``curl --data-binary @model.onnx -H
        'Content-Type: application/octet-stream'``) as a candidate."""
        query = parse_query(request, UploadQuery)
        if isinstance(query, web.Response):
            return query
        refused = self._refused_before_reading(request)
        if refused is not None:
            return refused
        store = self.control.store
        tmp = store.incoming_path()
        try:
            refused = await self._receive(request, tmp)
            if refused is not None:
                return refused
            entry, added = await asyncio.to_thread(
                store.add_file, tmp, source="upload", actor=actor_name(request),
                name=Path(query.name).name if query.name else None, move=True)
        except RolloutError as err:
            message = str(err).replace(tmp.name, query.name or "the upload")
            if err.status == 422:  # the contract's problems, one line each
                return error(422, message, errors=[f"(root): {line.strip()}"
                                                   for line in message.splitlines()
                                                   if line.strip()])
            return error(err.status, message)
        finally:
            tmp.unlink(missing_ok=True)
        return web.json_response(entry.to_json(), status=201 if added else 200)

    @operation("Shadow a model beside the serving one (manager)", "models", _ACTION_REPLIES,
               path_params={"model_id": _MODEL_ID})
    async def shadow(self, request: web.Request) -> web.Response:
        """Load the model and run it on a sample of frames beside the serving model
        (it replaces an earlier shadow); its figures show in ``GET /api/models``."""
        return await self._act(request, lambda ref, actor: self.control.shadow(ref, actor=actor))

    @operation("Make a model serve every stream (manager)", "models", _ACTION_REPLIES,
               path_params={"model_id": _MODEL_ID})
    async def promote(self, request: web.Request) -> web.Response:
        """Swap every stream to the model between two frames; the former serving
        model is retired."""
        return await self._act(request,
                               lambda ref, actor: self.control.promote(ref, actor=actor))

    @operation("Serve the model before the serving one again (manager)", "models",
               _ACTION_REPLIES, path_params={"model_id": _MODEL_ID})
    async def rollback(self, request: web.Request) -> web.Response:
        """Roll the serving model (named in the path, so a stale page cannot roll back
        a model it did not see) back to the one that served before it."""
        store = self.control.store

        async def rollback(ref: str, actor: str | None) -> dict[str, Any]:
            entry, serving = store.get(ref), store.serving()
            if serving is None or serving.sha256 != entry.sha256:
                now = ("no model serves" if serving is None
                       else f"the serving model is {serving.id} ({serving.version})")
                raise RolloutError(f"model {entry.id} ({entry.version}) is {entry.state}, "
                                   f"not serving: a rollback acts on the serving model; "
                                   f"{now}", 409)
            return await self.control.rollback(actor=actor)

        return await self._act(request, rollback)

    @operation("Retire a model (manager)", "models", _ACTION_REPLIES,
               path_params={"model_id": _MODEL_ID})
    async def retire(self, request: web.Request) -> web.Response:
        """Stop shadowing the model, if it is the shadow, and mark it retired (kept, so
        it can come back); the serving model cannot be retired."""
        return await self._act(request, lambda ref, actor: self.control.retire(ref, actor=actor))

    async def _act(self, request: web.Request, action: Action) -> web.Response:
        try:
            entry = await action(request.match_info["model_id"], actor_name(request))
        except RolloutError as err:
            return error(err.status, str(err))
        return web.json_response(entry)

    def _refused_before_reading(self, request: web.Request) -> web.Response | None:
        """The answer to an upload that is refused by its headers alone, else None."""
        if request.content_type != UPLOAD_MEDIA_TYPE:
            return error(415, f"send the model file itself as the body, with Content-Type: "
                              f"{UPLOAD_MEDIA_TYPE} (got {request.content_type!r})")
        size = request.content_length
        if size is not None and size > self.max_upload_bytes:
            return self._too_large()
        root = self.control.store.root
        if size is not None and shutil.disk_usage(root).free < size:
            return error(507, f"the model store {root} has less than {size} bytes free; "
                              "nothing kept")
        return None

    def _too_large(self) -> web.Response:
        mb = self.max_upload_bytes / (1 << 20)
        return error(413, f"the model is larger than rollout.max_upload_mb ({mb:g} MiB, "
                          f"{self.max_upload_bytes} bytes); nothing kept")

    async def _receive(self, request: web.Request, tmp: Path) -> web.Response | None:
        """Write the body to ``tmp``; None when all of it arrived within the cap,
        else the refusal to send (the caller removes ``tmp``)."""
        timeout_s = request.app.get(BODY_TIMEOUT_KEY, BODY_TIMEOUT_S)
        fh: BinaryIO = await asyncio.to_thread(tmp.open, "wb")
        size, pending = 0, bytearray()
        try:
            while True:
                try:
                    chunk = await asyncio.wait_for(request.content.readany(), timeout_s)
                except asyncio.TimeoutError:
                    raise web.HTTPRequestTimeout(
                        text=f"the model upload stalled: nothing arrived for {timeout_s:g} s",
                        headers={"Connection": "close"}) from None
                except (ClientPayloadError, HttpProcessingError, ConnectionError) as err:
                    _log.info("model_upload_broken", received=size, error=str(err))
                    return error(400, f"the upload broke off after {size} bytes; nothing kept")
                size += len(chunk)
                if size > self.max_upload_bytes:
                    refused = self._too_large()
                    refused.force_close()  # the rest of the body is not read
                    return refused
                pending += chunk
                if len(pending) >= _WRITE_BYTES or (not chunk and pending):
                    await asyncio.to_thread(fh.write, bytes(pending))
                    pending.clear()
                if not chunk:
                    await asyncio.to_thread(fh.flush)
                    return None
        finally:
            await asyncio.to_thread(fh.close)


MODELS_KEY = web.AppKey("models", ModelApi)


def add_model_routes(app: web.Application, control: RolloutControl, *,
                     max_upload_bytes: int) -> ModelApi:
    """Add ``GET``/``POST /api/models`` and ``POST /api/models/{model_id}/shadow``,
    ``/promote``, ``/rollback``, ``/retire`` (manager only)."""
    api = ModelApi(control, max_upload_bytes=max_upload_bytes)
    app[MODELS_KEY] = api
    app.router.add_get("/api/models", api.list_models)
    app.router.add_post("/api/models", api.upload)
    allow(app, "GET", "/api/models", "manager")
    allow(app, "POST", "/api/models", "manager")
    for name in ("shadow", "promote", "rollback", "retire"):
        path = f"/api/models/{{model_id}}/{name}"
        app.router.add_post(path, getattr(api, name))
        allow(app, "POST", path, "manager")
    return api
