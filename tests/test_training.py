"""Detector training side: targets, augmentation, training run, resume, export and init.

Runs on a tiny COCO-layout dataset of coloured shapes built in a temporary
directory (8 training and 4 validation frames of 640x480), small enough that
a whole train-export cycle takes seconds on two CPU cores. Both head types
(``centernet``, ``factorized``) go through a train-export cycle.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

import onnx  # noqa: E402 -- after the importorskip guards
import onnxruntime as ort  # noqa: E402

from calibration.augment import AugmentConfig, augment, letterbox  # noqa: E402
from calibration.average_precision import GroundTruth, mean_average_precision  # noqa: E402
from calibration.checkpoint import HEATMAP_OUT, init_from, load_checkpoint  # noqa: E402
from calibration.data import DetectionDataset, read_split, refuse_held_out  # noqa: E402
from calibration.export import (  # noqa: E402
    add_export_arguments,
    compare_detections,
    compare_embeddings,
    run_export,
)
from calibration.model import (  # noqa: E402
    EMBEDDING_DIM,
    DetectionGraph,
    build_model,
    decode_factorized,
)
from calibration.targets import detection_loss, encode_targets  # noqa: E402
from calibration.train import add_train_arguments, run_train  # noqa: E402
from edge.config import DEFAULT_MODEL  # noqa: E402
from edge.detect.contract import check_contract, read_model_info  # noqa: E402
from edge.errors import (  # noqa: E402
    HeldOutSeedError,
    InputFormatError,
    MissingExtraError,
    ModelError,
)

CLASSES = ["tray", "red_disc", "blue_box"]
COLOURS = {1: (40, 40, 220), 2: (220, 60, 40)}  # BGR


def _write_split(root: Path, split: str, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (root / split / "images").mkdir(parents=True)
    images, annotations = [], []
    for image_id in range(count):
        frame = np.full((480, 640, 3), 90, np.uint8)
        tx, ty = int(rng.integers(20, 300)), int(rng.integers(20, 180))
        objects = [(0, tx, ty, 300, 260, 0)]
        cv2.rectangle(frame, (tx, ty), (tx + 300, ty + 260), (170, 170, 170), -1)
        for k in range(3):
            cls = 1 + (image_id + k) % 2
            x, y = tx + 20 + 90 * k, ty + 40 + int(rng.integers(0, 120))
            objects.append((cls, x, y, 60, 60, int(k == 2 and image_id % 4 == 3)))
            if cls == 1:
                cv2.circle(frame, (x + 30, y + 30), 30, COLOURS[1], -1)
            else:
                cv2.rectangle(frame, (x, y), (x + 60, y + 60), COLOURS[2], -1)
        name = f"images/{image_id:06d}.jpg"
        cv2.imwrite(str(root / split / name), frame)
        images.append(
            {
                "id": image_id,
                "file_name": name,
                "width": 640,
                "height": 480,
                "seed": seed,
                "frame": image_id,
            }
        )
        for cls, x, y, w, h, ignore in objects:
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": image_id,
                    "category_id": cls,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "ignore": ignore,
                    "visibility": 0.3 if ignore else 1.0,
                    "track_id": len(annotations),
                }
            )
    categories = [{"id": i, "name": n, "supercategory": "object"} for i, n in enumerate(CLASSES)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (root / split / "annotations.json").write_text(json.dumps(coco))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    _write_split(root, "train", 8, seed=11)
    _write_split(root, "val", 4, seed=12)
    return root


def _args(data: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(
        ["--data", str(data), "--out", str(out), "--batch-size", "4", "--epochs", "1", *extra]
    )


@pytest.fixture(scope="module")
def trained(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    assert run_train(_args(dataset, out)) == 0
    return out


@pytest.fixture(scope="module")
def trained_factorized(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run_factorized")
    assert run_train(_args(dataset, out, "--head", "factorized")) == 0
    return out


def test_targets_put_peaks_at_centres_and_ignore_masks_the_box() -> None:
    boxes = np.array([[80, 40, 160, 120], [200, 100, 240, 140]], np.float32)
    targets = encode_targets(boxes, np.array([1, 2]), np.array([False, True]), 3, (320, 240))
    peak = np.unravel_index(np.argmax(targets.heatmap[1]), targets.heatmap[1].shape)
    assert peak == (10, 15)  # centre (120, 80) px / stride 8 -> cell (x 15, y 10)
    assert targets.heatmap[1, 10, 15] == 1.0
    assert targets.regression_mask.sum() == 1.0
    np.testing.assert_allclose(targets.regression[:, 10, 15], [np.log(10), np.log(10), 0, 0])
    assert targets.heatmap[2].max() == 0.0  # the ignored object is no positive ...
    assert targets.heatmap_weight[2, 12:18, 25:30].max() == 0.0  # ... nor a negative
    assert targets.heatmap_weight[1, 12:18, 25:30].min() == 1.0  # other classes still learn


def test_augmentation_moves_boxes_with_the_objects() -> None:
    image = np.full((480, 640, 3), 90, np.uint8)
    cv2.rectangle(image, (100, 200), (179, 279), (0, 0, 255), -1)
    config = AugmentConfig(
        noise_p=0.0,
        blur_p=0.0,
        jpeg_p=0.0,
        brightness=0.0,
        contrast=(1.0, 1.0),
        saturation=(1.0, 1.0),
        channel_gain=0.0,
    )
    for seed in range(6):
        out, boxes, keep, cut = augment(
            image,
            np.array([[100, 200, 180, 280]], np.float32),
            (320, 240),
            np.random.default_rng(seed),
            config,
        )
        assert out.shape == (240, 320, 3) and keep[0] and not cut[0]
        x1, y1, x2, y2 = np.round(boxes[0]).astype(int)
        inside = out[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2]
        assert inside[:, :, 2].min() > 200 and inside[:, :, 0].max() < 60


def test_letterbox_pads_other_aspect_ratios_centred_with_grey() -> None:
    out, box = letterbox(np.zeros((400, 400, 3), np.uint8), (320, 240))
    assert out.shape == (240, 320, 3) and box.scale == 0.6 and box.pad_x == 40
    assert (out[:, :40] == 114).all() and (out[:, 40:280] == 0).all()


def test_held_out_seeds_are_refused(tmp_path: Path) -> None:
    _write_split(tmp_path, "train", 1, seed=95000)
    with pytest.raises(HeldOutSeedError, match="95000"):
        refuse_held_out(read_split(tmp_path / "train"), "training")


def test_average_precision_is_one_for_exact_detections_and_skips_ignored() -> None:
    truth = GroundTruth(
        np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32),
        np.array([0, 0]),
        np.array([False, True]),
    )
    dets = np.array([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.95, 0]], np.float32)
    assert mean_average_precision([dets], [truth], 2)[0] == pytest.approx(1.0)


def test_one_epoch_writes_checkpoints_history_and_onnx(trained: Path) -> None:
    for name in ("last.ckpt", "best.ckpt", "model.onnx", "history.jsonl"):
        assert (trained / name).exists(), name
    history = [json.loads(line) for line in (trained / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["epoch"] == 1 and "val_map50" in history[0]
    state = load_checkpoint(trained / "last.ckpt")
    assert state["epoch"] == 1 and state["class_names"] == CLASSES
    assert {"model", "optimizer", "scheduler", "rng", "args"} <= set(state)


def test_resume_continues_from_the_last_epoch(trained: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    before = load_checkpoint(out / "last.ckpt")["scheduler"]["last_epoch"]
    assert run_train(_args(dataset, out, "--epochs", "2")) == 0
    state = load_checkpoint(out / "last.ckpt")
    epochs = [
        json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()
    ]
    assert state["epoch"] == 2 and epochs == [1, 2]
    assert state["scheduler"]["last_epoch"] == 2 * before  # the LR cycle went on, too


def _meta(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def test_exported_onnx_meets_the_detector_contract_and_matches_torch(trained: Path) -> None:
    path = trained / "model.onnx"
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert path.stat().st_size <= 12 * 2**20
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {17}
    (inp,), (out,) = model.graph.input, model.graph.output
    assert inp.name == "images" and out.name == "detections"
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert isinstance(in_dims[0], str) and in_dims[1:] == [3, 240, 320]
    assert isinstance(out_dims[0], str) and out_dims[2] == 6
    info = check_contract(path)  # the daemon's own loader accepts it
    assert list(info.class_names) == CLASSES
    meta = _meta(model)
    assert json.loads(meta["class_names"]) == CLASSES
    assert json.loads(meta["input_size"]) == [320, 240]
    norm = json.loads(meta["normalization"])
    assert norm["color"] == "RGB" and len(norm["mean"]) == len(norm["std"]) == 3
    assert meta["resize"] == "letterbox" and meta["output_format"] == "detections-v1"
    assert meta["model_version"] and "epochs" in json.loads(meta["training"])

    state = load_checkpoint(trained / "best.ckpt")
    net = build_model(len(CLASSES), pretrained=False)
    net.load_state_dict(state["model"])
    images = np.random.default_rng(3).normal(size=(3, 3, 240, 320)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["detections"], {"images": images}
    )[0]
    with torch.no_grad():
        expected = DetectionGraph(net).eval()(torch.from_numpy(images)).numpy()
    assert got.shape == (3, 100, 6)
    assert compare_detections(expected, got) is None
    assert (got[:, :, 4] >= 0).all() and (got[:, :, 4] <= 1).all()
    assert np.isin(got[:, :, 5], np.arange(len(CLASSES))).all()


def _weights(model: Any) -> dict[str, Any]:
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def test_init_from_onnx_reproduces_the_exported_weights(trained: Path) -> None:
    expected = build_model(len(CLASSES), pretrained=False)
    expected.load_state_dict(load_checkpoint(trained / "best.ckpt")["model"])
    model = build_model(len(CLASSES), pretrained=False)
    init_from(model, trained / "model.onnx", CLASSES)
    got = _weights(model)
    for key, value in _weights(expected).items():
        assert torch.equal(got[key], value), key


def test_init_with_a_new_class_keeps_the_known_heatmap_channels(trained: Path) -> None:
    names = ["blue_box", "tray", "new_dish"]
    model = build_model(len(names), pretrained=False)
    report = init_from(model, trained / "last.ckpt", names)
    old = load_checkpoint(trained / "last.ckpt")["model"][f"{HEATMAP_OUT}.weight"]
    new = model.state_dict()[f"{HEATMAP_OUT}.weight"]
    assert (report.classes_kept, report.classes_new) == (2, 1)
    assert torch.equal(new[0], old[2]) and torch.equal(new[1], old[0])


def test_freeze_backbone_leaves_backbone_weights_and_statistics_unchanged(dataset: Path) -> None:
    torch.manual_seed(0)
    model = build_model(len(CLASSES), pretrained=False)
    model.freeze_backbone()
    model.train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head_before = model.head.shared[0].weight.clone()
    data = DetectionDataset(read_split(dataset / "train").frames, 3, (320, 240), train=True)
    batch = torch.utils.data.default_collate([data[0], data[1]])
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    detection_loss(model(batch["image"]), batch)["loss"].backward()
    optimizer.step()
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.head.shared[0].weight, head_before)


def test_shallow_run_on_a_label_budget_keeps_the_imagenet_backbone(
    dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shallow"
    extra = ("--freeze-backbone", "--max-images", "4", "--time-budget-s", "0", "--epochs", "3")
    assert run_train(_args(dataset, out, *extra)) == 0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["steps"] for h in history] == [1]  # the time budget ends the run after one step
    state = load_checkpoint(out / "last.ckpt")
    assert state["training"]["train_images"] == 4 and state["training"]["freeze_backbone"]
    reference = build_model(len(CLASSES), pretrained=True).backbone.state_dict()
    for key, value in reference.items():
        assert torch.equal(state["model"][f"backbone.{key}"], value), key
    assert (out / "model.onnx").exists()


def test_export_command_rebuilds_the_onnx_from_a_checkpoint(trained: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    out = tmp_path / "again.onnx"
    args = parser.parse_args(["--ckpt", str(trained / "best.ckpt"), "--out", str(out)])
    assert run_export(args) == 0
    meta = _meta(onnx.load(str(out)))
    assert json.loads(meta["class_names"]) == CLASSES
    assert json.loads(meta["training"])["checkpoint"].endswith("best.ckpt")


def test_export_again_from_onnx_keeps_weights_and_detections_and_adds_embeddings(
        tmp_path: Path) -> None:
    """``calibrate export --onnx``: the shipped model (no checkpoint ships) with
    today's graph: the same detections, its metadata, and the embeddings."""
    source = tmp_path / "old.onnx"
    model = onnx.load(str(DEFAULT_MODEL))
    del model.graph.output[1:]  # the shipped model before it had embeddings
    onnx.save(model, source)
    parser = argparse.ArgumentParser()
    add_export_arguments(parser)
    out = tmp_path / "again.onnx"
    assert run_export(parser.parse_args(["--onnx", str(source), "--out", str(out)])) == 0
    old, new = _meta(onnx.load(str(source))), _meta(onnx.load(str(out)))
    assert new["model_version"] == old["model_version"]
    assert json.loads(new["training"])["reexported_from"]["file"] == "old.onnx"
    assert read_model_info(out).embedding_dim == EMBEDDING_DIM
    images = np.random.default_rng(5).normal(size=(2, 3, 240, 320)).astype(np.float32)
    run = [ort.InferenceSession(str(f), providers=["CPUExecutionProvider"]).run(
        ["detections"], {"images": images})[0] for f in (source, out)]
    np.testing.assert_array_equal(run[0], run[1])
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", str(out)])  # --ckpt or --onnx is required


def test_training_without_torch_names_the_extra(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(MissingExtraError, match=r"dishtracker-edge\[train\]"):
        run_train(_args(dataset, tmp_path / "run"))


def test_factorized_targets_split_trays_from_items_and_label_item_centres() -> None:
    boxes = np.array(
        [[0, 0, 320, 240], [80, 40, 160, 120], [200, 100, 240, 140], [144, 104, 176, 136]],
        np.float32,
    )
    targets = encode_targets(
        boxes,
        np.array([0, 1, 2, 2]),
        np.array([False, False, True, False]),
        3,
        (320, 240),
        head="factorized",
    )
    assert targets.heatmap.shape == (2, 30, 40)
    assert targets.heatmap[0, 15, 20] == 1.0  # the tray, centre (160, 120) px, on channel 0
    assert targets.heatmap[1, 10, 15] == 1.0  # an item on channel 1
    assert targets.classes[10, 15] == targets.classes[11, 16] == 1  # centre and neighbours
    assert targets.classes[15, 20] == targets.classes[14, 21] == 2
    assert targets.classes[15, 17] == -1  # trays are named by their channel, not classified
    assert targets.classes[15, 27] == -1  # nor is the ignored item
    assert (targets.classes >= 0).sum() == 18
    assert targets.heatmap_weight[1, 12:18, 25:30].max() == 0.0  # the ignored item ...
    assert targets.heatmap_weight[0, 12:18, 25:30].min() == 1.0  # ... still a tray negative


def test_factorized_decoding_names_trays_by_channel_and_items_by_classifier() -> None:
    objectness = torch.full((1, 2, 6, 8), -10.0)
    objectness[0, 0, 1, 1] = 3.0  # a tray peak at cell (x 1, y 1)
    objectness[0, 1, 4, 6] = 2.0  # an item peak at cell (x 6, y 4)
    class_logits = torch.zeros(1, 4, 6, 8)
    class_logits[0, :, 1, 1] = torch.tensor([0.0, 5.0, 0.0, 0.0])  # not asked for a tray
    class_logits[0, :, 4, 6] = torch.tensor([9.0, 0.0, 0.0, 4.0])  # class 0 is excluded
    zeros = torch.zeros(1, 2, 6, 8)
    dets = decode_factorized(objectness, zeros, zeros, class_logits, grid=(8, 6), k=5)[0]
    assert dets.shape == (5, 6)
    np.testing.assert_allclose(dets[0], [4, 4, 12, 12, torch.sigmoid(torch.tensor(3.0)), 0])
    item_prob = np.exp(4) / (2 + np.exp(4))
    item_score = float(torch.sigmoid(torch.tensor(2.0))) * item_prob
    np.testing.assert_allclose(dets[1], [44, 28, 52, 36, item_score, 3], rtol=1e-6)
    assert (dets[2:, 4] < 1e-4).all() and (dets[:, 4].diff() <= 0).all()

    # candidates are chosen by objectness: an unsure classifier does not hide an item
    objectness[0, 0, 4, 1] = 0.0  # a weak tray-channel peak, 0.5
    class_logits[0, :, 4, 6] = 0.0  # item probability 1/3: final score 0.29
    dets = decode_factorized(objectness, zeros, zeros, class_logits, grid=(8, 6), k=2)[0]
    assert dets[:, 5].tolist() == [0, 1] and dets[1, 4] == pytest.approx(item_score / item_prob / 3)


def test_factorized_head_trains_exports_and_matches_torch(trained_factorized: Path) -> None:
    path = trained_factorized / "model.onnx"
    assert list(check_contract(path).class_names) == CLASSES
    meta = _meta(onnx.load(str(path)))
    assert json.loads(meta["training"])["head"] == "factorized"
    assert meta["architecture"].endswith("-factorized")
    history = json.loads((trained_factorized / "history.jsonl").read_text().splitlines()[0])
    assert history["train_class"] > 0 and "val_map50" in history
    state = load_checkpoint(trained_factorized / "best.ckpt")
    assert state["head"] == "factorized" and state["training"]["head"] == "factorized"

    net = build_model(len(CLASSES), pretrained=False, head="factorized")
    net.load_state_dict(state["model"])
    images = np.random.default_rng(4).normal(size=(3, 3, 240, 320)).astype(np.float32)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["detections"], {"images": images}
    )[0]
    with torch.no_grad():
        expected = DetectionGraph(net).eval()(torch.from_numpy(images)).numpy()
    assert got.shape == (3, 100, 6)
    assert compare_detections(expected, got) is None
    assert (got[:, :, 4] >= 0).all() and (got[:, :, 4] <= 1).all()
    assert np.isin(got[:, :, 5], np.arange(len(CLASSES))).all()
    # the factorized export carries what the network saw at each detection
    assert read_model_info(path).embedding_dim == EMBEDDING_DIM
    rows, embeddings = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        ["detections", "embeddings"], {"images": images})
    with torch.no_grad():
        want_rows, want = DetectionGraph(net, embeddings=True).eval()(torch.from_numpy(images))
    assert embeddings.shape == (3, 100, EMBEDDING_DIM)
    assert compare_embeddings(want_rows.numpy(), want.numpy(), rows, embeddings) is None

    again = build_model(len(CLASSES), pretrained=False, head="factorized")
    init_from(again, path, CLASSES)
    got_weights = _weights(again)
    for key, value in _weights(net).items():
        assert torch.equal(got_weights[key], value), key


def test_factorized_init_from_centernet_keeps_backbone_neck_and_tray(trained: Path) -> None:
    source = load_checkpoint(trained / "last.ckpt")["model"]
    model = build_model(len(CLASSES), pretrained=False, head="factorized")
    init_from(model, trained / "last.ckpt", CLASSES)
    state = model.state_dict()
    for key, value in source.items():
        if key.startswith(("backbone.", "neck.", "head.shared.", "head.size.", "head.offset.")):
            assert torch.equal(state[key], value), key
        if key.startswith("head.heatmap.0."):
            assert torch.equal(state[key.replace("heatmap", "objectness")], value), key
    for part in ("weight", "bias"):
        tray = source[f"{HEATMAP_OUT}.{part}"][0]
        assert torch.equal(state[f"head.objectness.1.{part}"][0], tray)


def test_resume_refuses_another_head(trained: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    with pytest.raises(ModelError, match="trained with --head centernet"):
        run_train(_args(dataset, out, "--head", "factorized", "--epochs", "2"))


def test_crop_warmup_writes_a_backbone_that_training_loads(dataset: Path, tmp_path: Path) -> None:
    from calibration.pretrain import add_pretrain_arguments, run_pretrain

    parser = argparse.ArgumentParser()
    add_pretrain_arguments(parser)
    warm = tmp_path / "warm.ckpt"
    args = parser.parse_args(["--data", str(dataset), "--out", str(warm), "--epochs", "1",
                              "--batch-size", "8", "--threads", "1"])
    assert run_pretrain(args) == 0
    payload = load_checkpoint(warm)
    assert payload["kind"] == "crop-pretrain"
    assert all(k.startswith("backbone.") for k in payload["model"])
    net = build_model(len(CLASSES), pretrained=False)
    report = init_from(net, warm, CLASSES)
    assert report.loaded == len(payload["model"])
    key = "backbone._blocks.6._project_conv.weight"
    assert torch.equal(net.state_dict()[key], payload["model"][key])


def test_few_labelled_frames_repeat_to_the_epoch_size(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "few"
    extra = ("--max-images", "2", "--epoch-images", "8", "--head", "factorized")
    assert run_train(_args(dataset, out, *extra)) == 0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["steps"] for h in history] == [2]  # 2 frames x 4 copies, batches of 4
    training = load_checkpoint(out / "last.ckpt")["training"]
    assert training["train_images"] == 2 and training["epoch_images"] == 8


def test_replay_mixes_known_classes_into_each_epoch(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "replay"
    extra = ("--max-images", "2", "--epoch-images", "8", "--head", "factorized",
             "--replay", str(dataset / "val"), "--replay-share", "0.5")
    assert run_train(_args(dataset, out, *extra)) == 0
    training = load_checkpoint(out / "last.ckpt")["training"]
    assert training["replay_images"] == 4 and training["epoch_images"] == 8
    assert training["train_images"] == 2
    other = tmp_path / "other"
    _write_split(other, "val", 2, seed=13)
    doc = json.loads((other / "val" / "annotations.json").read_text())
    doc["categories"][2]["name"] = "green_triangle"  # a class the training split lacks
    (other / "val" / "annotations.json").write_text(json.dumps(doc))
    with pytest.raises(InputFormatError, match="green_triangle"):
        run_train(_args(dataset, tmp_path / "bad", "--replay", str(other / "val")))
