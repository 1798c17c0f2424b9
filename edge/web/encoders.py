"""Video encoders for the WebRTC view: aiortc's H.264 and VP8, tuned for latency and CPU.

Where it sits: the last step of :mod:`edge.web.webrtc`, per viewer. aiortc
gives every sender its own encoder; :func:`install_low_latency_encoders`
makes those the classes below. ``../shared/MEASURED.md`` has the figures
behind each choice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import av
from aiortc import rtcrtpsender
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import MAX_FRAME_RATE, H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import VIDEO_TIME_BASE
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av.frame import Frame

# Both encoders use the 90 kHz time base. MediaRelay hands the *same*
# av.VideoFrame to every viewer's encoder, and the encoders run concurrently in
# executor threads. PyAV's encode rescales the frame's pts to the codec's time
# base *in place* (PyAV 18: CodecContext._prepare_and_time_rebase_frames_for_encode);
# with aiortc's time bases (1/30 for H.264, 1/1000000 for VP8) one viewer's
# encoder would change the pts another is reading. Our frames are in 1/90000
# already, so the rescale is a no-op and RTP timestamps keep the capture timing.


def _needs_new_codec(codec: Any, frame: av.VideoFrame, bitrate: int) -> bool:
    """aiortc's own test for reopening an encoder: size change or bitrate off by > 10 %."""
    return bool(codec is None or frame.width != codec.width or frame.height != codec.height
                or abs(bitrate - codec.bit_rate) / codec.bit_rate > 0.1)


class LowLatencyH264Encoder(H264Encoder):
    """aiortc's H.264 encoder with x264 ``preset=ultrafast`` on one thread.

    aiortc hard-codes x264's default preset (medium): 11 ms per 640x480 frame
    against 1.8 ms for ultrafast, at similar latency (MEASURED.md). This
    subclass opens the codec context itself, with aiortc's settings plus the
    preset, before aiortc's ``_encode_frame`` would; aiortc then finds a context
    that needs no reopening and uses it. Checked against aiortc 1.14.0 and 1.16.0, whose
    ``_encode_frame`` reopens on the same size/bitrate test as
    :func:`_needs_new_codec`. Time base: 90 kHz (see the comment above).
    """

    def _encode_frame(self, frame: av.VideoFrame, force_keyframe: bool) -> Iterator[bytes]:
        if _needs_new_codec(self.codec, frame, self.target_bitrate):
            codec = av.CodecContext.create("libx264", "w")
            codec.width, codec.height = frame.width, frame.height
            codec.bit_rate = self.target_bitrate
            codec.pix_fmt = "yuv420p"
            codec.framerate = Fraction(MAX_FRAME_RATE, 1)
            codec.time_base = VIDEO_TIME_BASE  # not aiortc's: see the comment above
            codec.options = {"level": "31", "tune": "zerolatency", "preset": "ultrafast"}
            codec.profile = "Baseline"
            codec.thread_count = 1
            self.buffer_data, self.buffer_pts, self.codec = b"", None, codec
        return super()._encode_frame(frame, force_keyframe)


class SingleThreadVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder, always on one thread.

    aiortc gives libvpx 2-8 threads above 640x480 on machines with 3+ cores;
    multithreaded VP8 collapses from 4 to 22 ms a frame when another process
    keeps the cores busy (MEASURED.md), single-threaded it does not.

    aiortc also turns on libvpx's temporal denoiser (``noise-sensitivity=4``),
    meant for noisy webcams: it blends fine detail with the previous frame and
    breaks the corner stamp (annotated 640x480 clip, 120 frames at 1.5 Mb/s:
    24 stamps failed their CRC with it, none without). Our input was decoded
    from a compressed stream already, so the denoiser is off. Otherwise the
    options are aiortc 1.16.0's (``Vp8Encoder.encode``), with ``thread_count=1``
    and a 90 kHz time base (see the comment above).
    """

    def encode(self, frame: Frame, force_keyframe: bool = False) -> tuple[list[bytes], int]:
        assert isinstance(frame, av.VideoFrame)
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        if _needs_new_codec(self.codec, frame, self.target_bitrate):
            rate = str(self.target_bitrate)
            codec = av.CodecContext.create("libvpx", "w")
            codec.width, codec.height = frame.width, frame.height
            codec.bit_rate = self.target_bitrate
            codec.pix_fmt = "yuv420p"
            codec.time_base = VIDEO_TIME_BASE  # not aiortc's: see the comment above
            codec.gop_size = 3000
            codec.qmin, codec.qmax = 2, 56
            codec.options = {
                "bufsize": rate, "cpu-used": "-6", "deadline": "realtime",
                "lag-in-frames": "0", "minrate": rate, "maxrate": rate,
                "noise-sensitivity": "0", "overshoot-pct": "15", "partitions": "0",
                "static-thresh": "1", "undershoot-pct": "100",
            }
            codec.thread_count = 1
            self.codec = codec
        return super().encode(frame, force_keyframe)


class _EncoderLookup:
    """Replaces ``aiortc.rtcrtpsender.get_encoder``: our video encoders, aiortc's others."""

    def __init__(self, original: Callable[[RTCRtpCodecParameters], Encoder]) -> None:
        self.original = original

    def __call__(self, codec: RTCRtpCodecParameters) -> Encoder:
        mime = codec.mimeType.lower()
        if mime == "video/h264":
            return LowLatencyH264Encoder()
        if mime == "video/vp8":
            return SingleThreadVp8Encoder()
        return self.original(codec)


def install_low_latency_encoders() -> None:
    """Make every aiortc sender in this process use the encoders above (idempotent).

    aiortc has no encoder registry: ``RTCRtpSender`` calls the module-level
    ``get_encoder`` it imported from ``aiortc.codecs`` when it sends its first
    frame. Replacing that name is the one hook (aiortc 1.14.0 to 1.16.0).
    """
    # aiortc does not re-export the name it imported, hence the ignores.
    current = rtcrtpsender.get_encoder  # type: ignore[attr-defined]
    if not isinstance(current, _EncoderLookup):
        rtcrtpsender.get_encoder = _EncoderLookup(current)  # type: ignore[attr-defined]
