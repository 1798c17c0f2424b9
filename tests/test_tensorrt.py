"""The TensorRT backend: version gating, engine build, shared pre/post-processing, fallback.

This machine has no NVIDIA GPU, and neither TensorRT nor pycuda installs
here, so most tests run the backend against test doubles of the two modules
(``fake_tensorrt.FakeGpu``, put into ``sys.modules`` with monkeypatch): they
mimic TensorRT 10.3 or 11 and run the ONNX graph on the real ONNX Runtime.
The ``@pytest.mark.gpu`` tests at the end need the real TensorRT, pycuda and
a GPU, and skip elsewhere with the reason.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from detect_models import CONTRACT_METADATA, square_finder
from fake_tensorrt import FakeGpu
from onnx import helper, numpy_helper
from structlog.testing import capture_logs

from edge.cli import main
from edge.config import DEFAULT_MODEL, DetectorConfig, parse_config
from edge.detect import BACKENDS, load_detector
from edge.detect.engine_builder import (
    EngineBuilder,
    GpuInfo,
    TensorRTFeatures,
    TensorRTUnavailable,
    choose_precision,
    import_backend,
    read_graph,
)
from edge.detect.engine_store import EngineStore
from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.detect.tensorrt import TensorRTDetector
from edge.detect.worker import DetectionWorker
from edge.errors import MissingExtraError, ModelError
from edge.metrics import Metrics


@pytest.fixture(scope="module")
def square_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return square_finder(tmp_path_factory.mktemp("models") / "square.onnx")


@pytest.fixture(scope="module")
def qdq_model(square_model: Path) -> Path:
    """The square finder with a Q/DQ pair on its input: an explicitly quantized graph."""
    model = onnx.load(square_model)
    graph = model.graph
    for node in graph.node:
        node.input[:] = ["images_dq" if i == "images" else i for i in node.input]
    graph.initializer.extend([numpy_helper.from_array(np.array(1 / 255, np.float32), "q_scale"),
                              numpy_helper.from_array(np.array(0, np.uint8), "q_zero")])
    graph.node.insert(0, helper.make_node("DequantizeLinear", ["images_q", "q_scale", "q_zero"],
                                          ["images_dq"]))
    graph.node.insert(0, helper.make_node("QuantizeLinear", ["images", "q_scale", "q_zero"],
                                          ["images_q"]))
    path = square_model.with_name("square_qdq.onnx")
    onnx.save(model, path)
    return path


def _scene(width: int, height: int, box: tuple[int, int, int, int]) -> npt.NDArray[np.uint8]:
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


SCENES = [_scene(640, 480, (100, 60, 300, 200)), _scene(300, 700, (20, 500, 280, 680)),
          _scene(1000, 200, (900, 0, 1000, 50))]


# --- version gating (feature detection) ---------------------------------------------------

def test_tensorrt_10_3_has_precision_flags_and_11_has_none() -> None:
    ten = TensorRTFeatures.of(FakeGpu(version="10.3.0").trt)
    eleven = TensorRTFeatures.of(FakeGpu(version="11.0.0", precision_flags=False).trt)
    assert (ten.major_minor, ten.precision_flags, ten.timing_cache) == ((10, 3), True, True)
    assert (eleven.major_minor, eleven.precision_flags) == ((11, 0), False)


@pytest.mark.parametrize(("version", "message"), [
    ("8.6.1", "too old"), ("", "not a version"), ("ten", "not a version")])
def test_old_or_unreadable_tensorrt_is_unavailable(version: str, message: str) -> None:
    with pytest.raises(TensorRTUnavailable, match=message):
        TensorRTFeatures.of(FakeGpu(version=version).trt)


def test_tensorrt_without_the_name_based_api_is_unavailable() -> None:
    trt = FakeGpu().trt
    del trt.IExecutionContext.execute_async_v3
    with pytest.raises(TensorRTUnavailable, match=r"lacks IExecutionContext\.execute_async_v3"):
        TensorRTFeatures.of(trt)


@pytest.fixture(scope="module")
def models(square_model: Path, qdq_model: Path) -> dict[str, Path]:
    return {"float": square_model, "qdq": qdq_model}


def _gpu(version: str) -> FakeGpu:
    """A fake TensorRT of ``version``: 10.x has precision builder flags, 11 does not."""
    return FakeGpu(version=version, precision_flags=version.startswith("10."))


@pytest.mark.parametrize(("version", "model", "requested", "expected"), [
    ("10.3.0", "float", "auto", "fp16"),
    ("10.3.0", "qdq", "auto", "int8"),
    ("10.3.0", "float", "fp32", "fp32"),
    ("11.0.0", "float", "auto", "fp32"),
    ("11.0.0", "qdq", "auto", "int8"),
    ("11.0.0", "qdq", "int8", "int8"),
])
def test_precision_follows_the_graph_and_the_tensorrt_version(
        models: dict[str, Path], version: str, model: str, requested: str,
        expected: str) -> None:
    features = TensorRTFeatures.of(_gpu(version).trt)
    graph = read_graph(models[model])
    assert graph.quantized is (model == "qdq")
    assert choose_precision(requested, graph, features) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("version", "model", "requested", "message"), [
    ("10.3.0", "float", "int8", "needs a Q/DQ-quantized"),
    ("10.3.0", "qdq", "fp16", "is quantized"),
    ("11.0.0", "float", "fp16", "modelopt.onnx.autocast"),
])
def test_impossible_precisions_are_refused_with_what_to_do(
        models: dict[str, Path], version: str, model: str, requested: str,
        message: str) -> None:
    features = TensorRTFeatures.of(_gpu(version).trt)
    with pytest.raises(ModelError, match=message):
        choose_precision(requested, read_graph(models[model]), features)  # type: ignore[arg-type]


# --- engine build ---------------------------------------------------------------------------

@pytest.mark.parametrize(("version", "model", "expected"), [
    ("10.3.0", "float", (["FP16"], "fp16")),
    ("10.3.0", "qdq", (["FP16", "INT8"], "int8")),
    ("11.0.0", "float", ([], "fp32")),
    ("11.0.0", "qdq", ([], "int8")),
])
def test_build_sets_flags_only_where_they_exist_and_a_batch_profile(
        tmp_path: Path, models: dict[str, Path], version: str, model: str,
        expected: tuple[list[str], str]) -> None:
    flags, precision = expected
    gpu = _gpu(version)
    builder = EngineBuilder(gpu.trt, GpuInfo("Fake Orin", "8.7"), workspace_bytes=1 << 28)
    built = builder.ensure(EngineStore(tmp_path), models[model], max_batch=3)
    [record] = gpu.builds
    assert record["flags"] == flags
    assert record["profiles"] == [{"images": [[1, 3, 256, 320], [3, 3, 256, 320],
                                              [3, 3, 256, 320]]}]
    assert record["workspace"] == 1 << 28
    assert (built.key.max_batch, built.key.precision) == (3, precision)


def test_second_build_reuses_the_persisted_timing_cache(tmp_path: Path,
                                                        square_model: Path) -> None:
    gpu = FakeGpu()
    builder = EngineBuilder(gpu.trt, GpuInfo("Fake Orin", "8.7"))
    store = EngineStore(tmp_path)
    builder.ensure(store, square_model, max_batch=1)
    builder.ensure(store, square_model, max_batch=2)
    assert gpu.timing_caches_in == [b"", b"+timing"]
    assert store.timing_cache_path(gpu.version, "Fake Orin", "8.7").read_bytes() == \
        b"+timing+timing"


def test_foreign_timing_cache_is_ignored_with_a_warning(tmp_path: Path,
                                                        square_model: Path) -> None:
    gpu = FakeGpu()
    store = EngineStore(tmp_path)
    store.write_timing_cache(store.timing_cache_path(gpu.version, "Fake Orin", "8.7"),
                             b"garbage from another GPU")
    with capture_logs() as logs:
        EngineBuilder(gpu.trt, GpuInfo("Fake Orin", "8.7")).ensure(store, square_model,
                                                                    max_batch=1)
    assert "engine_timing_cache_ignored" in [e["event"] for e in logs]
    assert gpu.timing_caches_in == [b"garbage from another GPU", b""]


def test_unparsable_model_names_tensorrts_errors(tmp_path: Path, square_model: Path) -> None:
    model = onnx.load(square_model)
    model.graph.node.append(helper.make_node("Unique", ["images"], ["u"]))
    path = tmp_path / "unique.onnx"
    onnx.save(model, path)
    builder = EngineBuilder(FakeGpu().trt, GpuInfo("Fake Orin", "8.7"))
    with pytest.raises(ModelError, match=r"cannot be parsed by TensorRT 10\.3\.0:\n.*Unique"):
        builder.ensure(EngineStore(tmp_path), path, max_batch=1)


# --- the detector: same pre/post-processing as ONNX Runtime ---------------------------------

def test_detections_equal_onnx_runtime_in_chunks_of_max_batch(
        tmp_path: Path, square_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu().install(monkeypatch)
    with TensorRTDetector(square_model, engine_dir=tmp_path, max_batch=2,
                          score_threshold=0.05) as trt_detector, \
            OnnxRuntimeDetector(square_model, score_threshold=0.05) as ort_detector:
        assert trt_detector.info == ort_detector.info
        got, want = trt_detector.detect(SCENES), ort_detector.detect(SCENES)
        assert trt_detector.detect([]) == []
    assert gpu.executions == [(2, 3, 256, 320), (1, 3, 256, 320)]  # 3 images, batches of 2
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.classes, b.classes)
    assert gpu.pushes == gpu.pops  # every push of the primary context popped
    assert gpu.detached == 1 and gpu.memory == {}  # closed: device memory freed


def test_embeddings_come_from_the_same_engine_run_as_on_onnx_runtime(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped model's ``embeddings`` output reaches the detections on TensorRT
    too (test double: the engine runs the ONNX graph on the CPU)."""
    gpu = FakeGpu().install(monkeypatch)
    from edge.sim.scene import Scene

    images = [Scene(21, fps=20, size=(640, 480), keep_history=False).render(i)[0]
              for i in (200, 220)]
    with TensorRTDetector(DEFAULT_MODEL, engine_dir=tmp_path, max_batch=2,
                          score_threshold=0.3) as trt_detector, \
            OnnxRuntimeDetector(DEFAULT_MODEL, score_threshold=0.3) as ort_detector:
        got, want = trt_detector.detect(images), ort_detector.detect(images)
    assert len(gpu.executions) == 1  # one run for detections and embeddings
    for a, b in zip(got, want, strict=True):
        assert len(a) and a.embeddings is not None and b.embeddings is not None
        np.testing.assert_allclose(a.embeddings, b.embeddings, atol=1e-5)


def test_same_raw_output_gives_the_same_detections_on_both_backends(
        tmp_path: Path, square_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGpu().install(monkeypatch)
    raw = np.array([[[10, 20, 200, 120, 0.9, 1], [0, 0, 320, 256, 0.4, 2],
                     [11, 21, 199, 119, 0.8, 0], [0, 0, 0, 0, 0, 0]]], np.float32)
    trt_detector = TensorRTDetector(square_model, engine_dir=tmp_path, score_threshold=0.3)
    ort_detector = OnnxRuntimeDetector(square_model, score_threshold=0.3)
    monkeypatch.setattr(trt_detector, "infer", lambda tensor: raw[:len(tensor)].copy())
    monkeypatch.setattr(ort_detector, "infer", lambda tensor: raw[:len(tensor)].copy())
    image = SCENES[0]
    [a], [b] = trt_detector.detect([image]), ort_detector.detect([image])
    assert len(a) == 2  # the near-duplicate class-0 box is suppressed, as on ONNX Runtime
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.scores, b.scores)
    np.testing.assert_array_equal(a.classes, b.classes)
    trt_detector.close()
    trt_detector.close()
    with pytest.raises(RuntimeError, match="is closed"):
        TensorRTDetector.infer(trt_detector, np.zeros((1, 3, 256, 320), np.float32))


def test_second_load_uses_the_cached_engine(tmp_path: Path, square_model: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu().install(monkeypatch)
    TensorRTDetector(square_model, engine_dir=tmp_path, max_batch=3).close()
    with capture_logs() as logs:
        detector = TensorRTDetector(square_model, engine_dir=tmp_path, max_batch=3)
    detector.close()
    assert len(gpu.builds) == 1
    events = [e["event"] for e in logs]
    assert events == ["engine_cache_hit", "tensorrt_detector_ready"]
    ready = logs[-1]
    assert (ready["precision"], ready["max_batch"], ready["built"]) == ("fp16", 3, False)
    [entry] = EngineStore(tmp_path).entries()
    assert entry["parts"]["gpu_name"] == "Fake Orin"
    assert entry["parts"]["compute_capability"] == "8.7"


def test_engine_tensorrt_cannot_load_is_discarded(tmp_path: Path, square_model: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    gpu = FakeGpu().install(monkeypatch)
    gpu.refuse_engine = True
    with pytest.raises(ModelError, match="cannot load this engine; it was removed"):
        TensorRTDetector(square_model, engine_dir=tmp_path)
    assert EngineStore(tmp_path).entries() == []
    assert gpu.pushes == gpu.pops and gpu.detached == 1 and gpu.memory == {}


def test_input_beyond_the_profile_is_refused(tmp_path: Path, square_model: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGpu().install(monkeypatch)
    with TensorRTDetector(square_model, engine_dir=tmp_path, max_batch=2) as detector, \
            pytest.raises(ValueError, match=r"input must be \(1\.\.2, 3, 256, 320\)"):
        detector.infer(np.zeros((3, 3, 256, 320), np.float32))


# --- missing pieces: fallback or refusal ----------------------------------------------------

def _no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError


def _no_pycuda(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGpu().install(monkeypatch)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)


def _no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGpu(devices=0).install(monkeypatch)


def _no_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGpu(init_error="cuInit failed: no CUDA-capable device is detected").install(monkeypatch)


MISSING = [(_no_tensorrt, "'tensorrt' cannot be imported"),
           (_no_pycuda, "'pycuda' cannot be imported"),
           (_no_gpu, "no CUDA GPU is visible"),
           (_no_driver, "CUDA driver does not initialise")]


@pytest.mark.parametrize(("missing", "reason"), MISSING)
def test_missing_backend_falls_back_to_onnx_runtime_with_one_log_line(
        square_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        missing: object, reason: str) -> None:
    missing(monkeypatch)  # type: ignore[operator]
    with capture_logs() as logs:
        detector = load_detector(square_model, "tensorrt", engine_dir=tmp_path)
    assert isinstance(detector, OnnxRuntimeDetector)
    [line] = logs
    assert (line["event"], line["log_level"]) == ("detector_backend_fallback", "warning")
    assert (line["backend"], line["fallback"]) == ("tensorrt", "onnxruntime")
    assert reason in line["reason"]
    assert detector.detect(SCENES[:1])[0].boxes.shape[1] == 4


@pytest.mark.parametrize(("missing", "reason"), MISSING)
def test_missing_backend_without_fallback_refuses_with_the_reason(
        square_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        missing: object, reason: str) -> None:
    missing(monkeypatch)  # type: ignore[operator]
    with pytest.raises(MissingExtraError) as caught:
        load_detector(square_model, "tensorrt", engine_dir=tmp_path, fallback_to_cpu=False)
    message = str(caught.value)
    assert reason in message
    assert "fallback_to_cpu is false" in message
    assert "dishtracker-edge[tensorrt]" in message and "docs/TENSORRT.md" in message


def test_tensorrt_is_a_registered_backend() -> None:
    assert list(BACKENDS) == ["onnxruntime", "tensorrt"]


def test_worker_passes_storage_streams_and_fallback_to_the_loader(
        square_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    FakeGpu().install(monkeypatch)
    config = DetectorConfig(model=square_model, backend="tensorrt")
    worker = DetectionWorker(config, Metrics(), engine_dir=tmp_path / "engines", max_batch=4)
    asyncio.run(worker.load())
    assert [e["parts"]["max_batch"] for e in EngineStore(tmp_path / "engines").entries()] == [4]
    asyncio.run(worker.close())


def test_a_candidate_builds_its_engine_in_its_own_thread_while_the_model_in_service_detects(
        square_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's promote on a GPU box (docs/MODELS.md): the new model's engine
    is built (and cached) in the candidate's thread, not the serving one's, and
    the swap hands the worker the loaded engine."""
    FakeGpu().install(monkeypatch)
    candidate = square_finder(tmp_path / "v2.onnx",
                              {**CONTRACT_METADATA, "model_version": "test-2"})
    config = DetectorConfig(model=square_model, backend="tensorrt")
    worker = DetectionWorker(config, Metrics(), engine_dir=tmp_path / "engines", max_batch=2)

    async def main() -> None:
        await worker.load()
        serving = worker.serving
        model = await worker.load_model(candidate, model_id="c2", version="test-2")
        assert model.executor is not serving.executor
        assert len(EngineStore(tmp_path / "engines").entries()) == 2
        image = np.zeros((256, 320, 3), np.uint8)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(serving.executor, serving.call, [image])
        old = worker.serve(model)
        assert old is serving and worker.serving.version == "test-2"
        assert len(await loop.run_in_executor(model.executor, model.call, [image])) == 1
        await worker.close_model(serving)
        await worker.close()

    asyncio.run(main())


def test_worker_without_fallback_fails_to_load(square_model: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _no_tensorrt(monkeypatch)
    config = DetectorConfig(model=square_model, backend="tensorrt", fallback_to_cpu=False)
    worker = DetectionWorker(config, Metrics(), engine_dir=tmp_path)
    with pytest.raises(MissingExtraError, match="fallback_to_cpu is false"):
        asyncio.run(worker.load())


def test_fallback_setting_is_validated_and_defaults_on() -> None:
    assert DetectorConfig().fallback_to_cpu is True
    assert parse_config({"detector": {"fallback_to_cpu": False}}).detector.fallback_to_cpu is False
    with pytest.raises(Exception, match=r"detector\.fallback_to_cpu: Input should be a valid "
                                        r"boolean"):
        parse_config({"detector": {"fallback_to_cpu": "sometimes"}})


# --- dishtracker calibrate engine -------------------------------------------------------------

def _result(capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    """The command's JSON result: its last stdout line (log events come before it)."""
    return json.loads(capsys.readouterr().out.splitlines()[-1])  # type: ignore[no-any-return]


def test_calibrate_engine_builds_then_finds_the_cached_engine(
        tmp_path: Path, square_model: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    gpu = FakeGpu().install(monkeypatch)
    argv = ["calibrate", "engine", "--model", str(square_model), "--engine-dir", str(tmp_path),
            "--max-batch", "3"]
    assert main(argv) == 0
    first = _result(capsys)
    assert main(argv) == 0
    second = _result(capsys)
    assert (first["built"], second["built"]) == (True, False)
    assert first["engine"] == second["engine"]
    assert (first["precision"], first["max_batch"]) == ("fp16", 3)
    assert len(gpu.builds) == 1 and gpu.pushes == gpu.pops == gpu.detached == 2
    assert main(["calibrate", "engine", "--engine-dir", str(tmp_path), "--list"]) == 0
    [listed] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed["key"] == first["key"]


def test_calibrate_engine_takes_model_storage_and_streams_from_the_config(
        tmp_path: Path, square_model: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    FakeGpu().install(monkeypatch)
    config = tmp_path / "site.toml"
    config.write_text(f'[detector]\nmodel = "{square_model}"\n[storage]\ndir = "{tmp_path}"\n'
                      '[[streams]]\nid = "a"\nurl = "synthetic://?seed=1"\n'
                      '[[streams]]\nid = "b"\nurl = "synthetic://?seed=2"\n')
    assert main(["calibrate", "engine", "--config", str(config)]) == 0
    out = _result(capsys)
    assert out["max_batch"] == 2
    assert Path(out["engine"]).parent == tmp_path / "engines"


def test_calibrate_engine_without_tensorrt_exits_2_with_the_reason(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    _no_tensorrt(monkeypatch)
    assert main(["calibrate", "engine", "--engine-dir", str(tmp_path)]) == 2
    assert "TensorRT backend unavailable: Python package 'tensorrt' cannot be imported" in \
        capsys.readouterr().err


# --- on a real GPU ----------------------------------------------------------------------------

def _real_backend() -> None:
    try:
        import_backend()
    except TensorRTUnavailable as err:
        pytest.skip(f"needs TensorRT, pycuda and an NVIDIA GPU: {err.reason}")


@pytest.mark.gpu
def test_gpu_engine_matches_onnx_runtime_on_the_shipped_model(tmp_path: Path) -> None:
    _real_backend()
    images = [_scene(640, 480, (100, 60, 300, 200)), _scene(1280, 720, (0, 0, 640, 360))]
    rng = np.random.default_rng(0)
    images += [rng.integers(0, 255, (480, 640, 3), np.uint8) for _ in range(2)]
    with TensorRTDetector(DEFAULT_MODEL, engine_dir=tmp_path, max_batch=3,
                          precision="fp32", score_threshold=0.2) as trt_detector, \
            OnnxRuntimeDetector(DEFAULT_MODEL, score_threshold=0.2) as ort_detector:
        raw_batch = trt_detector._letterbox.batch(images[:3])[0]
        np.testing.assert_allclose(trt_detector.infer(raw_batch), ort_detector.infer(raw_batch),
                                   rtol=1e-3, atol=1e-2)
        for got, want in zip(trt_detector.detect(images), ort_detector.detect(images),
                             strict=True):
            assert len(got) == len(want)
            np.testing.assert_array_equal(got.classes, want.classes)
            np.testing.assert_allclose(got.boxes, want.boxes, atol=1.0)
            np.testing.assert_allclose(got.scores, want.scores, atol=1e-3)


@pytest.mark.gpu
def test_gpu_fp16_engine_is_cached_and_close_to_onnx_runtime(tmp_path: Path) -> None:
    _real_backend()
    images = [_scene(640, 480, (100, 60, 300, 200))]
    first = TensorRTDetector(DEFAULT_MODEL, engine_dir=tmp_path, max_batch=2)
    assert first.precision in ("fp16", "fp32")  # fp32 on TensorRT 11 with a float32 graph
    got = first.detect(images)[0]
    first.close()
    with capture_logs() as logs:
        second = TensorRTDetector(DEFAULT_MODEL, engine_dir=tmp_path, max_batch=2)
    second.close()
    assert "engine_cache_hit" in [e["event"] for e in logs]
    want = OnnxRuntimeDetector(DEFAULT_MODEL).detect(images)[0]
    if len(want):
        best_got, best_want = np.argmax(got.scores), np.argmax(want.scores)
        assert got.classes[best_got] == want.classes[best_want]
        np.testing.assert_allclose(got.boxes[best_got], want.boxes[best_want], atol=4.0)
    timing = list(tmp_path.glob("timing-*.cache"))
    assert len(timing) == 1 and timing[0].stat().st_size > 0
