"""``dishtracker calibrate scene``: counter region, tray direction and speed, checkout line.

Reads up to ``--seconds`` of a camera or a file (PyAV, opened the way the
daemon opens it: :func:`edge.sources.av_input`), or of the synthetic scene,
measures tray motion (:mod:`calibration.motion`), and writes the scene file
(:mod:`edge.scene`) that a stream's ``scene = "…"`` field points the daemon at,
plus a preview picture beside it (``OUT`` with ``.png``): the counter region,
the direction arrow, the checkout line and the speed on a frame with a tray.
Both files are written under a temporary name and renamed, so a failed run
leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import av
import av.error
import cv2
import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from calibration.motion import LINE_AT, MotionEstimator, SceneMotion
from edge.config import StreamConfig
from edge.errors import ConfigError, DishTrackerError, InputFormatError
from edge.scene import SceneCalibration, format_scene, write_atomic
from edge.sources.av_input import av_input, file_path, input_kind
from edge.sources.credentials import mask_url

Frame = tuple[npt.NDArray[np.uint8], float]


class SourceError(DishTrackerError):
    """The video source cannot be opened or decoded."""


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dishtracker calibrate scene`` to ``parser``."""
    parser.add_argument("--source", required=True, metavar="URL|FILE",
                        help="camera URL (rtsp://, http://, udp://, /dev/videoN), a video "
                             "file, or synthetic://?seed=…")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="seconds of video to analyse (default 60; trays must pass)")
    parser.add_argument("--out", type=Path, required=True,
                        help="scene file to write (TOML); the preview goes beside it (.png)")
    parser.add_argument("--line-at", type=float, default=LINE_AT,
                        help="checkout line position along the counter region, 0 = where "
                             "trays enter, 1 = where they leave (default 0.62)")
    parser.add_argument("--transport", choices=["tcp", "udp"], default="tcp",
                        help="RTSP transport")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _open_error(source: str, err: BaseException) -> SourceError:
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return SourceError(f"--source {mask_url(source)}: cannot open: {reason}")


def read_frames(source: str, seconds: float, transport: str = "tcp") -> Iterator[Frame]:
    """Decode ``(BGR image, time in s)`` from the start of ``source`` for ``seconds``.

    Raises
    ------
    SourceError
        The source cannot be opened, has no video, or no frame decodes.
    """
    if source.startswith("synthetic://"):
        yield from _synthetic_frames(source, seconds)
        return
    try:
        kind = input_kind(source)
        stream_cfg = StreamConfig(id="calibrate", url=source, transport=transport)
    except ValueError as err:
        raise SourceError(f"--source {mask_url(source)}: {err}") from None
    if kind == "file" and not file_path(source).is_file():
        raise SourceError(f"--source {source}: no such file")
    spec = av_input(stream_cfg)
    try:
        container = av.open(spec.target, format=spec.format, options=spec.options,
                            timeout=(spec.open_timeout_s, spec.read_timeout_s))
    except (av.error.FFmpegError, OSError) as err:
        raise _open_error(source, err) from err
    n = 0
    with contextlib.closing(container):
        if not container.streams.video:
            raise SourceError(f"--source {mask_url(source)}: has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 20)
        t0: float | None = None
        try:
            for frame in container.decode(stream):
                t = frame.time if frame.time is not None else n / rate
                t0 = t if t0 is None else t0
                if t - t0 > seconds:
                    break
                n += 1
                yield np.asarray(frame.to_ndarray(format="bgr24"), np.uint8), t - t0
        except av.error.FFmpegError as err:
            if n == 0:
                raise SourceError(f"--source {mask_url(source)}: unreadable video: {err}") from err
            # a damaged tail: measure what decoded
    if n == 0:
        raise SourceError(f"--source {mask_url(source)}: no video frame could be decoded")


def _synthetic_frames(source: str, seconds: float) -> Iterator[Frame]:
    """Frames of the synthetic scene, as fast as they render (no pacing, no stamp)."""
    from edge.sim.live import SyntheticSpec  # noqa: PLC0415  # the simulator only if asked
    from edge.sim.scene import Scene  # noqa: PLC0415

    try:
        spec = SyntheticSpec.from_url(source)
    except ConfigError as err:
        raise SourceError(f"--source {source}: {err}") from None
    scene = Scene(spec.seed, fps=spec.fps, size=spec.size, difficulty=spec.difficulty,
                  keep_history=False)
    for f in range(round(seconds * spec.fps) + 1):
        yield scene.render(f)[0], f / spec.fps


def estimate(frames: Iterator[Frame], *, line_at: float = LINE_AT,
             progress: tqdm | None = None) -> tuple[SceneMotion, npt.NDArray[np.uint8]]:
    """Measure the scene from ``frames``; also returns the preview's frame (most motion).

    Raises
    ------
    NoMotionError
        Too little tray motion (see :meth:`MotionEstimator.result`).
    """
    estimator: MotionEstimator | None = None
    best: npt.NDArray[np.uint8] | None = None
    best_votes = -1
    for image, t in frames:
        if estimator is None:
            estimator = MotionEstimator(image.shape[1], image.shape[0], line_at=line_at)
        votes = estimator.add(image, t)
        if votes > best_votes:
            best, best_votes = image.copy(), votes
        if progress is not None:
            progress.update(round(t - progress.n, 1))
    if estimator is None or best is None:
        raise SourceError("the source gave no frames")
    return estimator.result(), best


def _point(p: tuple[float, float]) -> tuple[int, int]:
    return round(p[0] * 16), round(p[1] * 16)


def draw_preview(image: npt.NDArray[np.uint8], scene: SceneCalibration) -> npt.NDArray[np.uint8]:
    """``image`` with the region (shaded), the direction arrow, the line and the figures."""
    out = image.copy()
    h, w = out.shape[:2]
    region = np.round(np.asarray(scene.region) * 16).astype(np.int32)
    shade = out.copy()
    cv2.fillPoly(shade, [region], (255, 200, 0), cv2.LINE_AA, 4)
    out = np.asarray(cv2.addWeighted(shade, 0.25, out, 0.75, 0), np.uint8)
    cv2.polylines(out, [region], True, (255, 200, 0), 2, cv2.LINE_AA, 4)
    cx, cy = np.asarray(scene.region).mean(axis=0)
    length = 0.25 * min(w, h)
    dx, dy = scene.direction
    tail, tip = (cx - dx * length / 2, cy - dy * length / 2), (cx + dx * length / 2,
                                                                cy + dy * length / 2)
    cv2.arrowedLine(out, _point(tail), _point(tip), (0, 255, 255), 3, cv2.LINE_AA, 4, 0.25)
    cv2.line(out, _point(scene.line[0]), _point(scene.line[1]), (0, 0, 255), 3, cv2.LINE_AA, 4)
    text = (f"direction {scene.direction_deg:.1f} deg  speed {scene.speed_px_s:.0f} px/s  "
            f"({scene.moving_frames}/{scene.frames} frames moving)")
    scale = max(0.4, w / 1280)
    for colour, thick in (((0, 0, 0), 4), ((255, 255, 255), 1)):
        cv2.putText(out, text, (10, round(h - 12 * scale * 2)), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, colour, thick, cv2.LINE_AA)
    return out


def preview_path(out: Path) -> Path:
    """Where the preview of scene file ``out`` goes (same name, ``.png``)."""
    return out.with_suffix(".png") if out.suffix != ".png" else out.with_suffix(".preview.png")


def run_scene(args: argparse.Namespace) -> int:
    """Calibrate the scene of ``args.source``; writes ``args.out`` and its preview.

    Returns
    -------
    int
        0 on success (``dishtracker`` exits with 2 on a :class:`DishTrackerError`:
        bad source, unreadable video, no trays moving).
    """
    if not args.seconds > 0:
        raise InputFormatError(f"--seconds must be > 0, got {args.seconds}")
    if not 0.0 < args.line_at < 1.0:
        raise InputFormatError(f"--line-at must be between 0 and 1, got {args.line_at}")
    out: Path = args.out
    if out.is_dir():
        raise InputFormatError(f"--out {out}: is a directory; give a file name (scene.toml)")
    start = time.perf_counter()
    with tqdm(total=args.seconds, desc="calibrate scene", unit="s", disable=args.quiet,
              bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s video [{elapsed}]") as bar:
        motion, frame = estimate(read_frames(args.source, args.seconds, args.transport),
                                 line_at=args.line_at, progress=bar)
    h, w = frame.shape[:2]
    scene = SceneCalibration(
        size=(w, h), direction=motion.direction, speed_px_s=motion.speed_px_s,
        region=motion.region, line=motion.line, source=mask_url(args.source),
        seconds=round(motion.seconds, 2), frames=motion.frames,
        moving_frames=motion.moving_frames, direction_spread_deg=motion.direction_spread_deg,
        created=datetime.now(timezone.utc).replace(microsecond=0).isoformat(),  # UTC: 3.11+
    )
    ok, png = cv2.imencode(".png", draw_preview(frame, scene))
    if not ok:
        raise InputFormatError("cannot encode the preview picture")
    preview = preview_path(out)
    write_atomic(preview, png.tobytes())
    write_atomic(out, format_scene(scene).encode("utf-8"))
    (x1, y1), (x2, y2) = scene.line
    print(f"direction {scene.direction_deg:.1f} deg (spread {scene.direction_spread_deg:.1f}), "
          f"speed {scene.speed_px_s:.0f} px/s over {scene.moving_frames} moving of "
          f"{scene.frames} frames; checkout line ({x1:.0f}, {y1:.0f})-({x2:.0f}, {y2:.0f})")
    if scene.direction_spread_deg > 15 or motion.moving_frames < 0.05 * motion.frames:
        print("warning: few or inconsistent moving frames; check the preview and consider "
              "more --seconds while trays pass")
    print(f"wrote {out} and {preview} in {time.perf_counter() - start:.0f} s; use it with "
          f"scene = \"{out.name}\" in the stream's [[streams]] table")
    return 0
