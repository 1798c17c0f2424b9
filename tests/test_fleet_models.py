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
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from model_variants import dishnet_variant
from mqtt_broker import Broker, Recorder, mosquitto_path
from test_daemon import _cli, _free_port, _Lines
from test_hardening_config import _site, needs_model
from test_webrtc_support import AUTH, write_token_file

from edge.billing.service import JOURNAL_FILE, BillingService
from edge.config import FleetConfig
from edge.fleet import create_fleet
from edge.fleet.adoption import DOWNLOADS_DIR
from edge.fleet.download import (
    DownloadFailed,
    DownloadRefused,
    client_timeout,
    fetch,
    partial_path,
    sha256_of,
)
from edge.fleet.messages import BadModelMessage, ModelOrder, Topics, parse_model_message
from edge.fleet.publisher import FleetPublisher
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.rollout.controller import Rollout
from edge.rollout.store import MODELS_SUBDIR, ModelStore

pytest.importorskip("aiomqtt", reason="the mqtt extra is not installed")
needs_broker = pytest.mark.skipif(mosquitto_path() is None,
                                  reason="mosquitto is not installed (apt-get install mosquitto)")

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
    stall_after: int | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)
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
        if self.stall_after is not None:
            stall, self.stall_after = self.stall_after, None
            await resp.write(body[:stall])
            await self.release.wait()  # silent until the test lets go, then gone
            assert request.transport is not None
            request.transport.close()
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


# ---- the pull, on a real pipeline, broker and file server --------------------------------

URL = "synthetic://?seed=3&fps=10&size=320x240"
GROUP = "south"
SITE_TOPIC = "dishtracker/test/model"
GROUP_TOPIC = f"dishtracker/groups/{GROUP}/model"
TERMINAL = frozenset({"promoted", "rejected", "refused", "failed", "serving", "withdrawn"})


@asynccontextmanager
async def _box(tmp_path: Path, port: int,
               **fleet: object) -> AsyncIterator[tuple[Pipeline, FleetPublisher]]:
    """A real pipeline (one synthetic camera, the shipped model, the model store)
    and the fleet publisher following its models on the broker at ``port``."""
    site = _site(tmp_path, URL)
    metrics = Metrics()
    billing = BillingService(site.storage.dir / JOURNAL_FILE, metrics, outbox=True)
    await billing.open()
    pipeline = Pipeline(site, metrics, billing=billing,
                        store=ModelStore(site.storage.dir / MODELS_SUBDIR))
    config = FleetConfig(**{
        "enabled": True, "host": "127.0.0.1", "port": port, "site": "test", "box": "box1",
        "reconnect_initial_s": 0.1, "reconnect_max_s": 0.4, "health_interval_s": 60.0,
        "models": True, "group": GROUP, "model_shadow_s": 1.0, "model_min_bills": 0,
        "model_min_agreement": 0.0, **fleet})
    try:
        await pipeline.start()
        publisher = create_fleet(config, billing, metrics, rollout=pipeline.rollout)
        assert isinstance(publisher, FleetPublisher)
        publisher.start()
        try:
            yield pipeline, publisher
        finally:
            await publisher.close()
    finally:
        await pipeline.stop()
        await billing.close()


@dataclass
class Scene:
    """One box following its models, the fleet's side of the broker, the file server."""

    pipeline: Pipeline
    fleet: FleetPublisher
    broker: Broker
    mqtt: Recorder
    files: FileServer
    models: dict[str, bytes]

    @property
    def rollout(self) -> Rollout:
        assert self.pipeline.rollout is not None
        return self.pipeline.rollout

    def order(self, model: str, **over: object) -> bytes:
        """The message naming the file of the model ``model`` as the file server has it."""
        data = self.models[model]
        return json.dumps({"version": model, "sha256": hashlib.sha256(data).hexdigest(),
                           "url": self.files.url(f"{model}.onnx"), "size": len(data),
                           **over}).encode()

    async def publish(self, topic: str, payload: bytes) -> float:
        """Publish retained at QoS 1 as the fleet would (an empty payload clears);
        the time it was sent."""
        at = time.time()
        sent = self.mqtt.client.publish(topic, payload, qos=1, retain=True)
        await asyncio.to_thread(sent.wait_for_publish, 10)
        return at

    async def outcome(self, topic: str, payload: bytes) -> dict[str, Any]:
        """:meth:`publish`, then the pull's status once it has reached a final state."""
        return await self.settled(since=await self.publish(topic, payload))

    async def settled(self, *, since: float = 0.0, after: int = 0,
                      states: frozenset[str] = TERMINAL, timeout: float = 60.0) -> dict[str, Any]:
        """The pull's status once it is in one of ``states``, reported after ``since``
        (Unix seconds) and after ``after`` model messages."""
        deadline = time.monotonic() + timeout
        while True:
            models = self.fleet.status()["models"]
            if models["messages"] > after and models["state"] in states \
                    and models["at"] >= since:
                return dict(models)
            assert time.monotonic() < deadline, models
            await asyncio.sleep(0.05)

    def states(self) -> list[str]:
        """The states published on the box's model topic, repeats folded."""
        out: list[str] = []
        for m in self.mqtt.on("/box1/model"):
            if not out or out[-1] != m.payload["state"]:
                out.append(m.payload["state"])
        return out


def _scene(tmp_path: Path, test: Callable[[Scene], Awaitable[None]], *,
           persistence: bool = False, **fleet: object) -> None:
    """Run ``test`` with a box, a broker and a file server holding dishnet-v2 and -v3."""
    models = {v: dishnet_variant(tmp_path / f"{v}.onnx", v).read_bytes()
              for v in ("dishnet-v2", "dishnet-v3")}
    broker = Broker(tmp_path / "broker", persistence=persistence)
    broker.start()

    async def main() -> None:
        async with file_server({f"{v}.onnx": b for v, b in models.items()}) as files, \
                _box(tmp_path, broker.port, **fleet) as (pipeline, publisher):
            with Recorder(broker.port, "dishtracker/test/box1") as mqtt:
                scene = Scene(pipeline, publisher, broker, mqtt, files, models)
                await test(scene)
                await scene.publish(SITE_TOPIC, b"")  # leave nothing retained
                await scene.publish(GROUP_TOPIC, b"")

    try:
        asyncio.run(main())
    finally:
        broker.stop()


@needs_broker
@needs_model
def test_a_group_model_is_pulled_and_promoted_and_a_bad_checksum_is_refused_once(
        tmp_path: Path) -> None:
    async def test(scene: Scene) -> None:
        done = await scene.outcome(GROUP_TOPIC, scene.order("dishnet-v2"))
        assert done["state"] == "promoted", done
        assert done["source"] == "group" and done["version"] == "dishnet-v2"
        size = len(scene.models["dishnet-v2"])
        assert done["bytes_done"] == done["bytes_total"] == size
        assert done["shadow"] == {"compared": 0, "agreement": None, "errors": 0}
        assert scene.rollout.status()["serving"]["version"] == "dishnet-v2"
        served = scene.rollout.store.get(done["sha256"])
        assert served.state == "serving" and served.source == "fleet"
        await scene.mqtt.until(lambda _: scene.states()[-1:] == ["promoted"])
        assert scene.states() == ["downloading", "verifying", "shadowing", "promoted"]
        assert scene.mqtt.on("/box1/model")[-1].payload["schema"] == 1
        await _refused_once(scene, scene.order(
            "dishnet-v3", sha256=hashlib.sha256(b"another file").hexdigest()))

        # not a model message: said, and nothing else happens
        done = await scene.outcome(SITE_TOPIC, b'{"version": "x"}')
        assert done["state"] == "refused", done
        assert "missing field(s) sha256, url" in done["detail"]
        # the site's message cleared: the group's applies again, and it serves already
        done = await scene.outcome(SITE_TOPIC, b"")
        assert done["state"] == "serving" and done["source"] == "group", done
        assert len(scene.files.ranges) == 3

    _scene(tmp_path, test, persistence=True)  # retained messages outlive a broker restart


async def _refused_once(scene: Scene, wrong: bytes) -> None:
    """The site's message (it wins over the group's) names a file that is not
    what it says: refused, removed, not fetched again until published anew."""
    done = await scene.outcome(SITE_TOPIC, wrong)
    assert done["state"] == "refused" and done["source"] == "site", done
    assert "sha256" in done["detail"] and "removed" in done["detail"]
    assert scene.files.ranges.count(None) == 2  # v2 once, v3 once
    store = scene.rollout.store
    assert not list((store.root / DOWNLOADS_DIR).glob("*"))
    assert "dishnet-v3" not in [e.version for e in store.entries()]
    assert scene.rollout.status()["serving"]["version"] == "dishnet-v2"
    # a broker restart hands the retained messages over again: not fetched again
    received = scene.fleet.status()["models"]["messages"]
    scene.broker.stop()
    scene.broker.start()
    await scene.settled(after=received + 1, states=frozenset({"refused"}))
    await asyncio.sleep(0.5)
    assert len(scene.files.ranges) == 2
    # published anew, it is tried again (and refused again)
    scene.mqtt.wait_subscribed()
    done = await scene.outcome(SITE_TOPIC, wrong)
    assert done["state"] == "refused" and "sha256" in done["detail"]
    assert len(scene.files.ranges) == 3


@needs_broker
@needs_model
def test_a_model_below_the_gates_is_retired_and_an_operators_retire_is_respected(
        tmp_path: Path) -> None:
    async def test(scene: Scene) -> None:
        rollout = scene.rollout
        first = rollout.status()["serving"]
        at = await scene.publish(SITE_TOPIC, scene.order("dishnet-v2"))
        shadowing = await scene.settled(since=at, states=frozenset({"shadowing"}))
        await rollout.retire(shadowing["sha256"], actor="manager")
        done = await scene.settled(since=at)
        assert done["state"] == "rejected", done
        assert "retired since a change by manager" in done["detail"]

        # withdrawn while shadowing: the fleet's candidate is retired
        at = await scene.publish(SITE_TOPIC, scene.order("dishnet-v3"))
        await scene.settled(since=at, states=frozenset({"shadowing"}))
        done = await scene.outcome(SITE_TOPIC, b"")
        assert done["state"] == "withdrawn" and "while shadowing" in done["detail"], done
        assert rollout.status()["shadow"] is None
        assert rollout.store.get(done["sha256"]).state == "retired"

        # named again, a model the fleet retired itself is tried again: below the gates
        done = await scene.outcome(SITE_TOPIC, scene.order("dishnet-v3"))
        assert done["state"] == "rejected", done
        assert "0 bill(s) compared, fewer than model_min_bills = 1000" in done["detail"]
        assert rollout.store.get(done["sha256"]).state == "retired"
        assert rollout.status()["serving"] == first

        # the manager's model, named again: the box's own decision stands
        done = await scene.outcome(SITE_TOPIC, scene.order("dishnet-v2"))
        assert done["state"] == "rejected" and "by manager" in done["detail"], done
        # a message whose version is not the file's is refused before any shadow
        done = await scene.outcome(SITE_TOPIC, scene.order("dishnet-v2", version="dishnet-v9"))
        assert done["state"] == "refused" and "'dishnet-v2'" in done["detail"], done
        assert len(scene.files.ranges) == 2

    _scene(tmp_path, test, model_shadow_s=4.0, model_min_bills=1000)


@needs_broker
@needs_model
def test_a_download_resumes_after_a_cut_and_after_a_restart_of_the_box(tmp_path: Path) -> None:
    v2 = dishnet_variant(tmp_path / "dishnet-v2.onnx", "dishnet-v2").read_bytes()
    order = json.dumps({"version": "dishnet-v2", "sha256": hashlib.sha256(v2).hexdigest(),
                        "url": "", "size": len(v2)})
    broker = Broker(tmp_path / "broker")
    broker.start()

    async def main() -> None:
        async with file_server({"v2.onnx": v2}) as files:
            files.cut_after, files.stall_after = 300_000, 600_000
            with Recorder(broker.port, "dishtracker/test/box1") as mqtt:
                async with _box(tmp_path, broker.port) as (_, fleet):
                    sent = mqtt.client.publish(SITE_TOPIC, order.replace(
                        '"url": ""', f'"url": "{files.url("v2.onnx")}"'), qos=1, retain=True)
                    await asyncio.to_thread(sent.wait_for_publish, 10)
                    deadline = time.monotonic() + 30
                    while (fleet.status()["models"].get("bytes_done") or 0) < 900_000:
                        assert time.monotonic() < deadline, fleet.status()["models"]
                        await asyncio.sleep(0.05)
                    assert fleet.status()["models"]["state"] == "downloading"
                    assert fleet.status()["models"]["bytes_total"] == len(v2)
                # the box stopped mid-file; what it had is on disk under its sha256
                files.release.set()
                part = tmp_path / "var" / MODELS_SUBDIR / DOWNLOADS_DIR / \
                    f"{hashlib.sha256(v2).hexdigest()}.part"
                held = part.stat().st_size
                assert held >= 900_000
                async with _box(tmp_path, broker.port) as (pipeline, fleet):
                    deadline = time.monotonic() + 60
                    while fleet.status()["models"]["state"] not in TERMINAL:
                        assert time.monotonic() < deadline, fleet.status()["models"]
                        await asyncio.sleep(0.05)
                    assert fleet.status()["models"]["state"] == "promoted"
                    assert pipeline.rollout is not None
                    assert pipeline.rollout.status()["serving"]["version"] == "dishnet-v2"
                cut = files.ranges[1]
                assert files.ranges == [None, cut, f"bytes={held}-"], files.ranges
                assert cut is not None and 0 < int(cut[6:-1]) <= 300_000

    try:
        asyncio.run(main())
    finally:
        broker.stop()


# ---- two real daemons (the done-when) --------------------------------------------

DAEMON_SITE = """
[server]
host = "127.0.0.1"
port = {port}
token_file = "{token_file}"

[detector]
threads = 1

[storage]
dir = "{storage}"

[fleet]
enabled = true
host = "127.0.0.1"
port = {mqtt}
site = "test"
box = "{box}"
reconnect_initial_s = 0.2
reconnect_max_s = 1.0
models = true
model_shadow_s = 3.0
model_min_bills = 0
model_min_agreement = 0.0

[[streams]]
id = "cam1"
url = "synthetic://?seed={seed}&fps=10&size=320x240"
"""


@dataclass
class _Daemon:
    """``dishtracker run`` as a child process, its HTTP base and its storage."""

    box: str
    base: str
    storage: Path
    proc: subprocess.Popen[str]
    out: _Lines

    async def get(self, http: aiohttp.ClientSession, path: str) -> Any:
        async with http.get(f"{self.base}{path}", headers=AUTH) as resp:
            assert resp.status == HTTPStatus.OK, await resp.text()
            return await resp.json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.out.join()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _start_daemon(tmp_path: Path, box: str, mqtt: int, seed: int) -> _Daemon:
    folder = tmp_path / box
    folder.mkdir()
    port = _free_port()
    site = folder / "site.toml"
    site.write_text(DAEMON_SITE.format(port=port, mqtt=mqtt, box=box, seed=seed,
                                       storage=folder / "var",
                                       token_file=write_token_file(folder / "token")))
    proc = _cli("run", "--config", str(site), merge_stderr=True)
    return _Daemon(box, f"http://127.0.0.1:{port}", folder / "var", proc, _Lines(proc.stdout))


async def _fleet_state(daemon: _Daemon, http: aiohttp.ClientSession, since: float,
                       timeout: float = 90.0) -> dict[str, Any]:
    """``GET /api/fleet``'s ``models`` once a final state reported after ``since``."""
    deadline = time.monotonic() + timeout
    while True:
        assert daemon.proc.poll() is None, "".join(daemon.out.lines)[-3000:]
        models = (await daemon.get(http, "/api/fleet"))["models"]
        if models["state"] in TERMINAL and models["at"] >= since:
            return dict(models)
        assert time.monotonic() < deadline, models
        await asyncio.sleep(0.2)


@needs_broker
@needs_model
def test_two_daemons_pull_verify_shadow_and_promote_and_refuse_a_corrupt_file(
        tmp_path: Path) -> None:
    """Issue 16's done-when: two daemons and mosquitto; a retained model message
    makes both download, verify, shadow and promote; a corrupt download is
    refused and reported, and the model in service stays."""
    v2 = dishnet_variant(tmp_path / "dishnet-v2.onnx", "dishnet-v2").read_bytes()
    v3 = dishnet_variant(tmp_path / "dishnet-v3.onnx", "dishnet-v3").read_bytes()
    broker = Broker(tmp_path / "broker")
    broker.start()
    daemons = [_start_daemon(tmp_path, f"box{i}", broker.port, seed=3 + i) for i in (1, 2)]

    async def main() -> None:
        async with file_server({"v2.onnx": v2, "v3.onnx": v3}) as files, \
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for daemon in daemons:
                await asyncio.to_thread(daemon.out.wait_for, "open http://127.0.0.1:", 120)
            with Recorder(broker.port, "dishtracker/test") as mqtt:
                at = time.time()
                sent = mqtt.client.publish(SITE_TOPIC, json.dumps({
                    "version": "dishnet-v2", "sha256": hashlib.sha256(v2).hexdigest(),
                    "url": files.url("v2.onnx"), "size": len(v2)}), qos=1, retain=True)
                await asyncio.to_thread(sent.wait_for_publish, 10)
                for daemon in daemons:
                    done = await _fleet_state(daemon, http, at)
                    assert done["state"] == "promoted", (daemon.box, done)
                    assert await _serving(daemon, http) == "dishnet-v2"
                    await mqtt.until(lambda _, box=daemon.box: _last_state(mqtt, box)
                                     == "promoted")

                # the corrupt file: its bytes are not the SHA-256 the message names
                at = time.time()
                sent = mqtt.client.publish(SITE_TOPIC, json.dumps({
                    "version": "dishnet-v3", "sha256": hashlib.sha256(v2 + b"!").hexdigest(),
                    "url": files.url("v3.onnx")}), qos=1, retain=True)
                await asyncio.to_thread(sent.wait_for_publish, 10)
                for daemon in daemons:
                    done = await _fleet_state(daemon, http, at)
                    assert done["state"] == "refused", (daemon.box, done)
                    assert "sha256" in done["detail"]
                    await mqtt.until(lambda _, box=daemon.box: _last_state(mqtt, box)
                                     == "refused")
                    assert await _serving(daemon, http) == "dishnet-v2"
                    assert not list((daemon.storage / MODELS_SUBDIR / DOWNLOADS_DIR).iterdir())
                assert files.ranges.count(None) == 4  # each file once per box

    try:
        asyncio.run(main())
    finally:
        for daemon in daemons:
            daemon.stop()
        broker.stop()
    for daemon in daemons:
        assert daemon.proc.returncode == 0, "".join(daemon.out.lines)[-3000:]


async def _serving(daemon: _Daemon, http: aiohttp.ClientSession) -> str:
    """The model version the daemon's stream detects with (``GET /api/streams``)."""
    streams = await daemon.get(http, "/api/streams")
    return str(streams[0]["model"]["version"])


def _last_state(mqtt: Recorder, box: str) -> str | None:
    messages = mqtt.on(f"/{box}/model")
    return messages[-1].payload["state"] if messages else None
