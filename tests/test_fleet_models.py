"""A fleet pulls its models: the model message, the resumable download, and the
whole pull on real daemons with a real mosquitto (issue 16, item 4).

The downloads run against a real aiohttp file server on 127.0.0.1 that can
cut its connection part-way and that records the ``Range`` it was asked for;
the brokers are Debian's ``mosquitto`` (tests/mqtt_broker.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from edge.fleet.download import (
    DownloadFailed,
    DownloadRefused,
    client_timeout,
    fetch,
    partial_path,
    sha256_of,
)
from edge.fleet.messages import BadModelMessage, ModelOrder, Topics, parse_model_message

SHA = "ab" * 32


# ---- the model message ---------------------------------------------------------------------


def _message(**fields: object) -> bytes:
    return json.dumps({"version": "dishnet-1.2", "sha256": SHA,
                       "url": "https://models.example.org/dishnet-1.2.onnx", **fields}).encode()


def test_a_model_message_names_version_sha256_url_and_optional_size() -> None:
    assert parse_model_message(_message(size=1234, schema=1)) == ModelOrder(
        "dishnet-1.2", SHA, "https://models.example.org/dishnet-1.2.onnx", 1234)
    upper = parse_model_message(_message(sha256=SHA.upper()))
    assert upper is not None and upper.sha256 == SHA and upper.size is None


def test_an_empty_retained_payload_clears_the_model() -> None:
    assert parse_model_message(b"") is None


@pytest.mark.parametrize(("payload", "names"), [
    (b"{not json", "not UTF-8 JSON"),
    (b"\xff\xfe", "not UTF-8 JSON"),
    (b'["a"]', "expected a JSON object"),
    (_message(sha="x"), "unknown field(s) sha"),
    (json.dumps({"version": "v", "url": "http://h/m.onnx"}).encode(), "missing field(s) sha256"),
    (_message(version=""), "version: ''"),
    (_message(version=7), "version: 7"),
    (_message(sha256="ab" * 31), "sha256: "),
    (_message(sha256="zz" * 32), "sha256: "),
    (_message(url="ftp://h/m.onnx"), "not an http:// or https:// address"),
    (_message(url="https:///m.onnx"), "not an http:// or https:// address with a host"),
    (_message(url="http://h:99999/m.onnx"), "url: 'http://h:99999/m.onnx' is not a URL"),
    (_message(url=None), "url: expected an http:// or https:// address"),
    (_message(size=0), "size: 0 is not a positive number of bytes"),
    (_message(size=True), "size: True"),
    (_message(size="12"), "size: '12'"),
    (_message(schema=2), "schema: 2 is not 1"),
])
def test_a_bad_model_message_is_refused_naming_the_field(payload: bytes, names: str) -> None:
    with pytest.raises(BadModelMessage) as caught:
        parse_model_message(payload)
    assert names in str(caught.value)


def test_the_shown_url_drops_credentials_and_query() -> None:
    order = ModelOrder("v", SHA, "https://user:secret@h.example:8443/m/d.onnx?X-Sig=abc")
    assert order.shown_url == "https://h.example:8443/m/d.onnx"


def test_model_topics_of_a_box_its_site_and_its_group() -> None:
    topics = Topics("dishtracker", "canteen-north", "edge-01")
    assert topics.site_model == "dishtracker/canteen-north/model"
    assert topics.group_model("south") == "dishtracker/groups/south/model"
    assert topics.model == "dishtracker/canteen-north/edge-01/model"


# ---- the download, against a real HTTP server ---------------------------------------------


@dataclass
class FileServer:
    """Files on 127.0.0.1 with HTTP Range; ``cut_after`` bytes end the next answer early."""

    files: dict[str, bytes]
    base: str = ""
    ranges: list[str | None] = field(default_factory=list)
    cut_after: int | None = None
    honour_range: bool = True

    async def handle(self, request: web.Request) -> web.StreamResponse:
        data = self.files.get(request.match_info["name"])
        self.ranges.append(request.headers.get("Range"))
        if data is None:
            raise web.HTTPNotFound
        start = 0
        header = request.headers.get("Range")
        if header and self.honour_range:
            start = int(header.removeprefix("bytes=").rstrip("-"))
            if start >= len(data):
                raise web.HTTPRequestRangeNotSatisfiable
        resp = web.StreamResponse(status=206 if start else 200)
        resp.content_length = len(data) - start
        if start:
            resp.headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        await resp.prepare(request)
        body = data[start:]
        if self.cut_after is not None:
            cut, self.cut_after = self.cut_after, None
            await resp.write(body[:cut])
            await asyncio.sleep(0.3)  # the bytes reach the client before the cut, as on a line
            assert request.transport is not None
            request.transport.close()  # the uplink drops mid-file
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@asynccontextmanager
async def file_server(files: dict[str, bytes]) -> AsyncIterator[FileServer]:
    """A :class:`FileServer` listening on a free port of 127.0.0.1."""
    server = FileServer(dict(files))
    app = web.Application()
    app.router.add_get("/models/{name}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.base = f"http://127.0.0.1:{port}/models"
    try:
        yield server
    finally:
        await runner.cleanup()


BLOB = bytes(range(256)) * 4096  # 1 MiB


def test_a_cut_download_resumes_from_the_bytes_on_disk(tmp_path: Path) -> None:
    async def main() -> None:
        async with file_server({"m.onnx": BLOB}) as server, \
                aiohttp.ClientSession(timeout=client_timeout()) as http:
            dest = partial_path(tmp_path, hashlib.sha256(BLOB).hexdigest())
            server.cut_after = 300_000
            with pytest.raises(DownloadFailed):
                await fetch(http, server.url("m.onnx"), dest, size=len(BLOB), max_bytes=1 << 30)
            held = dest.stat().st_size
            assert 0 < held <= 300_000
            seen: list[tuple[int, int | None]] = []
            size = await fetch(http, server.url("m.onnx"), dest, size=len(BLOB),
                               max_bytes=1 << 30, progress=lambda d, t: seen.append((d, t)))
            assert server.ranges == [None, f"bytes={held}-"]
            assert size == len(BLOB) and dest.read_bytes() == BLOB
            assert sha256_of(dest) == hashlib.sha256(BLOB).hexdigest()
            assert seen[-1] == (len(BLOB), len(BLOB)) and seen[0][0] > held
            # complete on disk (a restart after the last byte): nothing is fetched again
            assert await fetch(http, server.url("m.onnx"), dest, size=len(BLOB),
                               max_bytes=1 << 30) == len(BLOB)
            assert len(server.ranges) == 2

    asyncio.run(main())


def test_a_server_that_ignores_range_sends_the_whole_file_again(tmp_path: Path) -> None:
    async def main() -> None:
        async with file_server({"m.onnx": BLOB}) as server, \
                aiohttp.ClientSession(timeout=client_timeout()) as http:
            server.honour_range = False
            dest = tmp_path / "m.part"
            dest.write_bytes(b"\0" * 1000)  # what an earlier attempt left, wrong or right
            assert await fetch(http, server.url("m.onnx"), dest, size=None,
                               max_bytes=1 << 30) == len(BLOB)
            assert server.ranges == ["bytes=1000-"] and dest.read_bytes() == BLOB

    asyncio.run(main())


def test_a_partial_file_past_the_servers_end_starts_again(tmp_path: Path) -> None:
    async def main() -> None:
        async with file_server({"m.onnx": BLOB[:5000]}) as server, \
                aiohttp.ClientSession(timeout=client_timeout()) as http:
            dest = tmp_path / "m.part"
            dest.write_bytes(b"\0" * 6000)
            with pytest.raises(DownloadFailed, match="416"):
                await fetch(http, server.url("m.onnx"), dest, size=None, max_bytes=1 << 30)
            assert not dest.exists()
            assert await fetch(http, server.url("m.onnx"), dest, size=None,
                               max_bytes=1 << 30) == 5000

    asyncio.run(main())


def test_sizes_that_disagree_are_refused_and_the_file_removed(tmp_path: Path) -> None:
    async def main() -> None:
        async with file_server({"m.onnx": BLOB}) as server, \
                aiohttp.ClientSession(timeout=client_timeout()) as http:
            dest = tmp_path / "m.part"
            with pytest.raises(DownloadRefused, match=f"the server's file is {len(BLOB)} bytes, "
                                                      "the message says 1000"):
                await fetch(http, server.url("m.onnx"), dest, size=1000, max_bytes=1 << 30)
            assert not dest.exists()
            with pytest.raises(DownloadRefused, match="over the limit of 4096"):
                await fetch(http, server.url("m.onnx"), dest, size=None, max_bytes=4096)
            assert not dest.exists()
            dest.write_bytes(b"\0" * 2000)
            with pytest.raises(DownloadRefused, match="holds 2000 bytes, more than the 1000"):
                await fetch(http, server.url("m.onnx"), dest, size=1000, max_bytes=1 << 30)
            assert not dest.exists()

    asyncio.run(main())


def test_http_errors_and_a_closed_port_are_failures_to_retry(tmp_path: Path) -> None:
    async def main() -> None:
        async with file_server({}) as server, \
                aiohttp.ClientSession(timeout=client_timeout()) as http:
            with pytest.raises(DownloadFailed, match="HTTP 404 Not Found"):
                await fetch(http, server.url("missing.onnx"), tmp_path / "m.part", size=None,
                            max_bytes=1 << 30)
            base = server.base
        async with aiohttp.ClientSession(timeout=client_timeout()) as http:
            with pytest.raises(DownloadFailed):
                await fetch(http, f"{base}/m.onnx", tmp_path / "m.part", size=None,
                            max_bytes=1 << 30)

    asyncio.run(main())
