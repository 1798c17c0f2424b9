"""Training on imperfect labels (calibration/noisy.py): ignore regions around unlabelled
proposals, and wrong class labels the model keeps contradicting dropped from the loss.

Uses the tiny dataset of coloured shapes of ``test_training.py``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from test_training import _write_split  # noqa: E402 -- after the importorskip guards

from calibration import noisy  # noqa: E402
from calibration.checkpoint import load_checkpoint  # noqa: E402
from calibration.data import FrameRecord, read_split  # noqa: E402
from calibration.targets import NO_CLASS, detection_loss, encode_targets  # noqa: E402
from calibration.train import add_train_arguments, run_train  # noqa: E402
from edge.errors import InputFormatError, ModelError  # noqa: E402


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("noisy")
    _write_split(root, "train", 8, seed=21)
    _write_split(root, "val", 4, seed=22)
    return root


def _args(data: Path, out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(["--data", str(data), "--out", str(out), "--batch-size", "4",
                              "--head", "factorized", *extra])


def test_targets_name_the_object_behind_each_labelled_cell() -> None:
    boxes = np.array([[0, 0, 200, 160], [40, 40, 88, 88], [120, 40, 168, 88]], np.float32)
    t = encode_targets(boxes, np.array([0, 1, 2]), np.zeros(3, bool), 3, (320, 240),
                       head="factorized", ids=np.array([-1, 7, 9]))
    assert set(np.unique(t.objects)) == {-1, 7, 9}
    assert ((t.objects >= 0) == (t.classes != NO_CLASS)).all()  # trays are not followed
    assert (t.classes[t.objects == 7] == 1).all() and (t.classes[t.objects == 9] == 2).all()


def test_a_zero_class_weight_removes_the_object_from_the_class_loss() -> None:
    boxes = np.array([[40, 40, 88, 88], [120, 40, 168, 88]], np.float32)
    t = encode_targets(boxes, np.array([1, 2]), np.zeros(2, bool), 3, (320, 240),
                       head="factorized", ids=np.array([0, 1]))
    batch = {k: torch.from_numpy(getattr(t, k))[None] for k in
             ("heatmap", "heatmap_weight", "regression", "regression_mask", "classes")}
    gen = torch.Generator().manual_seed(0)
    outputs = (torch.zeros(1, 2, 30, 40), torch.zeros(1, 2, 30, 40), torch.zeros(1, 2, 30, 40),
               torch.randn(1, 3, 30, 40, generator=gen))
    weighted = dict(batch, class_weight=torch.from_numpy(
        np.where(t.objects == 1, 0.0, 1.0).astype(np.float32))[None])
    without = dict(batch, classes=torch.from_numpy(np.where(t.objects == 1, NO_CLASS,
                                                            t.classes))[None])
    got, want = detection_loss(outputs, weighted), detection_loss(outputs, without)
    assert float(got["class"]) == pytest.approx(float(want["class"]), rel=1e-5)
    assert float(got["class"]) != pytest.approx(float(detection_loss(outputs, batch)["class"]))


def _logits(objects: np.ndarray, favour: dict[int, int], classes: int = 4) -> torch.Tensor:
    """Class logits (1, C, h, w) where each object's cells strongly favour one class."""
    logits = np.zeros((1, classes, *objects.shape), np.float32)
    for oid, cls in favour.items():
        logits[0, cls][objects == oid] = 6.0
    return torch.from_numpy(logits)


def test_label_trust_doubts_labels_the_model_contradicts_and_forgives_them() -> None:
    objects = np.full((6, 12), -1, np.int64)
    objects[1:3, 1:3], objects[1:3, 5:7], objects[1:3, 9:11] = 0, 1, 2
    objs = torch.from_numpy(objects)[None]
    trust = noisy.LabelTrust(np.array([1, 1, 1]), 4)
    trust.observe(objs, _logits(objects, {0: 2, 1: 1, 2: 1}))  # object 0 looks like class 2
    assert trust.end_epoch(0) == {"labels_followed": 3, "labels_doubted": 0}  # still warming up
    assert trust.end_epoch(1)["labels_doubted"] == 1
    assert trust.weight.tolist() == [0.0, 1.0, 1.0]
    weight = trust.class_weight(objs)[0].numpy()
    assert (weight[objects == 0] == 0).all() and (weight[objects != 0] == 1).all()
    saved = trust.state()
    for _ in range(4):  # the model comes to agree with the label: the doubt is lifted
        trust.observe(objs, _logits(objects, {0: 1, 1: 1, 2: 1}))
    assert trust.end_epoch(2)["labels_doubted"] == 0
    trust.load(saved)
    assert trust.weight.tolist() == [0.0, 1.0, 1.0]
    report = trust.report([{"path": "a.jpg", "box": [0, 0, 1, 1], "label": 1}] * 3,
                          ["tray", "soup", "salad", "cake"])
    assert [(d["label_name"], d["model_says"]) for d in report["doubted"]] == [("soup", "salad")]


def test_a_class_not_learned_yet_contradicts_none_of_its_labels() -> None:
    objects = np.full((6, 12), -1, np.int64)
    objects[1:3, 1:3], objects[1:3, 5:7], objects[1:3, 9:11] = 0, 1, 2
    trust = noisy.LabelTrust(np.array([3, 3, 1]), 4)  # a new dish (3) the model calls 2
    trust.observe(torch.from_numpy(objects)[None], _logits(objects, {0: 2, 1: 2, 2: 1}))
    assert trust.end_epoch(1)["labels_doubted"] == 0


def test_unlabelled_proposals_become_ignore_boxes_except_on_complete_frames(
    monkeypatch: pytest.MonkeyPatch, dataset: Path
) -> None:
    frames = read_split(dataset / "train").frames[:2]
    labelled = frames[0].boxes[1]  # x1, y1, x2, y2 in frame pixels (640x480 → 320x240: / 2)
    stray = np.array([10, 10, 40, 40, 1], np.float32)

    def fake_boxes(model: Any, images: list[Any], score: float) -> list[np.ndarray]:
        return [np.stack([np.append(labelled / 2, 1), stray]) for _ in images]

    monkeypatch.setattr(noisy, "class_agnostic_boxes", fake_boxes)
    done = FrameRecord(frames[1].path, frames[1].boxes, frames[1].classes, frames[1].ignore,
                       frames[1].size, complete=True)
    found = noisy.unlabelled_proposals(None, [frames[0], done], (320, 240))  # type: ignore[arg-type]
    assert list(found) == [str(frames[0].path)]  # the complete frame keeps its negatives
    assert found[str(frames[0].path)] == [[20.0, 20.0, 80.0, 80.0, 1.0]]  # only the stray one
    out = noisy.with_ignore_boxes([frames[0], done], found)
    assert len(out[0].boxes) == len(frames[0].boxes) + 1 and out[0].ignore[-1]
    assert out[1] is done


@pytest.fixture(scope="module")
def init_model(dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("init")
    assert run_train(_args(dataset, out, "--epochs", "1")) == 0
    return out / "model.onnx"


REMEDIES = ("--unlabelled", "proposals", "--proposal-score", "0.1", "--noisy-labels", "drop",
            "--epoch-images", "8")


def test_a_resumed_run_with_both_remedies_matches_an_uninterrupted_one(
    dataset: Path, init_model: Path, tmp_path: Path
) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    init = ("--init", str(init_model))
    assert run_train(_args(dataset, straight, "--epochs", "2", *init, *REMEDIES)) == 0
    assert run_train(_args(dataset, resumed, "--epochs", "1", *init, *REMEDIES)) == 0
    report = json.loads((resumed / "label_trust.json").read_text())
    assert report["followed"] == 8 * 3 - 2  # every dish box but the 2 ignored ones
    assert json.loads((resumed / "history.jsonl").read_text())["labels_followed"] == 22
    assert run_train(_args(dataset, resumed, "--epochs", "2", *init, *REMEDIES)) == 0
    a, b = load_checkpoint(straight / "last.ckpt"), load_checkpoint(resumed / "last.ckpt")
    assert b["epoch"] == 2 and b["trust"]["prob"].shape == (22, 2)
    assert not np.isnan(b["trust"]["prob"].numpy()).any()  # every label seen at least once
    np.testing.assert_allclose(a["trust"]["prob"].numpy(), b["trust"]["prob"].numpy(),
                               atol=1e-4)
    assert (straight / "proposals.json").read_bytes() == (resumed / "proposals.json").read_bytes()
    with pytest.raises(ModelError, match="noisy_labels"):  # another setting cannot resume
        run_train(_args(dataset, resumed, "--epochs", "3", *init, *REMEDIES[:4],
                        "--noisy-labels", "trust", "--epoch-images", "8"))
    (resumed / "proposals.json").unlink()
    with pytest.raises(ModelError, match=r"proposals\.json is missing"):
        run_train(_args(dataset, resumed, "--epochs", "3", *init, *REMEDIES))


def test_remedy_settings_are_checked(dataset: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputFormatError, match="needs --init"):
        run_train(_args(dataset, tmp_path / "a", "--epochs", "1", "--unlabelled", "proposals"))
    for flag in ("--trust-floor", "--proposal-score"):
        with pytest.raises(SystemExit):
            _args(dataset, tmp_path / "b", flag, "1.5")
        assert f"{flag} '1.5': must lie in (0, 1)" in capsys.readouterr().err


class _Stub:
    """A factorized model whose outputs are given: a tray peak and a dish peak."""

    def __init__(self, tray: float, dish: float) -> None:
        heat = torch.full((1, 2, 30, 40), -9.0)
        heat[0, 0, 10, 10] = float(np.log(tray / (1 - tray)))
        heat[0, 1, 20, 30] = float(np.log(dish / (1 - dish)))
        self.outputs = (heat, torch.full((1, 2, 30, 40), 1.5), torch.zeros(1, 2, 30, 40),
                        torch.randn(1, 6, 30, 40))

    def eval(self) -> None:
        pass

    def __call__(self, batch: Any) -> tuple[Any, ...]:
        return self.outputs

    def decode(self, outputs: tuple[Any, ...]) -> Any:
        from calibration.model import decode_factorized

        return decode_factorized(*outputs, grid=(40, 30))


def test_proposals_score_trays_and_dishes_by_objectness_alone() -> None:
    image = np.zeros((240, 320, 3), np.uint8)
    boxes = noisy.class_agnostic_boxes(_Stub(tray=0.15, dish=0.3), [image], 0.2)[0]  # type: ignore[arg-type]
    assert boxes[:, 4].tolist() == [1.0]  # the dish at 0.3; the tray at 0.15 is below 0.2
    boxes = noisy.class_agnostic_boxes(_Stub(tray=0.25, dish=0.1), [image], 0.2)[0]  # type: ignore[arg-type]
    assert boxes[:, 4].tolist() == [0.0]  # a weak dish is not scaled up by the class count


def test_dropping_labels_needs_the_factorized_head(dataset: Path, tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    args = parser.parse_args(["--data", str(dataset), "--out", str(tmp_path / "c"),
                              "--epochs", "1", "--noisy-labels", "drop"])
    with pytest.raises(InputFormatError, match="factorized"):
        run_train(args)


def test_a_finished_job_lists_the_doubted_labels_by_workspace_frame(tmp_path: Path) -> None:
    from edge.label.training import _doubted

    (tmp_path / "run").mkdir()
    (tmp_path / "data" / "train").mkdir(parents=True)
    assert _doubted(tmp_path) == []  # trained with --noisy-labels trust: no report
    (tmp_path / "data" / "train" / "annotations.json").write_text(json.dumps(
        {"images": [{"id": 41, "file_name": "images/f41.jpg"}]}))
    (tmp_path / "run" / "label_trust.json").write_text(json.dumps({"doubted": [
        {"path": str(tmp_path / "data" / "train" / "images" / "f41.jpg"), "box": [1, 2, 3, 4],
         "label": 3, "label_name": "donut", "p_label": 0.02, "model_says": "sushi",
         "p_model": 0.9}]}))
    assert _doubted(tmp_path) == [{"frame": 41, "box": [1, 2, 3, 4], "label": "donut",
                                   "model_says": "sushi", "p_label": 0.02}]
