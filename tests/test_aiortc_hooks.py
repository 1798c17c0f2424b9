"""The aiortc internals that edge/web hooks into are still the ones it was written against.

aiortc has no encoder registry and no keyframe callback, so the WebRTC view
reaches into it (:mod:`edge.web.encoders`, :mod:`edge.web.senders`):

* ``aiortc.rtcrtpsender.get_encoder``, a module-level name, is replaced so
  every sender gets our encoders;
* ``H264Encoder._encode_frame`` (private) is overridden to open x264 with the
  ultrafast preset before aiortc would open it with its own settings;
* ``Vp8Encoder.encode`` is overridden with a copy of aiortc's codec options;
* ``RTCRtpSender._next_encoded_frame`` (private) must hand anything that is
  not an ``av.Frame`` to the encoder's ``pack()``: shared encoding rides on it;
* ``RTCRtpSender._send_keyframe`` (private) is wrapped per sender, and must be
  what ``_handle_rtcp_packet`` calls on a PLI or FIR.

Each hooked target is fingerprinted (its source tokens without comments and
layout, SHA-256) for every aiortc version the hooks were checked against. An
aiortc whose version or hooked source is not in :data:`CHECKED` fails here,
loudly, instead of quietly sending aiortc's slow defaults or dropping
keyframe requests. After checking the hooks against a new aiortc, record it
with ``python tests/test_aiortc_hooks.py`` (installed) or
``python tests/test_aiortc_hooks.py aiortc-X.whl ...`` (downloaded wheels).
Behaviour checks beside the fingerprints run the hooks through a real
``RTCRtpSender``.
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import inspect
import io
import sys
import tokenize
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiortc
import av
import numpy as np
from aiortc import RTCCertificate, RTCDtlsTransport, RTCIceGatherer, RTCIceTransport, rtcrtpsender
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.mediastreams import VIDEO_TIME_BASE, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket

from edge.web.encoders import (
    EncodedFrame,
    LowLatencyH264Encoder,
    SharedEncoders,
    install_low_latency_encoders,
)
from edge.web.senders import forward_keyframe_requests

HOOKED: dict[str, str] = {
    "get_encoder": "aiortc/codecs/__init__.py",
    "H264Encoder._encode_frame": "aiortc/codecs/h264.py",
    "H264Encoder.encode": "aiortc/codecs/h264.py",
    "Vp8Encoder.encode": "aiortc/codecs/vpx.py",
    "RTCRtpSender._next_encoded_frame": "aiortc/rtcrtpsender.py",
    "RTCRtpSender._send_keyframe": "aiortc/rtcrtpsender.py",
    "RTCRtpSender._handle_rtcp_packet": "aiortc/rtcrtpsender.py",
}
"""Hooked target (qualified name in its module) -> its module's file in aiortc."""

_FINGERPRINTS_1_14_TO_1_16 = {
    "get_encoder": "f3e50a45acf1f56b",
    "H264Encoder._encode_frame": "be4060d38024dbde",
    "H264Encoder.encode": "7a51928358d59c03",
    "Vp8Encoder.encode": "d1667629065c6276",
    "RTCRtpSender._next_encoded_frame": "7ac2cbb0f03ac649",
    "RTCRtpSender._send_keyframe": "d3b733bf1cf1ff72",
    "RTCRtpSender._handle_rtcp_packet": "86df44f5f22d9c6b",
}
CHECKED: dict[str, dict[str, str]] = {
    version: _FINGERPRINTS_1_14_TO_1_16 for version in ("1.14.0", "1.15.0", "1.16.0")}
"""aiortc version -> fingerprint of each hooked target, as checked by hand (the pin in
pyproject.toml allows 1.14-1.16; their hooked code is the same token for token)."""


def fingerprint(source: str, qualname: str) -> str:
    """The first 16 hex digits of the SHA-256 of one function's tokens.

    Parameters
    ----------
    source : str
        The text of the module that defines it.
    qualname : str
        ``function`` or ``Class.method``.

    Returns
    -------
    str
        Changes with the function's code, docstring or signature; not with its
        comments, blank lines or position in the file.
    """
    node: ast.AST = ast.parse(source)
    for name in qualname.split("."):
        node = next(n for n in ast.iter_child_nodes(node)
                    if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                    and n.name == name)
    assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    last = node.end_lineno or node.lineno
    kept: list[str] = []
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if not first <= tok.start[0] <= last or tok.type in (tokenize.COMMENT, tokenize.NL):
            continue
        layout = tok.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE)
        if layout and not kept:
            continue  # the block structure before the function is not the function's
        kept.append(tokenize.tok_name[tok.type] if layout else tok.string)
    return hashlib.sha256("\x00".join(kept).encode()).hexdigest()[:16]


def installed_fingerprints() -> dict[str, str]:
    """Fingerprint of each hooked target in the aiortc this process imports."""
    root = Path(inspect.getfile(aiortc)).parent.parent
    return {name: fingerprint((root / path).read_text(), name) for name, path in HOOKED.items()}


def wheel_fingerprints(wheel: Path) -> tuple[str, dict[str, str]]:
    """aiortc's version and the fingerprints of a downloaded aiortc wheel."""
    with zipfile.ZipFile(wheel) as zf:
        metadata = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        version = next(line.split(":", 1)[1].strip()
                       for line in zf.read(metadata).decode().splitlines()
                       if line.startswith("Version:"))
        return version, {name: fingerprint(zf.read(path).decode(), name)
                         for name, path in HOOKED.items()}


def test_the_installed_aiortc_is_one_the_hooks_were_checked_against() -> None:
    version = aiortc.__version__
    assert version in CHECKED, (
        f"aiortc {version}: the hooks in edge/web (encoders.py, senders.py) were checked "
        f"against {sorted(CHECKED)} only; check each target in HOOKED, then record it "
        "(python tests/test_aiortc_hooks.py)")
    changed = {name: value for name, value in installed_fingerprints().items()
               if CHECKED[version][name] != value}
    assert not changed, f"aiortc {version}: hooked code differs from what was checked: {changed}"


def test_hooked_targets_have_the_signatures_the_hooks_expect() -> None:
    def params(fn: Callable[..., Any]) -> list[tuple[str, object]]:
        return [(p.name, p.default) for p in inspect.signature(fn).parameters.values()]

    empty = inspect.Parameter.empty
    assert params(H264Encoder._encode_frame) == [
        ("self", empty), ("frame", empty), ("force_keyframe", empty)]
    assert params(Vp8Encoder.encode) == [
        ("self", empty), ("frame", empty), ("force_keyframe", False)]
    assert params(Encoder.pack) == [("self", empty), ("packet", empty)]
    assert params(rtcrtpsender.RTCRtpSender._send_keyframe) == [("self", empty)]
    # Looked up as module globals or attributes at call time, so replacing them works.
    assert "get_encoder" in rtcrtpsender.RTCRtpSender._next_encoded_frame.__code__.co_names
    assert "_send_keyframe" in rtcrtpsender.RTCRtpSender._handle_rtcp_packet.__code__.co_names
    assert callable(rtcrtpsender.get_encoder)  # type: ignore[attr-defined]  # not re-exported


class _NeverTrack(MediaStreamTrack):
    """A stream subscription that never yields a frame (the encoders are fed by hand)."""

    kind = "video"

    async def recv(self) -> Any:
        await asyncio.Event().wait()


def _sender(track: Any) -> rtcrtpsender.RTCRtpSender:
    """A real sender on a real (not started) DTLS transport: nothing goes on the wire."""
    transport = RTCDtlsTransport(RTCIceTransport(RTCIceGatherer()),
                                 [RTCCertificate.generateCertificate()])
    return rtcrtpsender.RTCRtpSender(track, transport)


def test_a_sender_gets_our_encoder_and_packs_shared_frames_through_it() -> None:
    """The module-level get_encoder swap and the pre-encoded path, through a real sender."""
    install_low_latency_encoders()
    h264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)

    async def main() -> None:
        shared = SharedEncoders(_NeverTrack)
        viewer = shared.viewer()
        sender = _sender(viewer)
        assert await sender._next_encoded_frame(h264) is None  # the probe: binds the codec
        encoder = viewer.encoder
        assert encoder is not None and encoder.mime == "video/h264"
        encoder.viewers.discard(viewer)  # fed by hand below, not by the stream encoder
        viewer._waiting_for_keyframe = False
        viewer.push(EncodedFrame([b"\x65payload"], 1234, keyframe=True))
        sent = await sender._next_encoded_frame(h264)
        assert sent is not None
        assert (sent.payloads, sent.timestamp) == ([b"\x65payload"], 1234)
        viewer.stop()
        shared.stop()

    asyncio.run(main())


def test_a_pli_or_fir_to_a_sender_reaches_the_shared_encoder() -> None:
    async def main() -> None:
        for fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            shared = SharedEncoders(_NeverTrack)
            viewer = shared.viewer()
            sender = _sender(viewer)
            forward_keyframe_requests(sender, viewer)
            viewer.bind("video/vp8")
            encoder = viewer.encoder
            assert encoder is not None
            encoder._force_keyframe = False
            await sender._handle_rtcp_packet(
                RtcpPsfbPacket(fmt=fmt, ssrc=1, media_ssrc=sender._ssrc))
            assert encoder._force_keyframe, f"RTCP PSFB fmt {fmt} did not reach the encoder"
            viewer.stop()
            shared.stop()

    asyncio.run(main())


def test_aiortc_keeps_the_h264_context_our_encoder_opened() -> None:
    """aiortc's ``_encode_frame`` reuses the x264 context (ultrafast) ours opened, and
    reopens it (through ours) only when the size or the bitrate changes."""
    encoder = LowLatencyH264Encoder()
    rng = np.random.default_rng(0)
    contexts, sent = [], []
    for i, size in enumerate(((480, 640), (480, 640), (240, 320))):
        img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
        frame.pts, frame.time_base = 3000 * i, VIDEO_TIME_BASE
        payloads, _ = encoder.encode(frame, force_keyframe=i == 0)
        assert payloads
        contexts.append(encoder.codec)
        sent.append(b"".join(payloads))
    assert contexts[0] is contexts[1]
    assert contexts[2] is not contexts[1]
    # x264 writes its settings into an SEI of each new context's first keyframe;
    # ultrafast searches with "dia" at subpel level 0 (aiortc's medium: "hex", 7).
    for first in (sent[0], sent[2]):
        assert b"me=dia subme=0" in first, "x264 not on preset ultrafast"

if __name__ == "__main__":
    # Print the table to record in CHECKED, for the installed aiortc or the given wheels.
    if len(sys.argv) > 1:
        found = dict(wheel_fingerprints(Path(arg)) for arg in sys.argv[1:])
    else:
        found = {aiortc.__version__: installed_fingerprints()}
    for version, prints in sorted(found.items()):
        print(f'    "{version}": {{')
        for name, value in prints.items():
            print(f'        "{name}": "{value}",')
        print("    },")
