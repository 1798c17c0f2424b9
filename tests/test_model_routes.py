"""The model routes on a real server: a real pipeline with its registry and rollout
controller (no camera: the routes' work is the registry and the swaps), the
daemon's access rules, uploads refused in every way issue 16 names with nothing
left behind, and the actions through the controller.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from ssl import SSLContext
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from model_variants import dishnet_variant
from test_hardening_config import needs_model
from test_model_store import DISHNET, listing, no_contract_model
from test_webrtc_support import AUTH, write_token_file

from edge.config import ServerConfig, StorageConfig, parse_config
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.rollout.controller import Rollout
from edge.rollout.store import INDEX_FILE, MODELS_SUBDIR, ModelStore
from edge.web.access import load_keyring
from edge.web.app import make_app
from edge.web.model_routes import add_model_routes
from edge.web.openapi import build_spec, operation_of
from edge.web.tokens import TOKENS_FILE, TokenStore

Client = TestClient[Any, Any]
STATIC = Path(__file__).resolve().parents[1] / "edge" / "web" / "static"
MAX_UPLOAD = 2 * 1024 * 1024
"""The cap of these tests: the shipped model (1.3 MB) fits."""
OCTETS = {"Content-Type": "application/octet-stream"}


@dataclass
class Box:
    """The running server of :func:`serve`."""

    client: Client
    app: web.Application
    rollout: Rollout
    root: Path
    cashier: dict[str, str]

    def snapshot(self) -> tuple[dict[str, bytes], bytes]:
        """Every file of the store and the index's bytes."""
        return listing(self.root), (self.root / INDEX_FILE).read_bytes()


@asynccontextmanager
async def serve(tmp_path: Path, *, ssl: SSLContext | None = None) -> AsyncIterator[Box]:
    """A pipeline without streams serving the shipped model, its registry, and the
    control plane with the model routes (HTTPS with ``ssl``); the client sends the
    owner's (manager) token."""
    storage = tmp_path / "var"
    storage.mkdir(mode=0o700)
    write_token_file(storage / "token")
    cashier = TokenStore(storage / TOKENS_FILE).create("till-1", "cashier")
    keyring = load_keyring(ServerConfig(), StorageConfig(dir=storage))[1]
    site = parse_config({"storage": {"dir": str(storage)}, "streams": []})
    root = storage / MODELS_SUBDIR
    pipeline = Pipeline(site, Metrics(), store=ModelStore(root))
    assert pipeline.rollout is not None
    await pipeline.start()
    app = make_app(pipeline, config_path=None, token=keyring, static_dir=STATIC)
    add_model_routes(app, pipeline.rollout, max_upload_bytes=MAX_UPLOAD)
    try:
        server = TestServer(app, host="127.0.0.1", port=0)
        await server.start_server(ssl=ssl)  # the client starts it without
        async with TestClient(server, headers=AUTH) as client:
            yield Box(client, app, pipeline.rollout, root, {"Authorization": f"Bearer {cashier}"})
    finally:
        await pipeline.stop()


async def _answer(resp: Any, status: int) -> Any:
    body = await resp.json()
    assert resp.status == status, body
    return body


@needs_model
def test_a_manager_uploads_a_model_and_finds_it_listed(tmp_path: Path) -> None:
    candidate = dishnet_variant(tmp_path / "v2.onnx", "dishnet-v2").read_bytes()

    async def main() -> None:
        async with serve(tmp_path) as box:
            resp = await box.client.post("/api/models", params={"name": "canteen/v2.onnx"},
                                         data=io.BytesIO(candidate), headers=OCTETS)
            entry = await _answer(resp, 201)
            assert (entry["version"], entry["state"], entry["source"], entry["name"]) == (
                "dishnet-v2", "candidate", "upload", "v2")
            assert (box.root / entry["file"]).read_bytes() == candidate
            again = await _answer(await box.client.post("/api/models", data=io.BytesIO(candidate),
                                                        headers=OCTETS), 200)
            assert again == entry
            listed = await _answer(await box.client.get("/api/models"), 200)
            assert [(m["version"], m["state"]) for m in listed["models"]] == [
                ("dishnet-v2", "candidate"), ("dishnet-1.1", "serving")]
            assert listed["history"][0]["actor"] == "owner"
            assert listed["history"][0]["reason"] == "added (upload)"
            assert listed["rollout"]["serving"]["version"] == "dishnet-1.1"
            assert listed["rollout"]["shadow"] is None
            assert not list((box.root / "incoming").iterdir())

    asyncio.run(main())


async def _chunks(total: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        yield b"\0" * 65536
        sent += 65536


@needs_model
def test_refused_uploads_are_a_clear_4xx_and_leave_nothing(tmp_path: Path) -> None:
    """Issue 16: wrong contract, truncated file, oversized body, missing or cashier
    token: each a clear 4xx, nothing written."""
    truncated = DISHNET.read_bytes()[: DISHNET.stat().st_size // 2]
    plain = no_contract_model(tmp_path / "plain.onnx").read_bytes()
    model = DISHNET.read_bytes()

    async def main() -> None:
        async with serve(tmp_path) as box:
            before = box.snapshot()
            octets = {"headers": OCTETS}
            cases: list[tuple[str, dict[str, Any], int, str]] = [
                ("wrong contract", {"data": plain, **octets}, 422,
                 "metadata key 'class_names' is missing"),
                ("truncated", {"data": truncated, **octets}, 422, "not a readable ONNX file"),
                ("over the cap", {"data": io.BytesIO(b"\0" * (MAX_UPLOAD + 1)), **octets}, 413,
                 "rollout.max_upload_mb"),
                ("past the cap, chunked", {"data": _chunks(MAX_UPLOAD + 65536), **octets}, 413,
                 "rollout.max_upload_mb"),
                ("not octets", {"data": io.BytesIO(model),
                                "headers": {"Content-Type": "application/json"}},
                 415, "application/octet-stream"),
                ("a bad name", {"data": io.BytesIO(model), "params": {"name": "x" * 300},
                                **octets}, 422, "name"),
                ("no token", {"data": io.BytesIO(model),
                              "headers": {**OCTETS, "Authorization": ""}}, 401, "token"),
                ("a cashier", {"data": io.BytesIO(model),
                               "headers": {**OCTETS, **box.cashier}}, 403, "manager"),
            ]
            for what, request, status, says in cases:
                resp = await box.client.post("/api/models", **request)
                body = await resp.json()
                assert resp.status == status, (what, body)
                assert says in body["error"] + json.dumps(body.get("errors", [])), (what, body)
                assert box.snapshot() == before, what
            assert [m.version for m in box.rollout.store.entries()] == ["dishnet-1.1"]

    asyncio.run(main())


@needs_model
def test_an_upload_that_breaks_off_leaves_nothing(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as box:
            before = box.snapshot()
            assert box.client.server.port is not None
            _, writer = await asyncio.open_connection("127.0.0.1", box.client.server.port)
            writer.write(b"POST /api/models HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         + f"{next(iter(AUTH))}: {AUTH['Authorization']}\r\n".encode()
                         + b"Content-Type: application/octet-stream\r\n"
                         b"Content-Length: 1000000\r\n\r\n" + b"\0" * 300_000)
            await writer.drain()
            incoming = box.root / "incoming"
            for _ in range(250):  # the handler has the upload in hand
                if incoming.exists() and any(incoming.iterdir()):
                    break
                await asyncio.sleep(0.02)
            assert any(incoming.iterdir())
            writer.close()
            await writer.wait_closed()
            for _ in range(200):
                if box.snapshot() == before:
                    break
                await asyncio.sleep(0.02)
            assert box.snapshot() == before
            assert (await box.client.get("/healthz")).status == 200

    asyncio.run(main())


@needs_model
def test_shadow_promote_rollback_and_retire_go_through_the_controller(tmp_path: Path) -> None:
    candidate = dishnet_variant(tmp_path / "v2.onnx", "dishnet-v2").read_bytes()

    async def main() -> None:
        async with serve(tmp_path) as box:
            v2 = (await _answer(await box.client.post("/api/models", data=io.BytesIO(candidate),
                                                      headers=OCTETS), 201))["id"]
            v1 = box.rollout.store.serving()
            assert v1 is not None
            post = box.client.post
            shadow = await _answer(await post(f"/api/models/{v2}/shadow"), 200)
            assert shadow["state"] == "shadow"
            listed = await _answer(await box.client.get("/api/models"), 200)
            assert listed["rollout"]["shadow"]["id"] == v2
            assert isinstance(listed["rollout"]["shadow"]["stats"], dict)
            refused = await _answer(await post(f"/api/models/{v2}/rollback"), 409)
            assert v1.id in refused["error"] and "serving" in refused["error"]
            promoted = await _answer(await post(f"/api/models/{v2[:8]}/promote"), 200)
            assert promoted["state"] == "serving"
            assert box.rollout.status()["serving"]["version"] == "dishnet-v2"
            back = await _answer(await post(f"/api/models/{v2}/rollback"), 200)
            assert (back["id"], back["state"]) == (v1.id, "serving")
            assert (await _answer(await post(f"/api/models/{v2}/retire"), 200))["state"] == (
                "retired")
            await _answer(await post(f"/api/models/{v1.id}/retire"), 409)  # it serves
            await _answer(await post("/api/models/abcdef/promote"), 404)
            for action in ("shadow", "promote", "rollback", "retire"):
                await _answer(await post(f"/api/models/{v2}/{action}", headers=box.cashier),
                              403)
            await _answer(await box.client.get("/api/models", headers=box.cashier), 403)
            await _answer(await box.client.get("/api/models", headers={"Authorization": ""}),
                          401)
            history = (await _answer(await box.client.get("/api/models"), 200))["history"]
            assert {e["actor"] for e in history if e["model"] == v2} == {"owner"}

    asyncio.run(main())


@needs_model
def test_the_model_routes_are_described(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as box:
            app = box.app
            spec = build_spec(app)
            paths = {r.resource.canonical for r in app.router.routes()
                     if r.resource is not None and "/api/models" in r.resource.canonical
                     and r.method != "HEAD"}
            assert len(paths) == 5
            assert all(operation_of(r.handler) is not None for r in app.router.routes()
                       if r.resource is not None and r.resource.canonical in paths)
            upload = spec["paths"]["/api/models"]["post"]
            assert list(upload["requestBody"]["content"]) == ["application/octet-stream"]
            assert {"201", "401", "403", "413", "415", "422", "507"} <= set(upload["responses"])
            assert spec["paths"]["/api/models"]["get"]["x-roles"] == ["manager"]

    asyncio.run(main())
