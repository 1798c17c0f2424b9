"""FP32 or INT8 at start: the measured probe, its cache, forced modes, unusable INT8 siblings."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pydantic
import pytest
from structlog.testing import capture_logs

from edge.config import DetectorConfig, SiteConfig, StorageConfig
from edge.detect import Detector
from edge.detect.engine_store import file_sha256
from edge.detect.model_info import ModelInfo
from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.detect.precision import (
    FLOAT_MODEL_SHA256,
    MARGIN,
    ProbeCache,
    ProbeKey,
    ProbeResult,
    int8_sibling,
    probe,
    probe_frame,
    select_model,
)
from edge.detect.worker import DetectionWorker
from edge.errors import ModelError
from edge.frames import Detections
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.seeds import HELD_OUT

MODELS = Path(__file__).parent.parent / "edge" / "models"
FP32 = MODELS / "dishnet.onnx"
INT8 = MODELS / "dishnet-int8.onnx"


# the probe tests run a few calls per model: they check the logic, not this box's speed


class _Repeated:
    """A real detector that runs every call ``times`` times: slower by a factor, same output."""

    def __init__(self, inner: Detector, times: int) -> None:
        self.inner = inner
        self.times = times
        self.info: ModelInfo = inner.info

    def detect(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        for _ in range(self.times - 1):
            self.inner.detect(images)
        return self.inner.detect(images)

    def close(self) -> None:
        self.inner.close()


def _quick_probe(calls: list[tuple[Path, Path, int]]
                 ) -> Callable[[Path, Path, int], ProbeResult]:
    def run(fp32: Path, int8: Path, threads: int) -> ProbeResult:
        calls.append((fp32, int8, threads))
        return probe(fp32, int8, threads=threads, warmup=1, max_rounds=3)
    return run


def _no_probe(fp32: Path, int8: Path, threads: int) -> ProbeResult:
    raise AssertionError("the probe must not run here")


def _set_meta(path: Path, **values: str) -> None:
    model = onnx.load(path)
    meta = {p.key: p.value for p in model.metadata_props} | values
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, path)


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    """Copies of the shipped FP32 model and its INT8 sibling, free to change."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(FP32, folder / "site.onnx")
    shutil.copy(INT8, folder / "site-int8.onnx")
    return folder / "site.onnx", folder / "site-int8.onnx"


def _events(logs: list[dict[str, object]]) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == "detector_precision"]


def test_shipped_int8_model_was_made_from_the_shipped_model() -> None:
    meta = {p.key: p.value for p in onnx.load(INT8, load_external_data=False).metadata_props}
    assert int8_sibling(FP32) == INT8
    assert meta[FLOAT_MODEL_SHA256] == file_sha256(FP32)
    assert meta["quantization"] == "int8-qdq-u8s8"
    calibration = json.loads(meta["quantization_calibration"])
    assert calibration["float_model_version"] == meta["model_version"] == "dishnet-1.1"
    first, last = (int(s) for s in calibration["source"].split()[2].rstrip(",").split("-"))
    assert last < HELD_OUT.start or first >= HELD_OUT.stop  # calibrated on training seeds
    assert INT8.stat().st_size < FP32.stat().st_size


@pytest.mark.parametrize("slow", ["fp32", "int8"])
def test_probe_picks_the_faster_model(slow: str) -> None:
    slow_path = FP32 if slow == "fp32" else INT8

    def loader(path: Path, threads: int) -> Detector:
        return _Repeated(OnnxRuntimeDetector(path, threads=threads), 4 if path == slow_path else 1)

    result = probe(FP32, INT8, threads=1, loader=loader, warmup=1, max_rounds=3)
    assert result.choice == ("int8" if slow == "fp32" else "fp32")
    fast_ms, slow_ms = ((result.int8_ms, result.fp32_ms) if slow == "fp32"
                        else (result.fp32_ms, result.int8_ms))
    assert slow_ms > fast_ms
    assert result.rounds == 3


def test_probe_on_the_shipped_models_follows_its_own_timings() -> None:
    frame = probe_frame()
    assert frame.shape == (480, 640, 3)
    result = probe(FP32, INT8, threads=1, frame=frame, warmup=1, max_rounds=3)
    assert result.fp32_ms > 0 and result.int8_ms > 0
    assert (result.choice == "int8") == (result.int8_ms <= (1 - MARGIN) * result.fp32_ms)


def test_probe_stops_at_its_budget() -> None:
    result = probe(FP32, INT8, threads=1, warmup=0, max_rounds=50, budget_s=0.0)
    assert result.rounds == 3  # MIN_ROUNDS, then the spent budget ends it


def test_second_start_reads_the_cache(models: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, int8 = models
    calls: list[tuple[Path, Path, int]] = []
    with capture_logs() as logs:
        first = select_model(fp32, "auto", threads=1, cache_dir=tmp_path / "precision",
                             run_probe=_quick_probe(calls))
        second = select_model(fp32, "auto", threads=1, cache_dir=tmp_path / "precision",
                              run_probe=_no_probe)
    assert len(calls) == 1
    assert (first.source, second.source) == ("probe", "cache")
    assert second.precision == first.precision and second.model == first.model
    assert second.probe == first.probe
    assert first.model == (int8 if first.precision == "int8" else fp32)
    events = _events(logs)
    assert len(events) == 2
    assert {"fp32_ms", "int8_ms", "precision"} <= events[0].keys()
    assert events[1]["source"] == "cache" and events[1]["fp32_ms"] == events[0]["fp32_ms"]


def test_cache_is_keyed_by_both_models_and_the_threads(models: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    fp32, int8 = models
    cache = tmp_path / "precision"
    calls: list[tuple[Path, Path, int]] = []
    run = _quick_probe(calls)
    select_model(fp32, "auto", threads=1, cache_dir=cache, run_probe=run)
    _set_meta(int8, note="re-quantized")  # a new INT8 file of the same FP32 model
    assert select_model(fp32, "auto", threads=1, cache_dir=cache,
                        run_probe=run).source == "probe"
    _set_meta(fp32, model_version="site-2")  # a new FP32 model, and an INT8 made from it
    _set_meta(int8, **{FLOAT_MODEL_SHA256: file_sha256(fp32)})
    assert select_model(fp32, "auto", threads=1, cache_dir=cache,
                        run_probe=run).source == "probe"
    assert select_model(fp32, "auto", threads=2, cache_dir=cache,
                        run_probe=run).source == "probe"
    assert len(calls) == 4 and [c[2] for c in calls] == [1, 1, 1, 2]
    assert select_model(fp32, "auto", threads=2, cache_dir=cache,
                        run_probe=_no_probe).source == "cache"
    assert len(list(cache.glob("*.json"))) == 4


def test_damaged_cache_entry_is_probed_again(models: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, int8 = models
    key = ProbeKey.here(file_sha256(fp32), int8, 1)
    cache = ProbeCache(tmp_path / "precision")
    cache.put(key, ProbeResult(9.0, 5.0, 3, "int8"))
    assert cache.get(key) == ProbeResult(9.0, 5.0, 3, "int8")
    cache.path(key).write_text("{not json")
    assert cache.get(key) is None
    calls: list[tuple[Path, Path, int]] = []
    selection = select_model(fp32, "auto", threads=1, cache_dir=cache.folder,
                             run_probe=_quick_probe(calls))
    assert selection.source == "probe" and len(calls) == 1
    assert cache.get(key) == selection.probe


def test_forced_precisions_skip_the_probe(models: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, int8 = models
    with capture_logs() as logs:
        forced_fp32 = select_model(fp32, "fp32", threads=1, cache_dir=tmp_path,
                                   run_probe=_no_probe)
        forced_int8 = select_model(fp32, "int8", threads=1, cache_dir=tmp_path,
                                   run_probe=_no_probe)
    assert (forced_fp32.model, forced_fp32.precision, forced_fp32.source) == (fp32, "fp32",
                                                                              "forced")
    assert (forced_int8.model, forced_int8.precision, forced_int8.source) == (int8, "int8",
                                                                              "forced")
    assert [e["precision"] for e in _events(logs)] == ["fp32", "int8"]
    assert not list(tmp_path.glob("*.json"))


def test_forced_int8_without_a_sibling_is_a_clear_error(models: tuple[Path, Path]) -> None:
    fp32, int8 = models
    int8.unlink()
    with pytest.raises(ModelError, match=r"'int8'.*site-int8\.onnx.*calibrate quantize"):
        select_model(fp32, "int8", threads=1, cache_dir=None, run_probe=_no_probe)
    with pytest.raises(pydantic.ValidationError, match="onnxruntime"):
        DetectorConfig(backend="tensorrt", precision="int8")
    assert DetectorConfig().precision == "fp32"  # until INT8's bills hold (BENCHMARKS.md)


def test_model_without_int8_sibling_runs_fp32_with_one_log_line(models: tuple[Path, Path]
                                                                ) -> None:
    fp32, int8 = models
    int8.unlink()
    with capture_logs() as logs:
        selection = select_model(fp32, "auto", threads=1, cache_dir=None, run_probe=_no_probe)
    assert (selection.model, selection.precision, selection.source) == (fp32, "fp32", "no_int8")
    (event,) = _events(logs)
    assert event["log_level"] == "info" and "site-int8.onnx" in str(event["reason"])
    assert len(logs) == 1


def test_int8_sibling_of_another_model_is_not_used(models: tuple[Path, Path]) -> None:
    fp32, _ = models
    _set_meta(fp32, model_version="site-retrained")  # the site replaced the model, kept the INT8
    with capture_logs() as logs:
        selection = select_model(fp32, "auto", threads=1, cache_dir=None, run_probe=_no_probe)
    assert (selection.model, selection.precision) == (fp32, "fp32")
    (event,) = _events(logs)
    assert event["log_level"] == "warning" and "another model" in str(event["reason"])
    with pytest.raises(ModelError, match="another model"):
        select_model(fp32, "int8", threads=1, cache_dir=None, run_probe=_no_probe)


@pytest.mark.parametrize("damage", ["no_provenance", "garbage"])
def test_unusable_int8_file_falls_back_to_fp32(models: tuple[Path, Path], damage: str) -> None:
    fp32, int8 = models
    if damage == "no_provenance":
        model = onnx.load(int8)
        kept = [p for p in model.metadata_props if p.key != FLOAT_MODEL_SHA256]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        onnx.save(model, int8)
    else:
        int8.write_bytes(b"\x00not an onnx model" * 10)
    with capture_logs() as logs:
        selection = select_model(fp32, "auto", threads=1, cache_dir=None, run_probe=_no_probe)
    assert (selection.model, selection.source) == (fp32, "no_int8")
    (event,) = _events(logs)
    assert event["log_level"] == "warning"


def test_probe_failure_falls_back_to_fp32(models: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, _ = models

    def broken(a: Path, b: Path, threads: int) -> ProbeResult:
        raise ModelError(f"{b}: ONNX Runtime cannot load it")

    with capture_logs() as logs:
        selection = select_model(fp32, "auto", threads=1, cache_dir=tmp_path, run_probe=broken)
    assert (selection.model, selection.precision) == (fp32, "fp32")
    assert "probe failed" in str(_events(logs)[0]["reason"])
    assert not list(tmp_path.glob("*.json"))  # a failed probe is not remembered


def test_daemon_worker_loads_the_cached_choice(models: tuple[Path, Path], tmp_path: Path) -> None:
    fp32, int8 = models
    cache = tmp_path / "precision"
    key = ProbeKey.here(file_sha256(fp32), int8, 1)
    ProbeCache(cache).put(key, ProbeResult(12.0, 7.0, 15, "int8"))

    async def start(config: DetectorConfig) -> tuple[str, ...]:
        worker = DetectionWorker(config, Metrics(), precision_dir=cache)
        await worker.load()
        names = worker.class_names
        await worker.close()
        return names

    with capture_logs() as logs:
        names = asyncio.run(start(DetectorConfig(model=fp32, precision="auto")))
        asyncio.run(start(DetectorConfig(model=fp32, precision="fp32")))
    assert len(names) == 33
    auto, forced = _events(logs)
    assert (auto["source"], auto["precision"], auto["model"]) == ("cache", "int8", str(int8))
    assert (auto["fp32_ms"], auto["int8_ms"]) == (12.0, 7.0)
    assert (forced["source"], forced["model"]) == ("forced", str(fp32))


def test_int8_model_named_as_the_model_runs_as_int8_without_a_probe(tmp_path: Path) -> None:
    with capture_logs() as logs:
        selection = select_model(INT8, "auto", threads=1, cache_dir=tmp_path, run_probe=_no_probe)
    assert (selection.model, selection.precision, selection.source) == (INT8, "int8", "model")
    assert _events(logs)[0]["precision"] == "int8"


def test_broken_model_is_left_to_the_loader_to_report(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    assert select_model(bad, "auto", threads=1, cache_dir=None, run_probe=_no_probe).model == bad
    with pytest.raises(ModelError, match="no such model"):
        select_model(tmp_path / "none.onnx", "auto", threads=1, cache_dir=None)


def test_a_precision_change_needs_a_restart(tmp_path: Path) -> None:
    old = SiteConfig(streams=[], storage=StorageConfig(dir=tmp_path))
    new = old.model_copy(update={"detector": old.detector.model_copy(
        update={"precision": "auto"})})
    pipeline = Pipeline(old)
    result = asyncio.run(pipeline.apply_config(new))
    assert result["restart_required"] == ["detector.precision"]
    assert pipeline.worker.config.precision == "fp32"  # the loaded model stays as it is
