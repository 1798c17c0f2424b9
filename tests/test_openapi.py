"""The OpenAPI description: generated from the daemon's routes and models, served, committed.

``docs/openapi.json`` must equal what the code generates; after a change to a
route or a model, write it again with

    .venv/bin/python tests/api_server.py > docs/openapi.json
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from api_server import daemon_app, openapi_document
from test_security import _guarded

from edge.web.openapi import SECURITY_SCHEME, build_spec, operation_of

COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "openapi.json"


def test_committed_description_equals_the_generated_one() -> None:
    generated = openapi_document()
    committed = json.loads(COMMITTED.read_text())
    assert committed == generated, ("docs/openapi.json is stale: run "
                                    "`.venv/bin/python tests/api_server.py > docs/openapi.json`")


def test_served_description_is_open_and_describes_every_route(tmp_path: Path) -> None:
    async def main() -> None:
        app, _ = daemon_app(tmp_path)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            resp = await client.get("/api/openapi.json")  # no token
            assert resp.status == 200
            spec = await resp.json()
            assert spec == json.loads(json.dumps(build_spec(app)))
            assert spec["openapi"] == "3.1.0"
            routes = {(r.method, r.resource.canonical) for r in app.router.routes()
                      if r.resource is not None and r.method != "HEAD"}
            described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
            assert described == routes
            undocumented = [(r.method, r.resource.canonical) for r in app.router.routes()
                            if r.method != "HEAD" and operation_of(r.handler) is None]
            assert undocumented == [], "decorate these handlers with edge.web.openapi.operation"
            guarded = {(m, p) for m, p in _guarded(app) if m != "HEAD"}
            secured = {(m.upper(), p) for p, ops in spec["paths"].items()
                       for m, op in ops.items() if op.get("security")}
            assert secured == guarded  # the same rule as the middleware
            for method, path in secured:
                op = spec["paths"][path][method.lower()]
                assert op["security"] == [{SECURITY_SCHEME: []}]
                assert "401" in op["responses"]

    asyncio.run(main())


def _body_ref(spec: dict[str, Any], path: str, method: str) -> Any:
    return spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def test_bodies_are_the_models_the_handlers_validate_with() -> None:
    spec = openapi_document()
    schemas = spec["components"]["schemas"]
    assert _body_ref(spec, "/api/config", "put") == {"$ref": "#/components/schemas/SiteConfig"}
    assert _body_ref(spec, "/api/streams/{id}/webrtc", "post") == {
        "$ref": "#/components/schemas/OfferBody"}
    correction = _body_ref(spec, "/api/bills/{bill_id}/corrections", "post")
    assert correction["discriminator"]["propertyName"] == "action"
    assert sorted(correction["discriminator"]["mapping"]) == [
        "add", "change", "confirm", "quantity", "remove", "undo", "void"]
    assert schemas["SiteConfig"]["additionalProperties"] is False
    assert schemas["OfferBody"]["required"] == ["sdp", "type"]
    params = {p["name"] for p in spec["paths"]["/api/bills"]["get"]["parameters"]}
    assert params == {"limit", "before", "stream", "since", "until"}
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if "requestBody" in op:
                assert {"400", "408", "413", "422"} <= set(op["responses"]), (method, path)
