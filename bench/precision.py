"""Benchmark ``detector.precision``: FP32 vs INT8 ``detect()`` time here, and the probe's choice.

For each thread count, times the shipped model and its INT8 sibling
(``edge/models/dishnet-int8.onnx``) the way ``bench/quantize.py`` does
(``detect()`` of 640x480 frames rendered from training seed 1000, the models
interleaved round by round, "x FP32" the median of the paired round ratios),
then runs the start-up probe exactly as the daemon does
(:func:`edge.detect.precision.probe`, default budget, no cache) and reports
its timings, its choice and its wall time including loading both models::

    python bench/precision.py
    python bench/precision.py --threads 1 2 4 --rounds 40 --json precision.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/precision.py` from a checkout
    sys.path.insert(0, str(REPO))

from bench.detector import machine  # noqa: E402
from bench.quantize import speed  # noqa: E402
from edge.detect.precision import MARGIN, int8_sibling, probe  # noqa: E402

DEFAULT_MODEL = Path("edge/models/dishnet.onnx")
INT8_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
"""CPU flags that decide how fast INT8 kernels can be (x86 and ARM names)."""


def cpu_flags() -> list[str]:
    """The flags of :data:`INT8_FLAGS` this CPU reports in ``/proc/cpuinfo``."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return []
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            have = set(value.split())
            return [f for f in INT8_FLAGS if f in have]
    return []


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table, one row per thread count."""
    lines = ["| threads | FP32 detect() ms | INT8 detect() ms (x FP32) | FP32 inference ms | "
             "INT8 inference ms (x FP32) | probe FP32 / INT8 ms | probe choice | probe wall s |",
             "|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        fp32, int8, found = r["speed"]["fp32"], r["speed"]["int8"], r["probe"]
        cells = [str(r["threads"]), f"{fp32['detect_ms']:.2f}",
                 f"{int8['detect_ms']:.2f} ({int8['detect_ratio']:.2f})",
                 f"{fp32['infer_ms']:.2f}", f"{int8['infer_ms']:.2f} ({int8['infer_ratio']:.2f})",
                 f"{found['fp32_ms']:.2f} / {found['int8_ms']:.2f}", f"**{found['choice']}**",
                 f"{found['wall_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Time both models per thread count, run the probe, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--int8", type=Path, default=None,
                        help="INT8 model (default: the model's sibling NAME-int8.onnx)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    int8 = args.int8 or int8_sibling(args.model)
    host = machine() | {"int8_flags": cpu_flags()}
    command = "python bench/precision.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    print(f"command: {command}\ncommit: {commit}\nmachine: {host['cpu']} "
          f"({', '.join(host['int8_flags']) or 'no INT8 dot-product flags'}), "
          f"{host['cores_usable']} usable cores, onnxruntime {host['onnxruntime']}")
    rows = []
    for threads in args.threads:
        timed = speed({"fp32": args.model, "int8": int8}, threads, args.rounds)
        start = time.perf_counter()
        result = probe(args.model, int8, threads=threads)
        wall = time.perf_counter() - start
        rows.append({"threads": threads, "speed": timed,
                     "probe": {"fp32_ms": result.fp32_ms, "int8_ms": result.int8_ms,
                               "rounds": result.rounds, "choice": result.choice,
                               "wall_s": wall}})
    print(f"\ndetect() = letterbox + inference + decode of one 640x480 frame; probe = the "
          f"daemon's start-up probe (INT8 if at least {MARGIN:.0%} faster)\n")
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps({"command": command, "commit": commit, "machine": host,
                                         "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    cv2.setNumThreads(1)
    sys.exit(main())
