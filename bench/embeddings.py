"""Benchmark: what the detector's ``embeddings`` output costs per frame.

    python bench/embeddings.py [--model edge/models/dishnet.onnx] [--baseline OLD.onnx]
                               [--frames 300] [--repeats 3] [--json OUT]

The full ``detect()`` call (letterbox, inference, decoding: what the daemon
pays per detected camera frame) of the model with its ``embeddings`` output
against the same model without it, on ONNX Runtime with one thread, on
640x480 frames rendered from tuning seed 21 (standard), in order. Without
``--baseline`` the baseline is the model with its ``embeddings`` output
removed from the graph's outputs (ONNX Runtime then drops the nodes that
only fed it); ``--baseline`` names another file (e.g. the model before the
output was added: ``git show REV:edge/models/dishnet.onnx > old.onnx``).
Calls alternate between the two, frame by frame, so both see the same
machine. Prints the median and 90th percentile per call of each and their
ratio; the target is a median ratio of at most 1.10 (PASS/FAIL).

Then the tracker's side: the full system's ``update()`` (tracking and billing,
``make_biller``) over the same frames in order, with the detections'
embeddings (dish tracks keep views: :mod:`edge.track.views`) and without,
fresh trackers per repeat, alternating; median and 95th percentile per frame.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

from edge.config import DEFAULT_MODEL, SiteConfig, StreamConfig
from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.frames import Detections, Frame
from edge.hostinfo import cpu_model
from edge.sim.scene import Scene

TARGET_RATIO = 1.10


def without_embeddings(model: Path, out: Path) -> Path:
    """``model`` with only its first output (``detections``)."""
    proto = onnx.load(str(model))
    del proto.graph.output[1:]
    onnx.save(proto, out)
    return out


def _tracking_times(frames: list[npt.NDArray[np.uint8]], model: Path,
                    repeats: int) -> dict[str, list[float]]:
    """Seconds per ``update()`` of the full system, with and without embeddings."""
    from edge.billing.biller import make_biller  # noqa: PLC0415

    with OnnxRuntimeDetector(model, threads=1, score_threshold=0.3) as det:
        names = det.info.class_names
        dets = [det.detect([image])[0] for image in frames]
    plain = [Detections(d.boxes, d.scores, d.classes) for d in dets]
    out: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(repeats):
        for name, run in (("without", plain), ("with", dets)):
            biller = make_biller(StreamConfig(id="cam", url="synthetic://"), SiteConfig(),
                                 names, 640, 480, run_id="b", clock_offset=0.0,
                                 snapshots=False)
            for i, (image, d) in enumerate(zip(frames, run, strict=True)):
                t = time.perf_counter()
                biller.update(Frame("cam", i, image, i / 20.0), d)
                out[name].append(time.perf_counter() - t)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--baseline", type=Path, default=None)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    scene = Scene(21, fps=20, size=(640, 480), difficulty="standard", keep_history=False)
    frames = [scene.render(i)[0] for i in range(args.frames)]  # in order: tracks need it
    with tempfile.TemporaryDirectory() as tmp:
        base_path = args.baseline or without_embeddings(args.model, Path(tmp) / "base.onnx")
        with OnnxRuntimeDetector(args.model, threads=1) as model, \
                OnnxRuntimeDetector(base_path, threads=1) as base:
            if model.info.embedding_dim is None:
                p.error(f"{args.model} has no embeddings output")
            times: dict[str, list[float]] = {"with": [], "without": []}
            for image in frames[:5]:  # warm up both
                model.detect([image])
                base.detect([image])
            for _ in range(args.repeats):
                for image in frames:
                    for name, det in (("with", model), ("without", base)):
                        t = time.perf_counter()
                        det.detect([image])
                        times[name].append(time.perf_counter() - t)
    track = _tracking_times(frames, args.model, args.repeats)
    med = {k: 1000 * float(np.median(v)) for k, v in times.items()}
    p90 = {k: 1000 * float(np.percentile(v, 90)) for k, v in times.items()}
    ratio = med["with"] / med["without"]
    verdict = "PASS" if ratio <= TARGET_RATIO else "FAIL"
    cmd = shlex.join(["python", "bench/embeddings.py", *(argv or sys.argv[1:])])
    print(f"# detect() per 640x480 frame, ONNX Runtime, 1 thread; {cpu_model()}\n`{cmd}`\n")
    print("| model | median ms | p90 ms | calls |\n|---|---|---|---|")
    for name in ("without", "with"):
        print(f"| {name} embeddings | {med[name]:.2f} | {p90[name]:.2f} | {len(times[name])} |")
    print(f"\n{verdict}: median ratio {ratio:.3f} (target <= {TARGET_RATIO:.2f})")
    print("\n| tracking and billing per frame | median ms | p95 ms | frames |\n|---|---|---|---|")
    for name in ("without", "with"):
        per = track[name]
        print(f"| {name} embeddings (views) | {1000 * float(np.median(per)):.3f} | "
              f"{1000 * float(np.percentile(per, 95)):.3f} | {len(per)} |")
    if args.json is not None:
        tracking = {k: {"median_ms": 1000 * float(np.median(v)),
                        "p95_ms": 1000 * float(np.percentile(v, 95))} for k, v in track.items()}
        args.json.write_text(json.dumps({"median_ms": med, "p90_ms": p90, "ratio": ratio,
                                         "verdict": verdict, "tracking": tracking,
                                         "cpu": cpu_model()}, indent=2))
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
