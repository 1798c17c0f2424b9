"""The OpenAPI 3.1 description of the HTTP side, generated from the running application.

It sits beside the control plane (``… ─▶ events (HTTP/SSE)``, ``annotate ─▶
WebRTC``) and describes what the application really serves: the routes come
from the application's router, the request bodies and answers from the same
pydantic models the handlers validate with (:class:`edge.config.SiteConfig`,
the corrections of :mod:`edge.billing.corrections`, the offer of
:mod:`edge.web.signalling`, the answers of :mod:`edge.web.payloads`), and each
operation's ``security`` and ``x-roles`` from the access rule itself
(:func:`edge.web.access.route_needs_token`, :func:`edge.web.roles.route_roles`).
A handler says what it takes and
answers with :func:`operation`; a route without it is still listed, with its
docstring and a generic answer, and ``tests/test_openapi.py`` fails until it
is described.

Served at ``GET /api/openapi.json`` (open, read-only); ``docs/openapi.json``
is the same document for the daemon's application, checked by the tests.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_args

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

import edge
from edge.web.access import PROTECTED_READS_KEY, REALM, route_needs_token
from edge.web.payloads import ErrorBody, ValidationErrorBody
from edge.web.roles import ROLES, route_roles

OPENAPI_VERSION = "3.1.0"
SECURITY_SCHEME = "bearerToken"
_ATTR = "__openapi_operation__"
_REF = "#/components/schemas/{model}"
_METHOD_ORDER = ("GET", "PUT", "POST", "PATCH", "DELETE")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Reply:
    """One documented answer of an operation.

    Parameters
    ----------
    description : str
        When the server gives this answer.
    model : type, optional
        The JSON body's pydantic model (or any type pydantic can describe).
    media_type : str
        Content type of the body.
    schema : mapping, optional
        A literal JSON schema, for bodies without a model (text, images).
    headers : tuple of str
        Response headers worth naming (``Retry-After``, ``WWW-Authenticate``).
    """

    description: str
    model: Any = None
    media_type: str = "application/json"
    schema: Mapping[str, Any] | None = None
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Operation:
    """What one handler takes and answers.

    Parameters
    ----------
    summary : str
        One line.
    tag : str
        Group in the description (``health``, ``config``, ``bills``, ``webrtc``, ``page``).
    replies : mapping
        Status -> :class:`Reply`. The token's 401, and for a JSON body 400,
        408, 413 and 422, are added by :func:`build_spec`.
    body : type, optional
        The JSON request body as validated (a pydantic model or annotated union).
    body_limit : int, optional
        Largest body accepted, bytes (named in the 413).
    raw_body : str, optional
        Media type of a request body taken as bytes, not JSON (a model file:
        ``application/octet-stream``); 408, 413 and 415 are added.
    query : pydantic model, optional
        The query string as validated; each field is one parameter.
    path_params : mapping
        Path parameter name -> JSON schema (default: a string).
    headers : mapping
        Request header name -> description.
    """

    summary: str
    tag: str
    replies: Mapping[int, Reply]
    body: Any = None
    body_limit: int | None = None
    raw_body: str | None = None
    query: type[BaseModel] | None = None
    path_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


def operation(summary: str, tag: str, replies: Mapping[int, Reply],
              **more: Any) -> Callable[[H], H]:
    """Decorate a handler with its :class:`Operation` (same arguments)."""
    op = Operation(summary, tag, replies, **more)

    def mark(handler: H) -> H:
        setattr(handler, _ATTR, op)
        return handler

    return mark


def operation_of(handler: Callable[..., Any]) -> Operation | None:
    """The :class:`Operation` a handler was decorated with, or None."""
    op = getattr(handler, _ATTR, None)
    return op if isinstance(op, Operation) else None


class _Schemas:
    """Collects the models the operations name; writes them once under components."""

    def __init__(self) -> None:
        self._inputs: list[tuple[tuple[str, str], Any, TypeAdapter[Any]]] = []
        self._refs: dict[tuple[str, str], dict[str, Any]] = {}

    def ref(self, tp: Any, mode: str) -> dict[str, Any]:
        """A placeholder filled by :meth:`finish` with the schema of ``tp``."""
        key = (_type_key(tp), mode)
        placeholder = self._refs.get(key)
        if placeholder is None:
            placeholder = self._refs[key] = {}
            self._inputs.append((key, mode, TypeAdapter(tp)))
        return placeholder

    def finish(self) -> dict[str, Any]:
        """Fill every placeholder; the ``components.schemas`` mapping."""
        if not self._inputs:
            return {}
        schemas, defs = TypeAdapter.json_schemas(
            [(key, mode, adapter) for key, mode, adapter in self._inputs], ref_template=_REF)
        for key, placeholder in self._refs.items():
            placeholder.update(schemas[(key, key[1])])  # type: ignore[index]
        return dict(sorted(defs.get("$defs", {}).items()))


def _type_key(tp: Any) -> str:
    if get_args(tp):  # list[A] passes __qualname__ on from list: list[B] would be the same
        return repr(tp)
    return getattr(tp, "__qualname__", None) or repr(tp)


def build_spec(app: web.Application, *, title: str = "DishTracker Edge") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s routes.

    Parameters
    ----------
    app
        The application, with all its routes added (the daemon's: control
        plane, WebRTC, bills).
    title
        ``info.title``.

    Returns
    -------
    dict
        JSON-ready. HEAD routes (aiohttp adds one per GET) are left out.
    """
    protected = app.get(PROTECTED_READS_KEY, set())
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    routes = sorted(((r.resource.canonical, r.method, r.handler) for r in app.router.routes()
                     if r.resource is not None and r.method != "HEAD"),
                    key=lambda t: (t[0], _method_rank(t[1])))
    for canonical, method, handler in routes:
        roles = (sorted(route_roles(app, method, canonical), key=ROLES.index)
                 if route_needs_token(method, canonical, protected) else None)
        paths.setdefault(canonical, {})[method.lower()] = _operation(
            canonical, method, handler, roles, schemas)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": title,
            "version": edge.__version__,
            "description": "The HTTP API of one DishTracker Edge box: health, metrics, "
                           "streams, the site config, bills and their corrections, live "
                           "events and the WebRTC view. Every error is JSON "
                           "(`{\"error\": …}`; a body that does not validate: 422 with "
                           "`errors`, one `field.path: reason` line each). See docs/API.md "
                           "and docs/SECURITY.md.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.finish(),
            "securitySchemes": {SECURITY_SCHEME: {
                "type": "http", "scheme": "bearer",
                "description": "An access token of the box (storage.dir/token, "
                               "server.token_file, or `dishtracker token create`): every "
                               "method but GET and HEAD, plus the reads that disclose "
                               "secrets or camera frames. A token carries one role "
                               "(cashier, manager, labeller); an operation's `x-roles` "
                               "lists the roles it allows, others get 403.",
            }},
        },
    }


def _method_rank(method: str) -> int:
    return _METHOD_ORDER.index(method) if method in _METHOD_ORDER else len(_METHOD_ORDER)


def _operation(canonical: str, method: str, handler: Callable[..., Any],
               roles: list[str] | None, schemas: _Schemas) -> dict[str, Any]:
    op = operation_of(handler)
    name = getattr(handler, "__name__", "handler").strip("_")
    doc = _clean(inspect.getdoc(handler) or "")
    out: dict[str, Any] = {
        "operationId": name,
        "summary": op.summary if op else (doc.split("\n\n")[0] or f"{method} {canonical}"),
        "tags": [op.tag if op else "other"],
    }
    if doc:
        out["description"] = doc
    params = [_path_param(p, op) for p in re.findall(r"\{(\w+)\}", canonical)]
    if op is not None and op.query is not None:
        params += _query_params(op.query)
    if op is not None:
        params += [{"name": h, "in": "header", "required": False, "description": d,
                    "schema": {"type": "string"}} for h, d in op.headers.items()]
    if params:
        out["parameters"] = params
    replies: dict[int, Reply] = dict(op.replies) if op else {
        200: Reply("the answer", schema={})}
    if op is not None and op.body is not None:
        out["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": schemas.ref(op.body, "validation")}}}
        limit = f" ({op.body_limit} bytes)" if op.body_limit else ""
        replies.setdefault(400, Reply("the body is not JSON", ErrorBody))
        replies.setdefault(408, Reply("the body did not arrive in time", ErrorBody))
        replies.setdefault(413, Reply(f"the body is over the limit{limit}", ErrorBody))
        replies.setdefault(422, Reply("the body does not validate", ValidationErrorBody))
    if op is not None and op.raw_body is not None:
        out["requestBody"] = {"required": True, "content": {
            op.raw_body: {"schema": {"type": "string", "format": "binary"}}}}
        replies.setdefault(408, Reply("the body stalled", ErrorBody))
        replies.setdefault(413, Reply("the body is over the limit", ErrorBody))
        replies.setdefault(415, Reply(f"the body is not sent as {op.raw_body}", ErrorBody))
    if roles is not None:
        out["security"] = [{SECURITY_SCHEME: []}]
        out["x-roles"] = roles
        replies.setdefault(401, Reply("no token, another scheme, or a wrong token",
                                      ErrorBody, headers=("WWW-Authenticate",)))
        if len(roles) < len(ROLES):
            replies.setdefault(403, Reply(f"the token's role is not {' or '.join(roles)}",
                                          ErrorBody, headers=("WWW-Authenticate",)))
    out["responses"] = {str(status): _reply(reply, schemas)
                        for status, reply in sorted(replies.items())}
    return out


def _path_param(name: str, op: Operation | None) -> dict[str, Any]:
    schema = dict(op.path_params.get(name, {"type": "string"})) if op else {"type": "string"}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    """One query parameter per field of ``model`` (a query string carries no nulls)."""
    schema = model.model_json_schema(mode="validation")
    required = set(schema.get("required", ()))
    out = []
    for name, field_schema in schema.get("properties", {}).items():
        prop = {k: v for k, v in field_schema.items() if k != "title"}
        options = prop.pop("anyOf", None)
        if options is not None:
            kept = [o for o in options if o.get("type") != "null"]
            prop = {**(kept[0] if len(kept) == 1 else {"anyOf": kept}), **prop}
        if prop.get("default", 0) is None:
            del prop["default"]
        description = prop.pop("description", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                 "schema": prop}
        if description:
            param["description"] = description
        out.append(param)
    return out


def _reply(reply: Reply, schemas: _Schemas) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.model is not None:
        out["content"] = {reply.media_type: {"schema": schemas.ref(reply.model, "serialization")}}
    elif reply.schema is not None:
        out["content"] = {reply.media_type: {"schema": dict(reply.schema)}}
    if reply.headers:
        out["headers"] = {h: {"schema": {"type": "string"}, "description": _HEADERS[h]}
                          for h in reply.headers}
    return out


_HEADERS = {
    "Retry-After": "seconds to wait before trying again",
    "WWW-Authenticate": f'Bearer realm="{REALM}" (with error="invalid_token" for a wrong '
                        'token, error="insufficient_scope" for a role the operation does '
                        "not allow)",
}


def _clean(doc: str) -> str:
    """A docstring as Markdown: Sphinx roles become code, ``x`` becomes `x`."""
    doc = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", doc)
    return doc.replace("``", "`")


OPENAPI_KEY = web.AppKey("openapi", dict)
"""Cache of the application's description, filled on the first request."""


@operation("This description (OpenAPI 3.1)", "page",
           {200: Reply("the OpenAPI document", schema={"type": "object"})})
async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of this server's API."""
    cache = request.app[OPENAPI_KEY]
    if "spec" not in cache:
        cache["spec"] = build_spec(request.app)
    return web.json_response(cache["spec"])


def add_openapi_route(app: web.Application) -> None:
    """Serve ``GET /api/openapi.json`` (open: it holds no secret).

    The document is built on the first request, when every route is there.
    """
    app[OPENAPI_KEY] = {}
    app.router.add_get("/api/openapi.json", openapi_json)
