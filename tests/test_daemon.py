"""The daemon end to end: ``dishtracker run`` as a real process with the shipped model.

Two synthetic cameras, the control plane over HTTP, an aiortc client that
receives annotated frames and reads their stamps, live config over PUT, the
sd_notify sequence on a real datagram socket, and an orderly SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from test_webrtc import connect
from test_webrtc_support import AUTH, write_token_file

from edge.config import DEFAULT_MODEL

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="shipped model missing")

CONFIG = """
[server]
host = "127.0.0.1"
port = {port}
token_file = "{token_file}"

[detector]
threads = 1

[storage]
dir = "{storage}"

[[streams]]
id = "cam1"
url = "synthetic://?seed=3&fps=20&size=320x240"

[[streams]]
id = "cam2"
url = "synthetic://?seed=4&fps=10&size=320x240"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, env: dict[str, str] | None = None,
         merge_stderr: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "edge.cli", *args], text=True, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE)


def test_invalid_config_exits_2_with_field_path(tmp_path: Path) -> None:
    bad = tmp_path / "site.toml"
    bad.write_text('[server]\nport = 70000\n[[streams]]\nid = "cam 1"\nurl = "x"\n')
    proc = _cli("run", "--config", str(bad))
    _, err = proc.communicate(timeout=60)
    assert "Traceback" not in err
    assert proc.returncode == 2
    assert "server.port" in err and "streams.0.id" in err
    proc = _cli("check-config", str(bad))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "server.port" in err


def test_unwritable_journal_folder_exits_2_before_loading_anything(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    site = tmp_path / "site.toml"
    site.write_text(f'[storage]\ndir = "{tmp_path / "a-file" / "var"}"\n')
    proc = _cli("run", "--config", str(site), "--port", "1")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in err
    assert "cannot create the journal folder" in err and "storage.dir" in err


class _Lines:
    """Collects a pipe's lines in a thread (a full pipe would block the daemon)."""

    def __init__(self, pipe: object) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: object) -> None:
        for line in pipe:  # type: ignore[attr-defined]
            self.lines.append(line)

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not printed; got {''.join(self.lines)[-3000:]}")

    def join(self) -> None:
        self._thread.join(10)


Daemon = tuple[str, subprocess.Popen[str], socket.socket, Path, _Lines]


@pytest.fixture()
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    port = _free_port()
    site = tmp_path / "site.toml"
    site.write_text(CONFIG.format(port=port, storage=tmp_path / "var",
                                  token_file=write_token_file(tmp_path / "token")))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(0.2)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"),
           "WATCHDOG_USEC": "2000000"}
    proc = _cli("run", "--config", str(site), env=env, merge_stderr=True)
    out = _Lines(proc.stdout)
    try:
        out.wait_for("open http://127.0.0.1:", 90)
        yield f"http://127.0.0.1:{port}", proc, notify, site, out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        out.join()
        if proc.stdout is not None:
            proc.stdout.close()
        notify.close()


def _notifications(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out += sock.recv(4096).decode().splitlines()
        except (TimeoutError, BlockingIOError):
            return out


async def _exercise(base: str, site: Path) -> None:
    async with aiohttp.ClientSession(headers=AUTH) as http:
        deadline = time.monotonic() + 20
        while True:
            async with http.get(f"{base}/readyz") as r:
                if r.status == 200:
                    break
            assert time.monotonic() < deadline, "never ready"
            await asyncio.sleep(0.2)
        async with http.get(f"{base}/api/streams") as r:
            streams = await r.json()
        assert [s["state"] for s in streams] == ["running", "running"]
        async with http.get(f"{base}/healthz") as r:
            assert r.status == 200

        viewer = await connect(http, base, "cam1", overlay="engineer")  # reads the stamps
        await viewer.read(15)
        assert viewer.ids == sorted(viewer.ids)
        assert sorted(viewer.latencies_ms)[len(viewer.latencies_ms) // 2] < 500
        await viewer.pc.close()

        async with http.get(f"{base}/metrics") as r:
            text = await r.text()
        assert 'dishtracker_detection_rate_hz{stream="cam1"}' in text

        async with http.get(f"{base}/api/bills") as r:
            assert r.status == 200
            assert (await r.json())["journal"] == {"fault": None, "pending": 0}
        assert (site.parent / "var" / "journal.sqlite3").is_file()

        async with http.get(f"{base}/api/config") as r:
            config = await r.json()
        bad = json.loads(json.dumps(config))
        bad["detector"]["score_threshold"] = 2.0
        async with http.put(f"{base}/api/config", json=bad) as r:
            assert r.status == 422
            assert any("detector.score_threshold" in e for e in (await r.json())["errors"])
        async with http.get(f"{base}/api/config") as r:
            assert (await r.json())["detector"]["score_threshold"] == config["detector"][
                "score_threshold"]
        good = json.loads(json.dumps(config))
        good["detector"]["score_threshold"] = 0.4
        good["streams"] = good["streams"][:1]
        async with http.put(f"{base}/api/config", json=good) as r:
            body = await r.json()
            assert r.status == 200, body
        assert "detector.score_threshold" in body["applied"]
        assert "streams.cam2" in body["applied"]
        assert "score_threshold = 0.4" in site.read_text()
        async with http.get(f"{base}/api/streams") as r:
            assert [s["id"] for s in await r.json()] == ["cam1"]


def test_daemon_serves_streams_config_and_stops_in_order(daemon: Daemon) -> None:
    base, proc, notify, site, out = daemon
    line = out.wait_for("open http://127.0.0.1:", 1)
    # the operator's own token file: the line names it, the secret stays out of the log
    assert line.strip() == f"DishTracker is running: open {base}/ (access token: " \
                           f"{site.parent / 'token'})"
    asyncio.run(_exercise(base, site))
    time.sleep(1.5)  # a watchdog ping or two while frames advance
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    out.join()
    events = [json.loads(line)["event"] for line in out.lines if line.startswith("{")]
    order = [e for e in events if e in ("daemon_stopping", "pipeline_stopped", "daemon_stopped")]
    assert order == ["daemon_stopping", "pipeline_stopped", "daemon_stopped"]
    messages = _notifications(notify)
    assert messages[0] == "READY=1" or "READY=1" in messages[:3]
    assert "WATCHDOG=1" in messages
    assert "STOPPING=1" in messages
    assert messages.index("READY=1") < messages.index("STOPPING=1")
