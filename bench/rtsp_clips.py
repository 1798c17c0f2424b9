"""Stamped H.264 clips of the synthetic checkout, for RTSP cameras in the benches.

    python bench/rtsp_clips.py --out DIR --streams 4 [--seconds 120] [--fps 20]
                               [--size 640x480]

Renders seed ``n`` (standard difficulty; seeds 1, 2, …, far from the held-out
90000-99999) for ``--seconds``, writes each frame's corner stamp
(:mod:`edge.stamp`) with its frame number and ``time_ms`` = milliseconds from
the clip's first frame, and encodes it as a camera would (libx264,
``zerolatency``, a key frame every second, no B-frames) into
``DIR/seed{n}-{W}x{H}-{fps}fps-{s}s.mp4``. A clip already there is reused.
``bench/rtsp_camera_server.py`` serves them; a viewer adds the time the clip
started playing to a stamp's ``time_ms`` to get its glass time.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av

from edge.seeds import refuse_held_out
from edge.sim.live import parse_size
from edge.sim.scene import Scene
from edge.stamp import stamp_frame


def clip_path(folder: Path, seed: int, size: tuple[int, int], fps: int, seconds: int) -> Path:
    """Where the clip of these settings lives in ``folder``."""
    return folder / f"seed{seed}-{size[0]}x{size[1]}-{fps}fps-{seconds}s.mp4"


def render_clip(folder: Path, seed: int, *, size: tuple[int, int], fps: int,
                seconds: int) -> Path:
    """Render (or reuse) one clip; written under a temporary name, then renamed."""
    refuse_held_out([seed], "RTSP camera clips")
    out = clip_path(folder, seed, size, fps, seconds)
    if out.is_file():
        return out
    folder.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part.mp4")
    scene = Scene(seed, fps=fps, size=size, difficulty="standard", keep_history=False)
    n = seconds * fps
    t0 = time.monotonic()
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, fps)
        stream.options = {"tune": "zerolatency", "preset": "veryfast", "g": str(fps),
                          "bf": "0", "crf": "23"}
        for k in range(n):
            image, _ = scene.render(k)
            stamp_frame(image, k, round(k * 1000 / fps))
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = k
            for packet in stream.encode(frame):
                container.mux(packet)
            if (k + 1) % (n // 4 or 1) == 0:
                print(f"  seed {seed}: {k + 1}/{n} frames ({time.monotonic() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
        for packet in stream.encode():
            container.mux(packet)
    tmp.rename(out)
    return out


def render_clips(folder: Path, streams: int, *, size: tuple[int, int], fps: int,
                 seconds: int) -> list[Path]:
    """Clips of seeds 1..``streams``."""
    return [render_clip(folder, seed, size=size, fps=fps, seconds=seconds)
            for seed in range(1, streams + 1)]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--streams", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--fps", type=int, default=20)
    ap.add_argument("--size", default="640x480")
    args = ap.parse_args(argv)
    for path in render_clips(args.out, args.streams, size=parse_size(args.size), fps=args.fps,
                             seconds=args.seconds):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
