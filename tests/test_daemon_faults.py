"""The real daemon under faults: a camera killed again and again, a full disk under the journal.

``dishtracker run`` as a real process with the shipped model, checked from
outside over HTTP, WebRTC and its log, as an operator's monitoring would:

* the camera is GStreamer's gst-rtsp-server (tests/sources_rtsp_server.py),
  SIGKILLed by its PID and started again on the same port, three times, while
  two synthetic cameras run beside it;
* the journal's folder (``storage.dir``) is a loop-mounted ext4 image of
  8 MiB that the test fills to the last block and then frees.

Rates are frames through the whole stream loop (``dishtracker_frames_total``
with ``stage="tracked"``), read from ``/metrics`` at the window's edges.

Both tests need root (mount) or the GStreamer packages; they skip with the
reason and the command to install what is missing otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import _cli, _free_port, _Lines
from test_sources_rtsp import INSTALL, RtspServer, _gst_python
from test_webrtc import connect
from test_webrtc_support import AUTH, write_token_file

from edge.config import DEFAULT_MODEL

pytestmark = [pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="shipped model missing"),
              pytest.mark.slow]

TARGET_FPS = 19.0
"""What every stream must keep while another camera is away; the cameras give 20."""
MEAN_TOLERANCE_FPS = 0.5
WINDOW_TOLERANCE_FPS = 2.0
"""The outage windows are ~3 s each, three of them. Their mean must reach
``TARGET_FPS - MEAN_TOLERANCE_FPS`` and every single window
``TARGET_FPS - WINDOW_TOLERANCE_FPS``: on a 2-core machine loaded by others
(load average 10-12: another daemon, a training job and other test runs
beside this one) windows measured 18.2-20.2 fps and means 19.3-20.0; a stall
of the loop for 0.6 s in a window, or a blocking reconnect, would fail."""
VIDEO_FLOOR_FPS = 10.0
"""Least rate of either stream while the journal's disk is full (2 s window)."""
RECOVERY_S = 5.0
"""A camera that comes back delivers again within this. It holds
with ``reconnect_max_s = 2``: the next attempt is at most 2 s away, plus the
RTSP handshake and the first key frame (one per second at the server)."""

RTSP_SITE = """
[server]
host = "127.0.0.1"
port = {port}
token_file = "{token_file}"

[detector]
threads = 1

[storage]
dir = "{storage}"

[[streams]]
id = "door"
url = "{rtsp}"
stall_timeout_s = 2.0
reconnect_initial_s = 0.2
reconnect_max_s = 2.0

[[streams]]
id = "cam1"
url = "synthetic://?seed=3&fps=20&size=320x240"

[[streams]]
id = "cam2"
url = "synthetic://?seed=4&fps=20&size=320x240"
"""

DISK_SITE = """
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
url = "synthetic://?seed=4&fps=20&size=320x240"
"""


# ---------------------------------------------------------------- the daemon


class Daemon:
    """``dishtracker run`` on a site config; its output collected line by line."""

    def __init__(self, site: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.proc = _cli("run", "--config", str(site), merge_stderr=True)
        self.out = _Lines(self.proc.stdout)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The daemon's JSON log events called ``name``, in order."""
        out = []
        for line in list(self.out.lines):
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    event = json.loads(line)
                    if event.get("event") == name:
                        out.append(event)
        return out

    def assert_alive(self) -> None:
        code = self.proc.poll()
        assert code is None, f"the daemon exited with {code}:\n{''.join(self.out.lines)[-3000:]}"

    def terminate(self) -> int:
        """SIGTERM and wait; the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.out.join()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def running(site: Path, port: int) -> Iterator[Daemon]:
    daemon = Daemon(site, port)
    try:
        daemon.out.wait_for("open http://127.0.0.1:", 120)
        yield daemon
    finally:
        daemon.close()


async def _json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as r:
        return r.status, await r.json(content_type=None)


async def _frames(http: aiohttp.ClientSession, base: str) -> dict[str, float]:
    """``{stream: frames through the stream loop}`` from ``/metrics``."""
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "dishtracker_frames_total" and s.labels.get("stage") == "tracked":
                out[s.labels["stream"]] = float(s.value)
    return out


async def _rates(http: aiohttp.ClientSession, base: str, seconds: float,
                 streams: tuple[str, ...]) -> dict[str, float]:
    """Frames per second of ``streams`` through the stream loop over ``seconds``."""
    before, t0 = await _frames(http, base), time.monotonic()
    await asyncio.sleep(seconds)
    after, t1 = await _frames(http, base), time.monotonic()
    return {s: (after.get(s, 0.0) - before.get(s, 0.0)) / (t1 - t0) for s in streams}


async def _until(what: str, check: Callable[[], Awaitable[bool]], timeout: float,
                 every: float = 0.1) -> float:
    """Await ``check()`` (a coroutine function) until truthy; seconds it took."""
    t0 = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(every)


async def _ready(http: aiohttp.ClientSession, base: str, timeout: float = 60) -> None:
    async def ok() -> bool:
        return (await _json(http, f"{base}/readyz"))[0] == 200
    await _until("/readyz 200", ok, timeout, 0.25)


# ---------------------------------------------------------------- a camera dies, 3 times


@pytest.fixture
def camera() -> Iterator[RtspServer]:
    python = _gst_python()
    if python is None:
        pytest.skip(f"no Python with PyGObject + gst-rtsp-server; install: {INSTALL}")
    server = RtspServer(python, _free_port())
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def _door(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    status, streams = await _json(http, f"{base}/api/streams")
    assert status == 200
    return next(s for s in streams if s["id"] == "door")


async def _delivering(http: aiohttp.ClientSession, base: str, frames: int) -> bool:
    """The door camera runs and has delivered more than ``frames`` frames."""
    door = await _door(http, base)
    return bool(door["state"] == "running" and door["frames"] > frames)


def test_a_camera_killed_three_times_recovers_and_the_others_keep_20_fps(
        tmp_path: Path, camera: RtspServer) -> None:
    port = _free_port()
    site = tmp_path / "site.toml"
    site.write_text(RTSP_SITE.format(port=port, storage=tmp_path / "var", rtsp=camera.url,
                                     token_file=write_token_file(tmp_path / "token")))
    others = ("cam1", "cam2")
    windows: list[dict[str, float]] = []
    recoveries: list[float] = []

    async def main(daemon: Daemon) -> None:
        base = daemon.base
        async with aiohttp.ClientSession(headers=AUTH) as http:
            await _ready(http, base)
            for cycle in range(3):
                camera.kill()

                async def down() -> bool:
                    return bool((await _door(http, base))["state"] != "running")
                await _until("the door camera noticed as down", down, 5.0)
                # while it is away (refused reconnects, backoff): the others keep their rate
                windows.append(await _rates(http, base, 3.0, others))
                status, ready = await _json(http, f"{base}/readyz")
                assert status == 503 and any("door" in r for r in ready["reasons"]), ready
                frames = (await _door(http, base))["frames"]

                camera.start()  # returns once the server listens again
                back = time.monotonic()
                await _until(f"cycle {cycle}: the door camera delivering again",
                             functools.partial(_delivering, http, base, frames), 15.0, 0.05)
                recoveries.append(time.monotonic() - back)
                await asyncio.sleep(1.5)  # up for a while before the next kill
                daemon.assert_alive()
            await _ready(http, base, 15)
            door = await _door(http, base)
            assert door["state"] == "running" and door["fps"] > 10, door
            async with http.get(f"{base}/healthz") as r:
                assert r.status == 200

    with running(site, port) as daemon:
        asyncio.run(main(daemon))
        means = {s: sum(w[s] for w in windows) / len(windows) for s in others}
        print(f"\nrecovery after the camera returned: {[round(r, 2) for r in recoveries]} s; "
              f"other streams while it was down: "
              f"{[{s: round(v, 1) for s, v in w.items()} for w in windows]} fps "
              f"(mean {({s: round(v, 2) for s, v in means.items()})})")
        assert all(r < RECOVERY_S for r in recoveries), recoveries
        assert all(v >= TARGET_FPS - MEAN_TOLERANCE_FPS for v in means.values()), means
        assert all(v >= TARGET_FPS - WINDOW_TOLERANCE_FPS for w in windows
                   for v in w.values()), windows
        assert not daemon.events("stage_crashed")
        assert daemon.terminate() == 0
        daemon.out.join()
    assert "Traceback" not in "".join(daemon.out.lines)


# ---------------------------------------------------------------- the journal's disk fills


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB ext4 filesystem, loop-mounted (root only); yields its mount point."""
    mkfs = shutil.which("mkfs.ext4") or shutil.which("mkfs.ext4", path="/sbin:/usr/sbin")
    if mkfs is None:
        pytest.skip("mkfs.ext4 missing; install: apt-get install -y e2fsprogs")
    if os.geteuid() != 0:
        pytest.skip("mounting a loop filesystem needs root")
    image, mnt = tmp_path / "disk.img", tmp_path / "disk"
    with image.open("wb") as f:
        f.truncate(8 * 2**20)
    subprocess.run([mkfs, "-q", "-F", "-m", "0", str(image)], check=True, capture_output=True)
    mnt.mkdir()
    done = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True,
                          text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot loop-mount an ext4 image here (a container without "
                    f"CAP_SYS_ADMIN or /dev/loop*): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Write a file into ``folder`` until the filesystem has no block left; returns it."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (2**16, 2**12, 2**10):  # then whatever smaller blocks are left
            block = b"\0" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
    return filler


async def _bills(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    status, page = await _json(http, f"{base}/api/bills?limit=200")
    assert status == 200, page
    return dict(page)


async def _cashier_view_goes_on(http: aiohttp.ClientSession, base: str,
                                committed: set[str]) -> tuple[dict[str, float], int]:
    """While the journal fails: frames flow, streams run, live video plays, the
    committed bills read back. Returns the streams' rates and the bills pending."""
    rates = await _rates(http, base, 2.0, ("cam1", "cam2"))
    # frames advance; a loop blocked on the journal would show ~0 (the 19 fps
    # target is the camera test's: here other people's load is not the point)
    assert all(v > VIDEO_FLOOR_FPS for v in rates.values()), rates
    status, streams = await _json(http, f"{base}/api/streams")
    assert status == 200 and [s["state"] for s in streams] == ["running", "running"]
    viewer = await connect(http, base, "cam1", overlay="engineer")  # reads the stamps
    await viewer.read(10)
    await viewer.pc.close()
    async with http.get(f"{base}/healthz") as r:
        assert r.status == 200
    page = await _bills(http, base)
    assert {b["bill_id"] for b in page["bills"]} == committed
    return rates, int(page["journal"]["pending"])


def test_full_disk_keeps_video_flowing_reports_the_fault_and_loses_no_bill(
        tmp_path: Path, small_disk: Path) -> None:
    port = _free_port()
    storage = small_disk / "var"
    site = tmp_path / "site.toml"
    site.write_text(DISK_SITE.format(port=port, storage=storage,
                                     token_file=write_token_file(tmp_path / "token")))
    seen: dict[str, Any] = {}

    async def main(daemon: Daemon) -> None:
        base = daemon.base
        async with aiohttp.ClientSession(headers=AUTH) as http:
            await _ready(http, base)

            async def two_bills() -> bool:
                return len((await _bills(http, base))["bills"]) >= 2
            await _until("two bills committed", two_bills, 40, 0.25)
            before = {b["bill_id"]: b for b in (await _bills(http, base))["bills"]}
            baseline = await _rates(http, base, 2.0, ("cam1", "cam2"))

            filler = fill(small_disk)
            free = shutil.disk_usage(small_disk).free

            async def faulted() -> bool:
                page = await _bills(http, base)
                return page["journal"]["fault"] is not None and page["journal"]["pending"] >= 1
            await _until("a bill pending on the full disk", faulted, 40, 0.25)
            status, ready = await _json(http, f"{base}/readyz")
            assert status == 503 and any("cannot commit" in r for r in ready["reasons"]), ready
            assert any("disk is full" in r for r in ready["reasons"]), ready

            rates, pending = await _cashier_view_goes_on(http, base, set(before))
            daemon.assert_alive()

            filler.unlink()  # space is back

            async def drained() -> bool:
                page = await _bills(http, base)
                return bool(page["journal"] == {"fault": None, "pending": 0})
            took = await _until("the pending bills committed", drained, 45, 0.25)
            await _ready(http, base, 10)
            after = {b["bill_id"]: b for b in (await _bills(http, base))["bills"]}
            seen.update(before=before, after=after, pending=pending, rates=rates,
                        baseline=baseline, free=free, took=took)

    with running(site, port) as daemon:
        asyncio.run(main(daemon))
        assert daemon.terminate() == 0  # commits what closed meanwhile
        daemon.out.join()
        closed = [e["bill_id"] for e in daemon.events("bill_committed")]
        failed = daemon.events("bill_commit_failed")
        recovered = daemon.events("journal_recovered")
    print(f"\n{len(seen['before'])} bills before the disk filled ({seen['free']} bytes left "
          f"after filling); {seen['pending']} pending while full, committed "
          f"{seen['took']:.1f} s after space returned; video meanwhile "
          f"{ {k: round(v, 1) for k, v in seen['rates'].items()} } fps (before "
          f"{ {k: round(v, 1) for k, v in seen['baseline'].items()} }); "
          f"{len(failed)} failed commit attempts; {len(closed)} bills closed in all")
    assert failed and all("disk is full" in e["error"] for e in failed)
    assert recovered

    before, after = seen["before"], seen["after"]
    for bill_id, bill in before.items():  # nothing committed is lost or changed
        assert after[bill_id]["seq"] == bill["seq"]
        assert after[bill_id]["items"] == bill["items"]
    with sqlite3.connect(storage / "journal.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = [r[0] for r in db.execute("SELECT bill_id FROM bills ORDER BY seq")]
    db.close()
    assert len(rows) == len(set(rows)), "a bill was committed twice"
    # every bill closed is in the journal once, in the order it closed; bills are
    # announced once durable, so none may be left uncommitted at the stop
    assert rows == closed and not daemon.events("bills_not_committed")
    assert len(rows) >= len(before) + seen["pending"]
