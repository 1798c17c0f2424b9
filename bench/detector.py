"""Benchmark the detection stage on ONNX Runtime (CPU).

Measures, for 1 and 2 intra-op threads and batches of 1 and 3 images:

* inference alone: ``session.run`` on a ready ``(N, 3, H, W)`` tensor at the
  model's native input size;
* the full ``detect()`` call (letterbox + inference + decode) on 640x480
  BGR frames, as the daemon pays it per camera frame.

Each case warms up, then reports the median and 90th percentile over
``--repeats`` calls. Prints the machine, a markdown table for
``docs/BENCHMARKS.md`` and optionally writes the figures as JSON::

    python bench/detector.py --model edge/models/dishnet.onnx --repeats 50 --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge.detect.contract import read_model_info
from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.errors import ModelError

DEFAULT_MODEL = Path("edge/models/dishnet.onnx")
THREADS = (1, 2)
BATCHES = (1, 3)
FRAME_SIZE = (640, 480)
WARMUP = 3


def machine() -> dict[str, Any]:
    """Describe the machine: CPU model, cores usable by this process, library versions."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "python": platform.python_version(),
        "onnxruntime": ort.__version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }


def frames(count: int, seed: int = 0) -> list[npt.NDArray[np.uint8]]:
    """``count`` distinct 640x480 BGR frames: a noisy counter with a few bright rectangles."""
    rng = np.random.default_rng(seed)
    width, height = FRAME_SIZE
    images = []
    for _ in range(count):
        image = rng.integers(40, 90, (height, width, 3), dtype=np.uint8)
        for _ in range(4):
            x, y = int(rng.integers(0, width - 120)), int(rng.integers(0, height - 120))
            color = tuple(int(c) for c in rng.integers(120, 255, 3))
            cv2.rectangle(image, (x, y), (x + 100, y + 100), color, thickness=-1)
        images.append(image)
    return images


def timed(call: Callable[[], object], repeats: int) -> dict[str, float]:
    """Median and 90th percentile wall time of ``call`` in milliseconds, after a warm-up."""
    for _ in range(WARMUP):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1e6)
    return {"p50_ms": float(np.median(samples)), "p90_ms": float(np.percentile(samples, 90))}


def measure(detector: OnnxRuntimeDetector, batch: int, repeats: int) -> dict[str, Any]:
    """Time inference alone and the full ``detect()`` on ``batch`` images."""
    width, height = detector.info.input_size
    tensor = np.random.default_rng(batch).standard_normal(
        (batch, 3, height, width)).astype(np.float32)
    # A fixed-batch model runs a larger batch as successive calls, as detect() does.
    step = detector.info.batch or batch
    chunks = [tensor[i:i + step] for i in range(0, batch, step)]
    images = frames(batch)
    inference = timed(lambda: [detector.infer(chunk) for chunk in chunks], repeats)
    detect = timed(lambda: detector.detect(images), repeats)
    return {"inference": inference, "detect": detect,
            "detect_per_image_p50_ms": detect["p50_ms"] / batch}


def run(model: Path, repeats: int) -> list[dict[str, Any]]:
    """Time every (threads, batch) case; one result dict per case."""
    results = []
    for threads in THREADS:
        detector = OnnxRuntimeDetector(model, threads=threads)
        for batch in BATCHES:
            results.append({"threads": threads, "batch": batch,
                            **measure(detector, batch, repeats)})
        detector.close()
    return results


def table(results: list[dict[str, Any]]) -> str:
    """The results as a markdown table."""
    lines = ["| threads | batch | inference p50 / p90 (ms) | detect() p50 / p90 (ms) "
             "| detect() per image p50 (ms) |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(
            f"| {r['threads']} | {r['batch']} | {r['inference']['p50_ms']:.2f} / "
            f"{r['inference']['p90_ms']:.2f} | {r['detect']['p50_ms']:.2f} / "
            f"{r['detect']['p90_ms']:.2f} | {r['detect_per_image_p50_ms']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark, print and optionally save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL,
                        help=f"ONNX detector (default {DEFAULT_MODEL})")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per case")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    try:
        info = read_model_info(args.model)
    except ModelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    host = machine()
    command = "python bench/detector.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"command: {command}")
    print(f"machine: {host['cpu']}, {host['cores_usable']} usable of {host['cores_online']} "
          f"cores, onnxruntime {host['onnxruntime']}, numpy {host['numpy']}, "
          f"opencv {host['opencv']}, python {host['python']}")
    print(f"model: {args.model} ({info.model_version}), input {info.input_size[0]}x"
          f"{info.input_size[1]}, batch {info.batch or 'dynamic'}, {info.num_classes} classes, "
          f"{info.output_format}; frames {FRAME_SIZE[0]}x{FRAME_SIZE[1]}, "
          f"{args.repeats} repeats after {WARMUP} warm-up calls\n")
    results = run(args.model, args.repeats)
    print(table(results))
    if args.json:
        report = {
            "command": command, "machine": host,
            "model": {"path": str(args.model),
                      "sha256": hashlib.sha256(args.model.read_bytes()).hexdigest(),
                      "version": info.model_version, "input_size": list(info.input_size),
                      "batch": info.batch, "output_format": info.output_format},
            "frame_size": list(FRAME_SIZE), "repeats": args.repeats, "warmup": WARMUP,
            "results": results,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
