"""Detector evaluation: COCO-style AP, look-alike confusion, dataset readers, CLI."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge import cli
from edge.errors import InputFormatError
from edge.eval import cli_detector
from edge.eval.datasets import CocoSplit, SimSequence, open_dataset
from edge.eval.detection import RECALL_POINTS, DetectionEvaluator, box_iou, match_image
from edge.frames import Detections
from edge.sim.menu import BY_KEY, CLASS_NAMES

COFFEE = BY_KEY["coffee"].id
CAPPUCCINO = BY_KEY["cappuccino"].id
SOUP = BY_KEY["tomato_soup"].id


def dets(boxes: Any = (), scores: Any = (), classes: Any = ()) -> Detections:
    return Detections(
        np.asarray(boxes, np.float32).reshape(-1, 4),
        np.asarray(scores, np.float32).reshape(-1),
        np.asarray(classes, np.int32).reshape(-1),
    )


def box(x: float, y: float, s: float = 20.0) -> list[float]:
    return [x, y, x + s, y + s]


def no_ignore(n: int) -> npt.NDArray[np.bool_]:
    return np.zeros(n, bool)


# ---------------------------------------------------------------- metrics


def test_perfect_detections_score_ap_one() -> None:
    rng = np.random.default_rng(0)
    ev = DetectionEvaluator(CLASS_NAMES)
    for _ in range(20):
        n = int(rng.integers(0, 8))
        xy = rng.uniform(0, 600, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(10, 80, (n, 2))], axis=1)
        cls = rng.integers(0, len(CLASS_NAMES), n)
        ev.add(gt, cls, no_ignore(n), dets(gt, rng.uniform(0.1, 1, n), cls))
    s = ev.summary()
    assert s["map50"] == pytest.approx(1.0)
    assert s["map50_95"] == pytest.approx(1.0)
    assert s["n_images"] == 20


def test_two_tps_and_one_fp_in_score_order_give_hand_computed_ap() -> None:
    # Score order TP, FP, TP over 3 objects: recall 1/3, 1/3, 2/3; precision
    # 1, 1/2, 2/3; envelope 1, 2/3, 2/3. Recall points 0..0.33 (34 of them)
    # get 1, 0.34..0.66 (33) get 2/3, the rest 0: AP = (34 + 22) / 101.
    gt = [box(0, 0), box(100, 0), box(200, 0)]
    d = dets([box(0, 0), box(300, 300), box(100, 0)], [0.9, 0.8, 0.7], [SOUP] * 3)
    ev = DetectionEvaluator(CLASS_NAMES)
    ev.add(gt, [SOUP] * 3, no_ignore(3), d)
    s = ev.summary()
    assert s["per_class"]["tomato_soup"]["ap50"] == pytest.approx(56 / 101)
    assert s["per_class"]["tomato_soup"]["ap50_95"] == pytest.approx(56 / 101)
    assert s["map50"] == pytest.approx(56 / 101)
    assert s["per_class"]["tomato_soup"]["n_gt"] == 3
    assert s["per_class"]["tomato_soup"]["n_det"] == 3


def test_detection_on_ignored_ground_truth_is_neither_tp_nor_fp() -> None:
    gt = [box(0, 0), box(100, 0)]
    ignore = [False, True]
    d = dets([box(100, 0), box(0, 0)], [0.95, 0.9], [SOUP, SOUP])
    ev = DetectionEvaluator(CLASS_NAMES)
    ev.add(gt, [SOUP, SOUP], ignore, d)
    s = ev.summary()
    assert s["per_class"]["tomato_soup"]["ap50"] == pytest.approx(1.0)
    assert s["per_class"]["tomato_soup"]["n_gt"] == 1


def test_ignored_ground_truth_without_detection_is_not_missed() -> None:
    ev = DetectionEvaluator(CLASS_NAMES)
    ev.add([box(0, 0), box(100, 0)], [SOUP, SOUP], [False, True],
           dets([box(0, 0)], [0.9], [SOUP]))
    assert ev.summary()["map50"] == pytest.approx(1.0)


def test_duplicate_detection_is_a_false_positive() -> None:
    gt = [box(0, 0), box(100, 0)]
    d = dets([box(0, 0), box(1, 0), box(100, 0)], [0.9, 0.8, 0.7], [SOUP] * 3)
    iou = box_iou(d.boxes, gt)
    status = match_image(iou, no_ignore(2), np.array([0.5]))
    assert status.tolist() == [[1, 0, 1]]
    ev = DetectionEvaluator(CLASS_NAMES)
    ev.add(gt, [SOUP, SOUP], no_ignore(2), d)
    # recall 1/2, 1/2, 1 at precision 1, 1/2, 2/3: 51 points at 1, 50 at 2/3
    assert ev.summary()["map50"] == pytest.approx((51 + 100 / 3) / 101)


def test_detection_of_the_wrong_class_is_a_false_positive_and_a_miss() -> None:
    ev = DetectionEvaluator(CLASS_NAMES)
    ev.add([box(0, 0)], [COFFEE], no_ignore(1), dets([box(0, 0)], [0.9], [CAPPUCCINO]))
    s = ev.summary()
    assert s["per_class"]["coffee"]["ap50"] == 0.0
    assert s["per_class"]["cappuccino"]["ap50"] is None  # no GT: not averaged
    assert s["map50"] == 0.0


def test_class_confusion_shows_in_the_lookalike_matrix() -> None:
    gt = [box(0, 0), box(100, 0), box(200, 0)]
    gt_cls = [COFFEE, COFFEE, CAPPUCCINO]
    d = dets(
        [box(0, 0), box(0, 0), box(100, 0), box(200, 0)],
        # object 0: predicted cappuccino above a weaker correct box
        [0.9, 0.3, 0.8, 0.7],
        [CAPPUCCINO, COFFEE, COFFEE, CAPPUCCINO],
    )
    ev = DetectionEvaluator(CLASS_NAMES)
    ev.add(gt, gt_cls, no_ignore(3), d)
    pairs = ev.summary()["lookalike"]
    pair = next(p for p in pairs if p["classes"] == ["coffee", "cappuccino"])
    assert pair["matrix"] == [[1, 1], [0, 1]]
    assert pair["confusion_rate"] == pytest.approx(1 / 3)
    assert set(pair["ap50"]) == {"coffee", "cappuccino"}
    others = [p for p in pairs if p is not pair]
    assert all(p["confusion_rate"] is None for p in others)


def test_empty_images_and_empty_evaluator() -> None:
    ev = DetectionEvaluator(CLASS_NAMES)
    s = ev.summary()
    assert s["map50"] is None and s["map50_dishes"] is None and s["n_images"] == 0
    ev.add(np.zeros((0, 4)), [], [], dets())
    ev.add(np.zeros((0, 4)), [], [], dets([box(0, 0)], [0.5], [SOUP]))
    ev.add([box(0, 0)], [COFFEE], no_ignore(1), dets())
    s = ev.summary()
    assert s["n_images"] == 3
    assert s["per_class"]["tomato_soup"] == {"ap50": None, "ap50_95": None, "n_gt": 0, "n_det": 1}
    assert s["per_class"]["coffee"]["ap50"] == 0.0
    assert s["map50"] == 0.0


def test_max_dets_keeps_the_best_scoring_per_class() -> None:
    ev = DetectionEvaluator(CLASS_NAMES, max_dets=1)
    ev.add([box(0, 0)], [SOUP], no_ignore(1),
           dets([box(300, 0), box(0, 0)], [0.2, 0.9], [SOUP, SOUP]))
    assert ev.summary()["per_class"]["tomato_soup"]["n_det"] == 1


def test_mismatched_lengths_raise_value_error() -> None:
    ev = DetectionEvaluator(CLASS_NAMES)
    with pytest.raises(ValueError, match="ground truth lengths"):
        ev.add([box(0, 0)], [SOUP, SOUP], no_ignore(1), dets())
    with pytest.raises(ValueError, match="outside"):
        ev.add([box(0, 0)], [len(CLASS_NAMES)], no_ignore(1), dets())


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _reference_matches(
    im: dict[str, Any], c: int, thr: float
) -> tuple[list[tuple[float, int]], int]:
    """pycocotools' evaluateImg loop for one image and class: ([(score, TP 1 / FP 0)], n_gt)."""
    gts = [(g, ig) for g, k, ig in zip(im["gt"], im["gc"], im["gi"], strict=True) if k == c]
    gts.sort(key=lambda t: t[1])  # non-ignored first
    ds = sorted(((s, b) for b, s, k in zip(im["db"], im["ds"], im["dc"], strict=True) if k == c),
                key=lambda t: -t[0])
    used = [False] * len(gts)
    records = []
    for s, b in ds:
        best, best_iou = -1, thr
        for j, (g, ig) in enumerate(gts):
            if used[j]:
                continue
            if best > -1 and not gts[best][1] and ig:
                break
            v = _iou(b, g)
            if v < best_iou:
                continue
            best, best_iou = j, v
        if best == -1:
            records.append((s, 0))
        else:
            used[best] = True
            if not gts[best][1]:
                records.append((s, 1))
    return records, sum(1 for _, ig in gts if not ig)


def _reference_map(images: list[dict[str, Any]], n_cls: int, thr: float) -> float:
    """Slow COCO AP at one IoU threshold from the definition, averaged over classes."""
    aps = []
    for c in range(n_cls):
        records: list[tuple[float, int]] = []
        n_gt = 0
        for im in images:
            r, n = _reference_matches(im, c, thr)
            records += r
            n_gt += n
        if n_gt == 0:
            continue
        records.sort(key=lambda t: -t[0])
        tp = fp = 0
        curve = []
        for _, ok in records:
            tp += ok
            fp += 1 - ok
            curve.append((tp / n_gt, tp / (tp + fp)))
        # interpolated precision: the best precision at any recall >= r
        ap = sum(max((p for rc, p in curve if rc >= r), default=0.0) for r in RECALL_POINTS)
        aps.append(ap / len(RECALL_POINTS))
    return float(np.mean(aps))


def test_map_matches_a_slow_reference_on_random_detections() -> None:
    rng = np.random.default_rng(7)
    n_cls = 4
    images = []
    ev = DetectionEvaluator([f"c{i}" for i in range(n_cls)], dish_ids=[1, 2],
                            lookalike_pairs=[(1, 2)])
    for _ in range(40):
        n = int(rng.integers(0, 10))
        xy = rng.uniform(0, 300, (n, 2))
        gt = np.concatenate([xy, xy + rng.uniform(15, 60, (n, 2))], axis=1)
        gc = rng.integers(0, n_cls, n)
        gi = rng.random(n) < 0.15
        # jittered copies (some relabelled, some duplicated) plus random clutter
        src = rng.integers(0, max(n, 1), int(rng.integers(0, 14))) if n else np.zeros(0, int)
        db = gt[src] + rng.normal(0, 4, (len(src), 4)) if n else np.zeros((0, 4))
        dc = np.where(rng.random(len(src)) < 0.2, rng.integers(0, n_cls, len(src)), gc[src])
        m = int(rng.integers(0, 4))
        cxy = rng.uniform(0, 300, (m, 2))
        db = np.concatenate([db, np.concatenate([cxy, cxy + 30], axis=1)])
        dc = np.concatenate([dc, rng.integers(0, n_cls, m)])
        ds = rng.random(len(db))
        ev.add(gt, gc, gi, dets(db, ds, dc))
        images.append({"gt": gt.tolist(), "gc": gc.tolist(), "gi": gi.tolist(),
                       "db": db.astype(np.float32).tolist(),
                       "ds": ds.astype(np.float32).tolist(), "dc": dc.tolist()})
    s = ev.summary()
    assert 0.2 < s["map50"] < 0.99
    assert s["map50"] == pytest.approx(_reference_map(images, n_cls, 0.5), abs=1e-9)
    ref_5095 = np.mean([_reference_map(images, n_cls, t) for t in np.linspace(0.5, 0.95, 10)])
    assert s["map50_95"] == pytest.approx(ref_5095, abs=1e-9)


# ---------------------------------------------------------------- datasets


def test_coco_split_round_trip_through_the_evaluator(tmp_path: Path) -> None:
    split = tmp_path / "test"
    (split / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    doc: dict[str, Any] = {"images": [], "annotations": [],
                           "categories": [{"id": i, "name": n} for i, n in enumerate(CLASS_NAMES)]}
    for i in range(3):
        cv2.imwrite(str(split / "images" / f"{i:04d}.jpg"),
                    rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        doc["images"].append({"id": i, "file_name": f"{i:04d}.jpg", "width": 64, "height": 48})
        doc["annotations"] += [
            {"id": 2 * i, "image_id": i, "category_id": SOUP, "bbox": [4, 5, 20, 10],
             "ignore": 0, "visibility": 1.0},
            {"id": 2 * i + 1, "image_id": i, "category_id": COFFEE, "bbox": [30, 20, 10, 10],
             "ignore": int(i == 0), "visibility": 0.3 if i == 1 else 0.9},
        ]
    (split / "annotations.json").write_text(json.dumps(doc))

    ds = open_dataset(tmp_path, split="test", num_classes=len(CLASS_NAMES))
    assert isinstance(ds, CocoSplit) and len(ds) == 3
    samples = list(ds)
    assert samples[0].image.shape == (48, 64, 3) and samples[0].image.dtype == np.uint8
    np.testing.assert_allclose(samples[0].gt.boxes[0], [4, 5, 24, 15])
    assert [s.gt.ignore.tolist() for s in samples] == [[False, True], [False, True],
                                                         [False, False]]
    ev = DetectionEvaluator(CLASS_NAMES)
    for s in samples:
        ev.add(s.gt.boxes, s.gt.classes, s.gt.ignore,
               dets(s.gt.boxes, np.full(len(s.gt.boxes), 0.9), s.gt.classes))
    summary = ev.summary()
    assert summary["map50"] == pytest.approx(1.0)
    assert summary["per_class"]["coffee"]["n_gt"] == 1


def test_coco_split_reports_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(InputFormatError, match="not a dataset"):
        open_dataset(tmp_path)
    (tmp_path / "annotations.json").write_text("{not json")
    with pytest.raises(InputFormatError, match=r"annotations\.json"):
        open_dataset(tmp_path)
    (tmp_path / "annotations.json").write_text(json.dumps(
        {"images": [{"id": 0, "file_name": "a.jpg"}],
         "annotations": [{"image_id": 0, "category_id": 99, "bbox": [0, 0, 1, 1]}]}))
    with pytest.raises(InputFormatError, match="class id 99"):
        open_dataset(tmp_path, num_classes=len(CLASS_NAMES))
    (tmp_path / "annotations.json").write_text(json.dumps(
        {"images": [{"id": 0, "file_name": "a.jpg"}], "annotations": []}))
    with pytest.raises(InputFormatError, match=r"a\.jpg"):
        list(open_dataset(tmp_path))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(InputFormatError, match="not a readable image"):
        list(open_dataset(tmp_path))


def _sim_dir(
    tmp_path: Path, n_frames: int = 6, *, faststart: bool = False
) -> tuple[Path, list[list[float]]]:
    """A tiny simulator-like run: a bright square (a coffee) sliding over a dark floor."""
    run = tmp_path / "run"
    (run / "gt").mkdir(parents=True)
    w, h = 160, 120
    boxes = [[10.0 + 12 * i, 30.0, 50.0 + 12 * i, 70.0] for i in range(n_frames)]
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(run / "video.mp4"), "w", options=options) as out:
        stream = out.add_stream("libx264", rate=10, options={"crf": "12"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for x1, y1, x2, y2 in boxes:
            img = np.full((h, w, 3), 40, np.uint8)
            img[int(y1):int(y2), int(x1):int(x2)] = 220
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    rows = [f"{i + 1},1,{b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]},1,{COFFEE},1.0"
            for i, b in enumerate(boxes)]
    rows.append(f"2,2,100,90,10,10,1,{SOUP},0.2")  # mostly hidden: ignored
    (run / "gt" / "gt.txt").write_text("\n".join(rows) + "\n")
    return run, boxes


def test_sim_dir_yields_strided_frames_with_ground_truth(tmp_path: Path) -> None:
    run, boxes = _sim_dir(tmp_path)
    seq = open_dataset(run, stride=2, num_classes=len(CLASS_NAMES))
    assert isinstance(seq, SimSequence) and len(seq) == 3
    samples = list(seq)
    assert [s.key for s in samples] == ["frame 1", "frame 3", "frame 5"]
    assert samples[0].image.shape == (120, 160, 3) and samples[0].image.dtype == np.uint8
    np.testing.assert_allclose(samples[1].gt.boxes, [boxes[2]])
    assert samples[1].image[50, int(boxes[2][0]) + 5].mean() > 180  # the square is there
    assert [len(s.gt.boxes) for s in list(open_dataset(run))[:2]] == [1, 2]
    assert list(open_dataset(run))[1].gt.ignore.tolist() == [False, True]


@pytest.mark.parametrize("faststart", [False, True], ids=["moov-last", "moov-first"])
def test_truncated_video_raises_input_format_error_naming_it(
    tmp_path: Path, faststart: bool
) -> None:
    # moov last: the header is cut off and opening fails; moov first: the
    # header survives and decoding ends early.
    run, _ = _sim_dir(tmp_path, n_frames=12, faststart=faststart)
    video = run / "video.mp4"
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(InputFormatError, match=r"video\.mp4"):
        list(open_dataset(run))


def test_ground_truth_beyond_the_video_raises(tmp_path: Path) -> None:
    run, _ = _sim_dir(tmp_path)
    with (run / "gt" / "gt.txt").open("a") as fh:
        fh.write(f"9,1,10,10,20,20,1,{COFFEE},1.0\n")
    with pytest.raises(InputFormatError, match="frame 9"):
        open_dataset(run)


# ---------------------------------------------------------------- CLI


@dataclass
class _BrightBoxDetector:
    """Test double for a trained model: boxes the bright pixels as one coffee."""

    info: Any = field(default_factory=lambda: argparse.Namespace(class_names=CLASS_NAMES))
    closed: bool = False

    def detect(self, images: list[npt.NDArray[np.uint8]]) -> list[Detections]:
        out = []
        for img in images:
            ys, xs = np.nonzero(img.mean(axis=2) > 128)
            if xs.size == 0:
                out.append(dets())
                continue
            out.append(dets([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [0.9], [COFFEE]))
        return out

    def close(self) -> None:
        self.closed = True


def test_cli_reports_map_table_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run, _ = _sim_dir(tmp_path)
    detector = _BrightBoxDetector()
    monkeypatch.setattr(cli_detector, "_load_detector", lambda args: detector)
    out = tmp_path / "report.json"
    argv = ["eval", "detector", "--model", "m.onnx", "--data", str(run), "--json", str(out)]
    args = cli.build_parser(argv).parse_args(argv)
    assert args.score_threshold == 0.01 and args.stride == 1 and args.split == "test"
    assert cli.main(argv) == 0
    assert detector.closed
    report = json.loads(out.read_text())
    assert {"map50", "map50_95", "per_class", "map50_dishes", "lookalike", "n_images",
            "model", "data"} <= set(report)
    assert report["n_images"] == 6
    assert report["map50"] == pytest.approx(1.0)
    assert report["per_class"]["coffee"]["n_gt"] == 6
    text = capsys.readouterr().out
    assert "mAP@0.5" in text and "coffee / cappuccino" in text


def test_cli_exits_2_on_bad_data_and_closes_the_detector(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    detector = _BrightBoxDetector()
    monkeypatch.setattr(cli_detector, "_load_detector", lambda args: detector)
    assert cli.main(["eval", "detector", "--model", "m.onnx", "--data", str(tmp_path)]) == 2
    assert "not a dataset" in capsys.readouterr().err
    assert detector.closed


def test_a_model_is_scored_on_a_split_that_adds_classes_after_its_own(tmp_path: Path) -> None:
    split = tmp_path / "val"
    split.mkdir()
    doc = {"images": [], "annotations": [],
           "categories": [{"id": i, "name": n} for i, n in enumerate(["tray", "soup", "ramen"])]}
    (split / "annotations.json").write_text(json.dumps(doc))
    assert cli_detector.class_table(("tray", "soup"), tmp_path, "val") == ("tray", "soup", "ramen")
    assert cli_detector.class_table(("tray", "soup"), split, "test") == ("tray", "soup", "ramen")
    assert cli_detector.class_table(("tray", "cake"), split, "val") == ("tray", "cake")  # not ours
    assert cli_detector.class_table(("tray", "soup", "ramen", "x"), split, "val") == (
        "tray", "soup", "ramen", "x")
    (split / "annotations.json").write_text("{")
    assert cli_detector.class_table(("tray",), split, "val") == ("tray",)
