"""Crop-level warm-up: teach the backbone the site's dishes before detection training.

A detector's per-class heatmaps learn classes slowly (measured here: after
900 detection steps on 7 200 synthetic frames the 32 item classes of a
CenterNet head were still near their prior, mAP@0.5 0.1), while classifying
crops is cheap: a 64x64 crop costs ~5 % of a 320x240 frame. This stage cuts
a window around every visible object at the detector's input scale (frames
resized to the network input, no other resizing, so the features match what
the detector sees), trains the truncated backbone plus a linear classifier on
them, and writes a checkpoint whose backbone ``dishtracker calibrate train
--init`` loads by name (neck and head start fresh).

    dishtracker calibrate pretrain --data DATASET --out warmup.ckpt [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import structlog
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from calibration.checkpoint import save_checkpoint
from calibration.data import normalize_image, read_frame, read_split, refuse_held_out
from calibration.model import Backbone, build_model
from edge.errors import InputFormatError

WINDOW = 80  # cut at the network's scale; training crops a random 64x64 out of it
CROP = 64


class CropClassifier(nn.Module):
    """Truncated backbone + global pooling of the stride-8 and -16 features + linear."""

    def __init__(self, num_classes: int, pretrained: bool = True) -> None:
        super().__init__()
        self.backbone = Backbone(pretrained=pretrained)
        self.fc = nn.Linear(40 + 80, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, C)`` for normalised crops ``(N, 3, 64, 64)``."""
        c8, c16 = self.backbone(x)
        pooled = torch.cat([c8.mean((2, 3)), c16.mean((2, 3))], dim=1)
        logits: torch.Tensor = self.fc(pooled)
        return logits


def cut_windows(split_dir: Path, input_size: tuple[int, int], max_images: int | None = None,
                ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64], list[str]]:
    """Every visible object's window at the network scale.

    Returns
    -------
    windows : np.ndarray
        ``(n, WINDOW, WINDOW, 3)`` uint8 BGR, object centred, grey padding.
    labels : np.ndarray
        ``(n,)`` int64 class ids.
    class_names : list of str
    """
    split = read_split(split_dir)
    frames = split.frames[:max_images] if max_images else split.frames
    windows: list[npt.NDArray[np.uint8]] = []
    labels: list[int] = []
    half = WINDOW // 2
    for rec in tqdm(frames, desc=f"windows {split_dir.name}", unit="frame", leave=False):
        keep = ~rec.ignore
        if not keep.any():
            continue
        sx, sy = input_size[0] / rec.size[0], input_size[1] / rec.size[1]
        small = cv2.resize(read_frame(rec.path), input_size, interpolation=cv2.INTER_AREA)
        padded = cv2.copyMakeBorder(small, half, half, half, half, cv2.BORDER_CONSTANT,
                                    value=(114, 114, 114))
        for box, cls in zip(rec.boxes[keep], rec.classes[keep], strict=True):
            cx = round((box[0] + box[2]) / 2 * sx)
            cy = round((box[1] + box[3]) / 2 * sy)
            windows.append(padded[cy : cy + WINDOW, cx : cx + WINDOW].copy())
            labels.append(int(cls))
    if not windows:
        msg = f"{split_dir}: no visible objects to learn from"
        raise InputFormatError(msg)
    return np.stack(windows), np.asarray(labels, np.int64), split.class_names


def _batch(windows: npt.NDArray[np.uint8], rng: np.random.Generator | None) -> torch.Tensor:
    """Crop (random or centre), flip and jitter a batch; ``(N, 3, 64, 64)`` float32."""
    out = np.empty((len(windows), 3, CROP, CROP), np.float32)
    for i, w in enumerate(windows):
        if rng is None:
            o = (WINDOW - CROP) // 2
            crop = w[o : o + CROP, o : o + CROP]
        else:
            ox, oy = (int(v) for v in rng.integers(0, WINDOW - CROP + 1, 2))
            crop = w[oy : oy + CROP, ox : ox + CROP]
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            if rng.random() < 0.5:
                crop = crop[::-1]
            gain, bias = rng.uniform(0.75, 1.25), rng.uniform(-20, 20)
            crop = np.clip(crop.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
            if rng.random() < 0.3:  # motion blur along the counter
                k = int(rng.integers(2, 6)) | 1
                crop = cv2.blur(crop, (k, 1))
        out[i] = normalize_image(np.ascontiguousarray(crop))
    return torch.from_numpy(out)


def _accuracy(model: CropClassifier, windows: npt.NDArray[np.uint8],
              labels: npt.NDArray[np.int64]) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(windows), 256):
            pred = model(_batch(windows[i : i + 256], None)).argmax(1).numpy()
            correct += int((pred == labels[i : i + 256]).sum())
    model.train()
    return correct / len(labels)


def epoch_steps_small(n_crops: int, batch_size: int) -> bool:
    """True when an epoch is a handful of steps (validating each would dominate)."""
    return n_crops < 20 * batch_size


def run_pretrain(args: argparse.Namespace) -> int:
    """Entry of ``dishtracker calibrate pretrain``."""
    log = structlog.get_logger("calibration.pretrain")
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    size = (args.input_width, args.input_height)
    train_split = read_split(args.data / "train")
    refuse_held_out(train_split, "training")
    windows, labels, names = cut_windows(args.data / "train", size, args.max_images)
    val = None
    if (args.data / "val" / "annotations.json").exists():
        refuse_held_out(read_split(args.data / "val"), "validation")
        vw, vl, _ = cut_windows(args.data / "val", size)
        pick = rng.permutation(len(vl))[:2000]
        val = (vw[pick], vl[pick])
    model = CropClassifier(len(names), pretrained=not args.from_scratch)
    detector = build_model(len(names), size)  # only to name the weights as the detector does
    frozen = [model.backbone._conv_stem, model.backbone._bn0,
              *list(model.backbone._blocks)[: args.freeze_blocks]]
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    steps = args.epochs * math.ceil(len(labels) / args.batch_size)
    if args.max_steps:
        steps = min(steps, args.max_steps)
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    log.info("pretrain_start", crops=len(labels), classes=len(names), steps=steps)
    t0 = time.monotonic()
    step = 0
    acc = float("nan")
    for epoch in range(args.epochs):
        model.train()
        for module in frozen:
            module.eval()
        order = rng.permutation(len(labels))
        bar = tqdm(range(0, len(order), args.batch_size), desc=f"pretrain {epoch + 1}/"
                   f"{args.epochs}", unit="batch")
        for i in bar:
            idx = order[i : i + args.batch_size]
            loss = F.cross_entropy(model(_batch(windows[idx], rng)),
                                   torch.from_numpy(labels[idx]), label_smoothing=0.05)
            opt.zero_grad()
            torch.autograd.backward(loss)  # typed, unlike Tensor.backward (as in trainer.py)
            opt.step()
            if step < steps - 1:
                sched.step()
            step += 1
            if step >= steps:
                break
            bar.set_postfix(loss=f"{loss.item():.3f}")
        last = step >= steps or epoch == args.epochs - 1
        if not last and epoch_steps_small(len(labels), args.batch_size):
            continue  # tiny label budgets: validate at the end only, not every few steps
        acc = _accuracy(model, *val) if val else float("nan")
        log.info("pretrain_epoch", epoch=epoch + 1, val_accuracy=round(acc, 4),
                 seconds=round(time.monotonic() - t0))
        if step >= steps:
            break
    state = detector.state_dict()
    for key, value in model.backbone.state_dict().items():
        state[f"backbone.{key}"] = value
    if args.json:
        args.json.write_text(json.dumps({"val_accuracy": acc, "crops": len(labels),
                                         "steps": step, "seconds": time.monotonic() - t0}))
    save_checkpoint(args.out, {"model": {k: v for k, v in state.items() if k.startswith(
        "backbone.")}, "class_names": names, "kind": "crop-pretrain"})
    print(f"wrote {args.out} (val crop accuracy {acc:.3f})")
    return 0


def add_pretrain_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``dishtracker calibrate pretrain``."""
    p.add_argument("--data", type=Path, required=True, help="dataset root with train/ (val/)")
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (*.ckpt)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--freeze-blocks", type=int, default=3)
    p.add_argument("--max-images", type=int, default=None)
    p.add_argument("--input-width", type=int, default=320)
    p.add_argument("--input-height", type=int, default=240)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--from-scratch", action="store_true",
                   help="random-init backbone (transfer-learning baseline)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--json", type=Path, default=None, help="write the final val accuracy here")


