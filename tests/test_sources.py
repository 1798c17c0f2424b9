"""Sources on real media: PyAV-written clips, damaged copies, synthetic camera, backoff."""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from sources_media import (
    SQUARE_STEP,
    Drain,
    smash,
    square_x,
    truncate,
    wait_for,
    write_clip,
    write_wav,
)

from edge.config import StreamConfig
from edge.errors import ConfigError
from edge.metrics import Metrics
from edge.slot import BlockingSlot, LatestSlot
from edge.sources import (
    AvSource,
    Backoff,
    Source,
    SourceState,
    SyntheticSource,
    av_input,
    make_source,
    mask_url,
)

SYNTHETIC = "synthetic://?seed=3&fps=20&size=320x240"


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(main())


def value(metrics: Metrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


async def start(config: StreamConfig, metrics: Metrics, delay_s: float = 0.0
                ) -> tuple[Source, Drain, asyncio.Task[None], asyncio.Task[None]]:
    source = make_source(config, metrics, asyncio.get_running_loop())
    drain = Drain(source, delay_s=delay_s)
    return source, drain, asyncio.create_task(source.run()), asyncio.create_task(drain.run())


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    path = tmp_path_factory.mktemp("media") / "square.mp4"
    return path, write_clip(path)


def test_file_delivers_every_frame_in_order_without_drops(clip: tuple[Path, list[int]]) -> None:
    path, _ = clip

    async def main() -> None:
        metrics = Metrics()
        cfg = StreamConfig(id="file1", url=str(path), loop=False)
        # A slow consumer: a file source must wait for it, not drop.
        source, drain, run_task, drain_task = await start(cfg, metrics, delay_s=0.01)
        assert isinstance(source.frames, BlockingSlot)
        await asyncio.wait_for(run_task, 10)  # run() returns when the file ends
        await asyncio.wait_for(drain_task, 10)
        assert source.state is SourceState.ENDED
        assert [f.seq for f in drain.frames] == list(range(40))
        assert [square_x(f.image) for f in drain.frames] == [SQUARE_STEP * i for i in range(40)]
        pts = [f.pts for f in drain.frames]
        assert None not in pts
        assert pts == sorted(p for p in pts if p is not None)
        assert drain.frames[0].image.shape == (240, 320, 3)
        assert value(metrics, "dishtracker_frame_drops_total", stream="file1",
                     cause="decode_slot") == 0
        assert value(metrics, "dishtracker_frames_total", stream="file1", stage="decode") == 40
        assert source.status()["state"] == "ended"
        await source.stop()
        assert source.status()["state"] == "stopped"

    run(main)


def test_looping_file_starts_again_with_contiguous_seq(clip: tuple[Path, list[int]]) -> None:
    path, _ = clip

    async def main() -> None:
        metrics = Metrics()
        source, drain, run_task, _ = await start(
            StreamConfig(id="loop1", url=f"file://{path}", loop=True), metrics)
        await wait_for(lambda: len(drain.frames) >= 100, 10)
        assert source.state is SourceState.RUNNING
        await source.stop()
        await asyncio.wait_for(run_task, 2)
        seqs = [f.seq for f in drain.frames]
        assert seqs == list(range(len(seqs)))
        xs = [square_x(f.image) for f in drain.frames[:100]]
        assert xs == [SQUARE_STEP * (i % 40) for i in range(100)]
        pts = [f.pts or 0 for f in drain.frames]
        assert all(a < b for a, b in itertools.pairwise(pts)), "pts must keep growing across loops"
        assert value(metrics, "dishtracker_source_reconnects_total", stream="loop1") == 0

    run(main)


def test_truncated_file_delivers_the_frames_before_the_cut(
        clip: tuple[Path, list[int]], tmp_path: Path) -> None:
    path, _ = clip
    damaged = tmp_path / "truncated.mp4"
    truncate(path, damaged, keep=0.6)

    async def main() -> None:
        metrics = Metrics()
        source, drain, run_task, drain_task = await start(
            StreamConfig(id="trunc", url=str(damaged), loop=False), metrics)
        await asyncio.wait_for(run_task, 10)
        await drain_task
        assert source.state is SourceState.ENDED
        n = len(drain.frames)
        assert 10 <= n < 40
        assert [square_x(f.image) for f in drain.frames] == [SQUARE_STEP * i for i in range(n)]
        assert value(metrics, "dishtracker_decode_errors_total", stream="trunc") >= 1

    run(main)


def test_garbage_in_the_middle_is_skipped_and_counted(
        clip: tuple[Path, list[int]], tmp_path: Path) -> None:
    path, offsets = clip
    damaged = tmp_path / "garbage.mp4"
    smash(path, damaged, offsets[20:23])

    async def main() -> None:
        metrics = Metrics()
        source, drain, run_task, drain_task = await start(
            StreamConfig(id="garb", url=str(damaged), loop=False), metrics)
        await asyncio.wait_for(run_task, 10)
        await drain_task
        assert source.state is SourceState.ENDED
        xs = [square_x(f.image) for f in drain.frames]
        assert xs[:20] == [SQUARE_STEP * i for i in range(20)]
        assert 20 < len(xs) < 40  # frames after the next key frame come back
        assert xs[-1] == SQUARE_STEP * 39
        assert value(metrics, "dishtracker_decode_errors_total", stream="garb") >= 1

    run(main)


def test_unreadable_inputs_fail_with_a_reason_and_others_keep_running(tmp_path: Path) -> None:
    write_wav(tmp_path / "sound.wav")
    (tmp_path / "notes.txt").write_text("not a video\n" * 50)
    (tmp_path / "noise.mp4").write_bytes(random.Random(1).randbytes(4096))
    bad = {
        "missing": (str(tmp_path / "nope.mp4"), "no such file"),
        "audio": (str(tmp_path / "sound.wav"), "no video stream (found: audio)"),
        "text": (str(tmp_path / "notes.txt"), "no video stream"),
        "noise": (str(tmp_path / "noise.mp4"), "not a video file"),
    }

    async def main() -> None:
        metrics = Metrics()
        good, drain, good_task, _ = await start(StreamConfig(id="cam", url=SYNTHETIC), metrics)
        started = [await start(StreamConfig(id=k, url=u), metrics) for k, (u, _) in bad.items()]
        sources = [s for s, *_ in started]
        await wait_for(lambda: all(s.state is SourceState.FAILED for s in sources), 5)
        for source, (_, reason) in zip(sources, bad.values(), strict=True):
            status = source.status()
            assert status["state"] == "failed"
            assert reason in status["last_error"], status
        since = time.monotonic()
        await wait_for(lambda: len(drain.frames) >= 30, 5)
        assert good.state is SourceState.RUNNING
        assert drain.max_gap_s(since) < 0.5
        t0 = time.monotonic()
        await asyncio.gather(good.stop(), *(s.stop() for s in sources))
        assert time.monotonic() - t0 < 1.0
        await asyncio.wait_for(asyncio.gather(good_task, *(t for _, _, t, _ in started)), 2)

    run(main)


def test_synthetic_source_is_live_and_paced() -> None:
    async def main() -> None:
        metrics = Metrics()
        source, drain, run_task, _ = await start(StreamConfig(id="syn", url=SYNTHETIC), metrics)
        assert isinstance(source, SyntheticSource)
        assert isinstance(source.frames, LatestSlot)
        await wait_for(lambda: len(drain.frames) >= 30, 5)
        assert 15 < source.fps < 25
        frame = drain.frames[-1]
        assert frame.image.shape == (240, 320, 3)
        assert frame.time_base is not None and frame.time_base * 20 == 1
        await source.stop()
        await source.stop()  # idempotent
        await asyncio.wait_for(run_task, 1)
        assert source.state is SourceState.STOPPED
        # A live slot drops the oldest frame when the reader is late: every
        # missing seq is a counted drop.
        assert drain.missing_seqs() <= value(metrics, "dishtracker_frame_drops_total",
                                             stream="syn", cause="decode_slot")
        assert value(metrics, "dishtracker_source_up", stream="syn") == 0

    run(main)


def test_stop_is_prompt_while_connecting_to_a_dead_rtsp_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main() -> None:
        metrics = Metrics()
        source, _, run_task, _ = await start(StreamConfig(
            id="dead", url=f"rtsp://127.0.0.1:{port}/cam", reconnect_initial_s=0.05,
            reconnect_max_s=0.1), metrics)
        await wait_for(lambda: value(metrics, "dishtracker_source_reconnects_total",
                                     stream="dead") >= 3, 5)
        assert source.state is SourceState.FAILED  # never delivered a frame
        assert "Connection refused" in (source.last_error or "")
        t0 = time.monotonic()
        await source.stop()
        assert time.monotonic() - t0 < 1.0
        await asyncio.wait_for(run_task, 1)

    run(main)


def test_stop_returns_promptly_while_a_server_never_answers() -> None:
    """A listener that accepts TCP but never speaks RTSP: the open blocks inside FFmpeg."""

    async def main() -> None:
        with socket.socket() as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
            port = listener.getsockname()[1]
            metrics = Metrics()
            source, drain, run_task, _ = await start(StreamConfig(
                id="mute", url=f"rtsp://127.0.0.1:{port}/cam", stall_timeout_s=3.0), metrics)
            await wait_for(lambda: source.state is SourceState.CONNECTING, 2)
            await asyncio.sleep(0.3)
            t0 = time.monotonic()
            await source.stop()
            assert time.monotonic() - t0 < 1.0
            # FFmpeg cannot be interrupted from outside: the open gives up at
            # its 3 s timeout, then the thread sees the stop and exits.
            await asyncio.wait_for(run_task, 5)
            assert time.monotonic() - t0 > 1.0, "the open was expected to block"
            assert source.state is SourceState.STOPPED
            assert drain.frames == []

    run(main)


def test_status_masks_the_password() -> None:
    assert mask_url("rtsp://admin:hunter2@10.0.0.5:554/s1") == "rtsp://admin:***@10.0.0.5:554/s1"
    assert mask_url("http://cam/video?user=a&password=x") == "http://cam/video?user=a&password=***"
    assert mask_url("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"
    assert mask_url(SYNTHETIC) == SYNTHETIC

    async def main() -> None:
        source = make_source(StreamConfig(id="c", url="rtsp://admin:hunter2@127.0.0.1:9/x"),
                             Metrics(), asyncio.get_running_loop())
        status: dict[str, Any] = source.status()
        assert "hunter2" not in str(status)
        assert status["url"] == "rtsp://admin:***@127.0.0.1:9/x"
        assert status["state"] == "starting" and status["kind"] == "rtsp"
        await source.stop()

    run(main)


def test_inputs_are_tuned_per_kind() -> None:
    rtsp = av_input(StreamConfig(id="a", url="rtsp://h/s", transport="udp", stall_timeout_s=2,
                                 options={"probesize": "500000"}))
    assert rtsp.live and rtsp.kind == "rtsp"
    assert rtsp.options["rtsp_transport"] == "udp"
    assert rtsp.options["timeout"] == "2000000"
    assert rtsp.options["fflags"] == "nobuffer"
    assert rtsp.options["probesize"] == "500000"  # the config wins
    assert rtsp.read_timeout_s == 2 and rtsp.open_timeout_s == 3
    f = av_input(StreamConfig(id="b", url="file:///tmp/a%20b.mp4"))
    assert not f.live and f.target == "/tmp/a b.mp4" and "fflags" not in f.options
    assert av_input(StreamConfig(id="c", url="/dev/video0")).format == "v4l2"
    assert av_input(StreamConfig(id="d", url="udp://0.0.0.0:5000")).options["overrun_nonfatal"]
    assert av_input(StreamConfig(id="e", url="https://cam/mjpg")).kind == "http"


def test_factory_picks_the_class_from_the_url() -> None:
    async def main() -> None:
        loop, metrics = asyncio.get_running_loop(), Metrics()
        assert isinstance(make_source(StreamConfig(id="s", url=SYNTHETIC), metrics, loop),
                          SyntheticSource)
        for url in ("rtsp://h/s", "http://h/m", "udp://h:1", "/dev/video0", "clip.mp4"):
            assert isinstance(make_source(StreamConfig(id="x", url=url), metrics, loop), AvSource)
        with pytest.raises(ConfigError, match="fps"):
            make_source(StreamConfig(id="s", url="synthetic://?fps=0"), metrics, loop)

    run(main)


def test_backoff_grows_with_full_jitter_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 4.0, healthy_s=10.0, rng=random.Random(7))
    caps, delays = [], []
    for _ in range(8):
        caps.append(backoff.cap_s)
        delays.append(backoff.next_delay())
    assert caps == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(0.0 <= d <= c for d, c in zip(delays, caps, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not fixed steps
    many = [Backoff(1.0, 1.0, rng=random.Random(s)).next_delay() for s in range(200)]
    assert min(many) < 0.1 and max(many) > 0.9  # full jitter spans [0, cap]
    for _ in range(2000):  # a camera away for hours: the bound never overflows
        backoff.next_delay()
    assert backoff.cap_s == 4.0
    assert not backoff.note_running(9.0)
    assert backoff.note_running(10.0)
    assert backoff.cap_s == 0.5 and backoff.attempts == 0
    with pytest.raises(ValueError, match="initial_s"):
        Backoff(0.0, 1.0)


def test_stop_releases_a_file_source_waiting_for_its_consumer(
        clip: tuple[Path, list[int]]) -> None:
    path, _ = clip

    async def main() -> None:
        metrics = Metrics()
        source = make_source(StreamConfig(id="idle", url=str(path), stall_timeout_s=0.5),
                             metrics, asyncio.get_running_loop())
        run_task = asyncio.create_task(source.run())
        first = await source.frames.get()
        await asyncio.sleep(1.0)  # nobody reads: the thread waits on the full slot
        assert first.seq == 0
        assert source.state is SourceState.RUNNING, "waiting for the consumer is not a stall"
        t0 = time.monotonic()
        await source.stop()
        assert time.monotonic() - t0 < 0.5
        await asyncio.wait_for(run_task, 1)
        assert not any(t.name == "decode-idle" for t in threading.enumerate())

    run(main)


def test_cancelling_run_stops_the_thread() -> None:
    async def main() -> None:
        source, drain, run_task, drain_task = await start(
            StreamConfig(id="cancel", url=SYNTHETIC), Metrics())
        await wait_for(lambda: len(drain.frames) >= 3, 5)
        run_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run_task
        assert source.state is SourceState.STOPPED
        assert not any(t.name == "decode-cancel" for t in threading.enumerate())
        await asyncio.wait_for(drain_task, 1)  # the slot was closed

    run(main)
