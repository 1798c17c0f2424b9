"""The docs' picture of the cashier's overlay: ``docs/overlay.png``.

    python bench/overlay_shot.py [--out docs/overlay.png] [--engineer PATH] [--photo PATH]
                                 [--seed 11] [--frames 500]

Runs the daemon's own stages on the synthetic counter (``edge.sim.scene``,
640x480, standard difficulty): the shipped detector on every frame, the tray
tracker and biller (``make_biller``, the default site config and its menu).
Of the first ``--frames`` frames it keeps the one with the most trays in
view (then the most dishes) and draws the cashier's overlay on it, as a
viewer of ``dishtracker run`` sees it. ``--engineer`` writes the engineer's
overlay of the same frame, ``--photo`` the photo of the first bill that
closed (``GET /api/bills/{id}/snapshot.jpg``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/overlay_shot.py` from a checkout
    sys.path.insert(0, str(REPO))

from edge.annotate import annotate  # noqa: E402
from edge.billing.biller import make_biller, make_menu  # noqa: E402
from edge.config import DEFAULT_MODEL, SiteConfig, StreamConfig  # noqa: E402
from edge.detect import load_detector  # noqa: E402
from edge.frames import Frame, TrackedFrame  # noqa: E402
from edge.overlay import cashier_overlay  # noqa: E402
from edge.sim.scene import Scene  # noqa: E402

WIDTH, HEIGHT, FPS = 640, 480, 20.0


def best_frame(seed: int, frames: int) -> tuple[TrackedFrame, bytes | None, list[str]]:
    """The busiest tracked frame of the run, the first bill's photo, the class names."""
    site = SiteConfig()
    detector = load_detector(DEFAULT_MODEL, score_threshold=site.detector.score_threshold)
    scene = Scene(seed, fps=FPS, size=(WIDTH, HEIGHT))
    stream = StreamConfig(id="cam1", url="synthetic://")
    biller = make_biller(stream, site, detector.info.class_names, WIDTH, HEIGHT, clock_offset=0.0)
    best: tuple[tuple[int, int], TrackedFrame] | None = None
    photo = None
    for seq in range(frames):
        img, _ = scene.render(seq)
        frame = Frame("cam1", seq, img, seq / FPS)
        step = biller.update(frame, detector.detect([img])[0])
        if photo is None and step.closed:
            photo = step.closed[0].snapshot_jpeg
        tf = TrackedFrame(frame, None, step.tracks,
                          bills=tuple((t.tray_id, len(t.items), t.total) for t in step.trays),
                          checkout_line=biller.line.points)
        trays = sum(1 for t in step.tracks if t.tray_id == t.track_id)
        score = (trays, len(step.tracks))
        if best is None or score > best[0]:
            best = (score, tf)
    assert best is not None, "no frame"
    return best[1], photo, list(detector.info.class_names)


def main(argv: Sequence[str] | None = None) -> int:
    """Write the pictures; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "overlay.png")
    ap.add_argument("--engineer", type=Path, default=None)
    ap.add_argument("--photo", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--frames", type=int, default=500)
    args = ap.parse_args(argv)
    tf, photo, class_names = best_frame(args.seed, args.frames)
    img: npt.NDArray[np.uint8] = cashier_overlay(tf, make_menu(SiteConfig(), class_names))
    cv2.imwrite(str(args.out), img)
    print(f"wrote {args.out} (frame {tf.frame.seq}, {len(tf.tracks)} tracks)")
    if args.engineer is not None:
        cv2.imwrite(str(args.engineer), annotate(tf, fps=FPS, latency_ms=None,
                                                 class_names=class_names))
        print(f"wrote {args.engineer}")
    if args.photo is not None and photo is not None:
        args.photo.write_bytes(photo)
        print(f"wrote {args.photo}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
