"""INT8 quantization: QDQ recipes per target, metadata, float decoding, accuracy, errors."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import pytest
from onnx import numpy_helper

from calibration.frame_sources import image_frames, sim_frames
from calibration.quantize import TARGETS, body_nodes, quantize_model
from edge.cli import main
from edge.config import DetectorConfig
from edge.detect import load_detector
from edge.detect.contract import check_contract
from edge.detect.worker import DetectionWorker
from edge.errors import ConfigError, HeldOutSeedError, InputFormatError, ModelError
from edge.geometry import box_iou
from edge.metrics import Metrics
from edge.sim.scene import Scene

MODEL = Path(__file__).parent.parent / "edge" / "models" / "dishnet.onnx"
DECODING = {"Sigmoid", "MaxPool", "Equal", "TopK", "ArgMax", "GatherElements", "ReduceMax",
            "Exp", "Floor"}


def _frames() -> Iterator[npt.NDArray[np.uint8]]:
    return sim_frames([1000, 1001], 3)[1]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both targets' INT8 models of the shipped detector, calibrated on 6 rendered frames."""
    out = tmp_path_factory.mktemp("int8")
    return {target: quantize_model(MODEL, out / f"{target}.onnx", _frames(), target=target,
                                   progress=False, source="test").out
            for target in TARGETS}


def _initializers(model: onnx.ModelProto) -> dict[str, npt.NDArray[np.generic]]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _zero_points(model: onnx.ModelProto) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Zero points of activation QuantizeLinear nodes and of weight DequantizeLinear nodes."""
    init = _initializers(model)
    activations = [init[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    weights = [init[n.input[2]] for n in model.graph.node
               if n.op_type == "DequantizeLinear" and n.input[0] in init
               and init[n.input[0]].dtype in (np.int8, np.uint8)]
    return activations, weights


def test_cpu_target_is_u8_activations_s8_per_channel_weights(quantized: dict[str, Path]) -> None:
    model = onnx.load(quantized["cpu"])
    activations, weights = _zero_points(model)
    assert len(activations) >= 38 and len(weights) == 38  # every conv of the body
    assert all(z.dtype == np.uint8 for z in activations)
    assert any(int(z) != 0 for z in activations)  # asymmetric: the input's zero point
    assert all(z.dtype == np.int8 and not z.any() for z in weights)
    assert all(z.size > 1 for z in weights)  # per-channel scales on the convolutions


def test_tensorrt_target_is_symmetric_s8_with_float_biases(quantized: dict[str, Path]) -> None:
    model = onnx.load(quantized["tensorrt"])
    activations, weights = _zero_points(model)
    assert len(activations) >= 38 and len(weights) == 38
    assert all(z.dtype == np.int8 and not z.any() for z in activations + weights)
    assert all(z.size > 1 for z in weights)
    init = _initializers(model)
    assert not [name for name, v in init.items() if v.dtype == np.int32]  # QuantizeBias off
    dq_axes = [a.i for n in model.graph.node if n.op_type == "DequantizeLinear"
               for a in n.attribute if a.name == "axis"]
    assert dq_axes and set(dq_axes) == {0}  # per output channel of Conv weights


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_decoding_tail_stays_float(quantized: dict[str, Path], target: str) -> None:
    model = onnx.load(quantized[target])
    produced_by = {o: n.op_type for n in model.graph.node for o in n.output}
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    tail = [n for n in model.graph.node if n.op_type in DECODING]
    assert {n.op_type for n in tail} >= {"MaxPool", "TopK", "Sigmoid", "Equal"}
    for node in tail:
        assert not [i for i in node.input if produced_by.get(i) == "DequantizeLinear"], node.name
        assert not [c for o in node.output for c in consumers.get(o, [])
                    if c == "QuantizeLinear"], node.name
    used = {o.domain for o in model.opset_import}
    assert used <= {"", "ai.onnx"}  # no ONNX Runtime-only domains for TensorRT's parser


def test_body_nodes_stop_before_the_head_outputs() -> None:
    model = onnx.load(MODEL)
    names = set(body_nodes(model))
    kinds = {n.op_type for n in model.graph.node if n.name in names}
    assert kinds <= {"Conv", "Add", "Resize", "Relu", "Clip", "Concat"}
    heads = ("objectness", "classes", "size", "offset")
    float_convs = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name not in names]
    # named by the head branch they end (``/net/head/size/size.1/Conv``, ``/classes.1/Conv``)
    assert {next((h for h in heads if f"/{h}" in name), name) for name in float_convs} == set(heads)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_metadata_kept_and_marked_quantized(quantized: dict[str, Path], target: str) -> None:
    source = {p.key: p.value for p in onnx.load(MODEL).metadata_props}
    meta = {p.key: p.value for p in onnx.load(quantized[target]).metadata_props}
    assert {k: meta[k] for k in source} == source
    assert meta["quantization"] == TARGETS[target].label
    calibration = json.loads(meta["quantization_calibration"])
    assert calibration["frames"] == 6 and calibration["method"] == "minmax"
    info = check_contract(quantized[target])
    assert info.model_version == "dishnet-1.1" and info.num_classes == 33


def test_int8_detections_match_fp32_on_a_rendered_frame(quantized: dict[str, Path]) -> None:
    scene = Scene(1234, balanced=True)
    image = next(img for f, img, truth in scene.frames(200) if f >= 120 and len(truth) >= 4)
    fp32 = load_detector(MODEL, score_threshold=0.3).detect([image])[0]
    int8 = load_detector(quantized["cpu"], score_threshold=0.2).detect([image])[0]
    strong = fp32.scores >= 0.5
    assert strong.sum() >= 3
    iou = box_iou(fp32.boxes[strong], int8.boxes)
    same = fp32.classes[strong][:, None] == int8.classes[None, :]
    best = np.where(same, iou, 0.0).max(axis=1)
    assert (best >= 0.8).all(), best


def test_daemon_loads_int8_model_from_detector_config(quantized: dict[str, Path]) -> None:
    async def load() -> tuple[str, ...]:
        worker = DetectionWorker(DetectorConfig(model=quantized["cpu"]), Metrics())
        await worker.load()
        names = worker.class_names
        await worker.close()
        return names

    assert len(asyncio.run(load())) == 33


def test_cli_quantizes_from_image_dir_without_litter(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, image in enumerate(itertools.islice(_frames(), 3)):
        cv2.imwrite(str(frames / f"f{i}.jpg"), image)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    out = tmp_path / "models" / "int8.onnx"
    assert main(["calibrate", "quantize", "--model", str(MODEL), "--frames", str(frames),
                 "--out", str(out), "--quiet"]) == 0
    assert list(work.iterdir()) == []  # no *.data or temporary models left behind
    assert sorted(p.name for p in out.parent.iterdir()) == ["int8.onnx"]
    assert json.loads({p.key: p.value for p in onnx.load(out).metadata_props}[
        "quantization_calibration"])["frames"] == 3


def test_held_out_seeds_are_refused_for_calibration(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(HeldOutSeedError, match="90005"):
        sim_frames([1000, 90005], 2)
    code = main(["calibrate", "quantize", "--model", str(MODEL), "--from-sim", "--seeds",
                 "1000,95000-95001", "--out", str(tmp_path / "q.onnx")])
    assert code == 2
    assert "95000" in capsys.readouterr().err
    assert not (tmp_path / "q.onnx").exists()


def test_empty_or_missing_frame_source_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(InputFormatError, match="no images"):
        image_frames(tmp_path / "empty")
    with pytest.raises(InputFormatError, match="not a directory"):
        image_frames(tmp_path / "missing")
    with pytest.raises(InputFormatError, match="no calibration frames"):
        quantize_model(MODEL, tmp_path / "q.onnx", iter([]), progress=False)


def test_bad_model_and_bad_options_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_text("not a model")
    with pytest.raises(ModelError, match=r"bad\.onnx"):
        quantize_model(bad, tmp_path / "q.onnx", _frames(), progress=False)
    with pytest.raises(ModelError, match="no such model"):
        quantize_model(tmp_path / "none.onnx", tmp_path / "q.onnx", _frames(), progress=False)
    with pytest.raises(ConfigError, match="input model"):
        quantize_model(MODEL, MODEL, _frames(), progress=False)
    with pytest.raises(ConfigError, match="target"):
        quantize_model(MODEL, tmp_path / "q.onnx", _frames(), target="tpu", progress=False)
    with pytest.raises(ConfigError, match="exclude"):
        quantize_model(MODEL, tmp_path / "q.onnx", _frames(), exclude=["nope"], progress=False)
    assert not (tmp_path / "q.onnx").exists()


def test_video_frames_are_spread_over_the_clip(tmp_path: Path) -> None:
    from edge.sim.writer import write_sequence

    write_sequence(tmp_path / "seq", seed=1000, seconds=1.0, fps=10.0)
    count, frames = image_frames(tmp_path / "seq" / "video.mp4", max_frames=4)
    images = list(frames)
    assert count == len(images) == 4
    assert all(image.shape == (480, 640, 3) and image.dtype == np.uint8 for image in images)
