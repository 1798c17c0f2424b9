"""The TensorRT engine cache on disk: keys, layout, atomic writes, validation.

Part of the detection stage's GPU path (:mod:`edge.detect.tensorrt`), but
free of GPU libraries so it runs and is tested anywhere. An engine is only
valid for the exact ONNX bytes, TensorRT version, GPU model and compute
capability, precision and batch range it was built for; :class:`EngineKey`
hashes all of them into one digest, and :class:`EngineStore` keeps one entry
per digest under ``storage.dir/engines/``::

    engines/
      <digest>.engine      the serialized engine (TensorRT plan)
      <digest>.json        sidecar: key parts, engine size and sha256, model path
      .<digest>.lock       flock(2) lock held while one process looks up or builds
      timing-<gpu>-sm<cc>-trt<version>.cache   builder timing cache, shared by models

The sidecar is written last (both files through a temp file and
``os.replace``), so an entry without a readable, matching sidecar is an
interrupted or damaged write: :meth:`EngineStore.lookup` removes it and
reports a miss, and the caller builds again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import structlog

from edge import fsutil

log = structlog.get_logger(__name__)

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)
ENGINE_SUBDIR = "engines"
"""Folder of the engine cache inside ``storage.dir``."""
DEFAULT_ENGINE_DIR = Path("var") / ENGINE_SUBDIR
"""The cache under the default ``storage.dir`` (``var``), for tools run without a config."""
SIDECAR_FORMAT = 1
STALE_TEMP_SECONDS = 3600.0
"""A temp file this old belongs to a dead writer (a Jetson build takes minutes, not hours)."""
_CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class EngineKey:
    """Everything an engine is only valid for.

    Attributes
    ----------
    onnx_sha256 : str
        sha256 of the ONNX file's bytes (hex, 64 characters).
    tensorrt_version : str
        ``tensorrt.__version__`` of the builder (engines do not move between versions).
    gpu_name : str
        CUDA device name, e.g. ``"Orin"`` or ``"NVIDIA H200"``.
    compute_capability : str
        ``"major.minor"``, e.g. ``"8.7"`` for Jetson Orin.
    precision : {"fp32", "fp16", "int8"}
        ``int8`` only from a Q/DQ (explicitly quantized) ONNX model.
    max_batch : int
        Upper end of the optimization profile's batch range (the lower end is 1).
    """

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: Precision
    max_batch: int

    def __post_init__(self) -> None:
        if not _HEX64.match(self.onnx_sha256):
            raise ValueError(f"onnx_sha256 must be 64 lowercase hex digits, got "
                             f"{self.onnx_sha256!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got "
                             f"{self.precision!r}")
        if isinstance(self.max_batch, bool) or not isinstance(self.max_batch, int) \
                or self.max_batch < 1:
            raise ValueError(f"max_batch must be an integer >= 1, got {self.max_batch!r}")
        for name in ("tensorrt_version", "gpu_name", "compute_capability"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")

    @classmethod
    def for_model(cls, onnx_path: Path, *, tensorrt_version: str, gpu_name: str,
                  compute_capability: str, precision: Precision, max_batch: int) -> EngineKey:
        """The key of an engine built from the ONNX file at ``onnx_path`` (hashes its bytes)."""
        return cls(file_sha256(onnx_path), tensorrt_version, gpu_name, compute_capability,
                   precision, max_batch)

    def parts(self) -> dict[str, Any]:
        """The key's fields as a JSON-ready dict (what the sidecar records)."""
        return asdict(self)

    @property
    def digest(self) -> str:
        """Hex sha256 of the canonical JSON of :meth:`parts`: the entry's file name."""
        canonical = json.dumps(self.parts(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class EngineStore:
    """The engine cache in one folder (created on first write).

    Parameters
    ----------
    root : Path
        The cache folder, normally ``storage.dir / "engines"``.

    Notes
    -----
    Safe between processes and threads: writes go to uniquely named temp
    files (``mkstemp``) and appear with an atomic ``os.replace``; a builder
    holds :meth:`lock` for its key so two daemons, or the daemon and
    ``dishtracker calibrate engine``, build one engine once.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def engine_path(self, key: EngineKey) -> Path:
        """Where the engine of ``key`` lives (whether or not it exists)."""
        return self.root / f"{key.digest}.engine"

    def sidecar_path(self, key: EngineKey) -> Path:
        """Where the JSON sidecar of ``key`` lives."""
        return self.root / f"{key.digest}.json"

    def timing_cache_path(self, tensorrt_version: str, gpu_name: str,
                          compute_capability: str) -> Path:
        """The builder timing cache for one GPU model and TensorRT version.

        Timings hold for every model built on that GPU with that TensorRT, so
        the cache is shared between models (and reused by later builds).
        """
        slug = re.sub(r"[^A-Za-z0-9.]+", "-", gpu_name).strip("-").lower() or "gpu"
        return self.root / f"timing-{slug}-sm{compute_capability}-trt{tensorrt_version}.cache"

    @contextlib.contextmanager
    def lock(self, key: EngineKey) -> Iterator[None]:
        """Hold an exclusive lock on ``key``'s entry (blocks while another holder builds).

        An ``flock(2)`` on ``.<digest>.lock``: released by the kernel if the
        holder dies, so a killed build never leaves the entry locked.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / f".{key.digest}.lock").open("a") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def lookup(self, key: EngineKey) -> Path | None:
        """The cached engine of ``key``, or ``None`` on a miss.

        An entry that is incomplete (engine without sidecar, sidecar without
        engine), unreadable, for another key, or whose engine's size or
        sha256 differs from the sidecar's is removed, logged once as
        ``engine_cache_invalid`` with the reason, and reported as a miss.
        Call it holding :meth:`lock` when a miss will be followed by a build.
        """
        engine, sidecar = self.engine_path(key), self.sidecar_path(key)
        self._sweep_temp_files(key)
        if not engine.exists() and not sidecar.exists():
            return None
        reason = self._problem(key, engine, sidecar)
        if reason is None:
            return engine
        log.warning("engine_cache_invalid", key=key.digest, path=str(engine), reason=reason,
                    action="removed; the engine is built again")
        self.discard(key)
        return None

    def read_sidecar(self, key: EngineKey) -> dict[str, Any]:
        """The sidecar of ``key`` as a dict (after a successful :meth:`lookup`)."""
        return cast(dict[str, Any], json.loads(self.sidecar_path(key).read_text()))

    def save(self, key: EngineKey, engine: bytes | bytearray | memoryview, *,
             model: Path | None = None, build_seconds: float | None = None) -> Path:
        """Store a serialized engine under ``key``; returns the engine's path.

        The engine is written first, then the sidecar (size, sha256, key
        parts, model path, build time), each through a temp file and
        ``os.replace``: readers never see a half-written entry.
        """
        data = memoryview(engine).cast("B")
        if not data.nbytes:
            raise ValueError("refusing to store an empty engine")
        sidecar = {
            "format": SIDECAR_FORMAT,
            "key": key.digest,
            "parts": key.parts(),
            "engine_bytes": data.nbytes,
            "engine_sha256": hashlib.sha256(data).hexdigest(),
            "model": None if model is None else str(model),
            "build_seconds": None if build_seconds is None else round(build_seconds, 3),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        path = self.engine_path(key)
        write_atomic(path, data)
        write_atomic(self.sidecar_path(key),
                     (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())
        return path

    def discard(self, key: EngineKey) -> None:
        """Remove ``key``'s entry (sidecar first, so no reader trusts a lone engine)."""
        self.sidecar_path(key).unlink(missing_ok=True)
        self.engine_path(key).unlink(missing_ok=True)

    def entries(self) -> list[dict[str, Any]]:
        """Every readable sidecar in the store, newest first (for listing)."""
        found: list[dict[str, Any]] = []
        for path in sorted(self.root.glob("*.json")):
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(path.read_text())
                if isinstance(data, dict) and data.get("format") == SIDECAR_FORMAT:
                    found.append({**data, "engine": str(path.with_suffix(".engine"))})
        return sorted(found, key=lambda d: str(d.get("created", "")), reverse=True)

    def read_timing_cache(self, path: Path) -> bytes:
        """The timing cache's bytes, or ``b""`` when there is none yet."""
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return b""

    def write_timing_cache(self, path: Path, data: bytes | bytearray | memoryview) -> None:
        """Replace the timing cache atomically (the last of concurrent builders wins)."""
        write_atomic(path, memoryview(data).cast("B"))

    def _sweep_temp_files(self, key: EngineKey) -> None:
        """Remove temp files of ``key`` left by a writer that died (older than an hour)."""
        cutoff = time.time() - STALE_TEMP_SECONDS
        for tmp in self.root.glob(f".{key.digest}.*.tmp"):
            with contextlib.suppress(OSError):
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()

    @staticmethod
    def _problem(key: EngineKey, engine: Path,  # noqa: PLR0911 - a reason per kind of damage
                 sidecar: Path) -> str | None:
        if not sidecar.exists():
            return "engine without sidecar (interrupted write)"
        try:
            meta = json.loads(sidecar.read_text())
        except (OSError, ValueError) as err:
            return f"sidecar unreadable: {err}"
        if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
            return f"sidecar is not format {SIDECAR_FORMAT}"
        if meta.get("parts") != key.parts() or meta.get("key") != key.digest:
            return "sidecar records another key"
        if not engine.exists():
            return "sidecar without engine"
        size = engine.stat().st_size
        if size != meta.get("engine_bytes"):
            return f"engine has {size} bytes, sidecar says {meta.get('engine_bytes')}"
        if file_sha256(engine) != meta.get("engine_sha256"):
            return "engine sha256 differs from the sidecar's"
        return None


def write_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` atomically, the temp file named ``*.tmp`` (swept if its
    writer died)."""
    fsutil.write_atomic(path, data, suffix=".tmp")
