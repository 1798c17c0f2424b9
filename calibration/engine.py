"""``dishtracker calibrate engine``: build and cache the TensorRT engine of the site's model.

A site tool for the GPU path (docs/TENSORRT.md). The daemon builds a missing
engine itself on its first start with ``backend = "tensorrt"``, but that takes
minutes on a Jetson; running this once after installing (or after changing
the model) puts the engine into ``storage.dir/engines/`` under the same key
the daemon looks up, so the daemon starts in seconds. ``--list`` shows the
cached engines without needing a GPU.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import get_args

from edge.config import DEFAULT_MODEL, load_config
from edge.detect.engine_builder import (
    DEFAULT_WORKSPACE_BYTES,
    EngineBuilder,
    GpuInfo,
    RequestedPrecision,
    TensorRTUnavailable,
    import_backend,
)
from edge.detect.engine_store import DEFAULT_ENGINE_DIR, ENGINE_SUBDIR, EngineStore


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dishtracker calibrate engine``."""
    parser.add_argument("--config", type=Path, default=None,
                        help="site config (TOML): model, storage.dir and the number of streams "
                             "come from it")
    parser.add_argument("--model", type=Path, default=None,
                        help="ONNX model (default: detector.model of the config, else the "
                             "shipped model); a Q/DQ-quantized model gives an int8 engine")
    parser.add_argument("--engine-dir", type=Path, default=None,
                        help=f"engine cache (default: storage.dir/{ENGINE_SUBDIR})")
    parser.add_argument("--max-batch", type=_positive, default=None,
                        help="largest batch = streams detected together (default: the "
                             "config's number of streams, else 1)")
    parser.add_argument("--precision", choices=get_args(RequestedPrecision), default="auto",
                        help="auto: int8 for a Q/DQ model, else fp16 (TensorRT 10) or the "
                             "graph's own precision (TensorRT 11); the daemon always uses auto")
    parser.add_argument("--workspace-mib", type=_positive, default=DEFAULT_WORKSPACE_BYTES >> 20,
                        help="builder scratch memory limit, MiB")
    parser.add_argument("--device", type=int, default=0, help="CUDA device index")
    parser.add_argument("--force", action="store_true",
                        help="discard a cached engine of the same key and build again")
    parser.add_argument("--list", action="store_true",
                        help="list the cached engines (JSON lines) and exit; needs no GPU")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def run_engine(args: argparse.Namespace) -> int:
    """Run ``dishtracker calibrate engine``; returns the exit status.

    Prints one JSON object: the engine path, key, precision, batch range and
    whether it was built now or found in the cache.

    Raises
    ------
    DishTrackerError
        TensorRT, pycuda or a GPU is missing (``MissingExtraError``), or the
        model cannot be built (``ModelError``); ``dishtracker`` exits with 2.
    """
    config = load_config(args.config) if args.config is not None else None
    store = EngineStore(args.engine_dir or (config.storage.dir / ENGINE_SUBDIR if config
                                            else DEFAULT_ENGINE_DIR))
    if args.list:
        for entry in store.entries():
            print(json.dumps(entry, sort_keys=True))
        return 0
    model = Path(args.model or (config.detector.model if config else DEFAULT_MODEL))
    max_batch = args.max_batch or (max(1, len(config.streams)) if config else 1)
    trt, cuda = import_backend()
    if not 0 <= args.device < cuda.Device.count():
        raise TensorRTUnavailable(f"CUDA device {args.device} does not exist "
                                  f"({cuda.Device.count()} visible)")
    device = cuda.Device(args.device)
    context = device.retain_primary_context()
    context.push()
    try:
        builder = EngineBuilder(trt, GpuInfo.of(device),
                                workspace_bytes=args.workspace_mib << 20)
        built = builder.ensure(store, model, max_batch=max_batch, precision=args.precision,
                               force=args.force)
    finally:
        cuda.Context.pop()
        context.detach()
    print(json.dumps({"engine": str(built.path), "built": built.built, "key": built.key.digest,
                      **built.key.parts(), "model": str(model)}, sort_keys=True))
    return 0
