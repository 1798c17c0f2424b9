"""Video encoders for the WebRTC view: aiortc's H.264 and VP8, tuned for latency and CPU.

Where it sits: the last step of the WebRTC view (:mod:`edge.web.hub`). aiortc gives every
sender its own encoder; :func:`install_low_latency_encoders` makes those the
classes below. With shared encoding (the default) one :class:`StreamEncoder`
per stream and codec encodes each frame once and every viewer's sender only
sends the payloads (see the comment above :class:`EncodedFrame`); without it,
every viewer encodes for itself. The figures behind each choice were
measured on a 2-core AMD EPYC with PyAV 18 (FFmpeg 8.1), 640x480 frames, and
are stated where the choice is made.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Callable, Iterator
from fractions import Fraction
from typing import Any

import av
import structlog
from aiortc import rtcrtpsender
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import MAX_FRAME_RATE, H264Encoder
from aiortc.codecs.vpx import Vp8Encoder, VpxPayloadDescriptor
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av.frame import Frame

log = structlog.get_logger()

# Both encoders use the 90 kHz time base. MediaRelay hands the *same*
# av.VideoFrame to every encoder that reads the stream (each viewer's without
# shared encoding; one per codec with it), and the encoders run concurrently in
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
    against 1.8 ms for ultrafast, at similar latency. This
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

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        """aiortc's, or a shared encoder's payloads as they are (see :class:`EncodedFrame`)."""
        shared = _pack_shared(self, "video/h264", packet)
        return shared if shared is not None else super().pack(packet)


class SingleThreadVp8Encoder(Vp8Encoder):
    """aiortc's VP8 encoder, always on one thread.

    aiortc gives libvpx 2-8 threads above 640x480 on machines with 3+ cores;
    multithreaded VP8 collapses from 4 to 22 ms a frame when another process
    keeps the cores busy, single-threaded it does not.

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

    def pack(self, packet: Any) -> tuple[list[bytes], int]:
        """aiortc's, or a shared encoder's payloads as they are (see :class:`EncodedFrame`)."""
        shared = _pack_shared(self, "video/vp8", packet)
        return shared if shared is not None else super().pack(packet)


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
    frame. Replacing that name is the one hook (aiortc 1.14.0 to 1.16.0; each hook into
    aiortc is pinned to the versions it was checked against by tests/test_aiortc_hooks.py).
    """
    # aiortc does not re-export the name it imported, hence the ignores.
    current = rtcrtpsender.get_encoder  # type: ignore[attr-defined]
    if not isinstance(current, _EncoderLookup):
        rtcrtpsender.get_encoder = _EncoderLookup(current)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- one encoder per stream
#
# aiortc gives every sender its own encoder, so N viewers of a stream cost N encodes
# of every frame (docs/RELIABILITY.md, "Load"). Shared encoding encodes each frame of
# a stream once per codec and hands the same RTP payloads to every viewer's sender.
#
# The hook is aiortc's own pre-encoded path: when a track's recv() returns something
# that is not an av.Frame, RTCRtpSender._next_encoded_frame calls ``encoder.pack(data)``
# on the loop instead of ``encoder.encode`` in a thread (aiortc 1.14.0 to 1.16.0,
# identical there). The encoder is still ours (install_low_latency_encoders), so its
# pack() recognises the objects below and returns the shared payloads as they are:
# per viewer, what remains is the RTP header, SRTP and the UDP send.
#
# * A viewer's track first returns a _Probe: pack() tells the track which codec its
#   sender negotiated (the sender asks for its encoder only after the first recv(), so
#   this is where the codec is known), and returns no payload, which the sender skips.
# * Then every recv() returns a _Delivery: one EncodedFrame plus the viewer, so pack()
#   can report the viewer's target bitrate (REMB) to the stream's encoder.
# * Reference frames: the stream's encoder encodes every frame it takes from the
#   relay, in order, exactly once. A viewer starts on a keyframe (it asks for one on
#   joining and drops everything before it) and, if its sender falls _MAX_BACKLOG
#   frames behind, drops its backlog, asks for a keyframe and waits for it: a viewer
#   never decodes a frame whose reference it missed. A PLI or FIR from any viewer
#   makes the next encode a keyframe for all (RTCRtpSender._send_keyframe is hooked
#   per sender in edge.web.senders).
# * Bitrate: the minimum of the viewers' REMB targets (each sender's encoder keeps
#   aiortc's clamp and default), so no viewer gets more than its estimate allows.
# * VP8 picture ids come from the shared encoder: one sequence for all viewers; a
#   viewer that drops frames sees the gap, as it would after a loss.

_MAX_BACKLOG = 5
"""Encoded frames a viewer's sender may lag before it resynchronises on a keyframe."""


class EncodedFrame:
    """One picture of a stream, encoded and packetized once for all its viewers."""

    __slots__ = ("keyframe", "payloads", "timestamp")

    def __init__(self, payloads: list[bytes], timestamp: int, keyframe: bool) -> None:
        self.payloads = payloads
        self.timestamp = timestamp
        self.keyframe = keyframe


class _Probe:
    __slots__ = ("viewer",)

    def __init__(self, viewer: EncodedViewerTrack) -> None:
        self.viewer = viewer


class _Delivery:
    __slots__ = ("frame", "viewer")

    def __init__(self, frame: EncodedFrame, viewer: EncodedViewerTrack) -> None:
        self.frame = frame
        self.viewer = viewer


def _pack_shared(encoder: Any, mime: str, data: object) -> tuple[list[bytes], int] | None:
    """pack() of a _Probe or _Delivery; None for anything else (aiortc's own pack)."""
    if isinstance(data, _Delivery):
        data.viewer.bitrate = encoder.target_bitrate
        return data.frame.payloads, data.frame.timestamp
    if isinstance(data, _Probe):
        data.viewer.bind(mime)
        return [], 0
    return None


def is_keyframe(mime: str, payloads: list[bytes]) -> bool:
    """Whether RTP ``payloads`` (one picture, as aiortc packetizes it) start a keyframe.

    VP8: bit 0 of the frame tag after the payload descriptor is 0 (RFC 6386 9.1).
    H.264: an IDR slice (NAL type 5) alone, in a STAP-A (24) or an FU-A (28).
    """
    if not payloads:
        return False
    if mime == "video/vp8":
        _, data = VpxPayloadDescriptor.parse(payloads[0])
        return bool(data) and not data[0] & 0x01
    for payload in payloads:
        nal = payload[0] & 0x1F
        if nal == 5 or (nal == 28 and len(payload) > 1 and payload[1] & 0x1F == 5):
            return True
        if nal == 24:
            pos = 1
            while pos + 2 < len(payload):
                size = int.from_bytes(payload[pos:pos + 2], "big")
                if payload[pos + 2] & 0x1F == 5:
                    return True
                pos += 2 + size
    return False


class StreamEncoder:
    """One stream's encoder for one codec: pulls frames once, encodes each once.

    Parameters
    ----------
    source : MediaStreamTrack
        This encoder's own subscription to the stream (a relay proxy); stopped with it.
    mime : str
        ``video/vp8`` or ``video/h264`` (lower case).
    on_idle : callable
        Called once when the encoder stops (the hub retired the stream, source ended, error).
    """

    def __init__(self, source: MediaStreamTrack, mime: str,
                 on_idle: Callable[[StreamEncoder], None]) -> None:
        self.source = source
        self.mime = mime
        self.encoder: Encoder = (LowLatencyH264Encoder() if mime == "video/h264"
                                 else SingleThreadVp8Encoder())
        self.viewers: set[EncodedViewerTrack] = set()
        self.encodes = 0
        """Frames encoded so far (each once, whatever the number of viewers)."""
        self.keyframes = 0
        self._force_keyframe = True
        self._on_idle = on_idle
        self._stopped = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    def add(self, viewer: EncodedViewerTrack) -> None:
        """Start feeding ``viewer``, from the next keyframe (asked for now)."""
        self.viewers.add(viewer)
        self.request_keyframe()

    def remove(self, viewer: EncodedViewerTrack) -> None:
        """Stop feeding ``viewer``. Without viewers the encoder encodes nothing until a
        viewer joins or the hub stops it; frames it still receives (the stream's
        viewers of another codec) are dropped, and with no viewer at all the hub
        pauses the stream's track, so none come."""
        self.viewers.discard(viewer)

    def request_keyframe(self) -> None:
        """Make the next encode a keyframe (coalesced: one for every request until then)."""
        self._force_keyframe = True

    def stop(self) -> None:
        """Stop encoding and end every viewer's track (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        if self._task is not asyncio.current_task():
            self._task.cancel()
        self.source.stop()
        for viewer in list(self.viewers):
            viewer.stop()
        self._on_idle(self)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await self.source.recv()
                if not isinstance(frame, av.VideoFrame) or not self.viewers:
                    continue  # (idle: the next viewer asks for a keyframe when it joins)
                rates = [v.bitrate for v in self.viewers if v.bitrate is not None]
                if rates:
                    self.encoder.target_bitrate = min(rates)  # type: ignore[attr-defined]
                force, self._force_keyframe = self._force_keyframe, False
                payloads, timestamp = await loop.run_in_executor(
                    None, self.encoder.encode, frame, force)
                self.encodes += 1
                if not payloads:
                    continue
                encoded = EncodedFrame(payloads, timestamp, is_keyframe(self.mime, payloads))
                self.keyframes += encoded.keyframe
                for viewer in list(self.viewers):
                    viewer.push(encoded)
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:  # an encoder error ends this codec's viewers, as aiortc would
            log.exception("webrtc_shared_encoder_failed", codec=self.mime)
        finally:
            self.stop()


class SharedEncoders:
    """The encoders of one stream, one per codec its viewers negotiated.

    Parameters
    ----------
    subscribe : callable
        Returns a new subscription to the stream's frames (a relay proxy); each
        :class:`StreamEncoder` takes one.
    """

    def __init__(self, subscribe: Callable[[], MediaStreamTrack]) -> None:
        self._subscribe = subscribe
        self.encoders: dict[str, StreamEncoder] = {}
        self._stopped = False

    def viewer(self) -> EncodedViewerTrack:
        """A new viewer's track, to add to its peer connection."""
        return EncodedViewerTrack(self)

    def _join(self, viewer: EncodedViewerTrack, mime: str) -> StreamEncoder | None:
        if self._stopped:
            return None
        encoder = self.encoders.get(mime)
        if encoder is None:
            encoder = StreamEncoder(self._subscribe(), mime, self._forget)
            self.encoders[mime] = encoder
            log.info("webrtc_shared_encoder_started", codec=mime)
        encoder.add(viewer)
        return encoder

    def _forget(self, encoder: StreamEncoder) -> None:
        if self.encoders.get(encoder.mime) is encoder:
            del self.encoders[encoder.mime]

    def stop(self) -> None:
        """Stop every encoder and end every viewer's track (idempotent)."""
        self._stopped = True
        for encoder in list(self.encoders.values()):
            encoder.stop()


class EncodedViewerTrack(MediaStreamTrack):
    """One viewer's track: the stream's shared encoded frames, for aiortc's pack() path.

    Not a general track: only a sender whose encoder is one of ours understands what
    ``recv()`` returns (see the comment above :class:`EncodedFrame`).
    """

    kind = "video"

    def __init__(self, owner: SharedEncoders) -> None:
        super().__init__()
        self._owner = owner
        self._encoder: StreamEncoder | None = None
        self._probed = False
        self._queue: deque[EncodedFrame] = deque()
        self._ready = asyncio.Event()
        self._waiting_for_keyframe = True
        self.bitrate: int | None = None
        """The viewer's target bitrate (its sender's encoder, REMB), once known."""
        self.resyncs = 0
        """Times this viewer fell behind, dropped its backlog and waited for a keyframe."""

    @property
    def encoder(self) -> StreamEncoder | None:
        """The stream encoder feeding this viewer, once its codec is known."""
        return self._encoder

    def bind(self, mime: str) -> None:
        """The sender negotiated ``mime``: join that codec's stream encoder."""
        if self._encoder is None and self.readyState == "live":
            self._encoder = self._owner._join(self, mime.lower())
            if self._encoder is None:
                self.stop()

    def request_keyframe(self) -> None:
        """A PLI or FIR from this viewer: the next frame of the stream is a keyframe."""
        if self._encoder is not None:
            self._encoder.request_keyframe()

    def push(self, frame: EncodedFrame) -> None:
        """Queue ``frame`` for the sender (called by the stream encoder, on the loop)."""
        if len(self._queue) >= _MAX_BACKLOG:
            self._queue.clear()
            self._waiting_for_keyframe = True
            self.resyncs += 1
            self.request_keyframe()
            log.warning("webrtc_viewer_behind", backlog=_MAX_BACKLOG)
        if self._waiting_for_keyframe:
            if not frame.keyframe:
                return
            self._waiting_for_keyframe = False
        self._queue.append(frame)
        self._ready.set()

    async def recv(self) -> Any:
        """The next _Probe (until the codec is known) or _Delivery, for pack()."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._encoder is None:
            if self._probed:  # the sender dropped the probe (disabled): do not spin
                await asyncio.sleep(0.02)
            self._probed = True
            return _Probe(self)
        while not self._queue:
            self._ready.clear()
            await self._ready.wait()
            if self.readyState != "live":
                raise MediaStreamError
        return _Delivery(self._queue.popleft(), self)

    def stop(self) -> None:
        """End the track and leave the stream encoder (idempotent)."""
        super().stop()
        self._queue.clear()
        self._ready.set()  # wakes a recv() waiting for a frame
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            encoder.remove(self)


def shared_encoding_supported() -> bool:
    """Whether this aiortc has the hooks shared encoding needs (checked on 1.14-1.16)."""
    return (callable(getattr(rtcrtpsender.RTCRtpSender, "_send_keyframe", None))
            and callable(getattr(Encoder, "pack", None))
            and "pack(" in _sender_source())


def _sender_source() -> str:
    try:
        return inspect.getsource(rtcrtpsender.RTCRtpSender._next_encoded_frame)
    except (OSError, TypeError, AttributeError):
        return ""
