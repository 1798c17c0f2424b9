"""Benchmark the daemon end to end against a plain aiortc loopback, on the same machine.

    python bench/pipeline.py [--seconds 60] [--streams 3] [--fps 20] [--size 640x480] \
        [--codec h264|vp8] [--source synthetic|rtsp] [--clips DIR] [--baseline-seconds S] \
        [--json OUT]

Two systems, one after the other, each measured by the same aiortc viewers in
this process (one viewer per stream, reading the corner stamp of every frame
it decodes):

1. **loopback**: a subprocess serving N WebRTC tracks that only render stamped
   :class:`~edge.sim.live.SyntheticCamera` frames and send them (no detection,
   tracking or annotation); same codec, size and fps, and the daemon's encoders
   (:func:`~edge.web.webrtc.install_low_latency_encoders`). This is the floor the
   daemon is compared with.
2. **daemon**: ``dishtracker run --config site.toml`` with N streams and the
   default detector (the shipped model, ONNX Runtime, CPU). The streams are
   synthetic cameras rendered inside the daemon (``--source synthetic``), or
   (``--source rtsp``) what network cameras cost the box: pre-rendered H.264
   clips of the same scenes (``bench/rtsp_clips.py``, rendered once into
   ``--clips``) served in real time by a GStreamer RTSP server
   (``bench/rtsp_camera_server.py``, the system Python's PyGObject) that sends
   their packets without decoding or encoding, received over RTP/TCP. The
   clips' stamps count milliseconds from their first frame; the viewer adds
   the time the server started playing the clip, so glass-to-glass includes
   the RTSP receive and decode buffering of the daemon's source.

Per stream: delivered fps (unique frame ids decoded per second), glass-to-glass
latency (decode time in the viewer minus the stamp's capture time; p50/p95/max),
frames missed (gaps in the ids) and, for the daemon, detection rate, drops by
cause and capture-to-stage latencies (from ``/metrics``). Per server process:
CPU (process and its children, from ``/proc``) over the measured window and
RSS at its end.

The viewer is aiortc, which releases a decoded frame only when the next
frame's first packet arrives: its latencies include about one frame interval
(50 ms at 20 fps) that a browser would not see. Both systems pay it, so the
difference between them is the daemon's own cost.

Targets (printed with PASS/FAIL): daemon p95 <= 200 ms and <= loopback p95 + 80 ms,
every stream >= fps - 0.5 delivered, detection >= 10 Hz per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import av
import cv2
import numpy as np
import numpy.typing as npt
from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/pipeline.py` from a checkout
    sys.path.insert(0, str(REPO))

from edge.config import DEFAULT_MODEL  # noqa: E402
from edge.hostinfo import cpu_flags, cpu_model  # noqa: E402
from edge.sim.live import SyntheticCamera, SyntheticSpec, parse_size  # noqa: E402
from edge.slot import LatestSlot, SlotClosed  # noqa: E402
from edge.stamp import read_stamp, unwrap_time_ms  # noqa: E402

try:  # the encoders moved out of edge.web.webrtc
    from edge.web.encoders import install_low_latency_encoders
except ImportError:  # pragma: no cover - older checkouts
    from edge.web.webrtc import install_low_latency_encoders  # type: ignore[attr-defined,unused-ignore]

SCRIPT = Path(__file__).resolve()

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
P95_MAX_MS = 200.0
P95_OVER_LOOPBACK_MS = 80.0
DETECT_MIN_HZ = 10.0
FPS_SLACK = 0.5
STAGES = ("decode", "detect", "track", "annotate")


class BenchError(RuntimeError):
    """The benchmark cannot go on (a server did not start, died, or no frames came)."""


# ---------------------------------------------------------------- processes (/proc)


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is field 3, the state)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def descendants(pid: int) -> list[int]:
    """Live descendants of ``pid`` (children, grandchildren, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _identity(pid: int) -> tuple[int, str] | None:
    """``(pid, start time)``: tells a process from a later one that reused its pid."""
    fields = _stat(pid)
    return None if fields is None else (pid, fields[19])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``, its live descendants and their reaped children."""
    total = 0
    for p in (pid, *descendants(pid)):
        fields = _stat(p)
        if fields is not None:  # utime stime cutime cstime: fields 14-17
            total += sum(int(v) for v in fields[11:15])
    return total / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its live descendants."""
    total = 0
    for p in (pid, *descendants(pid)):
        fields = _stat(p)
        if fields is not None:
            total += int(fields[21]) * PAGE_SIZE
    return total


def machine_busy() -> tuple[float, float]:
    """``(busy, total)`` jiffies of all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return float(sum(values) - idle), float(sum(values))


def machine() -> dict[str, Any]:
    return {"cpu": cpu_model(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(), "av": av.__version__,
            "aiortc": __import__("aiortc").__version__}


# Runs a server with PR_SET_PDEATHSIG: the kernel sends it SIGTERM when the bench dies,
# even by SIGKILL, so no server outlives it (Linux; elsewhere the exec just happens).
# A launcher rather than preexec_fn, which is unsafe once aiortc has started threads.
_LAUNCHER = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)  # the bench died before prctl
os.execv(sys.argv[2], sys.argv[2:])
"""


class Child:
    """A server subprocess: output to a log file, stopped by SIGTERM then SIGKILL, by pid."""

    running: list[Child] = []  # noqa: RUF012  # every child still to stop, for the exit path

    def __init__(self, name: str, cmd: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        self._log_fh = log.open("wb")
        self.cmd = cmd
        launch = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *cmd]
        self.proc = subprocess.Popen(launch, stdout=self._log_fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=REPO, env=env,
                                     start_new_session=True)
        self.exit_code: int | None = None
        self.stop_seconds: float | None = None
        Child.running.append(self)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def tail(self, n: int = 40) -> str:
        if not self._log_fh.closed:
            self._log_fh.flush()
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:]) or "(log empty)"

    def check_alive(self) -> None:
        code = self.proc.poll()
        if code is not None:
            raise BenchError(f"{self.name} exited with code {code}; last log lines "
                             f"({self.log}):\n{self.tail()}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait, SIGKILL; then kill any descendant left behind (idempotent)."""
        if self in Child.running:
            Child.running.remove(self)
        kids = [i for i in map(_identity, descendants(self.pid)) if i is not None]
        if self.proc.poll() is None:
            t0 = time.monotonic()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(f"! {self.name} (pid {self.pid}) ignored SIGTERM for {timeout:.0f} s: "
                      "killing it", file=sys.stderr)
                self.proc.kill()
                self.proc.wait(10)
            self.stop_seconds = time.monotonic() - t0
        self.exit_code = self.proc.returncode
        for pid, start in kids:
            if _identity(pid) == (pid, start):  # still the same process
                print(f"! {self.name}: killing orphaned child pid {pid}", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self._log_fh.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- loopback server


class _Camera:
    """One stream's stamped synthetic camera, rendered in a thread into its readers' slots."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.camera = SyntheticCamera(spec)
        self.slots: list[LatestSlot[tuple[int, npt.NDArray[np.uint8], float]]] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread: threading.Thread | None = None

    def subscribe(self) -> LatestSlot[tuple[int, npt.NDArray[np.uint8], float]]:
        slot: LatestSlot[tuple[int, npt.NDArray[np.uint8], float]] = LatestSlot(
            asyncio.get_running_loop())
        with self.lock:
            self.slots.append(slot)
        if self.thread is None:  # render only once someone watches
            self.thread = threading.Thread(target=self._run, daemon=True)
            self.thread.start()
        return slot

    def _run(self) -> None:
        while not self.stopped.is_set():
            item = self.camera.read()
            with self.lock:
                slots = list(self.slots)
            for slot in slots:
                slot.put(item)

    def close(self) -> None:
        self.stopped.set()
        with self.lock:
            slots, self.slots = self.slots, []
        for slot in slots:
            slot.close()


class _CameraTrack(VideoStreamTrack):
    """Sends camera frames as they come (as the daemon does): I420, pts = capture time."""

    def __init__(self, camera: _Camera) -> None:
        super().__init__()
        self.slot = camera.subscribe()
        self.t0: float | None = None
        self.last_pts = -1

    async def recv(self) -> av.VideoFrame:
        try:
            _, img, capture = await self.slot.get()
        except SlotClosed:
            self.stop()
            raise MediaStreamError from None
        # converted as the daemon does (OpenCV, 0.2 ms at 640x480)
        yuv = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        if self.t0 is None:
            self.t0 = capture
        pts = max(round((capture - self.t0) * 90_000), self.last_pts + 1)
        self.last_pts = pts
        frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
        return frame


async def serve_loopback(args: argparse.Namespace) -> None:
    """The baseline server (runs in its own process): render, encode, send."""
    install_low_latency_encoders()  # same encoders and settings as the daemon
    width, height = parse_size(args.size)
    cameras = {f"cam{i + 1}": _Camera(SyntheticSpec(seed=i + 1, fps=args.fps,
                                                    size=(width, height)))
               for i in range(args.streams)}
    pcs: set[RTCPeerConnection] = set()
    caps = RTCRtpSender.getCapabilities("video").codecs
    prefs = ([c for c in caps if c.mimeType.lower() == f"video/{args.codec}"]
             + [c for c in caps if c.mimeType.lower() not in (f"video/{args.codec}",
                                                               "video/rtx")]
             + [c for c in caps if c.mimeType.lower() == "video/rtx"])

    async def offer(request: web.Request) -> web.Response:
        camera = cameras.get(request.match_info["id"])
        if camera is None:
            return web.json_response({"error": "unknown stream"}, status=404)
        body = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.add(pc)
        transceiver = pc.addTransceiver(_CameraTrack(camera), direction="sendonly")
        # Before setRemoteDescription, else aiortc 1.16 silently ignores the preference.
        transceiver.setCodecPreferences(prefs)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp,
                                  "type": pc.localDescription.type})

    app = web.Application()
    app.router.add_post("/api/streams/{id}/webrtc", offer)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _publish_port(Path(args.port_file), port)
    print(f"loopback serving {args.streams} stream(s) on port {port}", flush=True)
    await stop.wait()
    for camera in cameras.values():
        camera.close()
    await asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True)
    await runner.cleanup()


def _publish_port(path: Path, port: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(path)  # atomic: the bench never reads half a number


# ---------------------------------------------------------------- viewers (this process)


def luma(frame: av.VideoFrame) -> npt.NDArray[np.uint8]:
    """The Y plane as an (H, W) array without a colour conversion (the stamp is grey)."""
    if frame.format.name in ("yuv420p", "yuvj420p", "nv12"):
        plane = frame.planes[0]
        buf = np.frombuffer(memoryview(plane), dtype=np.uint8)
        rows = buf[: plane.height * plane.line_size].reshape(plane.height, plane.line_size)
        return rows[:, : plane.width]
    return np.asarray(frame.to_ndarray(format="gray"), dtype=np.uint8)


@dataclass
class Viewer:
    stream: str
    pc: RTCPeerConnection
    codec: str = "?"
    track: Any = None
    # (monotonic time at decode, frame id, latency ms) of every readable frame
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    unreadable: list[float] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    error: str | None = None
    # RTSP clips stamp milliseconds from their first frame: the Unix ms it played at
    time_base_ms: int | None = None

    async def run(self) -> None:
        try:
            while True:
                frame = await self.track.recv()
                now_ms = time.time() * 1000.0
                mono = time.monotonic()
                stamp = read_stamp(luma(frame))
                if stamp is None:
                    self.unreadable.append(mono)
                    continue
                frame_id, time_ms = stamp
                glass_ms = (unwrap_time_ms(time_ms, int(now_ms)) if self.time_base_ms is None
                            else self.time_base_ms + time_ms)
                self.samples.append((mono, frame_id, now_ms - glass_ms))
        except MediaStreamError:
            self.error = "track ended"


def answer_codec(sdp: str) -> str:
    """The codec the answer chose: the first payload type of its video m-line."""
    m_line = re.search(r"^m=video \d+ \S+ (\d+)", sdp, re.M)
    rtpmap = m_line and re.search(rf"^a=rtpmap:{m_line.group(1)} ([^/]+)/", sdp, re.M)
    return rtpmap.group(1).lower() if rtpmap else "?"


async def connect(http: aiohttp.ClientSession, base: str, stream: str) -> Viewer:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def _on_track(track: Any) -> None:
        if not got.done():
            got.set_result(track)

    await pc.setLocalDescription(await pc.createOffer())
    url = f"{base}/api/streams/{stream}/webrtc"
    # the engineer's overlay: the viewer reads the corner stamp, the cashier's has none
    offer = {"sdp": pc.localDescription.sdp, "type": "offer", "overlay": "engineer"}
    async with http.post(url, json=offer) as r:
        body = await r.json(content_type=None)
        if r.status != 200:
            await pc.close()
            raise BenchError(f"offer for {stream} refused: HTTP {r.status} {body}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
    viewer = Viewer(stream, pc, codec=answer_codec(str(body["sdp"])))
    viewer.track = await asyncio.wait_for(got, 10)
    viewer.task = asyncio.create_task(viewer.run(), name=f"viewer-{stream}")
    return viewer


async def close_viewers(viewers: list[Viewer]) -> None:
    for v in viewers:
        if v.task is not None:
            v.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await v.task
    await asyncio.gather(*(v.pc.close() for v in viewers), return_exceptions=True)


def pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def stream_stats(v: Viewer, t0: float, t1: float) -> dict[str, Any]:
    """Figures of one viewer over the window [t0, t1] (monotonic)."""
    seen: set[int] = set()
    latencies: list[float] = []
    repeats = 0
    for mono, fid, lat in v.samples:
        if not t0 <= mono <= t1:
            continue
        if fid in seen:
            repeats += 1  # a frame whose stamp area the encoder skipped: the old stamp
            continue
        seen.add(fid)
        latencies.append(lat)
    span = t1 - t0
    missed = (max(seen) - min(seen) + 1 - len(seen)) if seen else 0
    return {
        "stream": v.stream,
        "codec": v.codec,
        "fps": len(seen) / span if span > 0 else 0.0,
        "frames": len(seen),
        "missed": missed,
        "repeated": repeats,
        "unreadable": sum(1 for m in v.unreadable if t0 <= m <= t1),
        "latency_ms": {"p50": pct(latencies, 50), "p95": pct(latencies, 95),
                       "max": max(latencies) if latencies else None},
        "_latencies": latencies,
    }


# ---------------------------------------------------------------- /metrics


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(http: aiohttp.ClientSession, base: str) -> Samples:
    async with http.get(f"{base}/metrics") as r:
        text = await r.text()
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def daemon_metrics(before: Samples, after: Samples, streams: list[str],
                   span: float) -> dict[str, Any]:
    """Detection rate, drops by cause and capture-to-stage latency, over the window."""

    def delta(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    per: dict[str, Any] = {}
    for sid in streams:
        detected = delta("dishtracker_stage_latency_seconds_count", stream=sid, stage="detect")
        drops = {dict(lbl)["cause"]: after[key] - before.get(key, 0.0)
                 for key in after if key[0] == "dishtracker_frame_drops_total"
                 for lbl in [key[1]] if dict(lbl).get("stream") == sid}
        stages = {}
        for stage in STAGES:
            n = delta("dishtracker_stage_latency_seconds_count", stream=sid, stage=stage)
            total = delta("dishtracker_stage_latency_seconds_sum", stream=sid, stage=stage)
            stages[stage] = {"mean_ms": 1000 * total / n if n else None,
                             "p95_le_ms": _bucket_p95(before, after, sid, stage)}
        per[sid] = {
            "detect_hz": detected / span if span > 0 else 0.0,
            "detect_rate_gauge_hz": _get(after, "dishtracker_detection_rate_hz", stream=sid),
            "source_fps_gauge": _get(after, "dishtracker_stream_fps", stream=sid),
            "decoded": delta("dishtracker_frames_total", stream=sid, stage="decode"),
            "drops": {k: v for k, v in sorted(drops.items()) if v},
            "stages": stages,
        }
    calls = delta("dishtracker_detect_seconds_count")
    batch_frames = delta("dishtracker_detect_batch_size_sum")
    return {
        "streams": per,
        "detect_calls_per_s": calls / span if span > 0 else 0.0,
        "detect_call_mean_ms": 1000 * delta("dishtracker_detect_seconds_sum") / calls
        if calls else None,
        "detect_batch_mean": batch_frames / calls if calls else None,
    }


def _bucket_p95(before: Samples, after: Samples, sid: str, stage: str) -> float | None:
    """Upper bound of the histogram bucket holding the 95th percentile over the window."""
    buckets = []
    for (name, labels), value in after.items():
        lbl = dict(labels)
        if (name == "dishtracker_stage_latency_seconds_bucket" and lbl.get("stream") == sid
                and lbl.get("stage") == stage):
            buckets.append((float(lbl["le"]), value - before.get((name, labels), 0.0)))
    buckets.sort()
    if not buckets or buckets[-1][1] <= 0:
        return None
    target = 0.95 * buckets[-1][1]
    for le, count in buckets:
        if count >= target:
            return 1000 * le if le != float("inf") else None
    return None


# ---------------------------------------------------------------- one system


@dataclass
class Window:
    t0: float
    t1: float
    cpu0: float
    cpu1: float
    own0: float
    own1: float
    busy0: tuple[float, float]
    busy1: tuple[float, float]


async def measure(viewers: list[Viewer], server: Child, seconds: float, warmup: float, *,
                  http: aiohttp.ClientSession | None = None,
                  base: str | None = None) -> tuple[Window, Samples, Samples]:
    """Wait for a frame on every viewer, warm up, then measure ``seconds``."""
    deadline = time.monotonic() + 30
    while not all(v.samples for v in viewers):
        server.check_alive()
        for v in viewers:
            if v.task is not None and v.task.done():
                raise BenchError(f"viewer {v.stream} ended before its first frame: "
                                 f"{v.error or v.task.exception()!r}")
        if time.monotonic() > deadline:
            empty = [v.stream for v in viewers if not v.samples]
            unread = {v.stream: len(v.unreadable) for v in viewers}
            raise BenchError(f"no readable frame within 30 s on {empty} (unreadable stamps: "
                             f"{unread}); server log:\n{server.tail()}")
        await asyncio.sleep(0.1)
    await asyncio.sleep(warmup)
    before: Samples = {}
    if http is not None and base is not None:
        before = await scrape(http, base)
    w = Window(time.monotonic(), 0.0, cpu_seconds(server.pid), 0.0, _own_cpu(), 0.0,
               machine_busy(), (0.0, 0.0))
    end = w.t0 + seconds
    while time.monotonic() < end:
        server.check_alive()
        await asyncio.sleep(min(1.0, max(0.0, end - time.monotonic())))
    w.t1, w.cpu1, w.own1, w.busy1 = (time.monotonic(), cpu_seconds(server.pid), _own_cpu(),
                                     machine_busy())
    after: Samples = {}
    if http is not None and base is not None:
        after = await scrape(http, base)
    return w, before, after


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def summarise(name: str, viewers: list[Viewer], server: Child, w: Window) -> dict[str, Any]:
    span = w.t1 - w.t0
    streams = [stream_stats(v, w.t0, w.t1) for v in viewers]
    codecs = sorted({s["codec"] for s in streams})
    pooled = [lat for s in streams for lat in s.pop("_latencies")]
    busy = (w.busy1[0] - w.busy0[0]) / max(1.0, w.busy1[1] - w.busy0[1])
    return {
        "system": name,
        "codec": ",".join(codecs),
        "seconds": round(span, 2),
        "streams": streams,
        "latency_ms": {"p50": pct(pooled, 50), "p95": pct(pooled, 95),
                       "max": max(pooled) if pooled else None},
        "min_stream_fps": min(s["fps"] for s in streams),
        "server_pid": server.pid,
        "server_cpu_pct": 100 * (w.cpu1 - w.cpu0) / span,
        "server_rss_mib": rss_bytes(server.pid) / 2**20,
        "bench_client_cpu_pct": 100 * (w.own1 - w.own0) / span,
        "machine_busy_pct": 100 * busy,
    }


async def run_loopback(args: argparse.Namespace, tmp: Path, seconds: float) -> dict[str, Any]:
    port_file = tmp / "loopback.port"
    cmd = [sys.executable, str(SCRIPT), "--serve-loopback",
           "--port-file", str(port_file), "--streams", str(args.streams), "--fps",
           str(args.fps), "--size", args.size, "--codec", args.codec]
    server = Child("loopback server", cmd, tmp / "loopback.log", dict(os.environ))
    viewers: list[Viewer] = []
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            server.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"loopback server not listening after 60 s:\n{server.tail()}")
            await asyncio.sleep(0.1)
        base = f"http://127.0.0.1:{int(port_file.read_text())}"
        async with aiohttp.ClientSession() as http:
            for i in range(args.streams):
                viewers.append(await connect(http, base, f"cam{i + 1}"))
        w, _, _ = await measure(viewers, server, seconds, args.warmup)
        result = summarise("loopback", viewers, server, w)
    finally:
        await close_viewers(viewers)
        server.stop()
    result["server_exit_code"] = server.exit_code
    return result


DAEMON_CONFIG = """\
[server]
host = "127.0.0.1"
port = {port}
codec = "{codec}"
max_peers = {max_peers}
token_file = "{token_file}"

[storage]
dir = "{storage}"
"""

STREAM_CONFIG = """
[[streams]]
id = "cam{n}"
url = "synthetic://?seed={n}&fps={fps:g}&size={size}"
"""
RTSP_STREAM_CONFIG = """
[[streams]]
id = "cam{n}"
url = "rtsp://127.0.0.1:{port}/cam{n}"
transport = "tcp"
"""
RTSP_SERVER = SCRIPT.parent / "rtsp_camera_server.py"
# a Python with PyGObject and gst-rtsp-server (the venv has none): the system's
SYSTEM_PYTHON = os.environ.get("DISHTRACKER_GST_PYTHON", "/usr/bin/python3")


def start_cameras(args: argparse.Namespace, tmp: Path) -> tuple[Child, int]:
    """Render (or reuse) the clips and serve them as RTSP cameras ``/cam1`` …;
    returns the server and its port once it listens."""
    from bench.rtsp_clips import render_clips  # noqa: PLC0415  # PyAV encoding, only here

    seconds = int(args.seconds + args.warmup + 90)  # start-up and viewers' first frames
    print(f"  clips: {args.streams} x {seconds} s in {args.clips} (rendered once, reused)",
          flush=True)
    clips = render_clips(args.clips, args.streams, size=parse_size(args.size),
                         fps=round(args.fps), seconds=seconds)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    server = Child("rtsp", [SYSTEM_PYTHON, str(RTSP_SERVER), str(port), *map(str, clips)],
                   tmp / "rtsp.log", env)
    deadline = time.monotonic() + 20
    while "ready" not in server.tail(5).split():
        server.check_alive()
        if time.monotonic() > deadline:
            server.stop()
            raise BenchError(f"the RTSP camera server did not start:\n{server.tail()}")
        time.sleep(0.1)
    return server, port


def played_at(server: Child, stream: str) -> int | None:
    """The Unix ms at which ``stream``'s clip started to play (None: not yet)."""
    found = re.findall(rf"^playing {re.escape(stream)} (\d+)$", server.tail(1000), re.M)
    return int(found[-1]) if found else None


async def run_daemon(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    site = tmp / "site.toml"
    token = secrets.token_urlsafe(32)  # the WebRTC offer needs the access token
    token_file = tmp / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    cameras, rtsp_port = start_cameras(args, tmp) if args.source == "rtsp" else (None, 0)
    streams_config = (RTSP_STREAM_CONFIG if cameras is not None else STREAM_CONFIG)
    site.write_text(
        DAEMON_CONFIG.format(port=port, codec=args.codec, max_peers=max(8, args.streams),
                             storage=tmp / "var", token_file=token_file)
        + "".join(streams_config.format(n=i + 1, fps=args.fps, size=args.size, port=rtsp_port)
                  for i in range(args.streams)))
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    exe = shutil.which("dishtracker", path=str(Path(sys.executable).parent))
    cmd = ([exe] if exe else [sys.executable, "-m", "edge.cli"]) + [
        "run", "--config", str(site), "--log-level", "info"]
    base = f"http://127.0.0.1:{port}"
    streams = [f"cam{i + 1}" for i in range(args.streams)]
    t_start = time.monotonic()
    daemon = Child("daemon", cmd, tmp / "daemon.log", env)
    viewers: list[Viewer] = []
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10),
                                         headers={"Authorization": f"Bearer {token}"}) as http:
            ready = await _wait_ready(http, base, daemon, args.start_timeout)
            ready_s = time.monotonic() - t_start
            for sid in streams:
                viewers.append(await connect(http, base, sid))
                if cameras is not None:
                    viewers[-1].time_base_ms = await _played(cameras, sid)
            w, before, after = await measure(viewers, daemon, args.seconds, args.warmup,
                                             http=http, base=base)
        result = summarise("daemon", viewers, daemon, w)
        result["ready_after_s"] = round(ready_s, 2)
        result["readyz"] = ready
        result["metrics"] = daemon_metrics(before, after, streams, w.t1 - w.t0)
        for s in result["streams"]:
            s.update({k: v for k, v in result["metrics"]["streams"][s["stream"]].items()
                      if k in ("detect_hz", "drops")})
    except BaseException:
        await close_viewers(viewers)
        daemon.stop()
        if cameras is not None:
            cameras.stop()
        raise
    await close_viewers(viewers)
    daemon.stop()
    if cameras is not None:
        cameras.stop()
    result["source"] = args.source
    result["server_exit_code"] = daemon.exit_code
    result["server_stop_s"] = round(daemon.stop_seconds or 0.0, 2)
    result["cmd"] = " ".join(cmd)
    result["log_tail"] = daemon.tail(15).splitlines()
    return result


async def _played(cameras: Child, stream: str, timeout: float = 30.0) -> int:
    """When ``stream``'s clip started playing (the daemon asked for it at start)."""
    deadline = time.monotonic() + timeout
    while (at := played_at(cameras, stream)) is None:
        cameras.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"the RTSP camera {stream} never played:\n{cameras.tail()}")
        await asyncio.sleep(0.1)
    return at


async def _wait_ready(http: aiohttp.ClientSession, base: str, daemon: Child,
                      timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = "no answer"
    while time.monotonic() < deadline:
        daemon.check_alive()
        try:
            async with http.get(f"{base}/readyz") as r:
                last = await r.json(content_type=None)
                if r.status == 200:
                    return last
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as err:
            last = repr(err)
        await asyncio.sleep(0.25)
    raise BenchError(f"daemon not ready after {timeout:.0f} s (last /readyz: {last}); "
                     f"last log lines ({daemon.log}):\n{daemon.tail()}")


# ---------------------------------------------------------------- report


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def table(r: dict[str, Any]) -> Iterator[str]:
    daemon = r["system"] == "daemon"
    head = "| stream | fps | p50 ms | p95 ms | max ms | frames | missed | repeated | unreadable |"
    sep = "|---|---|---|---|---|---|---|---|---|"
    if daemon:
        head += " detect Hz | drops by cause |"
        sep += "---|---|"
    yield head
    yield sep
    for s in r["streams"]:
        lat = s["latency_ms"]
        row = (f"| {s['stream']} | {s['fps']:.2f} | {_ms(lat['p50'])} | {_ms(lat['p95'])} | "
               f"{_ms(lat['max'])} | {s['frames']} | {s['missed']} | {s['repeated']} | "
               f"{s['unreadable']} |")
        if daemon:
            drops = ", ".join(f"{k} {v:.0f}" for k, v in s["drops"].items()) or "none"
            row += f" {s['detect_hz']:.1f} | {drops} |"
        yield row
    lat = r["latency_ms"]
    fps = sum(s["fps"] for s in r["streams"]) / len(r["streams"])
    row = (f"| **all** | {fps:.2f} mean | {_ms(lat['p50'])} | {_ms(lat['p95'])} | "
           f"{_ms(lat['max'])} | {sum(s['frames'] for s in r['streams'])} | "
           f"{sum(s['missed'] for s in r['streams'])} | "
           f"{sum(s['repeated'] for s in r['streams'])} | "
           f"{sum(s['unreadable'] for s in r['streams'])} |")
    if daemon:
        row += " | |"
    yield row
    yield ""
    yield (f"server CPU {r['server_cpu_pct']:.0f} % of one core (process + children), "
           f"RSS {r['server_rss_mib']:.0f} MiB at the end; bench viewers "
           f"{r['bench_client_cpu_pct']:.0f} %; whole machine {r['machine_busy_pct']:.0f} % "
           f"busy; {r['seconds']:.1f} s measured; codec negotiated: {r['codec']}")


def stage_table(r: dict[str, Any]) -> Iterator[str]:
    m = r["metrics"]
    yield ("capture -> end of stage inside the daemon, ms: mean (p95 bucket bound) "
           "from /metrics")
    yield "| stream | " + " | ".join(STAGES) + " |"
    yield "|---|" + "---|" * len(STAGES)
    for sid, s in m["streams"].items():
        cells = [f"{_ms(s['stages'][st]['mean_ms'])} (<={_ms(s['stages'][st]['p95_le_ms'])})"
                 for st in STAGES]
        yield f"| {sid} | " + " | ".join(cells) + " |"
    yield ""
    yield (f"detector: {m['detect_calls_per_s']:.1f} calls/s, "
           f"{_ms(m['detect_call_mean_ms'])} ms per call, "
           f"batch {m['detect_batch_mean'] or 0:.2f} frames (mean)")


def verdicts(loop: dict[str, Any] | None, dmn: dict[str, Any], fps: float) -> list[dict[str, Any]]:
    p95 = dmn["latency_ms"]["p95"]
    out = [{"target": f"daemon p95 <= {P95_MAX_MS:.0f} ms", "value": p95,
            "pass": p95 is not None and p95 <= P95_MAX_MS}]
    if loop is not None:
        lp = loop["latency_ms"]["p95"]
        ok = p95 is not None and lp is not None and p95 <= lp + P95_OVER_LOOPBACK_MS
        out.append({"target": f"daemon p95 <= loopback p95 + {P95_OVER_LOOPBACK_MS:.0f} ms",
                    "value": None if p95 is None or lp is None else p95 - lp, "pass": ok})
    need = fps - FPS_SLACK
    worst = dmn["min_stream_fps"]
    out.append({"target": f">= {need:g} fps per stream", "value": worst, "pass": worst >= need})
    det = min(s["detect_hz"] for s in dmn["streams"])
    out.append({"target": f"detection >= {DETECT_MIN_HZ:g} Hz per stream", "value": det,
                "pass": det >= DETECT_MIN_HZ})
    return out


def model_info(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"path": str(path), "exists": False}
    data = path.read_bytes()
    return {"path": str(path), "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest()[:16],
            "mtime": time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))}


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    info = machine()
    load0 = os.getloadavg()
    base_s = args.baseline_seconds if args.baseline_seconds is not None else min(30.0,
                                                                                args.seconds)
    print(f"machine: {info['cpu']} (flags of note: {', '.join(info['cpu_flags']) or 'none'}), "
          f"{info['cores']} cores; load average at start "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} (1/5/15 min)", flush=True)
    print(f"setup: {args.streams} {args.source} stream(s) {args.size} at {args.fps:g} fps, "
          f"{args.codec}; "
          f"loopback {base_s:g} s, daemon {args.seconds:g} s, after {args.warmup:g} s warm-up",
          flush=True)
    report: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in ("serve_loopback", "port_file")},
        "machine": info, "model": model_info(DEFAULT_MODEL), "load_start": load0,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        loop_r = None
        if base_s > 0:
            print(f"\n[1/2] loopback: {args.streams} plain aiortc track(s), no processing ...",
                  flush=True)
            loop_r = await run_loopback(args, tmp, base_s)
            report["loopback"] = loop_r
            print("\n".join(["", f"### loopback (aiortc only, no processing, "
                                  f"{loop_r['seconds']:.0f} s)", "", *table(loop_r), ""]),
                  flush=True)
        print("[2/2] daemon: dishtracker run, default detector ...", flush=True)
        dmn = await run_daemon(args, tmp)
        report["daemon"] = dmn
    except BaseException:
        print(f"(logs and site.toml kept in {tmp})", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    report["load_end"] = os.getloadavg()
    report["targets"] = verdicts(loop_r, dmn, args.fps)

    out: list[str] = [""]
    m = report["model"]
    out += [f"### daemon ({dmn['seconds']:.0f} s; model {m['path']} sha256 "
            f"{m.get('sha256', '?')}, ready after {dmn['ready_after_s']:.1f} s)", "",
            *table(dmn), "", *stage_table(dmn), ""]
    if loop_r is not None and loop_r["latency_ms"]["p95"] is not None \
            and dmn["latency_ms"]["p95"] is not None:
        out.append(f"daemon p95 - loopback p95 = {dmn['latency_ms']['p95']:.0f} - "
                   f"{loop_r['latency_ms']['p95']:.0f} = "
                   f"{dmn['latency_ms']['p95'] - loop_r['latency_ms']['p95']:+.0f} ms "
                   "(p95 over all streams' frames)")
    for r in (loop_r, dmn):
        if r is not None and r["codec"] != args.codec:
            out.append(f"! {r['system']}: codec negotiated {r['codec']}, asked {args.codec}")
    for t in report["targets"]:
        value = "-" if t["value"] is None else f"{t['value']:.1f}"
        out.append(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {value}")
    load1 = report["load_end"]
    out.append(f"\nload average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f} "
               f"(start {load0[0]:.2f}); {info['cores']} cores, shared machine")
    out.append("viewers are aiortc: latencies include ~1 frame interval "
               f"({1000 / args.fps:.0f} ms) a browser would not see (aiortc releases a "
               "frame when the next one's first packet arrives)")
    out.append(f"daemon shutdown: exit code {dmn['server_exit_code']} "
               f"{dmn['server_stop_s']:.1f} s after SIGTERM")
    print("\n".join(out), flush=True)
    return report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="daemon measurement window")
    ap.add_argument("--baseline-seconds", type=float, default=None,
                    help="loopback window (default min(30, --seconds); 0 skips it)")
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--size", default="640x480", help="WxH")
    ap.add_argument("--codec", choices=["vp8", "h264"], default="h264")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds after every viewer's first frame before measuring")
    ap.add_argument("--start-timeout", type=float, default=120.0,
                    help="seconds to wait for the daemon's /readyz")
    ap.add_argument("--source", choices=["synthetic", "rtsp"], default="synthetic",
                    help="the daemon's cameras: synthetic (rendered in the daemon) or rtsp "
                         "(pre-rendered H.264 clips served by a GStreamer RTSP server: what "
                         "network cameras cost the box)")
    ap.add_argument("--clips", type=Path,
                    default=Path(tempfile.gettempdir()) / "dishtracker-bench-clips",
                    help="--source rtsp: where the clips are rendered once and reused")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--serve-loopback", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port-file", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    parse_size(args.size)  # ConfigError early, with the reason
    if args.streams < 1 or args.seconds <= 0:
        ap.error("--streams must be >= 1 and --seconds > 0")
    return args


async def bench_until_signal(args: argparse.Namespace) -> dict[str, Any]:
    """:func:`bench`, cancelled (so that every finally block stops its server) on
    SIGTERM or SIGINT; the signal's number is then raised as :class:`Interrupted`."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    got: list[int] = []

    def cancel(signum: int) -> None:
        got.append(signum)
        task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, cancel, sig)
    try:
        return await bench(args)
    except asyncio.CancelledError:
        if got:
            raise Interrupted(got[0]) from None
        raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


class Interrupted(Exception):
    """The bench was stopped by a signal (its servers are stopped already)."""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve_loopback:
        asyncio.run(serve_loopback(args))
        return 0
    try:
        report = asyncio.run(bench_until_signal(args))
    except BenchError as err:
        print(f"\nbench/pipeline.py: error: {err}", file=sys.stderr)
        return 1
    except Interrupted as sig:
        print(f"\nbench/pipeline.py: stopped by signal {sig.args[0]}", file=sys.stderr)
        return 128 + int(sig.args[0])
    except KeyboardInterrupt:
        print("\nbench/pipeline.py: interrupted", file=sys.stderr)
        return 130
    finally:
        for child in list(Child.running):
            child.stop()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=float) + "\n")
        print(f"wrote {args.json}")
    return 0  # a benchmark: FAIL lines are figures to read, not an error


if __name__ == "__main__":
    sys.exit(main())
