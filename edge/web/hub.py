"""The WebRTC hub: answers viewers' offers and owns their peer connections.

Where it sits: :class:`~edge.web.track.AnnotatedTrack` (one per stream and
overlay: a viewer asks for the cashier's or the engineer's) ->
aiortc ``MediaRelay`` -> the stream's shared encoders
(:mod:`edge.web.encoders`) or aiortc's encoder per viewer -> one
``RTCPeerConnection`` per viewer -> browser. The HTTP route in front of it is
:mod:`edge.web.offers`.

Annotation, colour conversion and encoding run once per stream however many
viewers watch: with shared encoding (the default) the relay feeds one
:class:`~edge.web.encoders.StreamEncoder` per stream and codec, and each
viewer's track hands its sender the shared RTP payloads, so a viewer costs
RTP, SRTP and the send only. ``DISHTRACKER_SHARED_ENCODER=0`` in the
environment (or ``shared_encoder=False``) goes back to aiortc's encoder per
viewer, as does an aiortc without the hooks (one log line).

A stream is worked on only while someone watches. When its last viewer
leaves, its track pauses at once (no frame taken, annotated or encoded) and
the track, relay and encoders stay for the idle grace: a reloaded page, or a
viewer who comes back, reuses them (the track resumes, the encoder starts on
a keyframe). After the grace with nobody watching they are torn down.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import structlog
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack

from edge.config import ServerConfig
from edge.errors import DishTrackerError
from edge.metrics import Metrics
from edge.overlay import OverlayName
from edge.web.encoders import (
    EncodedViewerTrack,
    SharedEncoders,
    install_low_latency_encoders,
    shared_encoding_supported,
)
from edge.web.senders import codec_preferences, forward_keyframe_requests
from edge.web.track import AnnotatedTrack, StreamView

log = structlog.get_logger()

PEER_RETRY_AFTER_S = 5.0
"""``Retry-After`` of a 503 at ``max_peers``: about the page's reconnect backoff."""
SHARED_ENCODER_ENV = "DISHTRACKER_SHARED_ENCODER"
"""``0`` turns shared encoding off (one aiortc encoder per viewer), e.g. to compare."""
DEFAULT_IDLE_GRACE_S = 20.0
"""Seconds a stream's paused track and its encoders outlive its last viewer."""


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
    overlay: OverlayName
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
    idle_grace_s : float
        Seconds a stream's paused track, relay and encoders are kept after its
        last viewer leaves, for the next one; 0 tears them down at once.
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
        # one annotated track per stream and overlay, shared by the viewers of both
        self._shared: dict[tuple[str, OverlayName], _Shared] = {}
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

    def shared_track(self, stream_id: str,
                     overlay: OverlayName | None = None) -> AnnotatedTrack | None:
        """The annotated track viewers of ``stream_id`` share, if anyone watches
        (``overlay``: which one; default ``server.overlay``)."""
        shared = self._shared.get((stream_id, overlay or self._config.overlay))
        return shared.track if shared else None

    def shared_encoders(self, stream_id: str,
                        overlay: OverlayName | None = None) -> SharedEncoders | None:
        """The encoders viewers of ``stream_id`` share, if anyone watches and sharing is on
        (``overlay``: which one; default ``server.overlay``)."""
        shared = self._shared.get((stream_id, overlay or self._config.overlay))
        return shared.encoders if shared else None

    async def offer(self, stream_id: str, sdp: str, type: str, *,
                    overlay: OverlayName | None = None) -> tuple[str, str]:
        """Answer a viewer's offer to receive ``stream_id``.

        Parameters
        ----------
        stream_id : str
            Stream to watch.
        sdp : str
            The offer, with all ICE candidates gathered (no trickle).
        type : str
            Must be ``"offer"``.
        overlay : {"cashier", "engineer"}, optional
            What the video shows this viewer (:mod:`edge.overlay`); default
            ``server.overlay``. Viewers of one stream and overlay share its track.

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
        peer = _Peer(RTCPeerConnection(RTCConfiguration(iceServers=servers)), stream_id,
                     overlay or self._config.overlay)
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
        key = (peer.stream_id, peer.overlay)
        shared = self._shared.get(key)
        if shared is not None and (shared.track.readyState != "live"
                                   or shared.track.view is not view):
            # Ended, or fed by the view of a stream since restarted: a fresh one.
            if not shared.peers:
                self._retire(key, shared)
            shared = None
        if shared is not None and shared.retire is not None:  # idle: watched again
            shared.retire.cancel()
            shared.retire = None
        if shared is None:
            shared = _Shared(AnnotatedTrack(view, self._metrics, overlay=peer.overlay))
            if self.shared_encoder:
                shared.encoders = SharedEncoders(_relay_subscriber(shared))
            self._shared[key] = shared
            shared.track.on("ended", lambda s=shared: self._on_track_ended(s))
        shared.peers.add(peer)
        shared.track.resume()
        peer.shared = shared
        if shared.encoders is not None:
            peer.proxy = shared.encoders.viewer()
        else:
            peer.proxy = shared.relay.subscribe(shared.track, buffered=False)

        pc = peer.pc
        transceiver = pc.addTransceiver(peer.proxy, direction="sendonly")
        if isinstance(peer.proxy, EncodedViewerTrack):
            forward_keyframe_requests(transceiver.sender, peer.proxy)
        # Before setRemoteDescription, else aiortc silently ignores it (aiortc 1.16).
        transceiver.setCodecPreferences(codec_preferences(self._config.codec))
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
                self._idle((peer.stream_id, peer.overlay), shared)
        self._update_gauge(peer.stream_id)
        await peer.pc.close()
        log.info("webrtc_peer_closed", stream=peer.stream_id, reason=reason,
                 peers=len(self._peers))

    def _idle(self, key: tuple[str, OverlayName], shared: _Shared) -> None:
        """``shared`` lost its last viewer: pause it now, tear it down after the idle grace.

        Paused, the stream's track takes no frame, so nothing is annotated or
        encoded while nobody watches. A cashier's page that reloads, or viewers
        that come and go, find the stream's track, relay and encoder still
        there: no new encoder per visit (each one costs allocator churn that the
        heap keeps; docs/RELIABILITY.md, "Soak").
        """
        if (self._closed or self._idle_grace_s <= 0 or shared.track.readyState != "live"):
            self._retire(key, shared)
            return
        shared.track.pause()
        if shared.retire is None:
            shared.retire = asyncio.get_running_loop().call_later(
                self._idle_grace_s, self._retire, key, shared)

    def _retire(self, key: tuple[str, OverlayName], shared: _Shared) -> None:
        if shared.retire is not None:
            shared.retire.cancel()
            shared.retire = None
        if shared.peers and shared.track.readyState == "live":
            return  # watched again
        if self._shared.get(key) is shared:
            del self._shared[key]
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
        for key, shared in list(self._shared.items()):
            self._retire(key, shared)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


def _relay_subscriber(shared: _Shared) -> Callable[[], MediaStreamTrack]:
    """A new relay subscription to ``shared``'s track per call (one per shared encoder)."""
    def subscribe() -> MediaStreamTrack:
        return shared.relay.subscribe(shared.track, buffered=False)
    return subscribe
