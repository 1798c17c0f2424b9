"""``dishtracker eval detector``: run a detector over a dataset and report mAP.

Glue between :mod:`edge.eval.datasets` (images and ground truth),
:mod:`edge.detect` (the model) and :mod:`edge.eval.detection` (the metrics).
Prints a table for people and writes a JSON report for scripts. The detector
runs with a low score threshold (0.01 by default) because AP integrates over
the whole precision-recall curve; the deployed threshold is a separate choice.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt
from tqdm import tqdm

from edge.errors import DishTrackerError
from edge.eval.datasets import EvalDataset, Sample, open_dataset
from edge.eval.detection import DetectionEvaluator, DetectionsLike

if TYPE_CHECKING:
    from edge.detect import Detector


class DetectorLike(Protocol):
    """What the evaluation needs of :class:`edge.detect.Detector`."""

    def detect(self, images: Sequence[npt.NDArray[np.uint8]]) -> Sequence[DetectionsLike]: ...


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def add_eval_detector_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dishtracker eval detector`` to ``parser``."""
    parser.add_argument("--model", type=Path, required=True, help="detector model (ONNX)")
    parser.add_argument("--data", type=Path, required=True,
                        help="simulator run dir, COCO split dir or COCO root")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--split", default="test", help="split of a COCO root (default: test)")
    parser.add_argument("--stride", type=_positive_int, default=1,
                        help="evaluate every N-th video frame (simulator dirs)")
    parser.add_argument("--threads", type=_positive_int, default=1, help="inference threads")
    parser.add_argument("--batch", type=_positive_int, default=1, help="images per inference call")
    parser.add_argument("--score-threshold", type=_unit_float, default=0.01,
                        help="detector score threshold; keep low for mAP (default: 0.01)")
    parser.add_argument("--backend", default="onnxruntime", help="detector backend")


def evaluate(
    detector: DetectorLike,
    dataset: EvalDataset,
    evaluator: DetectionEvaluator,
    *,
    batch: int = 1,
    progress: bool | None = None,
) -> None:
    """Run ``detector`` over ``dataset`` and add every image to ``evaluator``.

    ``progress`` None shows a tqdm bar only on a terminal.
    """
    pending: list[Sample] = []

    def flush() -> None:
        results = detector.detect([s.image for s in pending])
        if len(results) != len(pending):
            raise DishTrackerError(
                f"detector returned {len(results)} results for {len(pending)} images"
            )
        for sample, det in zip(pending, results, strict=True):
            evaluator.add(sample.gt.boxes, sample.gt.classes, sample.gt.ignore, det)
        pending.clear()

    with tqdm(dataset, total=len(dataset), unit="img", disable=None if progress is None
              else not progress, desc="eval detector") as bar:
        for sample in bar:
            pending.append(sample)
            if len(pending) >= batch:
                flush()
    if pending:
        flush()


def class_table(model: tuple[str, ...], data: Path, split: str) -> tuple[str, ...]:
    """The classes to score: the model's, or a COCO split's that extends them.

    A site's labels name dishes the serving model has never seen, after its own
    classes (the labelling workspace's export, ``calibrate train --init``): the
    model is then scored on the split's classes and finds none of the new ones
    (AP 0 where they occur), instead of failing on their ids.
    """
    ann = next((p for p in (Path(data) / "annotations.json",
                            Path(data) / split / "annotations.json") if p.is_file()), None)
    if ann is None:
        return model
    try:
        categories = json.loads(ann.read_text()).get("categories") or []
        names = tuple(str(c["name"]) for c in sorted(categories, key=lambda c: int(c["id"])))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return model  # open_dataset says what is wrong with the file
    return names if len(names) > len(model) and names[: len(model)] == model else model


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "-" if value is None else pattern.format(value)


def format_report(report: dict[str, Any]) -> str:
    """Render a summary (as from :meth:`DetectionEvaluator.summary`) as a text table."""
    lines = [
        f"Detector {report.get('model', '?')} on {report.get('data', '?')}: "
        f"{report['n_images']} images",
        f"  mAP@0.5             {_fmt(report['map50'])}",
        f"  mAP@0.5:0.95        {_fmt(report['map50_95'])}",
        f"  dishes mAP@0.5      {_fmt(report['map50_dishes'])}   (acceptance metric)",
        f"  look-alike confusion {_fmt(report['lookalike_confusion_rate'], '{:.1%}')}",
        "",
        f"{'class':<20} {'AP50':>6} {'AP50:95':>8} {'n_gt':>7} {'n_det':>7}",
    ]
    rows = sorted(report["per_class"].items(),
                  key=lambda kv: (kv[1]["ap50"] is None, kv[1]["ap50"] or 0.0, kv[0]))
    lines += [
        f"{name:<20} {_fmt(r['ap50']):>6} {_fmt(r['ap50_95']):>8} {r['n_gt']:>7} {r['n_det']:>7}"
        for name, r in rows
    ]
    lines += ["", "Look-alike pairs a / b (rows true, columns predicted, IoU >= 0.5)",
              f"{'pair':<34} {'a>a':>5} {'a>b':>5} {'b>a':>5} {'b>b':>5} {'confused':>9} "
              f"{'AP50 a':>7} {'AP50 b':>7}"]
    for p in report["lookalike"]:
        a, b = p["classes"]
        (aa, ab), (ba, bb) = p["matrix"]
        lines.append(
            f"{a + ' / ' + b:<34} {aa:>5} {ab:>5} {ba:>5} {bb:>5} "
            f"{_fmt(p['confusion_rate'], '{:.1%}'):>9} {_fmt(p['ap50'][a]):>7} "
            f"{_fmt(p['ap50'][b]):>7}"
        )
    return "\n".join(lines)


def _load_detector(args: argparse.Namespace) -> Detector:
    from edge.detect import load_detector  # noqa: PLC0415  # onnxruntime loads only when used

    return load_detector(
        args.model, args.backend, threads=args.threads, score_threshold=args.score_threshold
    )


def run_eval_detector(args: argparse.Namespace) -> int:
    """Evaluate ``args.model`` on ``args.data``; print the table, write ``args.json``.

    Returns
    -------
    int
        0 on success.

    Raises
    ------
    DishTrackerError
        The model or the data cannot be read (``dishtracker`` exits with 2).
    """
    detector = _load_detector(args)
    try:
        class_names = class_table(tuple(detector.info.class_names), args.data, args.split)
        dataset = open_dataset(
            args.data, split=args.split, stride=args.stride, num_classes=len(class_names)
        )
        evaluator = DetectionEvaluator(class_names)
        start = time.perf_counter()
        evaluate(detector, dataset, evaluator, batch=args.batch)
        elapsed = time.perf_counter() - start
    finally:
        detector.close()

    report: dict[str, Any] = {
        "model": str(args.model),
        "data": str(dataset.path),
        "stride": args.stride,
        "score_threshold": args.score_threshold,
        "backend": args.backend,
        "elapsed_s": round(elapsed, 3),
        **evaluator.summary(),
    }
    report["images_per_s"] = round(report["n_images"] / elapsed, 2) if elapsed > 0 else None
    print(format_report(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(args.json)
        print(f"report written to {args.json}")
    return 0
