"""How the hub sets up each viewer's aiortc sender: codec order and keyframe requests.

Where it sits: between :class:`~edge.web.hub.WebRtcHub`, which adds one
sending transceiver per viewer, and aiortc's ``RTCRtpSender``. The keyframe
hook is one of the aiortc hooks that ``tests/test_aiortc_hooks.py`` pins to
the installed aiortc.
"""

from __future__ import annotations

from aiortc import RTCRtpCodecCapability, RTCRtpSender

from edge.web.encoders import EncodedViewerTrack


def forward_keyframe_requests(sender: RTCRtpSender, track: EncodedViewerTrack) -> None:
    """Make a PLI or FIR to ``sender`` also ask the stream's shared encoder for a keyframe.

    aiortc handles both in ``RTCRtpSender._send_keyframe`` (1.14.0-1.16.0) by
    flagging its own encoder, which the pre-encoded path never consults; the
    sender's method is wrapped on this one instance.

    Parameters
    ----------
    sender : RTCRtpSender
        The viewer's sender (its transceiver's).
    track : EncodedViewerTrack
        The viewer's track, fed by the stream's shared encoder.
    """
    own = sender._send_keyframe

    def send_keyframe() -> None:
        own()
        track.request_keyframe()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]


def codec_preferences(codec: str) -> list[RTCRtpCodecCapability]:
    """aiortc's video codecs in the order to offer them.

    Parameters
    ----------
    codec : str
        The preferred codec's MIME subtype (``vp8``, ``h264``; any case).

    Returns
    -------
    list of RTCRtpCodecCapability
        ``codec`` first, the other codecs as fallback, then RTX.
    """
    caps = RTCRtpSender.getCapabilities("video").codecs
    wanted = f"video/{codec}".lower()
    first = [c for c in caps if c.mimeType.lower() == wanted]
    rtx = [c for c in caps if c.mimeType.lower() == "video/rtx"]
    rest = [c for c in caps if c not in first and c not in rtx]
    return first + rest + rtx
