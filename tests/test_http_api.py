"""The HTTP control plane on a real aiohttp server bound to 127.0.0.1 (ephemeral port)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_webrtc_support import AUTH, TOKEN

from edge.config import SiteConfig, classify_changes, load_config, parse_config, write_config_atomic
from edge.errors import ConfigError
from edge.metrics import Metrics
from edge.web.app import MAX_BODY_BYTES, make_app


class MemoryDaemon:
    """In-memory stand-in for the pipeline, implementing ``DaemonControl``.

    The real pipeline (``edge.pipeline``) is written separately and is not
    there yet; this object holds a config and answers status questions with
    values the test sets, so the HTTP layer can be tested on its own.
    """

    def __init__(self, config: SiteConfig) -> None:
        self.metrics = Metrics()
        self._config = config
        self.heartbeat = 0.05
        self.ready: tuple[bool, list[str]] = (True, [])
        self.refuse: list[str] | None = None
        self.apply_delay_s = 0.0
        self.applying = 0
        self.max_applying = 0
        self.applied: list[SiteConfig] = []
        self.fail_status = False

    @property
    def config(self) -> SiteConfig:
        return self._config

    def stream_status(self) -> list[dict[str, Any]]:
        if self.fail_status:
            raise RuntimeError("secret internal detail")
        return [{"id": s.id, "url": s.url, "enabled": s.enabled, "state": "running",
                 "fps": 20.0, "detect_rate_hz": 10.0, "last_frame_age_s": 0.04, "peers": 0,
                 "last_error": None} for s in self._config.streams]

    def readiness(self) -> tuple[bool, list[str]]:
        return self.ready

    def heartbeat_age_s(self) -> float:
        return self.heartbeat

    async def apply_config(self, new: SiteConfig) -> dict[str, list[str]]:
        self.applying += 1
        self.max_applying = max(self.max_applying, self.applying)
        try:
            await asyncio.sleep(self.apply_delay_s)
            if self.refuse:
                err = ConfigError("cannot apply")
                err.errors = self.refuse  # type: ignore[attr-defined]
                raise err
            result = classify_changes(self._config, new)
            self._config = new
            self.applied.append(new)
            return result
        finally:
            self.applying -= 1


Scenario = Callable[[TestClient[Any, Any], MemoryDaemon], Awaitable[None]]


@asynccontextmanager
async def _serve(daemon: MemoryDaemon, config_path: Path | None,
                 static_dir: Path | None) -> AsyncIterator[TestClient[Any, Any]]:
    app = make_app(daemon, config_path=config_path, token=TOKEN, static_dir=static_dir)
    # every request carries the token; tests/test_security.py checks what happens without
    async with TestClient(TestServer(app, host="127.0.0.1", port=0), headers=AUTH) as client:
        yield client


def _run(scenario: Scenario, *, config_path: Path | None = None,
         static_dir: Path | None = None, daemon: MemoryDaemon | None = None) -> MemoryDaemon:
    daemon = daemon or MemoryDaemon(load_config(config_path) if config_path else SiteConfig())

    async def main() -> None:
        async with _serve(daemon, config_path, static_dir) as client:
            await scenario(client, daemon)

    asyncio.run(main())
    return daemon


@pytest.fixture
def site_file(tmp_path: Path) -> Path:
    path = tmp_path / "etc" / "site.toml"
    write_config_atomic(path, SiteConfig())
    return path


def _new_config_body() -> dict[str, Any]:
    config = SiteConfig().model_dump(mode="json")
    config["server"]["port"] = 9000
    config["tracker"]["iou_threshold"] = 0.5
    config["streams"].append({"id": "cam2", "url": "/dev/video0"})
    return config


def test_healthz_follows_the_loop_heartbeat() -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.get("/healthz")
        assert (resp.status, await resp.json()) == (200, {"status": "ok"})
        daemon.heartbeat = 3.5
        resp = await client.get("/healthz")
        assert resp.status == 503
        assert await resp.json() == {"status": "stalled", "heartbeat_age_s": 3.5}

    _run(scenario)


def test_readyz_reports_reasons() -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.get("/readyz")
        assert (resp.status, await resp.json()) == (200, {"ready": True, "reasons": []})
        daemon.ready = (False, ["model not loaded", "stream cam1: no frame yet"])
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert await resp.json() == {"ready": False, "reasons": ["model not loaded",
                                                                 "stream cam1: no frame yet"]}

    _run(scenario)


def test_metrics_are_prometheus_text() -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        daemon.metrics.frames.labels(stream="cam1", stage="decode").inc(7)
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = await resp.text()
        assert 'dishtracker_frames_total{stage="decode",stream="cam1"} 7.0' in text

    _run(scenario)


def test_streams_and_config_and_schema_are_served(site_file: Path) -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.get("/api/streams")
        streams = await resp.json()
        assert resp.status == 200
        assert [s["id"] for s in streams] == ["cam1"]
        assert streams[0]["state"] == "running"
        resp = await client.get("/api/config")
        assert resp.status == 200
        assert parse_config(await resp.json()) == daemon.config
        resp = await client.get("/api/config/schema")
        schema = await resp.json()
        assert "streams" in schema["properties"]

    _run(scenario, config_path=site_file)


def test_put_valid_config_applies_and_rewrites_file(site_file: Path) -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.put("/api/config", json=_new_config_body())
        body = await resp.json()
        assert resp.status == 200, body
        assert body == {"applied": ["tracker.iou_threshold", "streams.cam2"],
                        "restart_required": ["server.port"], "saved_to": str(site_file)}
        got = await (await client.get("/api/config")).json()
        assert got["tracker"]["iou_threshold"] == 0.5

    daemon = _run(scenario, config_path=site_file)
    assert load_config(site_file) == daemon.config
    assert [s.id for s in load_config(site_file).streams] == ["cam1", "cam2"]
    assert sorted(p.name for p in site_file.parent.iterdir()) == ["site.toml"]


def test_put_same_config_leaves_file_untouched(site_file: Path) -> None:
    site_file.write_text("# operator's comment\n" + site_file.read_text())
    before = site_file.read_bytes()

    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.put("/api/config", json=daemon.config.model_dump(mode="json"))
        assert resp.status == 200
        assert (await resp.json())["applied"] == []

    _run(scenario, config_path=site_file)
    assert site_file.read_bytes() == before


def test_put_invalid_config_is_refused_and_old_one_stays(site_file: Path) -> None:
    before = site_file.read_bytes()
    bad = _new_config_body()
    bad["server"]["port"] = 0
    bad["detector"]["min_rate_hz"] = 50.0
    bad["streams"][1]["id"] = "cam1"
    bad["tracker"]["colour"] = "blue"

    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        old = await (await client.get("/api/config")).json()
        resp = await client.put("/api/config", json=bad)
        assert resp.status == 422
        errors = (await resp.json())["errors"]
        assert sorted(e.split(":")[0] for e in errors) == ["detector", "server.port",
                                                           "tracker.colour"]
        assert any(e.startswith("detector: Value error, min_rate_hz") for e in errors)
        resp = await client.put("/api/config", json={"streams": bad["streams"]})
        errors = (await resp.json())["errors"]
        assert resp.status == 422
        assert errors == ["(root): Value error, stream ids must be unique, repeated: ['cam1']"]
        assert await (await client.get("/api/config")).json() == old

    daemon = _run(scenario, config_path=site_file)
    assert daemon.applied == []
    assert site_file.read_bytes() == before


def test_put_refused_by_daemon_writes_nothing(site_file: Path) -> None:
    before = site_file.read_bytes()

    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        daemon.refuse = ["streams.cam2.url: /dev/video0 does not exist"]
        resp = await client.put("/api/config", json=_new_config_body())
        assert resp.status == 422
        assert await resp.json() == {"error": "the config is invalid: 1 problem(s)",
                                     "errors": ["streams.cam2.url: /dev/video0 does not exist"]}
        assert (await (await client.get("/api/config")).json())["server"]["port"] == 8080

    _run(scenario, config_path=site_file)
    assert site_file.read_bytes() == before


@pytest.mark.parametrize(("body", "status"), [
    (b"port = 8080", 400), (b"{\"server\": ", 400), (b"\xff\xfe", 400), (b"[1, 2]", 422),
    (b'{"streams": [{"id": "a", "url": "\\ud800.mp4"}]}', 422),
])
def test_put_non_json_or_non_object_is_refused(body: bytes, status: int) -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.put("/api/config", data=body,
                                headers={"Content-Type": "application/json"})
        assert resp.status == status
        assert resp.content_type == "application/json"
        payload = await resp.json()
        assert ("error" if status == 400 else "errors") in payload

    daemon = _run(scenario)
    assert daemon.applied == []


def test_put_huge_body_is_413() -> None:
    huge = json.dumps({"streams": [{"id": "a", "url": "x" * (MAX_BODY_BYTES + 10)}]})

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(huge), 64 * 1024):
            yield huge[i:i + 64 * 1024].encode()

    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.put("/api/config", data=huge,
                                headers={"Content-Type": "application/json"})
        assert resp.status == 413
        assert "error" in await resp.json()
        resp = await client.put("/api/config", data=chunks())  # chunked: no Content-Length
        assert resp.status == 413
        assert "error" in await resp.json()

    assert _run(scenario).applied == []


def test_put_without_config_file_keeps_change_in_memory() -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.put("/api/config", json=_new_config_body())
        body = await resp.json()
        assert resp.status == 200
        assert body["saved_to"] is None
        assert "until the daemon restarts" in body["note"]

    assert len(_run(scenario).applied) == 1


def test_put_with_unwritable_config_dir_changes_nothing(site_file: Path) -> None:
    folder = site_file.parent
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True,
                        check=False).returncode != 0:
        pytest.skip("running as root and cannot make a folder immutable (chattr +i)")
    try:
        async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
            resp = await client.put("/api/config", json=_new_config_body())
            assert resp.status == 409
            assert "not writable" in (await resp.json())["error"]

        assert _run(scenario, config_path=site_file).applied == []
    finally:
        if os.geteuid() != 0:
            folder.chmod(0o755)
        else:
            subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_put_applied_but_not_saved_is_500(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.mkdir()  # a folder where the file should be: rename over it fails

    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.put("/api/config", json=_new_config_body())
        body = await resp.json()
        assert resp.status == 500
        assert body["error"].startswith(f"config applied but not saved to {path}")
        assert body["restart_required"] == ["server.port"]

    _run(scenario, config_path=path, daemon=MemoryDaemon(SiteConfig()))
    assert list(tmp_path.iterdir()) == [path]


def test_concurrent_puts_are_serialised(site_file: Path) -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        daemon.apply_delay_s = 0.02
        bodies = []
        for port in range(9001, 9007):
            body = _new_config_body()
            body["server"]["port"] = port
            bodies.append(body)
        responses = await asyncio.gather(*(client.put("/api/config", json=b) for b in bodies))
        assert [r.status for r in responses] == [200] * len(bodies)

    daemon = _run(scenario, config_path=site_file)
    assert daemon.max_applying == 1
    assert len(daemon.applied) == 6
    assert load_config(site_file) == daemon.config


def test_unknown_route_and_method_give_json_errors() -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.get("/no/such/thing")
        assert resp.status == 404
        assert await resp.json() == {"error": "Not Found"}
        resp = await client.post("/api/config", json={})
        assert resp.status == 405
        assert "PUT" in resp.headers["Allow"]
        assert await resp.json() == {"error": "Method Not Allowed"}

    _run(scenario)


def test_handler_crash_is_a_json_500_without_traceback() -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        daemon.fail_status = True
        resp = await client.get("/api/streams")
        assert resp.status == 500
        text = await resp.text()
        assert json.loads(text) == {"error": "internal server error"}
        assert "secret" not in text

    _run(scenario)


@pytest.fixture
def static_dir(tmp_path: Path) -> Path:
    root = tmp_path / "static"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><title>cashier</title>")
    (root / "app.js").write_text("console.log('hi');")
    (tmp_path / "secret.txt").write_text("root:x:0:0")
    (root / "link.txt").symlink_to(tmp_path / "secret.txt")
    return root


def test_static_files_and_index_are_served(static_dir: Path) -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.get("/")
        assert resp.status == 200
        assert "cashier" in await resp.text()
        resp = await client.get("/static/app.js")
        assert resp.status == 200
        assert "console.log" in await resp.text()
        resp = await client.get("/static/")
        assert resp.status in (403, 404)
        assert "error" in await resp.json()

    _run(scenario, static_dir=static_dir)


async def _raw_get(client: TestClient[Any, Any], target: str) -> tuple[int, bytes]:
    """Send a request line byte for byte (HTTP clients normalise ``..`` away)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("target", [
    "/static/../../etc/passwd", "/static/../secret.txt", "/static/%2e%2e/secret.txt",
    "/static/%2e%2e%2fsecret.txt", "/static/..%2f..%2f..%2fetc%2fpasswd",
    "/static/%252e%252e/secret.txt", "/static/..%5csecret.txt", "/static//etc/passwd",
    "/static/link.txt", "/static/%2fetc%2fpasswd",
])
def test_static_cannot_escape_its_folder(static_dir: Path, target: str) -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        status, body = await _raw_get(client, target)
        assert status in (403, 404), (target, status, body[:200])
        assert b"root:" not in body
        assert "error" in json.loads(body)

    _run(scenario, static_dir=static_dir)


def test_without_static_dir_root_is_json_404() -> None:
    async def scenario(client: TestClient[Any, Any], daemon: MemoryDaemon) -> None:
        resp = await client.get("/")
        assert resp.status == 404
        assert "error" in await resp.json()

    _run(scenario)


def test_missing_static_dir_fails_at_startup(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        make_app(MemoryDaemon(SiteConfig()), config_path=None, token=TOKEN,
                 static_dir=tmp_path / "nope")
