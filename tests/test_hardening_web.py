"""Issue 18 on the HTTP side: what an adversarial probe of the running daemon found.

Each test names its finding (2: event slots, 3: credentials in URLs, 4: Host,
6: ICE candidates, 7: parser errors, 8: strict JSON) and fails on the code
before the fix. The daemon's application (``tests/api_server.py``) or the
control plane with :class:`test_http_api.MemoryDaemon`, on real sockets at
127.0.0.1; raw sockets where an HTTP client would not send what an attacker
sends.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import BaseTestServer, TestClient, TestServer
from aiortc import RTCPeerConnection
from api_server import BILL_IDS, STREAM_ID, daemon_app
from test_bad_input import served
from test_http_api import MemoryDaemon
from test_webrtc_support import AUTH, TOKEN, CameraView

from edge.billing.service import BillingService
from edge.config import ServerConfig, SiteConfig, StreamConfig
from edge.metrics import Metrics
from edge.observability import configure_logging
from edge.sources import mask_text, mask_url
from edge.web.app import make_app
from edge.web.bills import add_bill_routes
from edge.web.headers import SECURITY_HEADERS
from edge.web.signalling import MAX_CANDIDATES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import probe  # bench/probe.py: the raw-socket client and the malformed requests

Client = TestClient[Any, Any]
ROOT = Path(__file__).resolve().parents[1]
SECRET = "Hunter2xyz"
NVR_URLS = (
    f"rtsp://10.0.0.5:554/user=admin&password={SECRET}&channel=1&stream=0.sdp",
    f"rtsp://10.0.0.5/live;password={SECRET}",
    f"rtsp://10.0.0.5:554/user=admin_password={SECRET}_channel=1_stream=0.sdp?real_stream",
    f"http://10.0.0.5/cgi-bin/video.cgi?loginuse=admin&loginpas={SECRET}",
    f"rtsp://admin:{SECRET}@10.0.0.5/Streaming/Channels/101",
    f"http://10.0.0.5/videostream.cgi?user=admin&pwd={SECRET}",
)


@asynccontextmanager
async def bills_app(tmp_path: Path, server: ServerConfig | None = None
                    ) -> AsyncIterator[tuple[BaseTestServer, MemoryDaemon]]:
    """The control plane with the bills API on a journal in ``tmp_path``."""
    service = BillingService(tmp_path / "journal.sqlite3", Metrics())
    await service.open()
    daemon = MemoryDaemon(SiteConfig(server=server or ServerConfig()))
    app = make_app(daemon, config_path=None, token=TOKEN)
    add_bill_routes(app, service, menu=lambda: daemon.config.menu)
    try:
        async with TestServer(app, host="127.0.0.1", port=0) as srv:
            yield srv, daemon
    finally:
        await service.close()


async def _raw(port: int | None, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is; the status, headers (lower-case names) and body."""
    assert port is not None
    answer: tuple[int, dict[str, str], bytes] = await probe.raw(port, request)
    return answer


# ---- 2: event streams -----------------------------------------------------------------


def test_one_address_cannot_take_every_event_stream(tmp_path: Path) -> None:
    async def main() -> None:
        async with bills_app(tmp_path) as (srv, _), aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{srv.port}/api/events"
            opened: list[aiohttp.ClientResponse] = []
            statuses = []
            for _ in range(40):
                resp = await http.get(url)
                statuses.append(resp.status)
                if resp.status == 200:
                    opened.append(resp)
                else:
                    assert resp.headers["Retry-After"]
                    assert "event_streams_per_address" in (await resp.json())["error"]
                    resp.release()
            assert statuses.count(200) == ServerConfig().event_streams_per_address
            assert set(statuses[4:]) == {429}
            # a cashier with the token still gets a stream
            resp = await http.get(url, headers=AUTH)
            assert resp.status == 200
            resp.close()
            for r in opened:
                r.close()
            await asyncio.sleep(0.2)
            resp = await http.get(url)  # slots come back when streams end
            assert resp.status == 200
            resp.close()

    asyncio.run(main())


def test_streams_without_the_token_leave_the_token_holders_slots_free(tmp_path: Path) -> None:
    async def main() -> None:
        server = ServerConfig(event_streams_per_address=32)
        async with bills_app(tmp_path, server) as (srv, _), aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{srv.port}/api/events"
            responses = [await http.get(url) for _ in range(32)]
            statuses = [r.status for r in responses]
            assert statuses.count(200) == 32 - server.event_streams_per_token
            assert set(statuses[24:]) == {503}
            tokened = [await http.get(url, headers=AUTH) for _ in range(9)]
            assert [r.status for r in tokened] == [200] * 8 + [503]
            for r in responses + tokened:
                r.close()

    asyncio.run(main())


# ---- 3: credentials wherever they sit in a URL ----------------------------------------


@pytest.mark.parametrize("url", NVR_URLS)
def test_mask_url_hides_passwords_in_user_info_query_path_and_nvr_styles(url: str) -> None:
    masked = mask_url(url)
    assert SECRET not in masked
    assert "***" in masked
    assert SECRET not in mask_text(f"cannot open {url}: Connection refused")


def test_mask_url_leaves_urls_without_credentials_alone() -> None:
    for url in ("synthetic://?seed=1&fps=20&size=640x480", "rtsp://10.0.0.5/s1?channel=1",
                "/dev/video0", "file:///var/clips/a.mp4", "rtsp://admin@10.0.0.5/s1"):
        assert mask_url(url) == url


def test_stream_credentials_never_leave_in_answers_and_come_back_on_put() -> None:
    streams = [StreamConfig(id=f"cam{n}", url=url) for n, url in enumerate(NVR_URLS)]
    config = SiteConfig(streams=streams)
    daemon = MemoryDaemon(config)

    async def main() -> None:
        app = make_app(daemon, config_path=None, token=TOKEN)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0),
                              headers=AUTH) as client:
            listed = await (await client.get("/api/streams")).text()
            assert SECRET not in listed
            got = await client.get("/api/config")
            text = await got.text()
            assert SECRET not in text
            body = json.loads(text)
            # the masked config sent back keeps every camera's real URL
            resp = await client.put("/api/config", json=body)
            assert resp.status == 200, await resp.text()
            assert [s.url for s in daemon.config.streams] == list(NVR_URLS)
            # a mask that matches no stream in force is refused, never stored
            body["streams"][0]["id"] = "newcam"
            resp = await client.put("/api/config", json=body)
            assert resp.status == 422
            assert "streams.0.url" in (await resp.json())["errors"][0]
            assert [s.url for s in daemon.config.streams] == list(NVR_URLS)

    asyncio.run(main())


def test_log_lines_mask_credentials_in_urls_errors_and_tracebacks() -> None:
    import logging

    import structlog

    out = io.StringIO()
    configure_logging(json=True, stream=out)
    try:
        log = structlog.get_logger("test")
        for url in NVR_URLS:
            log.warning("source_state_changed", url=url, error=f"{url}: no answer")
            logging.getLogger("aiohttp.server").error("cannot open %s", url)
            try:
                raise ValueError(f"cannot open {url}")
            except ValueError:
                log.exception("source_crashed")
    finally:
        configure_logging(json=False, stream=io.StringIO())
    assert SECRET not in out.getvalue()
    assert out.getvalue().count("***") >= 3 * len(NVR_URLS)


# ---- 4: Host ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/bills", "/api/events", "/metrics", "/healthz"])
def test_a_foreign_host_is_refused_before_any_route(tmp_path: Path, path: str) -> None:
    async def main() -> None:
        async with bills_app(tmp_path) as (srv, _):
            status, headers, body = await _raw(
                srv.port, f"GET {path} HTTP/1.1\r\nHost: attacker.example\r\n"
                          "Connection: close\r\n\r\n".encode())
            assert status == 421
            assert "server.allowed_hosts" in json.loads(body)["error"]
            assert headers["content-security-policy"] == SECURITY_HEADERS[
                "Content-Security-Policy"]

    asyncio.run(main())


def test_the_box_answers_to_localhost_its_addresses_its_name_and_allowed_hosts(
        tmp_path: Path) -> None:
    async def main() -> None:
        server = ServerConfig(allowed_hosts=["box.example.org", ".shop.lan"])
        async with bills_app(tmp_path, server) as (srv, daemon):
            port = srv.port
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST.", "[::1]:80",
                         "cam.localhost", socket.gethostname(), "box.example.org",
                         "till2.shop.lan", "shop.lan"):
                status, _, body = await _raw(
                    port, f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                          "\r\n".encode())
                assert status == 200, (host, body)
            for host in ("box.example.org.attacker.example", "evilshop.lan", "10.9.9.9"):
                status, _, _ = await _raw(
                    port, f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                          "\r\n".encode())
                assert status == 421, host
            # the operator's list is read per request: a PUT takes effect at once
            daemon._config = SiteConfig(server=ServerConfig(allowed_hosts=["*"]))
            status, _, _ = await _raw(port, b"GET /healthz HTTP/1.1\r\nHost: any.example\r\n"
                                            b"Connection: close\r\n\r\n")
            assert status == 200

    asyncio.run(main())


# ---- 6: offers bounded in candidates and m-lines -----------------------------------------


async def _offer_sdp() -> str:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def _with_candidates(sdp: str, n: int) -> str:
    lines = sdp.split("\r\n")
    at = next(i for i, line in enumerate(lines) if line.startswith("a=candidate:"))
    extra = [f"a=candidate:{i} 1 udp 2130706431 10.{i // 250}.{i % 250}.1 {10000 + i} typ host"
             for i in range(n)]
    return "\r\n".join(lines[:at] + extra + lines[at:])


def test_an_offer_with_a_thousand_candidates_is_refused_without_stalling_the_loop(
        tmp_path: Path) -> None:
    async def main() -> None:
        view = CameraView(STREAM_ID, fps=5, size=(160, 120))
        app, service = daemon_app(tmp_path, views={STREAM_ID: view}, max_peers=64)
        await service.open()
        lag = 0.0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal lag
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.005)
                lag = max(lag, time.perf_counter() - t - 0.005)

        try:
            async with TestClient(TestServer(app, host="127.0.0.1", port=0),
                                  headers=AUTH) as client:
                sdp = _with_candidates(await _offer_sdp(), 1000)
                task = asyncio.create_task(ticker())
                resp = await client.post(f"/api/streams/{STREAM_ID}/webrtc",
                                         json={"sdp": sdp, "type": "offer"})
                stop.set()
                await task
                body = await resp.json()
                assert resp.status == 400, body
                assert f"at most {MAX_CANDIDATES}" in body["error"]
                assert lag < 0.1, f"the event loop stalled {lag * 1000:.0f} ms"
                # a browser-sized offer still gets its answer
                resp = await client.post(f"/api/streams/{STREAM_ID}/webrtc",
                                         json={"sdp": _with_candidates(await _offer_sdp(), 8),
                                               "type": "offer"})
                assert resp.status == 200, await resp.text()
        finally:
            await service.close()
            view.close()

    asyncio.run(main())


def test_an_offer_with_many_m_lines_is_refused(tmp_path: Path) -> None:
    async def main() -> None:
        view = CameraView(STREAM_ID, fps=5, size=(160, 120))
        app, service = daemon_app(tmp_path, views={STREAM_ID: view})
        await service.open()
        try:
            async with TestClient(TestServer(app, host="127.0.0.1", port=0),
                                  headers=AUTH) as client:
                pc = RTCPeerConnection()
                for _ in range(12):
                    pc.addTransceiver("video", direction="recvonly")
                await pc.setLocalDescription(await pc.createOffer())
                resp = await client.post(f"/api/streams/{STREAM_ID}/webrtc",
                                         json={"sdp": pc.localDescription.sdp, "type": "offer"})
                await pc.close()
                assert resp.status == 400
                assert "m-lines" in (await resp.json())["error"]
        finally:
            await service.close()
            view.close()

    asyncio.run(main())


# ---- 7: parser-level errors ----------------------------------------------------------------

BAD_REQUESTS = probe.BAD_REQUESTS


@pytest.mark.parametrize("request_bytes", BAD_REQUESTS, ids=["method", "line", "header"])
def test_parser_errors_answer_json_with_the_security_headers_and_no_echo(
        request_bytes: bytes) -> None:
    async def main() -> None:
        app = make_app(MemoryDaemon(SiteConfig()), config_path=None, token=TOKEN)
        async with TestServer(app, host="127.0.0.1", port=0) as srv:
            status, headers, body = await _raw(srv.port, request_bytes)
        assert status == 400
        assert headers["content-type"].startswith("application/json")
        for name, value in SECURITY_HEADERS.items():
            assert headers[name.lower()] == value
        assert b"script" not in body and b"aaaa" not in body and b"bbbb" not in body
        assert json.loads(body)["error"].startswith("bad request: ")

    asyncio.run(main())


def test_a_flood_of_malformed_requests_writes_one_short_log_line() -> None:
    out = io.StringIO()
    configure_logging(json=True, stream=out)

    async def main() -> None:
        app = make_app(MemoryDaemon(SiteConfig()), config_path=None, token=TOKEN)
        async with TestServer(app, host="127.0.0.1", port=0) as srv:
            for n in range(30):
                await _raw(srv.port, BAD_REQUESTS[n % len(BAD_REQUESTS)])

    try:
        asyncio.run(main())
    finally:
        configure_logging(json=False, stream=io.StringIO())
    lines = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    malformed = [e for e in lines if e.get("event") == "http_request_malformed"]
    assert len(malformed) == 1, lines
    assert "exception" not in malformed[0]
    assert not any(e.get("level") == "error" for e in lines), lines
    assert len(out.getvalue()) < 1000
    assert "script" not in out.getvalue()


# ---- 8: strict JSON, /api/fleet described -----------------------------------------------------


def test_duplicate_keys_are_refused_with_422(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as client:
            for method, path, body in (
                    ("PUT", "/api/config", b'{"streams": [], "streams": []}'),
                    ("POST", f"/api/bills/{BILL_IDS[0]}/corrections",
                     b'{"action": "confirm", "line": 0, "line": 1}')):
                resp = await client.request(method, path, data=body,
                                            headers={"Content-Type": "application/json"})
                assert resp.status == 422, (path, await resp.text())
                errors = (await resp.json())["errors"]
                assert any("given more than once" in e for e in errors), errors

    asyncio.run(main())


@pytest.mark.parametrize("line", [True, False, 1.0, "1", [1]])
def test_a_correction_line_must_be_a_json_integer(tmp_path: Path, line: Any) -> None:
    async def main() -> None:
        async with served(tmp_path) as client:
            resp = await client.post(f"/api/bills/{BILL_IDS[0]}/corrections",
                                     json={"action": "remove", "line": line})
            assert resp.status == 422, await resp.text()
            assert (await resp.json())["errors"][0].startswith("line:")
            bill = await (await client.get(f"/api/bills/{BILL_IDS[0]}")).json()
            assert bill["corrections"] == []

    asyncio.run(main())


def test_api_fleet_is_described_and_listed_among_the_open_reads() -> None:
    spec = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert "get" in spec["paths"]["/api/fleet"]
    assert "security" not in spec["paths"]["/api/fleet"]["get"]
    security = (ROOT / "docs" / "SECURITY.md").read_text()
    open_reads = security.split("**What stays open, and why.**")[1].split("\n\n")[0]
    assert "`/api/fleet`" in open_reads
