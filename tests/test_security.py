"""Access, limits and headers of the HTTP side, on the daemon's own application.

The app is the one ``dishtracker run`` serves (``edge.daemon._web_app``: control
plane, WebRTC, bills API, static page) on a real aiohttp server on 127.0.0.1,
with a real billing service on a journal in ``tmp_path``. Its routes are
enumerated, so a route added later is checked without anyone listing it here:
every state-changing one must refuse a missing or wrong token, and every read
must be either on the open list below or guarded.
"""

from __future__ import annotations

import asyncio
import datetime
import hmac
import ipaddress
import json
import os
import re
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection
from bills_support import jpeg, make_bill
from test_http_api import MemoryDaemon
from test_webrtc import connect, running_server
from test_webrtc_support import AUTH, STATIC_DIR, TOKEN, write_token_file

from edge.billing.service import BillingService
from edge.config import ServerConfig, SiteConfig, StorageConfig
from edge.daemon import _web_app, browse_urls, start_line
from edge.errors import ConfigError
from edge.metrics import Metrics
from edge.web import access
from edge.web.access import AccessToken, TokenFileError, load_token
from edge.web.app import MAX_BODY_BYTES
from edge.web.bills import MAX_CORRECTION_BYTES
from edge.web.headers import SECURITY_HEADERS
from edge.web.limits import RateLimiter
from edge.web.tls import server_ssl_context
from edge.web.webrtc import MAX_OFFER_BYTES, PEER_RETRY_AFTER_S, WebRtcHub

Client = TestClient[Any, Any]

OPEN_READS = {
    "/", "/static/{path}", "/healthz", "/readyz", "/metrics", "/api/streams",
    "/api/config/schema", "/api/menu", "/api/bills", "/api/bills/{bill_id}", "/api/events",
    "/api/openapi.json", "/report.html", "/menu.html", "/models.html", "/label.html",
}
"""GET routes anyone on the network may read (docs/SECURITY.md says why). A new GET
route fails :func:`test_every_read_is_open_on_purpose_or_guarded` until it is put
here or guarded with ``edge.web.access.protect_reads``."""

SAMPLE = {"bill_id": "cam1-1-1", "id": "cam1", "path": "app.js", "key": "burger",
          "model_id": "57a96d685518", "frame_id": "1", "question_id": "0123456789abcdef"}
"""Values for the path parameters of the routes."""

WRONG = {"Authorization": "Bearer " + "x" * len(TOKEN)}


@asynccontextmanager
async def daemon_app(tmp_path: Path, *, token: str | access.Keyring = TOKEN,
                     **server: object) -> AsyncIterator[Client]:
    """The daemon's application guarded by ``token`` (default :data:`TOKEN`), one bill
    with a snapshot in its journal."""
    # storage.dir in the test's folder: the labelling routes open their workspace there
    config = SiteConfig(server=ServerConfig.model_validate(server),
                        storage=StorageConfig(dir=tmp_path / "var"))
    metrics = Metrics()
    service = BillingService(tmp_path / "journal.sqlite3", metrics)
    await service.open()
    hub = WebRtcHub({}, config.server, metrics)
    daemon = MemoryDaemon(config)
    # MemoryDaemon stands in for the pipeline: _web_app reads only what DaemonControl offers
    app = _web_app(daemon, hub, service, None, token)  # type: ignore[arg-type]
    service.submit(make_bill("cam1-1-1", snapshot=jpeg(1)))
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            for _ in range(100):
                if service.pending == 0:
                    break
                await asyncio.sleep(0.05)
            yield client
    finally:
        await service.close()


def _app(client: Client) -> web.Application:
    app = client.app
    assert isinstance(app, web.Application)
    return app


def _routes(app: web.Application) -> list[tuple[str, str]]:
    """``(method, canonical path)`` of every route of ``app``."""
    return sorted({(r.method, r.resource.canonical) for r in app.router.routes()
                   if r.resource is not None})


def _path(canonical: str) -> str:
    return re.sub(r"\{(\w+)[^}]*\}", lambda m: SAMPLE[m.group(1)], canonical)


def _guarded(app: web.Application) -> list[tuple[str, str]]:
    protected = app[access.PROTECTED_READS_KEY]
    return [(m, c) for m, c in _routes(app)
            if m not in access.SAFE_METHODS or c in protected]


async def _request(client: Client, method: str, canonical: str,
                   headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
    """``(status, headers, body)`` of one request to a route (``{}`` as the body of writes)."""
    body = b"{}" if method not in access.SAFE_METHODS else None
    async with client.request(method, _path(canonical), data=body, headers=headers) as resp:
        return resp.status, resp.headers, await resp.read()


def test_every_state_changing_route_refuses_a_missing_or_wrong_token(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_app(tmp_path) as client:
            guarded = _guarded(_app(client))
            assert {("PUT", "/api/config"), ("POST", "/api/streams/{id}/webrtc"),
                    ("POST", "/api/bills/{bill_id}/corrections"), ("GET", "/api/config"),
                    ("GET", "/api/bills/{bill_id}/snapshot.jpg")} <= set(guarded)
            for method, canonical in guarded:
                where = f"{method} {canonical}"
                for headers, error in ((None, None), (WRONG, "invalid_token"),
                                       ({"Authorization": f"Basic {TOKEN}"}, None),
                                       ({"Authorization": "Bearer "}, None)):
                    status, answer, body = await _request(client, method, canonical, headers)
                    assert status == 401, (where, headers, status)
                    challenge = answer["WWW-Authenticate"]
                    assert challenge.startswith('Bearer realm="dishtracker"'), where
                    assert (f'error="{error}"' in challenge) == (error is not None), where
                    if method != "HEAD":
                        assert "token" in json.loads(body)["error"], where
                status, _, body = await _request(client, method, canonical, AUTH)
                assert status not in (401, 403), (where, body)
                status, _, _ = await _request(client, method, canonical,
                                              {"Authorization": f"bearer   {TOKEN}  "})
                assert status not in (401, 403), where  # the scheme is case-insensitive

    asyncio.run(main())


def test_every_read_is_open_on_purpose_or_guarded(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_app(tmp_path) as client:
            app = _app(client)
            guarded = set(_guarded(app))
            open_reads = {c for m, c in _routes(app) if m == "GET" and (m, c) not in guarded}
            assert open_reads == OPEN_READS
            for canonical in sorted(OPEN_READS - {"/api/events"}):
                status, _, _ = await _request(client, "GET", canonical)
                assert status == 200, canonical

    asyncio.run(main())


def test_a_correction_with_the_token_is_stored(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_app(tmp_path) as client:
            url = "/api/bills/cam1-1-1/corrections"
            resp = await client.post(url, json={"action": "confirm", "line": 2})
            assert resp.status == 401
            assert (await (await client.get("/api/bills/cam1-1-1")).json())["corrections"] == []
            resp = await client.post(url, json={"action": "confirm", "line": 2}, headers=AUTH)
            assert resp.status == 200
            assert [c["action"] for c in (await resp.json())["corrections"]] == ["confirm"]
            resp = await client.get("/api/bills/cam1-1-1/snapshot.jpg", headers=AUTH)
            assert resp.status == 200 and (await resp.read())[:2] == b"\xff\xd8"

    asyncio.run(main())


def test_the_token_is_compared_in_constant_time(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)  # as edge.web.access calls it

    async def main() -> None:
        async with daemon_app(tmp_path) as client:
            resp = await client.put("/api/config", data=b"[]", headers=WRONG)
            assert resp.status == 401
            resp = await client.put("/api/config", data=b"[]", headers=AUTH)
            assert resp.status == 422

    asyncio.run(main())
    assert compared == [(WRONG["Authorization"][7:].encode(), TOKEN.encode()),
                        (TOKEN.encode(), TOKEN.encode())]


@pytest.mark.parametrize(("method", "path", "limit"), [
    ("POST", "/api/bills/cam1-1-1/corrections", MAX_CORRECTION_BYTES),
    ("POST", "/api/streams/cam1/webrtc", MAX_OFFER_BYTES),
    ("PUT", "/api/config", MAX_BODY_BYTES),
])
def test_bodies_over_the_limit_are_refused_with_413(tmp_path: Path, method: str, path: str,
                                                    limit: int) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # chunked: no Content-Length to go by
        for _ in range(limit // 4096 + 2):
            yield b" " * 4096

    async def main() -> None:
        async with daemon_app(tmp_path) as client:
            for body in (b" " * (limit + 1), chunks()):
                resp = await client.request(method, path, data=body, headers=AUTH)
                assert resp.status == 413, (path, resp.status)
                message = (await resp.json())["error"]
                assert str(limit) in message, message
            resp = await client.request(method, path, data=b" " * (limit + 1))
            assert resp.status == 401  # no token: refused before the body is read

    asyncio.run(main())


def test_offers_are_rate_limited_per_client(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_app(tmp_path, offer_burst=3, offers_per_minute=6) as client:
            url = "/api/streams/cam1/webrtc"
            for _ in range(5):  # without the token: refused before they count
                assert (await client.post(url, json={})).status == 401
            for _ in range(3):
                resp = await client.post(url, json={"sdp": "v=0", "type": "offer"}, headers=AUTH)
                assert resp.status == 404  # no camera cam1 here: but past the limiter
            resp = await client.post(url, json={"sdp": "v=0", "type": "offer"}, headers=AUTH)
            assert resp.status == 429
            assert 1 <= int(resp.headers["Retry-After"]) <= 10  # one offer per 10 s
            error = (await resp.json())["error"]
            assert "server.offer_burst" in error and "127.0.0.1" in error

    asyncio.run(main())


def test_rate_limiter_refills_and_keeps_clients_apart() -> None:
    now = [0.0]
    limiter = RateLimiter(0.5, 2, clock=lambda: now[0], max_keys=2)
    assert [limiter.take("a") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("a") == pytest.approx(2.0)  # one token every 2 s
    assert limiter.take("b") == 0.0  # another client has its own bucket
    now[0] = 1.0
    assert limiter.take("a") == pytest.approx(1.0)
    now[0] = 2.0
    assert limiter.take("a") == 0.0
    now[0] = 100.0
    assert [limiter.take("a") for _ in range(3)][:2] == [0.0, 0.0]  # never above the burst
    limiter.take("c")  # a third key: the least recently seen ("b") is forgotten
    assert set(limiter._buckets) == {"a", "c"}
    with pytest.raises(ValueError, match="rate_per_s"):
        RateLimiter(0.0, 1)


def test_peer_cap_answers_503_with_retry_after() -> None:
    async def main() -> None:
        async with running_server(max_peers=1) as server, \
                aiohttp.ClientSession(headers=AUTH) as session:
            viewer = await connect(session, server.url)
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            async with session.post(f"{server.url}/api/streams/cam1/webrtc",
                                    json={"sdp": pc.localDescription.sdp,
                                          "type": "offer"}) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == str(int(PEER_RETRY_AFTER_S))
                assert "max_peers" in (await resp.json())["error"]
            await pc.close()
            await viewer.pc.close()

    asyncio.run(main())


async def _raw(client: Client, target: str) -> tuple[int, dict[str, str], bytes]:
    """Send a request line byte for byte (HTTP clients normalise ``..`` away)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("target", [
    "/static/../app.py", "/static/../../../../etc/passwd", "/static/%2e%2e/app.py",
    "/static/%2e%2e%2fapp.py", "/static/..%2f..%2fconfig.py", "/static/%252e%252e/app.py",
    "/static/..%5capp.py", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
    "/static/.%2e/.%2e/config.py", "/static/%2E%2E/app.py", "/static/app.js%00.py",
])
def test_static_files_cannot_escape_their_folder(tmp_path: Path, target: str) -> None:
    async def main() -> None:
        async with daemon_app(tmp_path) as client:
            status, headers, body = await _raw(client, target)
            assert status in (403, 404), (target, status)
            assert b"root:" not in body and b"import" not in body
            assert headers["content-security-policy"] == SECURITY_HEADERS[
                "Content-Security-Policy"]
            assert "error" in json.loads(body)

    asyncio.run(main())


def test_every_response_carries_the_security_headers(tmp_path: Path) -> None:
    async def main() -> None:
        async with daemon_app(tmp_path) as client:
            app = _app(client)
            requests: list[tuple[str, str, dict[str, str] | None]] = [
                ("GET", _path(c), None) for m, c in _routes(app) if m == "GET"]
            requests += [("GET", "/no/such/page", None), ("DELETE", "/api/bills", None),
                         ("PUT", "/api/config", None), ("PUT", "/api/config", AUTH),
                         ("POST", "/api/streams/cam1/webrtc", AUTH),
                         ("GET", "/api/bills?limit=0", None)]
            statuses = set()
            for method, path, headers in requests:
                async with client.request(method, path, headers=headers,
                                          data=b"{}" if method != "GET" else None) as resp:
                    statuses.add(resp.status)
                    for name, value in SECURITY_HEADERS.items():
                        assert resp.headers.get(name) == value, (method, path, name)
            assert {200, 401, 404, 405, 422} <= statuses
            resp = await client.get("/static/app.js")
            assert resp.headers["Content-Type"].split(";")[0] in ("text/javascript",
                                                                  "application/javascript")

    asyncio.run(main())
    csp = SECURITY_HEADERS["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self'" in csp and "unsafe" not in csp


def test_the_page_has_no_inline_script_or_style() -> None:
    for page in STATIC_DIR.glob("*.html"):
        html = page.read_text()
        scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I)
        assert scripts, page
        for attrs, body in scripts:
            assert 'src="/static/' in attrs and body.strip() == "", (page, attrs)
        assert not re.search(r"\son[a-z]+\s*=", html, re.I), page  # onclick= and the like
        assert not re.search(r"\sstyle\s*=", html, re.I) and "<style" not in html, page
        assert "javascript:" not in html


def _server(tmp_path: Path, **fields: object) -> tuple[ServerConfig, StorageConfig]:
    return ServerConfig.model_validate(fields), StorageConfig(dir=tmp_path / "var")


def test_token_file_is_generated_once_owner_only(tmp_path: Path) -> None:
    server, storage = _server(tmp_path)
    first = load_token(server, storage)
    path = tmp_path / "var" / "token"
    assert (first.path, first.created) == (path, True)
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(first.value) >= 43 and re.fullmatch(r"[A-Za-z0-9_-]+", first.value)
    assert sorted(p.name for p in path.parent.iterdir()) == ["token"]  # no temp file left
    again = load_token(server, storage)
    assert (again.value, again.created) == (first.value, False)
    assert first.value not in repr(first)
    assert first.url("http://box:8080/") == f"http://box:8080/#token={first.value}"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o606])
def test_token_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    server, storage = _server(tmp_path)
    path = load_token(server, storage).path
    path.chmod(mode)
    with pytest.raises(TokenFileError, match=rf"mode {mode:04o}.*chmod 600 {re.escape(str(path))}"):
        load_token(server, storage)


def test_bad_token_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "mine")
    server, storage = _server(tmp_path, token_file=str(path))
    assert load_token(server, storage) == AccessToken(TOKEN, path, created=False)
    for content in ("short\n", "has a space in it 0123456789", ""):
        write_token_file(path, content)
        with pytest.raises(TokenFileError, match="holds no usable token"):
            load_token(server, storage)
    link = tmp_path / "link"
    link.symlink_to(write_token_file(path))
    with pytest.raises(TokenFileError, match="symbolic link"):
        load_token(*_server(tmp_path, token_file=str(link)))
    with pytest.raises(TokenFileError, match="does not exist"):
        load_token(*_server(tmp_path, token_file=str(tmp_path / "absent")))
    assert not (tmp_path / "absent").exists()  # an operator's file is never invented
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    with pytest.raises(TokenFileError, match="not a regular file"):
        load_token(*_server(tmp_path, token_file=str(folder)))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_token_file_of_another_user_is_refused(tmp_path: Path) -> None:
    path = write_token_file(tmp_path / "theirs")
    os.chown(path, 65534, 65534)
    with pytest.raises(TokenFileError, match="belongs to uid 65534"):
        load_token(*_server(tmp_path, token_file=str(path)))


def test_daemon_refuses_a_readable_token_file_with_exit_2(tmp_path: Path) -> None:
    token = write_token_file(tmp_path / "token")
    token.chmod(0o644)
    site = tmp_path / "site.toml"
    site.write_text(f'[server]\ntoken_file = "{token}"\n[storage]\ndir = "{tmp_path / "var"}"\n')
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(site),
                           "--port", "1"], check=False, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"the token file {token} has mode 0644" in proc.stderr
    assert TOKEN not in proc.stdout + proc.stderr


def test_start_line_prints_the_token_once(tmp_path: Path) -> None:
    url = "http://127.0.0.1:8080/"
    made = AccessToken(TOKEN, tmp_path / "token", created=True)
    kept = AccessToken(TOKEN, tmp_path / "token", created=False)
    assert start_line(url, made, interactive=False) == \
        f"DishTracker is running: open {url}#token={TOKEN}"
    assert start_line(url, kept, interactive=True).endswith(f"#token={TOKEN}")
    line = start_line(url, kept, interactive=False)  # e.g. the systemd journal
    assert TOKEN not in line and str(tmp_path / "token") in line
    assert browse_urls("127.0.0.1", 8443, tls=True) == ["https://127.0.0.1:8443/"]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dishtracker test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def test_tls_serves_https_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server = ServerConfig(tls_cert=cert, tls_key=key)
    context = server_ssl_context(server)
    assert context is not None and context.minimum_version >= ssl.TLSVersion.TLSv1_2

    async def main() -> None:
        service = BillingService(tmp_path / "journal.sqlite3", Metrics())
        await service.open()
        daemon = MemoryDaemon(SiteConfig())
        app = _web_app(daemon, WebRtcHub({}, server, Metrics()), service,  # type: ignore[arg-type]
                       None, TOKEN)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        port = runner.addresses[0][1]
        trust = ssl.create_default_context(cafile=str(cert))
        try:
            async with aiohttp.ClientSession() as http:
                async with http.get(f"https://127.0.0.1:{port}/healthz", ssl=trust) as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Security-Policy"]
                async with http.put(f"https://127.0.0.1:{port}/api/config", ssl=trust,
                                    data=b"{}") as resp:
                    assert resp.status == 401
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await http.get(f"https://127.0.0.1:{port}/healthz")  # not trusted
                with pytest.raises(aiohttp.ClientError):
                    await http.get(f"http://127.0.0.1:{port}/healthz")  # plain HTTP: no
        finally:
            await runner.cleanup()
            await service.close()

    asyncio.run(main())


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    assert server_ssl_context(ServerConfig()) is None
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        ServerConfig(tls_cert=cert)
    with pytest.raises(ConfigError, match=r"server\.tls_key: .* is not a file"):
        server_ssl_context(ServerConfig(tls_cert=cert, tls_key=tmp_path / "nope.pem"))
    (tmp_path / "other").mkdir()
    _, other_key = _self_signed(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"cannot load .*PEM certificate and its private key"):
        server_ssl_context(ServerConfig(tls_cert=cert, tls_key=other_key))  # not its key
    with pytest.raises(ConfigError, match=r"server\.tls_cert/tls_key: cannot load"):
        server_ssl_context(ServerConfig(tls_cert=key, tls_key=key))  # a key is no certificate
