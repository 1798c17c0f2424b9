"""The corner stamp survives lossy video and JPEG compression and rejects non-stamps."""

from __future__ import annotations

import io

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge.stamp import (
    STAMP_BITS,
    TIME_MODULUS,
    crc8,
    read_stamp,
    stamp_frame,
    stamp_geometry,
    unwrap_time_ms,
)

EPOCH_MS = 1_760_000_000_000
N_FRAMES = 12


def _textured_frames(width: int, height: int, n: int, seed: int) -> list[npt.NDArray[np.uint8]]:
    """A panning textured background with per-frame sensor noise, BGR uint8."""
    rng = np.random.default_rng(seed)
    pan = 6
    wide = width + pan * n
    low = cv2.resize(
        rng.normal(128, 45, (height // 8, wide // 8)).astype(np.float32),
        (wide, height),
        interpolation=cv2.INTER_CUBIC,
    )
    fine = cv2.GaussianBlur(rng.normal(0, 35, (height, wide)).astype(np.float32), (0, 0), 1.0)
    texture = low + fine
    tint = np.array([0.85, 1.0, 1.15], dtype=np.float32)
    frames = []
    for t in range(n):
        grey = texture[:, pan * t : pan * t + width] + rng.normal(0, 6, (height, width))
        frames.append(np.clip(grey[:, :, None] * tint, 0, 255).astype(np.uint8))
    return frames


def _stamped(
    width: int, height: int, seed: int = 0
) -> tuple[list[npt.NDArray[np.uint8]], list[tuple[int, int]]]:
    frames = _textured_frames(width, height, N_FRAMES, seed)
    truth = []
    for i, frame in enumerate(frames):
        frame_id = 4_000_000_000 + i if i % 2 else i
        time_ms = EPOCH_MS + 33 * i + 7 * seed
        stamp_frame(frame, frame_id, time_ms)
        truth.append((frame_id, time_ms % TIME_MODULUS))
    return frames, truth


def _video_roundtrip(
    frames: list[npt.NDArray[np.uint8]], codec: str, bit_rate: int
) -> list[npt.NDArray[np.uint8]]:
    """Encode with PyAV at ``bit_rate`` b/s, low-latency settings, and decode."""
    height, width = frames[0].shape[:2]
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.bit_rate = bit_rate
        stream.options = (
            {"preset": "veryfast", "tune": "zerolatency"}
            if codec == "libx264"
            else {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
        )
        for i, frame in enumerate(frames):
            video_frame = av.VideoFrame.from_ndarray(frame, format="bgr24")
            video_frame.pts = i
            out.mux(stream.encode(video_frame))
        out.mux(stream.encode())
    buf.seek(0)
    with av.open(buf) as inp:
        return [f.to_ndarray(format="bgr24") for f in inp.decode(video=0)]


@pytest.mark.parametrize("codec", ["libx264", "libvpx"])
def test_stamp_survives_video_codec_at_300_kbps(codec: str) -> None:
    frames, truth = _stamped(640, 480)
    decoded = _video_roundtrip(frames, codec, 300_000)
    assert len(decoded) == len(truth)
    assert [read_stamp(f) for f in decoded] == truth


@pytest.mark.parametrize(("width", "height"), [(320, 240), (1280, 720)])
def test_stamp_survives_h264_at_other_sizes(width: int, height: int) -> None:
    frames, truth = _stamped(width, height, seed=1)
    decoded = _video_roundtrip(frames[:6], "libx264", 300_000)
    assert [read_stamp(f) for f in decoded] == truth[:6]


@pytest.mark.parametrize(("width", "height"), [(320, 240), (640, 480), (1280, 720)])
def test_stamp_survives_jpeg_quality_30(width: int, height: int) -> None:
    frames, truth = _stamped(width, height, seed=2)
    for frame, expected in zip(frames[:3], truth[:3], strict=True):
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 30])
        assert ok
        assert read_stamp(np.asarray(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), np.uint8)) == expected


def test_stamp_reads_under_dim_lighting_and_grey_input() -> None:
    frame = _textured_frames(640, 480, 1, seed=3)[0]
    stamp_frame(frame, 77, EPOCH_MS)
    dim = (frame.astype(np.float32) * 0.4 + 30).astype(np.uint8)
    assert read_stamp(dim) == (77, EPOCH_MS % TIME_MODULUS)
    grey = np.asarray(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), np.uint8)
    assert read_stamp(grey) == (77, EPOCH_MS % TIME_MODULUS)


def test_unstamped_images_read_as_none() -> None:
    frames = _textured_frames(640, 480, 4, seed=4)
    flat = [np.full((480, 640, 3), v, np.uint8) for v in (0, 128, 255)]
    assert all(read_stamp(f) is None for f in frames + flat)
    assert read_stamp(np.zeros((10, 10, 3), np.uint8)) is None


def test_corrupted_stamp_fails_crc() -> None:
    frame = np.full((480, 640, 3), 128, np.uint8)
    stamp_frame(frame, 12345, EPOCH_MS)
    geo = stamp_geometry(640, 480)
    cell = geo["cell"]
    x, y = (geo["data_col0"] + 5) * cell, geo["data_row0"] * cell
    frame[y : y + cell, x : x + cell] = 255 - frame[y : y + cell, x : x + cell]
    assert read_stamp(frame) is None


def test_geometry_fits_budget_and_lists_reference_cells() -> None:
    geo = stamp_geometry(640, 480)
    assert geo["width_px"] <= 200
    assert geo["height_px"] <= 40
    assert geo["cell"] % 4 == 0
    assert geo["data_rows"] * geo["data_cols"] == STAMP_BITS == 80
    assert geo["black_cells"]
    assert geo["white_cells"]
    assert stamp_geometry(320, 240)["cell"] == 4
    assert stamp_geometry(1280, 720)["cell"] == 16


def test_crc_check_value_and_time_unwrap() -> None:
    assert crc8(b"123456789") == 0xDF
    now = EPOCH_MS + 120
    assert unwrap_time_ms(EPOCH_MS % TIME_MODULUS, now) == EPOCH_MS


def test_out_of_range_arguments_raise() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    with pytest.raises(ValueError, match="frame_id"):
        stamp_frame(frame, 2**32, 0)
    with pytest.raises(ValueError, match="time_ms"):
        stamp_frame(frame, 0, -1)
    with pytest.raises(ValueError, match="too small"):
        stamp_frame(np.zeros((16, 100, 3), np.uint8), 0, 0)
