"""``dishtracker calibrate train``: fine-tune the dish detector on a site's data.

Sits at the boundary between the command line (``edge/cli.py`` registers
:func:`add_train_arguments` and calls :func:`run_train`) and the training
loop in :mod:`calibration.trainer`. This module imports no torch at import
time, so the command line works without the ``train`` extra and names it when
a training command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from calibration.extras import require_train_extra

PROPOSAL_SCORE = 0.2  # objectness from which an unlabelled proposal becomes an ignore box
TRUST_FLOOR = 0.25  # a label given less than this while another class wins is doubted


def _input_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        msg = f"--input-size {text!r}: expected WIDTHxHEIGHT, e.g. 320x240"
        raise argparse.ArgumentTypeError(msg) from err
    if width <= 0 or height <= 0 or width % 16 or height % 16:
        msg = f"--input-size {text!r}: width and height must be positive multiples of 16"
        raise argparse.ArgumentTypeError(msg)
    return width, height


def _unit_open(flag: str) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: expected a number") from err
        if not 0.0 < value < 1.0:
            raise argparse.ArgumentTypeError(f"{flag} {text!r}: must lie in (0, 1)")
        return value
    return parse


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``dishtracker calibrate train``."""
    parser.add_argument(
        "--data", type=Path, required=True, help="dataset root with train/ and val/"
    )
    parser.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, ONNX)")
    parser.add_argument("--init", type=Path, default=None, help="start from an ONNX model or .ckpt")
    parser.add_argument(
        "--freeze-backbone",
        action="store_true",
        help="shallow fine-tuning: train only neck and head (backbone weights and BN stats fixed)",
    )
    parser.add_argument(
        "--freeze-blocks", type=int, default=0, metavar="K",
        help="deep fine-tuning with the stem and the first K backbone blocks frozen "
        "(cheaper steps; 0 = everything trains)",
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="random-init backbone instead of ImageNet weights (transfer-learning baseline)",
    )
    parser.add_argument("--epochs", type=int, default=30, help="total epochs (a resume continues)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the cycle")
    parser.add_argument("--lr-min", type=float, default=None, help="cycle floor (default lr/10)")
    parser.add_argument(
        "--backbone-lr-scale", type=float, default=0.1, help="backbone lr factor (deep fine-tuning)"
    )
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument(
        "--cycle-mode", choices=["triangular", "triangular2", "exp_range"], default="triangular2"
    )
    parser.add_argument(
        "--half-cycle-epochs", type=float, default=2.0, help="epochs from cycle floor to peak"
    )
    parser.add_argument(
        "--max-images", type=int, default=None, help="label budget: first N training images"
    )
    parser.add_argument(
        "--epoch-images", type=int, default=None, metavar="N",
        help="a training set smaller than N repeats to N images per epoch (few labelled frames)",
    )
    parser.add_argument(
        "--replay", type=Path, default=None, metavar="SPLIT",
        help="a COCO split of classes the model already knows (e.g. the vendor's training "
        "split or `calibrate dataset` renders), mixed into every epoch so fine-tuning on a "
        "few site frames does not forget them",
    )
    parser.add_argument(
        "--replay-share", type=float, default=0.5,
        help="share of each epoch's images taken from --replay (default 0.5)",
    )
    parser.add_argument(
        "--val-max-images", type=int, default=200, help="validation images per epoch"
    )
    parser.add_argument("--time-budget-s", type=float, default=None, help="stop after this long")
    parser.add_argument("--input-size", type=_input_size, default=(320, 240), help="WxH pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="ignore an existing last.ckpt in --out (default: resume from it)",
    )
    parser.add_argument(
        "--model-version", default=None, help="version string for the ONNX metadata"
    )
    parser.add_argument(
        "--head",
        choices=["centernet", "factorized"],
        default="centernet",
        help="centernet: one focal heatmap per class; factorized: tray/item heatmaps plus a "
        "softmax classifier at object centres (learns classes in far fewer steps)",
    )
    parser.add_argument(
        "--unlabelled", choices=["background", "proposals"], default="background",
        help="objects nobody boxed on a frame not marked complete: background (labels are "
        "complete), or proposals: the --init model's boxes that no label covers become "
        "ignore regions (calibration/noisy.py)",
    )
    parser.add_argument(
        "--proposal-score", type=_unit_open("--proposal-score"), default=PROPOSAL_SCORE,
        help=f"objectness from which an unlabelled proposal is ignored (default {PROPOSAL_SCORE})",
    )
    parser.add_argument(
        "--noisy-labels", choices=["trust", "drop"], default="trust",
        help="trust every class label, or drop (from the classification loss) the labels the "
        "model keeps contradicting after the first epoch; listed in OUT/label_trust.json "
        "(factorized head)",
    )
    parser.add_argument(
        "--trust-floor", type=_unit_open("--trust-floor"), default=TRUST_FLOOR,
        help="with --noisy-labels drop: a label the model gives less than this probability "
        f"while preferring another class is doubted (default {TRUST_FLOOR})",
    )


def run_train(args: argparse.Namespace) -> int:
    """Run ``dishtracker calibrate train``; returns the exit status.

    Raises
    ------
    MissingExtraError
        Without torch and the EfficientNet-Lite0 packages.
    """
    require_train_extra()
    from calibration.trainer import TrainConfig, train  # noqa: PLC0415 -- needs torch

    config = TrainConfig(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_min=args.lr_min,
        backbone_lr_scale=args.backbone_lr_scale,
        weight_decay=args.weight_decay,
        cycle_mode=args.cycle_mode,
        half_cycle_epochs=args.half_cycle_epochs,
        freeze_backbone=args.freeze_backbone,
        freeze_blocks=args.freeze_blocks,
        pretrained=not args.from_scratch,
        init=args.init,
        max_images=args.max_images,
        epoch_images=args.epoch_images,
        replay=args.replay,
        replay_share=args.replay_share,
        val_max_images=args.val_max_images,
        time_budget_s=args.time_budget_s,
        input_size=tuple(args.input_size),
        seed=args.seed,
        threads=args.threads,
        workers=args.workers,
        resume=args.resume,
        model_version=args.model_version,
        head=args.head,
        unlabelled=args.unlabelled,
        proposal_score=args.proposal_score,
        noisy_labels=args.noisy_labels,
        trust_floor=args.trust_floor,
    )
    train(config)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry: ``python -m calibration.train --data DIR --out DIR``."""
    parser = argparse.ArgumentParser(prog="python -m calibration.train", description=__doc__)
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
