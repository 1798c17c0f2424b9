"""Bad input on the HTTP side: what API fuzzing found, malformed SDP, slow clients.

The daemon's application (``tests/api_server.py``) on a real socket. Each
regression test names the server error it fixed (a 500 before, now a 4xx
naming the field); the slow-client tests use raw sockets, since an HTTP
client library would not dribble a request.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiortc import RTCConfiguration, RTCPeerConnection
from api_server import BILL_IDS, STREAM_ID, daemon_app
from bills_support import make_bill
from test_http_api import MemoryDaemon
from test_webrtc_support import AUTH, TOKEN, CameraView

from edge.billing.service import BillingService
from edge.config import ServerConfig, SiteConfig
from edge.metrics import Metrics
from edge.web.app import make_app
from edge.web.bills import add_bill_routes
from edge.web.webrtc import HUB_KEY, WebRtcHub, add_webrtc_routes

Client = TestClient[Any, Any]
CORRECTIONS = f"/api/bills/{BILL_IDS[0]}/corrections"
OFFER = f"/api/streams/{STREAM_ID}/webrtc"
BODY_ROUTES = [("PUT", "/api/config"), ("POST", CORRECTIONS), ("POST", OFFER)]


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[Client]:
    """The daemon's application with a camera and one bill, and a client with the token."""
    view = CameraView(STREAM_ID, fps=5, size=(160, 120))
    app, service = daemon_app(tmp_path, views={STREAM_ID: view}, max_peers=256)
    await service.open()
    service.submit(make_bill(BILL_IDS[0]))
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0),
                              headers=AUTH) as client:
            for _ in range(100):
                if not service.pending:
                    break
                await asyncio.sleep(0.05)
            yield client
    finally:
        await service.close()
        view.close()


async def _offer_sdp() -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


# ---- server errors the fuzzing found ------------------------------------------------


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_json_the_decoder_refuses_is_a_400_not_a_500(tmp_path: Path, method: str,
                                                     path: str) -> None:
    # json.loads raises ValueError past 4300 digits (Python 3.11) and RecursionError
    # for deep nesting; the config and correction routes caught neither (500)
    bodies = [b'{"line": ' + b"1" * 5000 + b"}", b"[" * 6000 + b"]" * 6000]

    async def main() -> None:
        async with served(tmp_path) as client:
            for body in bodies:
                resp = await client.request(method, path, data=body)
                assert resp.status == 400, (path, resp.status)
                assert "not valid JSON" in (await resp.json())["error"]

    asyncio.run(main())


def test_non_finite_numbers_in_a_config_are_refused_with_the_field(tmp_path: Path) -> None:
    # json.loads reads NaN, Infinity and 1e999; the config took them, and
    # GET /api/config then answered NaN, which is not JSON
    body = (b'{"streams": [{"id": "a", "url": "x.mp4", "checkout": {"direction": [NaN, 1], '
            b'"line": [[1e999, 0], [5, -Infinity]]}}]}')

    async def main() -> None:
        async with served(tmp_path) as client:
            resp = await client.put("/api/config", data=body)
            assert resp.status == 422
            errors = (await resp.json())["errors"]
            assert sorted(e.split(":")[0] for e in errors) == [
                "streams.0.checkout.direction.0", "streams.0.checkout.line.0.0",
                "streams.0.checkout.line.1.1"]
            assert all("finite" in e for e in errors)
            resp = await client.get("/api/config")
            json.loads(await resp.text())  # strict JSON still

    asyncio.run(main())


def test_a_scene_path_that_is_no_file_is_refused_not_read(tmp_path: Path) -> None:
    # a NUL in the path raised ValueError (500); a device or FIFO blocked the loop
    fifo = tmp_path / "fifo"
    import os
    os.mkfifo(fifo)
    scenes = ["scene\u0000.toml", "/dev/zero", str(fifo), str(tmp_path)]

    async def main() -> None:
        async with served(tmp_path) as client:
            for scene in scenes:
                body = {"streams": [{"id": "a", "url": "x.mp4", "scene": scene}]}
                started = time.monotonic()
                resp = await client.put("/api/config", json=body)
                assert resp.status == 422, scene
                (line,) = (await resp.json())["errors"]
                assert line.startswith("streams.0.scene: ") and "cannot read" in line, line
                assert time.monotonic() - started < 5

    asyncio.run(main())


def test_a_cursor_beyond_sqlite_integers_is_refused(tmp_path: Path) -> None:
    # ?before=2**64 reached SQLite: OverflowError (500)
    async def main() -> None:
        async with served(tmp_path) as client:
            resp = await client.get("/api/bills", params={"before": str(2**64)})
            assert resp.status == 422
            (line,) = (await resp.json())["errors"]
            assert line.startswith("before: ")
            resp = await client.get("/api/events", params={"after": str(2**64)})
            assert resp.status == 422
            assert (await resp.json())["errors"][0].startswith("after: ")
            resp = await client.get("/api/events", params={"after": "9" * 5000})
            assert resp.status == 422

    asyncio.run(main())


def test_odd_keys_are_quoted_in_error_paths(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as client:
            resp = await client.put("/api/config", json={"menu": {"café.x": {"price": -1}},
                                                         "\u0006": 1, "": 2})
            body = await resp.json()
            assert resp.status == 422
            assert body["error"].startswith("the config is invalid")
            assert sorted(body["errors"]) == [
                '"": Extra inputs are not permitted',
                '"\\u0006": Extra inputs are not permitted',
                'menu."caf\\u00e9.x".name: Field required',
                'menu."caf\\u00e9.x".price: Input should be greater than or equal to 0']
            resp = await client.post(CORRECTIONS, json={"action": "add", "class_key": "tea",
                                                        "a.b": 1})
            assert (await resp.json())["errors"] == ['"a.b": Extra inputs are not permitted']

    asyncio.run(main())


# ---- malformed SDP, unknown streams, huge bodies ----------------------------------


def _mutations(offer: str, count: int, seed: int) -> list[str]:
    """``count`` offers with one line deleted, repeated, swapped or garbled each."""
    rng = random.Random(seed)
    lines = offer.split("\r\n")
    out = [offer[: len(offer) // 2], "v=0\r\n", "\r\n" * 3,
           offer.replace("a=end-of-candidates", "a=candidate:1"),  # AssertionError in aiortc
           offer + offer[offer.index("m=video"):],  # AttributeError in aiortc
           "\r\n".join(ln for ln in lines if not ln.startswith("a=fingerprint"))]
    while len(out) < count:
        ls = list(lines)
        j = rng.randrange(len(ls))
        op = rng.choice(("delete", "repeat", "swap", "garble"))
        if op == "delete":
            del ls[j]
        elif op == "repeat":
            ls.insert(j, ls[j])
        elif op == "swap":
            k = rng.randrange(len(ls))
            ls[j], ls[k] = ls[k], ls[j]
        else:
            k = rng.randrange(len(ls[j]) + 1)
            junk = rng.choice(("", " ", ":", "x", "-1", "9" * 20, "\t"))
            ls[j] = ls[j][:k] + junk + ls[j][k + 1:]
        out.append("\r\n".join(ls))
    return out


def test_malformed_offers_get_a_400_and_leave_no_peer(tmp_path: Path) -> None:
    # mutated offers raised AssertionError, AttributeError and RuntimeError out of aiortc
    # (500 each); one without a fingerprint was answered and failed later in a task
    async def main() -> None:
        async with served(tmp_path) as client:
            hub = client.app[HUB_KEY]  # type: ignore[index]
            statuses = []
            for sdp in _mutations(await _offer_sdp(), 60, seed=3):
                resp = await client.post(OFFER, json={"sdp": sdp, "type": "offer"})
                statuses.append(resp.status)
                body = await resp.json()
                assert resp.status in (200, 400), (resp.status, body, sdp)
                if resp.status == 400:
                    assert body["error"].startswith(("cannot apply the offer", "cannot answer",
                                                     "the offer has no")), body
            assert statuses[:6] == [400] * 6  # the hand-made ones, each a 500 before
            assert statuses.count(400) >= 10, statuses
            await hub.close()  # the answered ones
            assert hub.peer_count == 0

    asyncio.run(main())


def test_unknown_stream_is_404_and_costs_no_peer(tmp_path: Path) -> None:
    async def main() -> None:
        async with served(tmp_path) as client:
            sdp = await _offer_sdp()
            resp = await client.post("/api/streams/nope/webrtc", json={"sdp": sdp,
                                                                       "type": "offer"})
            assert resp.status == 404
            assert "unknown stream 'nope'" in (await resp.json())["error"]
            assert client.app[HUB_KEY].peer_count == 0  # type: ignore[index]

    asyncio.run(main())


@pytest.mark.parametrize(("method", "path"), BODY_ROUTES)
def test_a_declared_huge_body_is_413_before_it_is_sent(tmp_path: Path, method: str,
                                                       path: str) -> None:
    """Beside test_security's 413 tests (bodies sent in full or chunked): a client that
    announces 1 GiB gets its 413 at once, without the server waiting for the bytes."""
    async def main() -> None:
        async with served(tmp_path) as client:
            status, _ = await _raw(client, f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
                                           f"Authorization: Bearer {TOKEN}\r\n"
                                           f"Content-Length: {1 << 30}\r\n\r\n", timeout=5)
            assert status == 413

    asyncio.run(main())


# ---- slow clients -----------------------------------------------------------------


async def _raw(client: Client, head: str, *, timeout: float,
               dribble: bytes = b"", every_s: float = 0.0) -> tuple[int | None, float]:
    """Send ``head``, then ``dribble`` a byte every ``every_s``; the answer's status (None:
    the server closed without answering) and the seconds until it came."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    started = time.monotonic()
    try:
        writer.write(head.encode())
        await writer.drain()
        status_line = asyncio.ensure_future(reader.readline())
        for byte in dribble:
            done, _ = await asyncio.wait({status_line}, timeout=every_s)
            if done:
                break
            writer.write(bytes([byte]))
            await writer.drain()
        line = await asyncio.wait_for(status_line, timeout)
        return _status(line), time.monotonic() - started
    except (ConnectionResetError, BrokenPipeError):
        return None, time.monotonic() - started
    finally:
        writer.close()


def _status(data: bytes) -> int | None:
    return int(data.split()[1]) if data.startswith(b"HTTP/1.1 ") else None


@asynccontextmanager
async def short_timeouts(tmp_path: Path) -> AsyncIterator[Client]:
    """The control plane, WebRTC and bills with a 1 s idle and a 1 s body timeout."""
    metrics = Metrics()
    service = BillingService(tmp_path / "journal.sqlite3", metrics)
    await service.open()
    config = SiteConfig()
    app = make_app(MemoryDaemon(config), config_path=None, token=TOKEN, idle_timeout_s=1.0,
                   body_timeout_s=1.0)
    add_webrtc_routes(app, WebRtcHub({}, ServerConfig(), metrics))
    add_bill_routes(app, service, menu=lambda: config.menu)
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0),
                              headers=AUTH) as client:
            yield client
    finally:
        await service.close()


async def _others_are_served(client: Client, seconds: float) -> int:
    """Requests answered 200 by ``/healthz`` within ``seconds`` (one at a time)."""
    answered = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            async with session.get(client.make_url("/healthz"),
                                   timeout=aiohttp.ClientTimeout(total=1)) as resp:
                answered += resp.status == 200
            await asyncio.sleep(0.05)
    return answered


def test_a_silent_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    async def main() -> None:
        async with short_timeouts(tmp_path) as client:
            silent = asyncio.ensure_future(_raw(client, "", timeout=10))
            dribbled = asyncio.ensure_future(
                _raw(client, "GET /healthz HTTP/1.1\r\n", timeout=10,
                     dribble=b"Host: localhost\r\nX-Slow: " + b"a" * 100, every_s=0.2))
            assert await _others_are_served(client, 0.6) >= 5
            (status, seconds), (status2, seconds2) = await asyncio.gather(silent, dribbled)
            assert status is None and 0.9 <= seconds < 3.5, (status, seconds)
            assert status2 is None and 0.9 <= seconds2 < 3.5, (status2, seconds2)

    asyncio.run(main())


@pytest.mark.parametrize(("method", "path"), [("PUT", "/api/config"),
                                              ("POST", "/api/bills/x/corrections"),
                                              ("POST", "/api/streams/cam1/webrtc")])
def test_a_dribbled_body_gets_408_and_does_not_block_others(tmp_path: Path, method: str,
                                                            path: str) -> None:
    async def main() -> None:
        async with short_timeouts(tmp_path) as client:
            head = (f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n"
                    f"Authorization: Bearer {TOKEN}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n")
            slow = asyncio.ensure_future(_raw(client, head, timeout=10,
                                              dribble=b"{" + b" " * 150, every_s=0.1))
            assert await _others_are_served(client, 0.6) >= 5
            status, seconds = await slow
            assert status == 408 and 0.9 <= seconds < 3.5, (status, seconds)

    asyncio.run(main())
