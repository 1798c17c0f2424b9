"""WebRTC: the cashier's live, annotated view of a stream.

pipeline -> :class:`~edge.web.track.StreamView` ->
:class:`~edge.web.track.AnnotatedTrack` (annotate, one per stream) -> aiortc
``MediaRelay`` -> shared encoders (:mod:`edge.web.encoders`) -> one
RTCPeerConnection per viewer (:mod:`edge.web.hub`) -> browser, set up through
``POST /api/streams/{id}/webrtc`` (:mod:`edge.web.offers`, bodies in
:mod:`edge.web.signalling`).

This module is the view's public face: the daemon, the benches and the tests
import its parts from here. Annotation and encoding run once per stream
however many viewers watch, and only while someone watches (the hub pauses a
stream's track when its last viewer leaves). :mod:`edge.web.encoders` gives
the figures behind each choice of encoder.
"""

from __future__ import annotations

from edge.web.encoders import (
    LowLatencyH264Encoder,
    SingleThreadVp8Encoder,
    install_low_latency_encoders,
)
from edge.web.hub import (
    DEFAULT_IDLE_GRACE_S,
    PEER_RETRY_AFTER_S,
    SHARED_ENCODER_ENV,
    OfferError,
    PeerLimitError,
    UnknownStreamError,
    WebRtcHub,
)
from edge.web.offers import HUB_KEY, MAX_OFFER_BYTES, OFFER_LIMITER_KEY, add_webrtc_routes
from edge.web.signalling import AnswerBody, OfferBody
from edge.web.track import AnnotatedTrack, StreamView

__all__ = [
    "DEFAULT_IDLE_GRACE_S",
    "HUB_KEY",
    "MAX_OFFER_BYTES",
    "OFFER_LIMITER_KEY",
    "PEER_RETRY_AFTER_S",
    "SHARED_ENCODER_ENV",
    "AnnotatedTrack",
    "AnswerBody",
    "LowLatencyH264Encoder",
    "OfferBody",
    "OfferError",
    "PeerLimitError",
    "SingleThreadVp8Encoder",
    "StreamView",
    "UnknownStreamError",
    "WebRtcHub",
    "add_webrtc_routes",
    "install_low_latency_encoders",
]
