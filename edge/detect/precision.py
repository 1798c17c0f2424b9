"""FP32 or INT8 on the CPU: which file the detection stage loads, decided by measuring.

Runs once at the detection stage's start, before :mod:`edge.detect.worker`
loads the model on ONNX Runtime. INT8 (U8S8 Q/DQ, made by ``dishtracker
calibrate quantize``) ran at 0.58-0.63x FP32 on an AMD EPYC with AVX-512
VNNI, but CPU flags do not say how fast ONNX Runtime's integer kernels are
on a given box (without VNNI, U8S8 only equalled FP32 on one thread), so the
choice is measured: a few warm-up and timed ``detect()`` calls of both models
on one real frame, interleaved round by round so that load from other
processes hits both alike, within a fixed budget. INT8 wins only if its
median is faster by :data:`MARGIN`; ties go to FP32, the more accurate model.

The result is cached under ``storage.dir/precision/``, keyed by both models'
SHA-256, the CPU (model name and flags), the ONNX Runtime version and the
thread count: a later start with the same key reads it and skips the probe;
a new model, CPU, runtime or thread count probes again.

The INT8 model of ``name.onnx`` is its *sibling* ``name-int8.onnx`` in the
same folder. It is used only if its ``float_model_sha256`` metadata names
the FP32 file in use: a site that replaces the model but keeps an old INT8
file runs FP32, with one log line saying why.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnx
import structlog
from google.protobuf.message import DecodeError

from edge import fsutil
from edge.detect import Detector
from edge.detect.engine_store import file_sha256
from edge.errors import ModelError

log = structlog.get_logger(__name__)

Precision = Literal["fp32", "int8"]
FLOAT_MODEL_SHA256 = "float_model_sha256"
"""ONNX metadata key of an INT8 model: SHA-256 (hex) of the FP32 file it was made from."""
PRECISION_SUBDIR = "precision"
"""Folder of the probe cache inside ``storage.dir``."""
PROBE_FRAME = Path(__file__).resolve().parents[1] / "models" / "probe-frame.jpg"
"""A 640x480 checkout frame (simulator training seed 1000) the probe times both models on."""
MARGIN = 0.10
"""INT8 must be this much faster (share of FP32's time) to be chosen."""
WARMUP = 3
MIN_ROUNDS = 3
MAX_ROUNDS = 15
BUDGET_S = 1.0
"""Wall time of the timed rounds, at most (plus one round); loading both models comes on top."""

DetectorLoader = Callable[[Path, int], Detector]
"""``(model path, threads) -> Detector``: how the probe loads each model."""


def int8_sibling(model: Path) -> Path:
    """Where the INT8 model of ``model`` lies: ``name-int8.onnx`` beside ``name.onnx``."""
    return model.with_name(f"{model.stem}-int8{model.suffix}")


def usable_int8(model: Path, model_sha256: str) -> tuple[Path | None, str]:
    """The INT8 sibling of ``model`` if it was made from this very file.

    Returns
    -------
    (Path or None, str)
        The sibling and ``""``; or ``None`` and why it cannot be used.
    """
    path = int8_sibling(model)
    if not path.is_file():
        return None, f"no INT8 model beside it ({path.name})"
    try:
        meta = _metadata(path)
    except ModelError as err:
        return None, str(err)
    made_from = meta.get(FLOAT_MODEL_SHA256)
    if made_from is None:
        return None, f"{path.name} does not say which model it was made from ({FLOAT_MODEL_SHA256})"
    if made_from != model_sha256:
        return None, (f"{path.name} was made from another model ({FLOAT_MODEL_SHA256} "
                      f"{made_from[:12]}..., the model in use is {model_sha256[:12]}...)")
    return path, ""


def _metadata(path: Path) -> dict[str, str]:
    try:
        model = onnx.load(path, load_external_data=False)
    except (OSError, DecodeError) as err:
        raise ModelError(f"{path.name} is not a readable ONNX model ({err})") from err
    return {p.key: p.value for p in model.metadata_props}


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Median ``detect()`` time of each model on one frame, and the choice it implies.

    Attributes
    ----------
    fp32_ms, int8_ms : float
        Median milliseconds per ``detect()`` of one 640x480 frame (letterbox,
        inference, decoding).
    rounds : int
        Timed calls per model.
    choice : {"fp32", "int8"}
        ``int8`` if ``int8_ms <= (1 - MARGIN) * fp32_ms``.
    """

    fp32_ms: float
    int8_ms: float
    rounds: int
    choice: Precision


def _onnxruntime(path: Path, threads: int) -> Detector:
    from edge.detect.onnxrt import OnnxRuntimeDetector  # noqa: PLC0415 - lazy backend import

    return OnnxRuntimeDetector(path, threads=threads)


def probe_frame() -> npt.NDArray[np.uint8]:
    """The shipped probe frame, ``(480, 640, 3)`` uint8 BGR."""
    import cv2  # noqa: PLC0415 - only the probe decodes a JPEG

    image = cv2.imread(str(PROBE_FRAME), cv2.IMREAD_COLOR)
    if image is None:
        raise ModelError(f"{PROBE_FRAME}: the precision probe's frame is missing or unreadable")
    return np.asarray(image, dtype=np.uint8)


def probe(fp32: Path, int8: Path, *, threads: int, frame: npt.NDArray[np.uint8] | None = None,
          loader: DetectorLoader = _onnxruntime, warmup: int = WARMUP,
          max_rounds: int = MAX_ROUNDS, budget_s: float = BUDGET_S,
          margin: float = MARGIN) -> ProbeResult:
    """Time both models on one frame, interleaved, and choose the faster by ``margin``.

    Parameters
    ----------
    fp32, int8 : Path
        The float model and its INT8 sibling.
    threads : int
        ONNX Runtime intra-op threads, as the daemon will run.
    frame : np.ndarray, optional
        ``(height, width, 3)`` uint8 BGR; default :func:`probe_frame`.
    loader : callable
        ``(path, threads) -> Detector``; default ONNX Runtime.
    warmup : int
        Untimed calls per model first (session allocations, caches).
    max_rounds : int
        Timed calls per model at most; at least :data:`MIN_ROUNDS` (or
        ``max_rounds`` if smaller) whatever the budget.
    budget_s : float
        Stop starting rounds once the timed ones took this long, in seconds.
    margin : float
        Share of FP32's time INT8 must save to be chosen.

    Raises
    ------
    ModelError
        If either model cannot be loaded or run.
    """
    image = probe_frame() if frame is None else frame
    detectors = {"fp32": loader(fp32, threads), "int8": loader(int8, threads)}
    samples: dict[str, list[float]] = {"fp32": [], "int8": []}
    try:
        for detector in detectors.values():
            for _ in range(warmup):
                detector.detect([image])
        order = ["fp32", "int8"]
        start = time.perf_counter()
        for r in range(max_rounds):
            for name in order if r % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                detectors[name].detect([image])
                samples[name].append(time.perf_counter() - t0)
            if r + 1 >= MIN_ROUNDS and time.perf_counter() - start >= budget_s:
                break
    finally:
        for detector in detectors.values():
            detector.close()
    fp32_ms = statistics.median(samples["fp32"]) * 1e3
    int8_ms = statistics.median(samples["int8"]) * 1e3
    choice: Precision = "int8" if int8_ms <= (1.0 - margin) * fp32_ms else "fp32"
    return ProbeResult(round(fp32_ms, 3), round(int8_ms, 3), len(samples["fp32"]), choice)


def cpu_identity() -> tuple[str, str]:
    """The CPU's model name and SHA-256 of its feature flags (``/proc/cpuinfo``, else platform)."""
    fields: dict[str, str] = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields.setdefault(key.strip(), value.strip())
    name = (fields.get("model name") or fields.get("Model") or platform.processor()
            or platform.machine() or "unknown")
    flags = fields.get("flags") or fields.get("Features") or ""  # x86, ARM
    return name, hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ProbeKey:
    """Everything a probe's result holds for: the two files, the CPU, the runtime, the threads."""

    fp32_sha256: str
    int8_sha256: str
    cpu: str
    cpu_flags_sha256: str
    onnxruntime: str
    threads: int

    @classmethod
    def here(cls, fp32_sha256: str, int8: Path, threads: int) -> ProbeKey:
        """The key on this machine, with the installed ONNX Runtime."""
        import onnxruntime as ort  # noqa: PLC0415 - the backend's library, loaded with it

        cpu, flags = cpu_identity()
        return cls(fp32_sha256, file_sha256(int8), cpu, flags, ort.__version__, threads)

    @property
    def digest(self) -> str:
        """Hex SHA-256 of the key's canonical JSON: the cache file's name."""
        canonical = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class ProbeCache:
    """Probe results on disk, one JSON file per :class:`ProbeKey` digest.

    Parameters
    ----------
    folder : Path
        ``storage.dir / "precision"``; created owner-only on the first write.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, key: ProbeKey) -> Path:
        """The file holding ``key``'s result."""
        return self.folder / f"{key.digest}.json"

    def get(self, key: ProbeKey) -> ProbeResult | None:
        """The stored result for ``key``; ``None`` if absent, unreadable or for another key."""
        try:
            entry = json.loads(self.path(key).read_text())
            if entry["key"] != asdict(key) or entry["choice"] not in ("fp32", "int8"):
                return None
            return ProbeResult(float(entry["fp32_ms"]), float(entry["int8_ms"]),
                               int(entry["rounds"]), entry["choice"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: ProbeKey, result: ProbeResult) -> None:
        """Store ``result`` for ``key`` atomically."""
        fsutil.make_private_dir(self.folder)
        entry = {"key": asdict(key), **asdict(result), "margin": MARGIN,
                 "probed_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        fsutil.write_atomic(self.path(key), (json.dumps(entry, indent=1) + "\n").encode(),
                            suffix=".tmp")


@dataclass(frozen=True, slots=True)
class Selection:
    """The model file the detection stage loads, and how it was chosen.

    Attributes
    ----------
    model : Path
        The FP32 model or its INT8 sibling.
    precision : {"fp32", "int8"}
    source : {"forced", "probe", "cache", "no_int8", "model"}
        ``detector.precision`` named it; a probe ran; a cached probe; no usable
        INT8 sibling; ``detector.model`` is an INT8 model itself.
    probe : ProbeResult or None
        The timings behind ``probe`` and ``cache``.
    """

    model: Path
    precision: Precision
    source: Literal["forced", "probe", "cache", "no_int8", "model"]
    probe: ProbeResult | None = None


def select_model(model: Path, precision: Literal["auto", "fp32", "int8"], *, threads: int,
                 cache_dir: Path | None,
                 run_probe: Callable[[Path, Path, int], ProbeResult] | None = None) -> Selection:
    """Choose FP32 ``model`` or its INT8 sibling; log the choice once (``detector_precision``).

    Parameters
    ----------
    model : Path
        The FP32 model (``detector.model``).
    precision : {"auto", "fp32", "int8"}
        ``detector.precision``: probe (or read the cache), or force one.
    threads : int
        ONNX Runtime intra-op threads (part of the cache key).
    cache_dir : Path or None
        Probe cache folder (``storage.dir / "precision"``); ``None`` probes every time.
    run_probe : callable, optional
        ``(fp32, int8, threads) -> ProbeResult``; default :func:`probe`.

    Raises
    ------
    ModelError
        ``precision`` is ``"int8"`` and there is no usable INT8 sibling.
    """
    model = Path(model)
    if precision == "fp32":
        return _logged(Selection(model, "fp32", "forced"))
    if not model.is_file():
        raise ModelError(f"{model}: no such model file")
    try:
        meta = _metadata(model)
    except ModelError:
        return Selection(model, "fp32", "no_int8")  # loading it says what is wrong with it
    if FLOAT_MODEL_SHA256 in meta:  # detector.model names an INT8 model itself
        return _logged(Selection(model, "int8", "model"))
    model_sha = file_sha256(model)
    int8, why_not = usable_int8(model, model_sha)
    if int8 is None:
        if precision == "int8":
            raise ModelError(
                f"detector.precision is 'int8' but {model} has no usable INT8 model: {why_not}; "
                f"make one with `dishtracker calibrate quantize --model {model} --out "
                f"{int8_sibling(model)}`, or set detector.precision to 'auto' or 'fp32'")
        return _logged(Selection(model, "fp32", "no_int8"), reason=why_not,
                       warn=int8_sibling(model).is_file())
    if precision == "int8":
        return _logged(Selection(int8, "int8", "forced"))
    return _measured(model, model_sha, int8, threads=threads, cache_dir=cache_dir,
                     run_probe=run_probe or (lambda a, b, t: probe(a, b, threads=t)))


def _measured(model: Path, model_sha: str, int8: Path, *, threads: int, cache_dir: Path | None,
              run_probe: Callable[[Path, Path, int], ProbeResult]) -> Selection:
    """``auto`` with a usable sibling: the cached probe result, else a fresh probe (cached)."""
    key = ProbeKey.here(model_sha, int8, threads)
    cache = ProbeCache(cache_dir) if cache_dir is not None else None
    result = cache.get(key) if cache is not None else None
    if result is not None:
        return _logged(Selection(int8 if result.choice == "int8" else model, result.choice,
                                 "cache", result))
    try:
        result = run_probe(model, int8, threads)
    except ModelError as err:
        return _logged(Selection(model, "fp32", "no_int8"), reason=f"probe failed: {err}",
                       warn=True)
    if cache is not None:
        try:
            cache.put(key, result)
        except OSError as err:  # a read-only storage dir costs a probe per start, no more
            log.warning("detector_precision_cache_unwritable", folder=str(cache.folder),
                        error=str(err))
    return _logged(Selection(int8 if result.choice == "int8" else model, result.choice,
                             "probe", result))


def _logged(selection: Selection, *, reason: str = "", warn: bool = False) -> Selection:
    fields: dict[str, object] = {"precision": selection.precision, "source": selection.source,
                                 "model": str(selection.model)}
    if selection.probe is not None:
        fields |= {"fp32_ms": selection.probe.fp32_ms, "int8_ms": selection.probe.int8_ms,
                   "rounds": selection.probe.rounds, "margin": MARGIN}
    if reason:
        fields["reason"] = reason
    (log.warning if warn else log.info)("detector_precision", **fields)
    return selection
