"""Benchmark INT8 quantization: held-out mAP and CPU speed of FP32 vs INT8 models.

Quantizes the float detector with :func:`calibration.quantize.quantize_model`
for both targets, calibrating on training material only (simulator seeds
1000-1059 by default, or ``--calib-frames DIR``), then

* evaluates FP32, INT8-cpu and INT8-tensorrt (run on the CPU, for
  information) on held-out COCO splits with :mod:`edge.eval` (mAP@0.5 all
  classes and dishes, mAP@0.5:0.95);
* times ``detect()`` on 640x480 frames (letterbox + inference + decode) and
  inference alone for 1 and 2 intra-op threads, the models interleaved
  round by round in one process so that load from other processes hits them
  alike; each INT8 round is divided by the FP32 round next to it and the
  median of those ratios is reported beside the median times.

``--variants`` also builds the recipes that were tried on the way (per-tensor
weights, 7-bit weights, entropy and percentile calibration, convolutions
only) and reports them on a tuning split (``--tune-data``, not held out) so
the choice of default is not made on held-out seeds::

    python bench/quantize.py --json int8.json
    python bench/quantize.py --variants --skip-heldout
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/quantize.py` from a checkout
    sys.path.insert(0, str(REPO))

from bench.detector import machine  # noqa: E402
from calibration.dataset import parse_seeds  # noqa: E402
from calibration.frame_sources import image_frames, sim_frames  # noqa: E402
from calibration.quantize import quantize_model  # noqa: E402
from edge.detect.onnxrt import OnnxRuntimeDetector  # noqa: E402
from edge.detect.preprocess import Letterbox  # noqa: E402
from edge.eval.cli_detector import evaluate  # noqa: E402
from edge.eval.datasets import open_dataset  # noqa: E402
from edge.eval.detection import DetectionEvaluator  # noqa: E402

DEFAULT_MODEL = Path("edge/models/dishnet.onnx")
DEFAULT_HELDOUT = ("data/heldout", "data/ds1")
DEFAULT_TUNE = "data/ds1/val"
THREADS = (1, 2)
SPEED_FRAMES = 8
WARMUP = 3


@dataclass(frozen=True, slots=True)
class Variant:
    """One quantization recipe: a name and keyword arguments of ``quantize_model``."""

    name: str
    options: dict[str, Any]


MAIN = (Variant("int8-cpu", {"target": "cpu"}),
        Variant("int8-tensorrt", {"target": "tensorrt"}))
TRIED = (
    Variant("cpu per-tensor", {"target": "cpu", "per_channel": False}),
    Variant("cpu reduce-range", {"target": "cpu", "reduce_range": True}),
    Variant("cpu entropy", {"target": "cpu", "method": "entropy"}),
    Variant("cpu percentile", {"target": "cpu", "method": "percentile"}),
    Variant("cpu conv-only", {"target": "cpu", "op_types": ("Conv", "Relu", "Clip")}),
)


def calibration_frames(args: argparse.Namespace) -> Callable[[], Iterator[npt.NDArray[np.uint8]]]:
    """A factory of fresh calibration frame iterators (one per quantization), never held out."""
    if args.calib_frames is not None:
        return lambda: image_frames(args.calib_frames, args.calib_max)[1]
    seeds = parse_seeds(args.calib_seeds)
    return lambda: sim_frames(seeds, args.frames_per_seed)[1]


def accuracy(model: Path, data: str, split: str) -> dict[str, Any]:
    """mAP of ``model`` on one dataset through :mod:`edge.eval` (threshold 0.01, as eval does)."""
    detector = OnnxRuntimeDetector(model, threads=1, score_threshold=0.01)
    try:
        dataset = open_dataset(Path(data), split=split, num_classes=detector.info.num_classes)
        evaluator = DetectionEvaluator(detector.info.class_names)
        evaluate(detector, dataset, evaluator, progress=False)
    finally:
        detector.close()
    summary = evaluator.summary()
    return {k: summary[k] for k in ("n_images", "map50", "map50_dishes", "map50_95")}


def speed(models: dict[str, Path], threads: int, rounds: int) -> dict[str, dict[str, float]]:
    """Interleaved timing of every model; per model median ms per frame and ratio to FP32.

    Each round times :data:`SPEED_FRAMES` ``detect()`` calls (one 640x480
    frame each) and as many inference calls per model, in a rotating order.
    """
    detectors = {name: OnnxRuntimeDetector(path, threads=threads) for name, path in models.items()}
    letterbox = Letterbox.from_info(next(iter(detectors.values())).info)
    frames = list(sim_frames([1000], SPEED_FRAMES, every=7)[1])
    tensors = [letterbox(f)[0][None] for f in frames]
    samples: dict[str, dict[str, list[float]]] = {n: {"detect": [], "infer": []} for n in models}
    for detector in detectors.values():
        for _ in range(WARMUP):
            detector.detect(frames[:1])
    names = list(detectors)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            detector = detectors[name]
            start = time.perf_counter()
            for frame in frames:
                detector.detect([frame])
            middle = time.perf_counter()
            for tensor in tensors:
                detector.infer(tensor)
            end = time.perf_counter()
            samples[name]["detect"].append((middle - start) * 1e3 / len(frames))
            samples[name]["infer"].append((end - middle) * 1e3 / len(tensors))
    for detector in detectors.values():
        detector.close()
    base = samples[names[0]]
    return {name: {
        "detect_ms": float(np.median(s["detect"])), "infer_ms": float(np.median(s["infer"])),
        "detect_ratio": float(np.median(np.divide(s["detect"], base["detect"]))),
        "infer_ratio": float(np.median(np.divide(s["infer"], base["infer"]))),
    } for name, s in samples.items()}


def _quantize(model: Path, out: Path, variant: Variant,
              frames: Callable[[], Iterator[npt.NDArray[np.uint8]]]) -> tuple[Path, float]:
    result = quantize_model(model, out, frames(), progress=False, source="bench",
                            **variant.options)
    return result.out, result.seconds


def _pct(value: float) -> str:
    return f"{value:.3f}"


def heldout_table(acc: dict[str, dict[str, dict[str, Any]]], fast: dict[int, Any]) -> str:
    """Markdown: accuracy per dataset, then speed per thread count, one row per model."""
    datasets = list(next(iter(acc.values())))
    head = "| model | " + " | ".join(
        f"{Path(d).name} mAP@0.5 / dishes / @0.5:0.95" for d in datasets)
    head += " | " + " | ".join(f"{t} thr detect ms (x FP32) | {t} thr infer ms (x FP32)"
                               for t in fast) + " |"
    lines = [head, "|" + "---|" * (1 + len(datasets) + 2 * len(fast))]
    for name, per_data in acc.items():
        cells = [f"{_pct(a['map50'])} / {_pct(a['map50_dishes'])} / {_pct(a['map50_95'])}"
                 for a in per_data.values()]
        for t in fast:
            s = fast[t][name]
            cells += [f"{s['detect_ms']:.2f} ({s['detect_ratio']:.2f})",
                      f"{s['infer_ms']:.2f} ({s['infer_ratio']:.2f})"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Quantize, evaluate, time; print the tables and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", nargs="+", default=list(DEFAULT_HELDOUT),
                        help="held-out COCO roots (split --split) for the accuracy table")
    parser.add_argument("--split", default="test")
    parser.add_argument("--calib-seeds", default="1000-1059",
                        help="simulator seeds rendered for calibration (default 1000-1059)")
    parser.add_argument("--frames-per-seed", type=int, default=2)
    parser.add_argument("--calib-frames", type=Path, default=None,
                        help="calibrate on these images instead (e.g. data/ds1/train/images)")
    parser.add_argument("--calib-max", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    parser.add_argument("--variants", action="store_true",
                        help="also measure the recipes tried (on --tune-data)")
    parser.add_argument("--tune-data", default=DEFAULT_TUNE)
    parser.add_argument("--skip-heldout", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    frames = calibration_frames(args)
    host = machine()
    command = "python bench/quantize.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    print(f"command: {command}\ncommit: {commit}\nmachine: {host['cpu']}, "
          f"{host['cores_usable']} usable cores, onnxruntime {host['onnxruntime']}")
    report: dict[str, Any] = {"command": command, "commit": commit, "machine": host}
    with tempfile.TemporaryDirectory(prefix="bench-quant-") as tmp_name:
        tmp = Path(tmp_name)
        models = {"fp32": args.model}
        variants = MAIN + (TRIED if args.variants else ())
        report["quantize_s"] = {}
        for variant in variants:
            models[variant.name], seconds = _quantize(
                args.model, tmp / f"{variant.name.replace(' ', '_')}.onnx", variant, frames)
            report["quantize_s"][variant.name] = round(seconds, 1)
        main_models = {k: models[k] for k in ("fp32", *(v.name for v in MAIN))}
        if not args.skip_heldout:
            acc = {name: {d: accuracy(path, d, args.split) for d in args.data}
                   for name, path in main_models.items()}
            fast = {t: speed(main_models, t, args.rounds) for t in THREADS}
            report |= {"heldout": acc, "speed": fast}
            print("\nHeld-out accuracy and CPU speed (detect() = letterbox + inference + "
                  "decode of a 640x480 frame; x FP32 = median of paired round ratios)\n")
            print(heldout_table(acc, fast))
        if args.variants:
            acc = {name: {args.tune_data: accuracy(path, args.tune_data, args.split)}
                   for name, path in models.items()}
            fast = {t: speed(models, t, args.rounds) for t in THREADS}
            report |= {"variants": {"accuracy": acc, "speed": fast,
                                    "quantize_s": report["quantize_s"]}}
            print(f"\nRecipes tried, on the tuning split {args.tune_data} (not held out)\n")
            print(heldout_table(acc, fast))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    cv2.setNumThreads(1)
    sys.exit(main())
