"""Viewers watch annotated streams over WebRTC: two real aiortc peers in one process.

The server side is the real hub behind a real aiohttp server on 127.0.0.1;
the client is an aiortc RTCPeerConnection that posts its offer over HTTP and
reads the corner stamp of every frame it decodes (frame id, capture time).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import statistics
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, rtcrtpsender
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from test_webrtc_support import AUTH, TOKEN, CameraView, serve

from edge.config import ServerConfig
from edge.metrics import Metrics
from edge.stamp import read_stamp, unwrap_time_ms
from edge.web.access import protect
from edge.web.encoders import EncodedFrame, SharedEncoders, StreamEncoder, is_keyframe
from edge.web.webrtc import (
    MAX_OFFER_BYTES,
    LowLatencyH264Encoder,
    SingleThreadVp8Encoder,
    WebRtcHub,
    add_webrtc_routes,
)

N_FRAMES = 24


@dataclass
class Server:
    url: str
    hub: WebRtcHub
    metrics: Metrics
    views: dict[str, CameraView]

    def peers(self, stream_id: str = "cam1") -> float:
        value = self.metrics.registry.get_sample_value("dishtracker_webrtc_peers",
                                                       {"stream": stream_id})
        return -1.0 if value is None else value

    def annotated(self, stream_id: str = "cam1") -> float:
        value = self.metrics.registry.get_sample_value("dishtracker_frames_total",
                                                       {"stream": stream_id, "stage": "annotate"})
        return 0.0 if value is None else value


@asynccontextmanager
async def running_server(connect_timeout_s: float = 30.0, shared_encoder: bool = True,
                         idle_grace_s: float = 0.3,
                         **server_config: object) -> AsyncIterator[Server]:
    views = {"cam1": CameraView("cam1")}
    metrics = Metrics()
    # the viewers read the corner stamp: the engineer's overlay keeps it
    server_config.setdefault("overlay", "engineer")
    hub = WebRtcHub(views, ServerConfig.model_validate(server_config), metrics,
                    disconnect_grace_s=0.5, connect_timeout_s=connect_timeout_s,
                    shared_encoder=shared_encoder, idle_grace_s=idle_grace_s)
    app = web.Application()
    protect(app, TOKEN)
    add_webrtc_routes(app, hub)
    try:
        async with serve(app) as url:
            yield Server(url, hub, metrics, views)
    finally:
        for view in views.values():
            view.close()


@dataclass
class Viewer:
    pc: RTCPeerConnection
    answer: str
    track: object = None
    ids: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    digests: dict[int, str] = field(default_factory=dict)
    """Frame id -> digest of the decoded picture."""

    def codec(self) -> str:
        """MIME subtype of the first payload type the answer offers for video."""
        m_line = re.search(r"^m=video \d+ \S+ (\d+)", self.answer, re.M)
        assert m_line is not None
        pt = m_line.group(1)
        rtpmap = re.search(rf"^a=rtpmap:{pt} ([^/]+)/", self.answer, re.M)
        assert rtpmap is not None
        return rtpmap.group(1)

    async def read(self, n: int) -> None:
        """Decode ``n`` frames and read their stamps."""
        assert self.track is not None
        while len(self.ids) < n:
            frame = await asyncio.wait_for(self.track.recv(), 10)  # type: ignore[attr-defined]
            now_ms = time.time() * 1000
            assert isinstance(frame, av.VideoFrame)
            img = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
            stamp = read_stamp(img)
            assert stamp is not None, "stamp unreadable after annotation and encoding"
            frame_id, time_ms = stamp
            self.ids.append(frame_id)
            self.digests[frame_id] = hashlib.blake2b(img.tobytes(), digest_size=16).hexdigest()
            self.latencies_ms.append(now_ms - unwrap_time_ms(time_ms, int(now_ms)))


async def post_offer(session: aiohttp.ClientSession, url: str,
                     body: object) -> tuple[int, dict[str, Any]]:
    async with session.post(url, json=body, headers=AUTH) as resp:
        return resp.status, await resp.json()


async def connect(session: aiohttp.ClientSession, base: str, stream: str = "cam1", *,
                  overlay: str | None = None) -> Viewer:
    """A viewer of ``stream`` (``overlay``: the offer's field; None sends none)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    got: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    pc.on("track", got.set_result)
    await pc.setLocalDescription(await pc.createOffer())  # gathers all host candidates
    body = {"sdp": pc.localDescription.sdp, "type": "offer"}
    if overlay is not None:
        body["overlay"] = overlay
    status, answer = await post_offer(session, f"{base}/api/streams/{stream}/webrtc", body)
    assert status == 200, answer
    assert answer["type"] == "answer"
    await pc.setRemoteDescription(RTCSessionDescription(sdp=str(answer["sdp"]), type="answer"))
    viewer = Viewer(pc, str(answer["sdp"]))
    viewer.track = await asyncio.wait_for(got, 5)
    return viewer


async def until(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_viewer_decodes_annotated_frames_with_readable_stamps(
        codec: str, record_property: Callable[[str, object], None]) -> None:
    async def main() -> None:
        async with running_server(codec=codec) as server, aiohttp.ClientSession() as session:
            viewer = await connect(session, server.url)
            assert viewer.codec() == {"vp8": "VP8", "h264": "H264"}[codec]
            await viewer.read(N_FRAMES)
            await viewer.pc.close()
            ids, latencies = viewer.ids, viewer.latencies_ms
            assert all(b > a for a, b in itertools.pairwise(ids)), ids
            p50 = statistics.median(latencies[4:])  # after the first keyframe settles
            record_property(f"latency_p50_ms_{codec}", round(p50, 1))
            print(f"{codec}: stamp -> decoded p50 {p50:.0f} ms, max {max(latencies):.0f} ms")
            assert 0 <= p50 < 400

    asyncio.run(main())


def test_two_viewers_share_one_annotated_track_and_leaving_releases_it() -> None:
    async def main() -> None:
        async with running_server() as server, aiohttp.ClientSession() as session:
            view = server.views["cam1"]
            first = await connect(session, server.url)
            second = await connect(session, server.url)
            await asyncio.gather(first.read(5), second.read(5))
            assert view.subscribe_calls == 1
            assert server.peers() == 2
            track = server.hub.shared_track("cam1")

            await first.pc.close()
            await until(lambda: server.peers() == 1)
            assert server.hub.shared_track("cam1") is track
            await second.read(10)  # the other viewer keeps watching

            await second.pc.close()
            await until(lambda: server.peers() == 0)
            await until(lambda: not view.slots)
            await until(lambda: server.hub.shared_track("cam1") is None)  # idle grace
            assert track is not None and track.readyState == "ended"

    asyncio.run(main())


def test_viewers_are_closed_when_their_stream_stops_and_can_watch_again() -> None:
    async def main() -> None:
        async with running_server() as server, aiohttp.ClientSession() as session:
            view = server.views["cam1"]
            viewer = await connect(session, server.url)
            await viewer.read(3)
            view.end_subscriptions()  # the stream restarts
            await until(lambda: server.peers() == 0)
            await until(lambda: viewer.pc.connectionState in ("closed", "failed"))
            again = await connect(session, server.url)
            await again.read(3)
            assert view.subscribe_calls == 2
            await again.pc.close()
            await viewer.pc.close()

    asyncio.run(main())


def test_a_viewer_that_never_connects_is_dropped() -> None:
    async def main() -> None:
        async with running_server(connect_timeout_s=0.5) as server, \
                aiohttp.ClientSession() as session:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            status, _ = await post_offer(session, f"{server.url}/api/streams/cam1/webrtc",
                                         {"sdp": pc.localDescription.sdp, "type": "offer"})
            assert status == 200
            assert server.peers() == 1
            await pc.close()  # never applies the answer
            await until(lambda: server.peers() == 0, timeout=5)
            assert server.hub.peer_count == 0

    asyncio.run(main())


def test_peer_limit_answers_503_and_close_frees_the_hub() -> None:
    async def main() -> None:
        async with running_server(max_peers=1) as server, aiohttp.ClientSession() as session:
            viewer = await connect(session, server.url)
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            status, body = await post_offer(session, f"{server.url}/api/streams/cam1/webrtc",
                                            {"sdp": pc.localDescription.sdp, "type": "offer"})
            assert status == 503
            assert "max_peers" in str(body["error"])
            assert server.peers() == 1

            await server.hub.close()
            assert server.hub.peer_count == 0
            assert server.peers() == 0
            assert not server.views["cam1"].slots
            await pc.close()
            await viewer.pc.close()

    asyncio.run(main())


def test_each_viewer_gets_the_overlay_it_asks_for_the_site_default_otherwise() -> None:
    async def main() -> None:
        async with (running_server(overlay="cashier") as server,
                    aiohttp.ClientSession() as session):
            engineer = await connect(session, server.url, overlay="engineer")
            cashier = await connect(session, server.url)  # no field: server.overlay
            await engineer.read(5)  # the engineer's overlay keeps the corner stamp
            assert cashier.track is not None
            for _ in range(5):  # the cashier's does not carry it
                frame = await asyncio.wait_for(cashier.track.recv(), 10)  # type: ignore[attr-defined]
                assert read_stamp(np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)) is None
            tracks = {o: server.hub.shared_track("cam1", o) for o in ("cashier", "engineer")}
            assert tracks["cashier"] is not None and tracks["engineer"] is not None
            assert tracks["cashier"] is not tracks["engineer"]
            assert (tracks["cashier"].overlay, tracks["engineer"].overlay) == ("cashier",
                                                                              "engineer")
            assert server.hub.shared_track("cam1") is tracks["cashier"]
            assert server.peers() == 2
            await engineer.pc.close()
            await cashier.pc.close()

    asyncio.run(main())


def test_bad_requests_are_refused_with_a_reason() -> None:
    async def main() -> None:
        async with running_server() as server, aiohttp.ClientSession() as session:
            url = f"{server.url}/api/streams/cam1/webrtc"
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            offer = pc.localDescription.sdp
            await pc.close()

            status, body = await post_offer(session, f"{server.url}/api/streams/nope/webrtc",
                                            {"sdp": offer, "type": "offer"})
            assert (status, "cam1" in str(body["error"])) == (404, True)

            status, body = await post_offer(session, url, {"sdp": "v=0\r\nhello", "type": "offer"})
            assert status == 400, body
            audio_only = offer.replace("m=video", "m=audio")
            status, body = await post_offer(session, url, {"sdp": audio_only, "type": "offer"})
            assert status == 400, body

            status, body = await post_offer(session, url, {"sdp": offer, "type": "answer",
                                                           "extra": 1})
            assert status == 422
            assert any(e.startswith("type:") for e in body["errors"])
            assert any(e.startswith("extra:") for e in body["errors"])
            status, body = await post_offer(session, url, {"sdp": offer, "type": "offer",
                                                           "overlay": "pretty"})
            assert status == 422
            assert [e for e in body["errors"] if e.startswith("overlay:")], body
            assert "cashier" in str(body["errors"]) and "engineer" in str(body["errors"])

            async with session.post(url, data=b"{not json", headers=AUTH) as resp:
                assert resp.status == 400
            huge = {"sdp": "a" * (MAX_OFFER_BYTES + 1), "type": "offer"}
            status, body = await post_offer(session, url, huge)
            assert status == 413

            async def chunked() -> AsyncIterator[bytes]:
                for _ in range(MAX_OFFER_BYTES // 1024 + 2):
                    yield b" " * 1024
            async with session.post(url, data=chunked(), headers=AUTH) as resp:
                assert resp.status == 413
            assert server.hub.peer_count == 0
            assert server.peers() == 0

    asyncio.run(main())


def test_senders_use_the_low_latency_encoders() -> None:
    WebRtcHub({}, ServerConfig.model_validate({}), Metrics())
    lookup = rtcrtpsender.get_encoder  # type: ignore[attr-defined]  # not re-exported
    h264 = lookup(RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102))
    vp8 = lookup(RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96))
    assert isinstance(h264, LowLatencyH264Encoder)
    assert isinstance(vp8, SingleThreadVp8Encoder)
    WebRtcHub({}, ServerConfig.model_validate({}), Metrics())  # installing twice: no double wrap
    assert rtcrtpsender.get_encoder is lookup  # type: ignore[attr-defined]

    rng = np.random.default_rng(0)
    sent: list[bytes] = []
    for encoder in (h264, vp8):
        for i in range(3):
            img = rng.integers(0, 255, (960, 1280, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
            frame.pts, frame.time_base = 3000 * i, VIDEO_TIME_BASE
            payloads, timestamp = encoder.encode(frame, force_keyframe=i == 0)
            assert timestamp == 3000 * i
            assert frame.pts == 3000 * i  # the shared frame's time is left alone
            sent += payloads
        assert payloads
        assert encoder.codec is not None
        assert encoder.codec.thread_count == 1
    # x264 writes its settings into an SEI of the first keyframe; ultrafast
    # searches with "dia" at subpel level 0 (aiortc's medium: "hex", 7).
    assert re.search(rb"me=dia subme=0", b"".join(sent)), "x264 not on preset ultrafast"


# ---------------------------------------------------------------- one encoder per stream


def count_encodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count every ``encode()`` of our two encoder classes, whoever calls it."""
    counts = {"encode": 0}
    for cls in (LowLatencyH264Encoder, SingleThreadVp8Encoder):
        original = cls.encode

        def counted(self: Any, frame: Any, force_keyframe: bool = False,
                    _original: Any = original) -> tuple[list[bytes], int]:
            counts["encode"] += 1
            result: tuple[list[bytes], int] = _original(self, frame, force_keyframe)
            return result

        monkeypatch.setattr(cls, "encode", counted)
    return counts


def same_pictures(*viewers: Viewer) -> int:
    """Frames every viewer decoded; asserts they decoded identical pixels for each."""
    common = set.intersection(*(set(v.digests) for v in viewers))
    for frame_id in common:
        digests = {v.digests[frame_id] for v in viewers}
        assert len(digests) == 1, f"frame {frame_id} decoded differently: {digests}"
    return len(common)


@pytest.mark.parametrize("codec", ["vp8", "h264"])
def test_viewers_of_a_stream_share_one_encoder(codec: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """3 viewers; each frame encoded once; a late joiner starts on a keyframe; leaving
    one viewer disturbs nobody; every viewer decodes the very same pictures."""
    counts = count_encodes(monkeypatch)

    async def main() -> None:
        async with running_server(codec=codec) as server, aiohttp.ClientSession() as session:
            first = await connect(session, server.url)
            second = await connect(session, server.url)
            await asyncio.gather(first.read(10), second.read(10))
            shared = server.hub.shared_encoders("cam1")
            assert shared is not None
            assert list(shared.encoders) == [f"video/{codec}"]
            encoder = shared.encoders[f"video/{codec}"]
            keyframes_before = encoder.keyframes

            third = await connect(session, server.url)  # joins late
            await asyncio.gather(first.read(25), second.read(25), third.read(10))
            assert encoder.keyframes > keyframes_before  # asked for on joining
            assert shared.encoders[f"video/{codec}"] is encoder
            assert len(encoder.viewers) == 3
            # Its first decoded frame came from a keyframe: readable stamp (read()
            # checks every frame's CRC), and identical pixels to the others' decode.
            assert same_pictures(first, second, third) >= 5

            # A PLI from one viewer: the next frame is a keyframe for all.
            peer = next(iter(server.hub._peers))
            keyframes = encoder.keyframes
            peer.pc.getTransceivers()[0].sender._send_keyframe()
            await asyncio.gather(second.read(35), third.read(20))
            assert encoder.keyframes > keyframes

            await first.pc.close()  # leaves; the others keep watching, undisturbed
            await until(lambda: server.peers() == 2)
            await asyncio.gather(second.read(50), third.read(35))
            assert shared.encoders[f"video/{codec}"] is encoder
            assert len(encoder.viewers) == 2
            assert all(v.resyncs == 0 for v in encoder.viewers)
            assert same_pictures(second, third) >= 25
            for viewer in (first, second, third):
                assert all(b > a for a, b in itertools.pairwise(viewer.ids)), viewer.ids

            # Every frame encoded once, whatever the number of viewers: at most one
            # encode per annotated frame (the relay may skip one while encoding).
            annotated = server.annotated()
            assert counts["encode"] == encoder.encodes
            assert len(set(second.ids)) <= encoder.encodes <= annotated, (
                encoder.encodes, annotated)

            await second.pc.close()
            await third.pc.close()
            await until(lambda: server.peers() == 0)
            await until(lambda: server.hub.shared_encoders("cam1") is None)  # idle grace
            assert not shared.encoders  # the encoder stopped after its last viewer

    asyncio.run(main())


def test_a_viewer_joining_within_the_idle_grace_reuses_the_streams_encoder() -> None:
    """A reloaded cashier page: the stream's track and encoder outlive the last
    viewer for the idle grace, the next viewer gets them (and a keyframe first),
    and they are released once the grace passes with nobody watching."""

    async def main() -> None:
        async with running_server(idle_grace_s=1.5) as server, \
                aiohttp.ClientSession() as session:
            first = await connect(session, server.url)
            await first.read(5)
            shared = server.hub.shared_encoders("cam1")
            assert shared is not None
            (encoder,) = shared.encoders.values()
            track = server.hub.shared_track("cam1")
            await first.pc.close()
            await until(lambda: server.peers() == 0)
            assert server.hub.shared_encoders("cam1") is shared  # idle, kept
            idle_encodes = encoder.encodes
            await asyncio.sleep(0.3)
            assert encoder.encodes == idle_encodes  # takes frames, encodes none

            second = await connect(session, server.url)
            await second.read(5)  # decodes: it started on a keyframe
            assert server.hub.shared_track("cam1") is track
            assert shared.encoders and next(iter(shared.encoders.values())) is encoder
            assert encoder.encodes > idle_encodes

            await second.pc.close()
            await until(lambda: server.peers() == 0)
            await until(lambda: server.hub.shared_encoders("cam1") is None, timeout=5.0)
            assert not shared.encoders and track is not None and track.readyState == "ended"

    asyncio.run(main())


def test_per_viewer_encoders_when_sharing_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    counts = count_encodes(monkeypatch)

    async def main() -> None:
        async with running_server(shared_encoder=False) as server, \
                aiohttp.ClientSession() as session:
            assert not server.hub.shared_encoder
            first = await connect(session, server.url)
            second = await connect(session, server.url)
            await asyncio.gather(first.read(10), second.read(10))
            assert server.hub.shared_encoders("cam1") is None
            assert counts["encode"] > server.annotated()  # each viewer encodes its own
            await first.pc.close()
            await second.pc.close()

    asyncio.run(main())


class _SilentTrack(MediaStreamTrack):
    kind = "video"

    async def recv(self) -> Any:
        await asyncio.Event().wait()


def test_a_lagging_viewer_resynchronises_on_a_keyframe() -> None:
    """A viewer's sender that falls behind drops its backlog and waits for a keyframe
    instead of decoding frames whose reference it missed."""
    async def main() -> None:
        shared = SharedEncoders(_SilentTrack)
        viewer = shared.viewer()
        probe = await viewer.recv()
        SingleThreadVp8Encoder().pack(probe)  # what the sender does: binds the codec
        encoder = viewer.encoder
        assert isinstance(encoder, StreamEncoder) and encoder.mime == "video/vp8"
        assert encoder._force_keyframe  # asked for on joining

        def frame(n: int, key: bool = False) -> EncodedFrame:
            return EncodedFrame([bytes([n])], 3000 * n, key)

        viewer.push(frame(0))  # before any keyframe: dropped
        viewer.push(frame(1, key=True))
        for n in range(2, 6):
            viewer.push(frame(n))
        assert viewer._queue[0].timestamp == 3000
        encoder._force_keyframe = False
        viewer.push(frame(6))  # 5 waiting already: behind
        assert viewer.resyncs == 1 and encoder._force_keyframe
        viewer.push(frame(7))  # still no keyframe: dropped
        viewer.push(frame(8, key=True))
        delivery = await viewer.recv()
        payloads, timestamp = SingleThreadVp8Encoder().pack(delivery)
        assert (payloads, timestamp) == ([bytes([8])], 24000)
        assert viewer.bitrate is not None  # the viewer's sender reported its target

        viewer.stop()
        assert not encoder.viewers and shared.encoders  # idle: the hub decides when it ends
        shared.stop()
        assert not shared.encoders

    asyncio.run(main())


def test_keyframes_are_recognised_in_the_payloads() -> None:
    rng = np.random.default_rng(1)
    for mime, encoder in (("video/vp8", SingleThreadVp8Encoder()),
                          ("video/h264", LowLatencyH264Encoder())):
        seen = []
        for i in range(4):
            img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
            frame.pts, frame.time_base = 3000 * i, VIDEO_TIME_BASE
            payloads, _ = encoder.encode(frame, force_keyframe=i in (0, 2))
            assert len(payloads) > 1  # fragmented: the flag is found in the first packet
            seen.append(is_keyframe(mime, payloads))
        assert seen == [True, False, True, False], (mime, seen)
