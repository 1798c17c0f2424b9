"""The training loop of the dish detector: AdamW with a cyclical learning rate.

Sits between the dataset (:mod:`calibration.data`) and the export
(:mod:`calibration.export`); :mod:`calibration.train` builds a
:class:`TrainConfig` from the command line and calls :func:`train`.

The learning rate follows Smith's cyclical schedule (``CyclicLR``,
triangular2 by default, stepped per batch). Shallow fine-tuning freezes the
backbone including its BatchNorm statistics; deep fine-tuning trains it at a
lower learning rate (``backbone_lr_scale``). Each epoch writes ``last.ckpt``
(everything needed to resume), ``best.ckpt`` (best validation mAP@0.5, or
loss without a validation split) and a line of ``history.jsonl``; a run
whose ``out`` already holds ``last.ckpt`` continues from it, if it asks for
the same head type (``centernet`` or ``factorized``).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import structlog
import torch
from numpy.typing import NDArray
from torch.utils.data import DataLoader
from tqdm import tqdm

from calibration.average_precision import mean_average_precision
from calibration.checkpoint import (
    init_from,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from calibration.data import (
    DetectionDataset,
    FrameRecord,
    Split,
    budget,
    read_split,
    refuse_held_out,
    remap_classes,
)
from calibration.export import export_onnx
from calibration.model import DishNet, HeadType, build_model
from calibration.noisy import (
    PROPOSAL_SCORE,
    TRUST_FLOOR,
    LabelTrust,
    load_or_find_proposals,
    number_objects,
    with_ignore_boxes,
)
from calibration.targets import detection_loss
from edge.errors import InputFormatError, ModelError
from edge.fsutil import write_atomic


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """One training run; see ``dishtracker calibrate train --help`` for each field."""

    data: Path
    out: Path
    epochs: int = 30
    batch_size: int = 16
    lr: float = 2e-3  # peak (max_lr) of the cycle
    lr_min: float | None = None  # base_lr of the cycle; lr / 10 when None
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    cycle_mode: Literal["triangular", "triangular2", "exp_range"] = "triangular2"
    half_cycle_epochs: float = 2.0  # Smith: step size of 2-10 epochs' iterations
    freeze_backbone: bool = False
    freeze_blocks: int = 0  # stem + first K blocks frozen (ignored with freeze_backbone)
    pretrained: bool = True
    init: Path | None = None
    max_images: int | None = None
    epoch_images: int | None = None  # a smaller training set repeats to this many per epoch
    replay: Path | None = None  # a split of classes the model knows, mixed in against forgetting
    replay_share: float = 0.5  # of each epoch's images, with ``replay``
    val_max_images: int | None = 200
    time_budget_s: float | None = None
    input_size: tuple[int, int] = (320, 240)
    seed: int = 0
    threads: int = 2
    workers: int = 0
    resume: bool = True
    model_version: str | None = None
    head: HeadType = "centernet"
    unlabelled: Literal["background", "proposals"] = "background"  # see calibration.noisy
    proposal_score: float = PROPOSAL_SCORE
    noisy_labels: Literal["trust", "drop"] = "trust"
    trust_floor: float = TRUST_FLOOR


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _param_groups(model: DishNet, config: TrainConfig) -> list[dict[str, Any]]:
    """Backbone / rest x decay / no-decay (biases and norms are not decayed)."""
    lr_min = config.lr_min if config.lr_min is not None else config.lr / 10
    groups = []
    for part, scale in (
        (model.backbone, config.backbone_lr_scale),
        (model.neck, 1.0),
        (model.head, 1.0),
    ):
        params = [p for p in part.parameters() if p.requires_grad]
        for decay in (True, False):
            chosen = [p for p in params if (p.ndim > 1) == decay]
            if chosen:
                groups.append(
                    {
                        "params": chosen,
                        "weight_decay": config.weight_decay if decay else 0.0,
                        "base": lr_min * scale,
                        "peak": config.lr * scale,
                    }
                )
    return groups


def _loader(
    dataset: DetectionDataset, config: TrainConfig, shuffle_seed: int | None
) -> DataLoader[Any]:
    generator = None
    if shuffle_seed is not None:
        generator = torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle_seed is not None,
        generator=generator,
        num_workers=config.workers,
        drop_last=shuffle_seed is not None and len(dataset) > config.batch_size,
    )


def evaluate(model: DishNet, dataset: DetectionDataset, config: TrainConfig) -> dict[str, float]:
    """Validation loss and mAP@0.5 with the exported model's decoding."""
    model.eval()
    detections: list[NDArray[Any]] = []
    total, batches = 0.0, 0
    with torch.no_grad():
        for batch in _loader(dataset, config, None):
            outputs = model(batch["image"])
            total += float(detection_loss(outputs, batch)["loss"])
            batches += 1
            detections.extend(model.decode(outputs).numpy())
    truth = [dataset.ground_truth(i) for i in range(len(dataset))]
    map50, _ = mean_average_precision(detections, truth, model.num_classes)
    return {"val_loss": total / max(batches, 1), "val_map50": map50}


class Trainer:
    """Holds the model, data, optimizer and schedule of one run; :meth:`run` trains it."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.log = structlog.get_logger("calibration.train").bind(out=str(config.out))
        seed_everything(config.seed)
        torch.set_num_threads(config.threads)
        train_split = read_split(config.data / "train")
        refuse_held_out(train_split, "training")
        self.class_names = train_split.class_names
        val_split = self._read_val()
        frames = budget(train_split.frames, config.max_images, config.seed)
        self.unique_images = len(frames)
        self.trust: LabelTrust | None = None
        self.followed: list[dict[str, Any]] = []
        if config.unlabelled == "proposals" and config.init is None:
            msg = "--unlabelled proposals needs --init: the model whose boxes are ignored"
            raise InputFormatError(msg)
        if config.noisy_labels == "drop":
            if config.head != "factorized":
                msg = "--noisy-labels drop needs --head factorized (its per-cell classifier)"
                raise InputFormatError(msg)
            frames, self.followed = number_objects(frames)
            self.trust = LabelTrust(np.array([o["label"] for o in self.followed], np.int64),
                                    len(self.class_names), floor=config.trust_floor)
        replay = self._replay(len(frames))
        self.replay_images = len(replay)
        wanted = max(config.epoch_images or 0, len(frames) + len(replay)) - len(replay)
        if frames and len(frames) < wanted:
            # a few labelled frames: repeat them (each copy gets its own augmentation) so an
            # epoch has enough steps for the schedule and validation is not run every step
            frames = (frames * math.ceil(wanted / len(frames)))[:wanted]
        self.own_frames = len(frames)  # the site's frames come first, the replay after them
        frames = frames + replay
        n = len(self.class_names)
        self.train_set = DetectionDataset(
            frames, n, config.input_size, train=True, seed=config.seed, head=config.head
        )
        self.val_set = None
        if val_split is not None:
            val_frames = budget(val_split.frames, config.val_max_images, config.seed)
            self.val_set = DetectionDataset(
                val_frames, n, config.input_size, train=False, head=config.head
            )
        if not frames:
            msg = f"{config.data / 'train'}: no training images"
            raise InputFormatError(msg)
        self.model = build_model(
            n, config.input_size, pretrained=config.pretrained, head=config.head
        )
        self.model.freeze_backbone(config.freeze_backbone)
        if not config.freeze_backbone and config.freeze_blocks:
            self.model.freeze_early(config.freeze_blocks)
        steps = max(1, len(frames) // config.batch_size)  # batches per epoch (drop_last)
        groups = _param_groups(self.model, config)
        self.optimizer = torch.optim.AdamW(groups, lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.CyclicLR(
            self.optimizer,
            base_lr=[g["base"] for g in groups],
            max_lr=[g["peak"] for g in groups],
            step_size_up=max(1, round(config.half_cycle_epochs * steps)),
            mode=config.cycle_mode,
            cycle_momentum=False,
        )
        self.epoch = 0
        self.best: float | None = None
        self.best_epoch: int | None = None

    def _replay(self, own: int) -> list[FrameRecord]:
        """Frames of the replay split: ``replay_share`` of the epoch, classes renumbered."""
        config = self.config
        if config.replay is None:
            return []
        if not 0.0 < config.replay_share < 1.0:
            msg = f"replay_share must be in (0, 1), got {config.replay_share}"
            raise InputFormatError(msg)
        split = read_split(config.replay)
        refuse_held_out(split, "replay")
        epoch = max(config.epoch_images or 0, own)
        count = max(1, round(epoch * config.replay_share / (1.0 - config.replay_share))
                    if not config.epoch_images else round(epoch * config.replay_share))
        frames = budget(remap_classes(split, self.class_names), count, config.seed + 1)
        self.log.info("replay", split=str(config.replay), frames=len(frames))
        return frames

    def _read_val(self) -> Split | None:
        val_dir = self.config.data / "val"
        if not (val_dir / "annotations.json").exists():
            self.log.warning("no_validation_split", path=str(val_dir))
            return None
        split = read_split(val_dir)
        refuse_held_out(split, "validation")
        if split.class_names != self.class_names:
            msg = f"{val_dir}: categories differ from the training split's"
            raise InputFormatError(msg)
        return split

    def start(self) -> None:
        """Resume from ``out/last.ckpt`` if present, else apply ``init``."""
        last = self.config.out / "last.ckpt"
        if self.config.resume and last.exists():
            state = load_checkpoint(last)
            saved_head = state.get("head", "centernet")  # checkpoints before --head: centernet
            if saved_head != self.config.head:
                msg = (
                    f"{last}: trained with --head {saved_head}, this run asks for --head "
                    f"{self.config.head}; resume with --head {saved_head}, or pass --no-resume "
                    f"or another --out (--init {last} then starts the {self.config.head} head "
                    "from its backbone and neck)"
                )
                raise ModelError(msg)
            saved_args = state.get("args", {})
            for key in ("unlabelled", "proposal_score", "noisy_labels", "trust_floor"):
                ours = getattr(self.config, key)
                if key in saved_args and saved_args[key] != ours:
                    msg = (
                        f"{last}: trained with {key} {saved_args[key]!r}, this run asks for "
                        f"{ours!r}; resume with the same setting, or pass --no-resume or "
                        "another --out"
                    )
                    raise ModelError(msg)
            if list(state["class_names"]) != self.class_names:
                msg = f"{last}: classes differ from {self.config.data}; use another --out"
                raise InputFormatError(msg)
            self.model.load_state_dict(state["model"])
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except ValueError as err:
                msg = (
                    f"{last}: optimizer state does not fit this run ({err}); resume with the "
                    "same --freeze-backbone setting, or pass --no-resume or another --out"
                )
                raise ModelError(msg) from err
            self.scheduler.load_state_dict(state["scheduler"])
            self.epoch, self.best, self.best_epoch = (
                state["epoch"],
                state["best"],
                state["best_epoch"],
            )
            restore_rng(state["rng"])
            if self.trust is not None and "trust" in state:
                try:
                    self.trust.load(state["trust"])
                except ValueError as err:
                    raise ModelError(f"{last}: {err}; pass --no-resume or another --out") from err
            self.log.info("resume", checkpoint=str(last), epochs_done=self.epoch)
            if self.config.init is not None:
                self.log.info("init_ignored_on_resume", init=str(self.config.init))
            self._ignore_unlabelled(resumed=True)  # from the cache the fresh start wrote
            return
        history = self.config.out / "history.jsonl"
        if history.exists():
            self.log.info("fresh_run_replaces_history", path=str(history))
            history.unlink()
        if self.config.init is not None:
            init_from(self.model, self.config.init, self.class_names)
        cache = self.config.out / "proposals.json"
        if cache.exists():
            cache.unlink()  # a fresh run asks its own init model
        self._ignore_unlabelled()

    def _ignore_unlabelled(self, *, resumed: bool = False) -> None:
        """With ``unlabelled="proposals"``: the model's unlabelled proposals on the site's
        frames become ignore boxes (:mod:`calibration.noisy`). A resumed run reads the ones
        its fresh start found with the init model; it never asks the half-trained one."""
        if self.config.unlabelled != "proposals":
            return
        cache = self.config.out / "proposals.json"
        if resumed and not cache.exists():
            msg = (f"{cache} is missing: the run cannot resume with the proposals of its init "
                   "model; pass --no-resume or another --out")
            raise ModelError(msg)
        own = self.train_set.frames[: self.own_frames]
        found = load_or_find_proposals(cache, self.model, own,
                                       self.config.input_size, self.config.proposal_score)
        self.train_set.frames = with_ignore_boxes(own, found) + self.train_set.frames[
            self.own_frames :]
        self.log.info("unlabelled_proposals", frames=len(found),
                      ignore_boxes=sum(len(v) for v in found.values()))

    def _checkpoint(self, metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "metrics": metrics,
            "rng": rng_state(),
            "args": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.config).items()
            },
            "class_names": list(self.class_names),
            "input_size": list(self.config.input_size),
            "head": self.config.head,
            "training": self.provenance(),
            **({} if self.trust is None else {"trust": self.trust.state()}),
        }

    def provenance(self) -> dict[str, Any]:
        """What the exported model's ``training`` metadata records."""
        seeds = sorted({f.seed for f in self.train_set.frames if f.seed is not None})
        return {
            "data": str(self.config.data),
            "head": self.config.head,
            "train_images": self.unique_images,
            "epoch_images": len(self.train_set),
            "replay": None if self.config.replay is None else str(self.config.replay),
            "replay_images": self.replay_images,
            "train_seeds": seeds[:50],
            "epochs": self.epoch,
            "init": None if self.config.init is None else str(self.config.init),
            "pretrained_backbone": self.config.pretrained,
            "freeze_backbone": self.config.freeze_backbone,
            "freeze_blocks": self.config.freeze_blocks,
            "max_images": self.config.max_images,
            "lr": self.config.lr,
            "seed": self.config.seed,
            "best_epoch": self.best_epoch,
        }

    def train_epoch(self, deadline: float | None) -> dict[str, float]:
        """One pass over the training set; stops early past ``deadline`` (monotonic s)."""
        self.model.train()
        self.train_set.set_epoch(self.epoch)
        loader = _loader(self.train_set, self.config, self.config.seed * 100003 + self.epoch)
        sums: dict[str, float] = {}
        steps, step_time = 0, 0.0
        bar = tqdm(
            loader, desc=f"epoch {self.epoch + 1}/{self.config.epochs}", leave=False, mininterval=1
        )
        for batch in bar:
            started = time.perf_counter()
            if self.trust is not None:
                batch["class_weight"] = self.trust.class_weight(batch["objects"])
            outputs = self.model(batch["image"])
            losses = detection_loss(outputs, batch)
            if self.trust is not None:
                self.trust.observe(batch["objects"], outputs[3].detach())
            self.optimizer.zero_grad(set_to_none=True)
            torch.autograd.backward(losses["loss"])
            self.optimizer.step()
            self.scheduler.step()
            step_time += time.perf_counter() - started
            steps += 1
            for key, value in losses.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach())
            bar.set_postfix(loss=f"{float(losses['loss'].detach()):.3f}")
            if deadline is not None and time.monotonic() > deadline:
                break
        bar.close()
        metrics = {f"train_{k}": v / max(steps, 1) for k, v in sums.items()}
        metrics.update(
            steps=steps,
            step_s=step_time / max(steps, 1),
            lr=float(self.scheduler.get_last_lr()[-1]),
        )
        return metrics

    def run(self) -> Path:
        """Train to ``config.epochs``, checkpoint each epoch, export ``model.onnx``."""
        config = self.config
        config.out.mkdir(parents=True, exist_ok=True)
        self.start()
        deadline = None if config.time_budget_s is None else time.monotonic() + config.time_budget_s
        while self.epoch < config.epochs:
            started = time.monotonic()
            metrics = self.train_epoch(deadline)
            if self.trust is not None:
                metrics.update(self.trust.end_epoch(self.epoch + 1))
                report = self.trust.report(self.followed, self.class_names)
                write_atomic(config.out / "label_trust.json",
                             json.dumps(report, indent=1).encode(), mode=0o644)
            if self.val_set is not None and len(self.val_set):
                metrics.update(evaluate(self.model, self.val_set, config))
            self.epoch += 1
            score = metrics.get("val_map50", float("nan"))
            if math.isnan(score):
                score = -metrics.get("val_loss", metrics.get("train_loss", 0.0))
            # a tie keeps the later epoch: a few held-back frames often score the same from
            # the first epoch on, and the first epoch has barely seen the new classes
            improved = self.best is None or score >= self.best
            if improved:
                self.best, self.best_epoch = score, self.epoch
            metrics.update(epoch=self.epoch, seconds=time.monotonic() - started, best=improved)
            payload = self._checkpoint(metrics)
            save_checkpoint(config.out / "last.ckpt", payload)
            if improved:
                save_checkpoint(config.out / "best.ckpt", payload)
            with (config.out / "history.jsonl").open("a") as history:
                history.write(json.dumps(metrics) + "\n")
            self.log.info("epoch_done", **metrics)
            if deadline is not None and time.monotonic() > deadline:
                self.log.info("time_budget_spent", epochs_done=self.epoch)
                break
        return self.export()

    def export(self) -> Path:
        """Export the best checkpoint (the current model if none) to ``out/model.onnx``."""
        best = self.config.out / "best.ckpt"
        if best.exists():
            self.model.load_state_dict(load_checkpoint(best)["model"])
        parity = None
        if self.val_set is not None and len(self.val_set):
            parity = torch.stack(
                [self.val_set[i]["image"] for i in range(min(2, len(self.val_set)))]
            )
        version = (
            self.config.model_version or f"{self.config.out.name}-e{self.best_epoch or self.epoch}"
        )
        path = export_onnx(
            self.model,
            self.config.out / "model.onnx",
            self.class_names,
            model_version=version,
            training=self.provenance(),
            parity_inputs=None if parity is None else parity.numpy(),
        )
        self.log.info("model_exported", path=str(path), best_epoch=self.best_epoch)
        return path


def train(config: TrainConfig) -> Path:
    """Train (or resume) a run and return the exported ONNX path."""
    return Trainer(config).run()
