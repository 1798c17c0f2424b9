"""WebRTC: the cashier's live, annotated view of a stream.

track -> :class:`StreamView` -> :class:`AnnotatedTrack` (annotate, one per
stream) -> aiortc ``MediaRelay`` -> one RTCPeerConnection per viewer -> browser.

Annotation, colour conversion and encoding run once per stream however many
viewers watch: with shared encoding (the default) the relay feeds one
:class:`~edge.web.encoders.StreamEncoder` per stream and codec, and each
viewer's track hands its sender the shared RTP payloads, so a viewer costs
RTP, SRTP and the send only (:mod:`edge.web.encoders` has the design).
``DISHTRACKER_SHARED_ENCODER=0`` in the environment (or ``shared_encoder=False``)
goes back to aiortc's encoder per viewer, as does an aiortc without the hooks
(one log line). The stream is annotated only while someone watches: the shared
track subscribes on its first ``recv()`` and unsubscribes when the last
viewer leaves.

Signalling is one HTTP round trip without trickle ICE:
``POST /api/streams/{id}/webrtc`` with the client's complete offer returns the
complete answer. The encoders are aiortc's, tuned for latency and CPU
(:mod:`edge.web.encoders`); ``../shared/MEASURED.md`` has the figures behind
each choice.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import av
import cv2
import numpy as np
import structlog
from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError, MediaStreamTrack
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.annotate import annotate
from edge.config import ServerConfig, format_errors
from edge.errors import DishTrackerError
from edge.frames import TrackedFrame
from edge.metrics import Metrics
from edge.slot import LatestSlot, SlotClosed
from edge.web.encoders import (
    EncodedViewerTrack,
    SharedEncoders,
    install_low_latency_encoders,
    shared_encoding_supported,
)

# Re-exported: tests and callers imported the encoders from here before encoders.py.
from edge.web.encoders import LowLatencyH264Encoder as LowLatencyH264Encoder  # noqa: PLC0414
from edge.web.encoders import SingleThreadVp8Encoder as SingleThreadVp8Encoder  # noqa: PLC0414
from edge.web.limits import RateLimiter, read_body, retry_after, too_large
from edge.web.openapi import Reply, operation
from edge.web.payloads import ErrorBody, decode_json, error, invalid

log = structlog.get_logger()

MAX_OFFER_BYTES = 64 * 1024
PEER_RETRY_AFTER_S = 5.0
"""``Retry-After`` of a 503 at ``max_peers``: about the page's reconnect backoff."""
_CLOCK_RATE = 90_000  # RTP video clock; pts are 90 kHz ticks since the first frame
_FPS_WINDOW_S = 2.0
SHARED_ENCODER_ENV = "DISHTRACKER_SHARED_ENCODER"
"""``0`` turns shared encoding off (one aiortc encoder per viewer), e.g. to compare."""
DEFAULT_IDLE_GRACE_S = 20.0
"""Seconds a stream's annotated track and encoder outlive its last viewer."""


class StreamView(Protocol):
    """What the pipeline offers viewers of one stream (implemented in :mod:`edge.pipeline`)."""

    @property
    def stream_id(self) -> str:
        """Id of the stream in the site config."""

    @property
    def class_names(self) -> Sequence[str]:
        """Display name per class id (the model's class names)."""

    def subscribe(self) -> LatestSlot[TrackedFrame]:
        """A new slot, fed with every tracked frame from now on."""

    def unsubscribe(self, slot: LatestSlot[TrackedFrame]) -> None:
        """Stop feeding ``slot``."""


class OfferError(DishTrackerError):
    """An offer was refused; ``status`` is the HTTP status to answer with, and
    ``retry_after_s`` (when not None) the ``Retry-After`` to send."""

    status = 400
    retry_after_s: float | None = None


class UnknownStreamError(OfferError):
    """No stream has the requested id."""

    status = 404


class PeerLimitError(OfferError):
    """``server.max_peers`` viewers are connected already, or the hub is closing."""

    status = 503
    retry_after_s: float | None = PEER_RETRY_AFTER_S


# aiortc's SDP parser and negotiation raise whatever a malformed line trips over: besides
# ValueError, LookupError, TypeError and its own errors, AssertionError (a bare
# "a=candidate:1"), AttributeError (a repeated m-line) and RuntimeError (a StopIteration
# inside a coroutine), measured by mutating real offers line by line
# (tests/test_bad_input.py). The offer is the only input, so all of them answer 400.
_FINGERPRINT = "a=fingerprint:"


class AnnotatedTrack(VideoStreamTrack):
    """The annotated frames of one stream as an aiortc video track.

    Frames go out as fast as the pipeline delivers them, never paced by
    aiortc's ``next_timestamp`` (which assumes 30 fps and adds up to a frame
    interval of latency). ``pts`` counts 90 kHz ticks of capture time since
    the track's first frame, so RTP timestamps carry the camera's real timing.

    Parameters
    ----------
    view : StreamView
        Source of tracked frames; subscribed on the first ``recv()``.
    metrics : Metrics, optional
        Counts ``frames{stage="annotate"}`` and observes the capture-to-annotated
        latency (``stage_latency{stage="annotate"}``).
    """

    kind = "video"

    def __init__(self, view: StreamView, metrics: Metrics | None = None) -> None:
        super().__init__()
        self.view = view
        self._metrics = metrics
        self._slot: LatestSlot[TrackedFrame] | None = None
        self._t0: float | None = None
        self._last_pts = -1
        self._arrivals: deque[float] = deque()

    async def recv(self) -> av.VideoFrame:
        """Wait for the next tracked frame and return it annotated, as I420.

        Raises
        ------
        MediaStreamError
            The track was stopped or the stream's slot was closed.
        """
        if self.readyState != "live":
            raise MediaStreamError
        if self._slot is None:
            self._slot = self.view.subscribe()
        try:
            tf = await self._slot.get()
        except SlotClosed:
            self.stop()
            raise MediaStreamError from None
        capture = tf.frame.capture_time
        fps = self._fps(capture)
        latency_ms = (time.monotonic() - capture) * 1000.0
        # Annotation plus conversion measure 1-1.5 ms: off the loop, as aiortc encodes.
        frame = await asyncio.get_running_loop().run_in_executor(
            None, self._render, tf, fps, latency_ms)
        if self._t0 is None:
            self._t0 = capture
        pts = max(round((capture - self._t0) * _CLOCK_RATE), self._last_pts + 1)
        self._last_pts = pts
        frame.pts, frame.time_base = pts, VIDEO_TIME_BASE
        if self._metrics is not None:
            sid = self.view.stream_id
            self._metrics.frames.labels(sid, "annotate").inc()
            self._metrics.stage_latency.labels(sid, "annotate").observe(time.monotonic() - capture)
        return frame

    def _fps(self, capture: float) -> float:
        """Frames per second over the last ``_FPS_WINDOW_S`` of capture times."""
        arrivals = self._arrivals
        arrivals.append(capture)
        while arrivals[0] < capture - _FPS_WINDOW_S:
            arrivals.popleft()
        span = arrivals[-1] - arrivals[0]
        return (len(arrivals) - 1) / span if span > 0 else 0.0

    def _render(self, tf: TrackedFrame, fps: float, latency_ms: float) -> av.VideoFrame:
        img = annotate(tf, fps=fps, latency_ms=latency_ms, class_names=self.view.class_names)
        height, width = img.shape[:2]
        if height % 2 or width % 2:
            return av.VideoFrame.from_ndarray(img, format="bgr24")
        # Converting once here spares every viewer's encoder its own conversion;
        # OpenCV does it in 0.2 ms where libswscale takes 1.9 ms (640x480).
        yuv = np.asarray(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420), dtype=np.uint8)
        return av.VideoFrame.from_ndarray(yuv, format="yuv420p")

    def stop(self) -> None:
        """End the track and unsubscribe from the stream (idempotent)."""
        super().stop()
        slot, self._slot = self._slot, None
        if slot is not None:
            self.view.unsubscribe(slot)
            slot.close()  # wakes a recv() waiting on it


@dataclass(eq=False)
class _Shared:
    """One stream's annotated track, its relay and the peers watching it.

    A relay per track, not one per hub: MediaRelay forgets a source only when
    the source has been read to its end, so a track whose only offer failed
    before anyone read it would stay in a shared relay for good.
    """

    track: AnnotatedTrack
    relay: MediaRelay = field(default_factory=MediaRelay)
    peers: set[_Peer] = field(default_factory=set)
    encoders: SharedEncoders | None = None
    retire: asyncio.TimerHandle | None = None  # set while idle: when it is torn down


@dataclass(eq=False)
class _Peer:
    pc: RTCPeerConnection
    stream_id: str
    shared: _Shared | None = None
    proxy: MediaStreamTrack | None = None
    timer: asyncio.TimerHandle | None = None


ViewSource = Mapping[str, StreamView] | Callable[[], Mapping[str, StreamView]]


class WebRtcHub:
    """Answers viewers' offers and owns their peer connections.

    Parameters
    ----------
    views : mapping or callable
        Stream id -> :class:`StreamView`, or a callable returning the current
        mapping (streams may be added and removed while the daemon runs).
    config : ServerConfig
        ``max_peers`` (all streams together), ``codec`` and ``ice_servers``
        (none by default: host candidates only, enough on a LAN).
    metrics : Metrics
        ``peers{stream}`` is kept equal to the peers of each stream.
    disconnect_grace_s : float
        A peer ``disconnected`` this long is closed (it may recover before).
    connect_timeout_s : float
        A peer not ``connected`` this long after its answer is closed.
    shared_encoder : bool, optional
        One encoder per stream and codec for all its viewers (default: on unless
        the environment sets ``DISHTRACKER_SHARED_ENCODER=0``); off, every viewer
        gets aiortc's own encoder.
    """

    def __init__(self, views: ViewSource, config: ServerConfig, metrics: Metrics, *,
                 disconnect_grace_s: float = 5.0, connect_timeout_s: float = 30.0,
                 shared_encoder: bool | None = None,
                 idle_grace_s: float = DEFAULT_IDLE_GRACE_S) -> None:
        install_low_latency_encoders()
        if shared_encoder is None:
            shared_encoder = os.environ.get(SHARED_ENCODER_ENV, "1").strip() not in (
                "0", "false", "no", "off")
        if shared_encoder and not shared_encoding_supported():
            log.warning("webrtc_shared_encoder_unsupported",
                        detail="this aiortc lacks the pre-encoded send path or "
                               "RTCRtpSender._send_keyframe: one encoder per viewer")
            shared_encoder = False
        self.shared_encoder = shared_encoder
        """Whether viewers of a stream share its encoder (see the module docstring)."""
        self._views = views
        self._config = config
        self._metrics = metrics
        self._grace_s = disconnect_grace_s
        self._idle_grace_s = idle_grace_s
        self._connect_timeout_s = connect_timeout_s
        self._shared: dict[str, _Shared] = {}
        self._peers: set[_Peer] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        for sid in self._current_views():
            metrics.peers.labels(sid).set(0)

    def _current_views(self) -> Mapping[str, StreamView]:
        return self._views() if callable(self._views) else self._views

    @property
    def config(self) -> ServerConfig:
        """The server settings the hub was made with."""
        return self._config

    @property
    def peer_count(self) -> int:
        """Peer connections open or being set up, all streams together."""
        return len(self._peers)

    def shared_track(self, stream_id: str) -> AnnotatedTrack | None:
        """The annotated track viewers of ``stream_id`` share, if anyone watches."""
        shared = self._shared.get(stream_id)
        return shared.track if shared else None

    def shared_encoders(self, stream_id: str) -> SharedEncoders | None:
        """The encoders viewers of ``stream_id`` share, if anyone watches and sharing is on."""
        shared = self._shared.get(stream_id)
        return shared.encoders if shared else None

    async def offer(self, stream_id: str, sdp: str, type: str) -> tuple[str, str]:
        """Answer a viewer's offer to receive ``stream_id``.

        Parameters
        ----------
        stream_id : str
            Stream to watch.
        sdp : str
            The offer, with all ICE candidates gathered (no trickle).
        type : str
            Must be ``"offer"``.

        Returns
        -------
        tuple of str
            ``(sdp, "answer")``.

        Raises
        ------
        UnknownStreamError
            No such stream (404).
        PeerLimitError
            ``max_peers`` reached or the hub is closing (503).
        OfferError
            The offer cannot be applied or has no video to receive (400).
        """
        view = self._current_views().get(stream_id)
        if view is None:
            raise UnknownStreamError(f"unknown stream {stream_id!r}; "
                                     f"known: {sorted(self._current_views())}")
        if self._closed:
            raise PeerLimitError("the server is shutting down")
        if len(self._peers) >= self._config.max_peers:
            raise PeerLimitError(f"{len(self._peers)} viewers already watch: server.max_peers "
                                 f"is {self._config.max_peers}")
        if type != "offer":
            raise OfferError(f"type must be 'offer', got {type!r}")
        servers = [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential)
                   for s in self._config.ice_servers]
        # iceServers=[] (not None): None makes aiortc add Google's public STUN server.
        peer = _Peer(RTCPeerConnection(RTCConfiguration(iceServers=servers)), stream_id)
        self._peers.add(peer)  # counts against max_peers from here on
        try:
            self._attach(peer, view)
            answer = await self._negotiate(peer, sdp)
        except BaseException:
            await self._drop(peer, "offer_failed")
            raise
        self._update_gauge(stream_id)
        peer.timer = asyncio.get_running_loop().call_later(
            self._connect_timeout_s, self._spawn_drop, peer, "connect_timeout")
        log.info("webrtc_peer_added", stream=stream_id, peers=len(self._peers))
        return answer

    def _attach(self, peer: _Peer, view: StreamView) -> None:
        shared = self._shared.get(peer.stream_id)
        if shared is not None and shared.retire is not None:  # idle, not yet torn down
            shared.retire.cancel()
            shared.retire = None
        if shared is None or shared.track.readyState != "live":
            shared = _Shared(AnnotatedTrack(view, self._metrics))
            if self.shared_encoder:
                shared.encoders = SharedEncoders(_relay_subscriber(shared))
            self._shared[peer.stream_id] = shared
            shared.track.on("ended", lambda s=shared: self._on_track_ended(s))
        shared.peers.add(peer)
        peer.shared = shared
        if shared.encoders is not None:
            peer.proxy = shared.encoders.viewer()
        else:
            peer.proxy = shared.relay.subscribe(shared.track, buffered=False)

        pc = peer.pc
        transceiver = pc.addTransceiver(peer.proxy, direction="sendonly")
        if isinstance(peer.proxy, EncodedViewerTrack):
            _forward_keyframe_requests(transceiver.sender, peer.proxy)
        # Before setRemoteDescription, else aiortc silently ignores it (MEASURED.md).
        transceiver.setCodecPreferences(_codec_preferences(self._config.codec))
        pc.on("connectionstatechange", lambda: self._on_state(peer))

    async def _negotiate(self, peer: _Peer, sdp: str) -> tuple[str, str]:
        pc = peer.pc
        if _FINGERPRINT not in sdp:  # aiortc would accept it and fail later, in a task
            raise OfferError("the offer has no DTLS fingerprint (a=fingerprint:); "
                             "send a complete offer from RTCPeerConnection.createOffer()")
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except Exception as err:  # see _FINGERPRINT: any parse error is a 400
            raise OfferError(f"cannot apply the offer: {type(err).__name__}: {err}") from err
        if not any(t.mid is not None and t.sender.track is not None
                   for t in pc.getTransceivers()):
            raise OfferError("the offer has no video m-line to receive the stream on")
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as err:  # an applied offer aiortc cannot answer
            log.warning("webrtc_offer_unanswerable", stream=peer.stream_id, exc_info=err)
            raise OfferError(f"cannot answer the offer: {type(err).__name__}: {err}") from err
        local = pc.localDescription
        return local.sdp, local.type

    def _on_state(self, peer: _Peer) -> None:
        state = peer.pc.connectionState
        if state == "connected" and peer.timer is not None:
            peer.timer.cancel()
            peer.timer = None
        elif state in ("failed", "closed"):
            self._spawn_drop(peer, state)
        elif state == "disconnected" and peer.timer is None:
            peer.timer = asyncio.get_running_loop().call_later(
                self._grace_s, self._spawn_drop, peer, "disconnected")

    def _on_track_ended(self, shared: _Shared) -> None:
        # The stream stopped or restarted: close its viewers so that they reconnect.
        for peer in list(shared.peers):
            self._spawn_drop(peer, "stream_ended")

    def _spawn_drop(self, peer: _Peer, reason: str) -> None:
        if peer in self._peers:
            task = asyncio.get_running_loop().create_task(self._drop(peer, reason))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drop(self, peer: _Peer, reason: str) -> None:
        """Close ``peer`` and release what it held (idempotent)."""
        if peer not in self._peers:
            return
        self._peers.discard(peer)
        if peer.timer is not None:
            peer.timer.cancel()
        if peer.proxy is not None:
            peer.proxy.stop()
        shared = peer.shared
        if shared is not None:
            shared.peers.discard(peer)
            if not shared.peers:
                self._idle(peer.stream_id, shared)
        self._update_gauge(peer.stream_id)
        await peer.pc.close()
        log.info("webrtc_peer_closed", stream=peer.stream_id, reason=reason,
                 peers=len(self._peers))

    def _idle(self, stream_id: str, shared: _Shared) -> None:
        """``shared`` lost its last viewer: tear it down after the idle grace.

        A cashier's page that reloads, or viewers that come and go, find the
        stream's track, relay and encoder still there: no new encoder per visit
        (each one costs allocator churn that the heap keeps; docs/RELIABILITY.md,
        "Soak") and no wait for the first frame.
        """
        if (self._closed or self._idle_grace_s <= 0 or shared.track.readyState != "live"):
            self._retire(stream_id, shared)
        elif shared.retire is None:
            shared.retire = asyncio.get_running_loop().call_later(
                self._idle_grace_s, self._retire, stream_id, shared)

    def _retire(self, stream_id: str, shared: _Shared) -> None:
        if shared.retire is not None:
            shared.retire.cancel()
            shared.retire = None
        if shared.peers and shared.track.readyState == "live":
            return  # watched again
        if self._shared.get(stream_id) is shared:
            del self._shared[stream_id]
        shared.track.stop()
        if shared.encoders is not None:
            shared.encoders.stop()

    def _update_gauge(self, stream_id: str) -> None:
        count = sum(1 for p in self._peers if p.stream_id == stream_id)
        self._metrics.peers.labels(stream_id).set(count)

    async def close(self) -> None:
        """Refuse new offers and close every peer (shutdown; idempotent)."""
        self._closed = True
        await asyncio.gather(*(self._drop(p, "shutdown") for p in list(self._peers)))
        for sid, shared in list(self._shared.items()):
            self._retire(sid, shared)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _relay_subscriber(shared: _Shared) -> Callable[[], MediaStreamTrack]:
    """A new relay subscription to ``shared``'s track per call (one per shared encoder)."""
    def subscribe() -> MediaStreamTrack:
        return shared.relay.subscribe(shared.track, buffered=False)
    return subscribe


def _forward_keyframe_requests(sender: RTCRtpSender, track: EncodedViewerTrack) -> None:
    """A PLI or FIR to ``sender`` also asks the stream's shared encoder for a keyframe.

    aiortc handles both in ``RTCRtpSender._send_keyframe`` (1.14.0-1.16.0) by
    flagging its own encoder, which the pre-encoded path never consults.
    """
    own = sender._send_keyframe

    def send_keyframe() -> None:
        own()
        track.request_keyframe()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]


def _codec_preferences(codec: str) -> list[Any]:
    """Video codecs, ``codec`` first, the others as fallback, then RTX."""
    caps = RTCRtpSender.getCapabilities("video").codecs
    wanted = f"video/{codec}".lower()
    first = [c for c in caps if c.mimeType.lower() == wanted]
    rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"]
    rest = [c for c in caps if c not in first and c not in rtx]
    return first + rest + rtx


HUB_KEY = web.AppKey("webrtc_hub", WebRtcHub)
OFFER_LIMITER_KEY = web.AppKey("webrtc_offer_limiter", RateLimiter)


class OfferBody(BaseModel):
    """``POST /api/streams/{id}/webrtc`` body."""

    model_config = ConfigDict(extra="forbid")

    sdp: str = Field(min_length=1, description="the complete offer, ICE candidates gathered")
    type: Literal["offer"]


class AnswerBody(BaseModel):
    """The answer to an offer."""

    sdp: str = Field(description="the complete answer")
    type: Literal["answer"]


def _rate_limited(request: web.Request) -> web.Response | None:
    """The 429 answer when this client address sent too many offers, else None.

    Keyed by the TCP peer address: behind a reverse proxy every client shares
    the proxy's bucket (``X-Forwarded-For`` is not trusted; docs/SECURITY.md).
    """
    client = request.remote or "unknown"
    wait_s = request.app[OFFER_LIMITER_KEY].take(client)
    if wait_s <= 0:
        return None
    config = request.app[HUB_KEY].config
    log.warning("webrtc_offer_rate_limited", peer=client, retry_after_s=round(wait_s, 1))
    return web.json_response(
        {"error": f"too many offers from {client}: at most {config.offer_burst} at once and "
                  f"{config.offers_per_minute:g} a minute (server.offer_burst, "
                  "server.offers_per_minute)"},
        status=429, headers=retry_after(wait_s))


@operation("Watch a stream (WebRTC offer/answer)", "webrtc", {
    200: Reply("the answer", AnswerBody),
    400: Reply("not JSON, or an SDP offer that cannot be applied or has no video m-line",
               ErrorBody),
    404: Reply("no such stream", ErrorBody),
    429: Reply("too many offers from this address", ErrorBody, headers=("Retry-After",)),
    503: Reply("server.max_peers viewers already, or shutting down", ErrorBody,
               headers=("Retry-After",))},
    body=OfferBody, body_limit=MAX_OFFER_BYTES)
async def _post_offer(request: web.Request) -> web.Response:
    """Answer a viewer's offer to receive the stream ``id`` (no trickle ICE)."""
    hub = request.app[HUB_KEY]
    limited = _rate_limited(request)
    if limited is not None:
        return limited
    raw = await read_body(request, MAX_OFFER_BYTES)
    if raw is None:
        return too_large(MAX_OFFER_BYTES, "an SDP offer")
    data = decode_json(raw)
    if isinstance(data, web.Response):
        return data
    try:
        body = OfferBody.model_validate(data)
    except ValidationError as err:
        return invalid(format_errors(err), "the offer")
    try:
        sdp, _ = await hub.offer(request.match_info["id"], body.sdp, body.type)
    except OfferError as err:
        headers = retry_after(err.retry_after_s) if err.retry_after_s is not None else None
        return error(err.status, str(err), headers=headers)
    return web.json_response(AnswerBody(sdp=sdp, type="answer").model_dump())


async def _close_hub(app: web.Application) -> None:
    await app[HUB_KEY].close()


def add_webrtc_routes(app: web.Application, hub: WebRtcHub) -> None:
    """Serve ``POST /api/streams/{id}/webrtc`` from ``hub``; close it on shutdown.

    The body is ``{"sdp": str, "type": "offer"}`` (at most 64 KiB, no other
    keys); the reply ``{"sdp": str, "type": "answer"}``. Errors answer
    ``{"error": reason}`` with 400 (not JSON, bad SDP), 404 (unknown stream),
    413 (too large), 422 (invalid body, with ``errors``: ``field: reason``
    lines), 429 (this client address sent more than ``server.offer_burst``
    offers at once or ``server.offers_per_minute`` on average; with
    ``Retry-After``) or 503 (``max_peers`` reached, shutting down; with
    ``Retry-After``). The bearer token is checked before any of this by
    :func:`edge.web.access.protect` on the daemon's application.
    """
    app[HUB_KEY] = hub
    app[OFFER_LIMITER_KEY] = RateLimiter(hub.config.offers_per_minute / 60.0,
                                         hub.config.offer_burst)
    app.router.add_post("/api/streams/{id}/webrtc", _post_offer)
    app.on_shutdown.append(_close_hub)
