"""Dataset export: simulator seeds become a COCO detection dataset.

``dishtracker calibrate dataset`` renders each seed's sequence (H.264, so the
frames carry real compression artifacts), decodes it, and keeps every
``every``-th frame with its boxes. Train, validation and test come from
disjoint seed sets; seeds 90000-99999 (:data:`edge.seeds.HELD_OUT`) are
reserved for held-out evaluation and refused for train and validation.

Layout::

    OUT/dataset.json                       provenance: seeds, levels, counts
    OUT/{train,val,test}/annotations.json  COCO, category_id = 0-based class id
    OUT/{train,val,test}/images/*.jpg

Annotations carry ``ignore`` (1 when less than half visible: neither a
positive nor a negative for training, ignored by the evaluator, as
MOTChallenge does with its visibility column), ``visibility`` and ``track_id``.
Each seed is exported to its own part file first, so an interrupted export
resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import av
import cv2
from tqdm import tqdm

from edge.errors import ConfigError
from edge.groundtruth import by_frame, read_mot
from edge.seeds import DETECTOR_TEST, HELD_OUT, refuse_held_out
from edge.sim.menu import MENUS, menu_items
from edge.sim.writer import write_sequence

IGNORE_BELOW = 0.5
LEVEL_CYCLE = ("standard", "hard", "easy", "standard", "hard")


def parse_seeds(text: str) -> list[int]:
    """Parse ``"1000-1039,1100,1200-1201"`` into a sorted list of seeds."""
    seeds: set[int] = set()
    try:
        for raw in text.split(","):
            part = raw.strip()
            if not part:
                continue
            if "-" in part:
                a, b = (int(v) for v in part.split("-"))
                if b < a:
                    raise ValueError(part)
                seeds.update(range(a, b + 1))
            else:
                seeds.add(int(part))
    except ValueError:
        raise ConfigError(f"seeds: expected e.g. '1000-1039,1100', got {text!r}") from None
    return sorted(seeds)


def check_splits(splits: dict[str, list[int]]) -> None:
    """Refuse held-out seeds in train/val and any seed shared between splits."""
    for name in ("train", "val"):
        refuse_held_out(splits.get(name, []), f"the {name} split")
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            common = set(splits[a]) & set(splits[b])
            if common:
                raise ConfigError(f"seeds {sorted(common)[:5]} are in both {a} and {b}")


def level_for(seed: int, difficulty: str) -> str:
    """The difficulty of ``seed``: fixed, or cycled over levels for ``mix``."""
    return LEVEL_CYCLE[seed % len(LEVEL_CYCLE)] if difficulty == "mix" else difficulty


def export_seed(
    seed: int, split_dir: Path, *, seconds: float, every: int, difficulty: str,
    balanced: bool, quality: int = 92, menu: str = "base",
) -> dict[str, Any]:
    """Render, decode and export one seed; returns its COCO images and annotations."""
    level = level_for(seed, difficulty)
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix=f"sim{seed}-") as tmp:
        seq = Path(tmp) / f"seq{seed}"
        write_sequence(seq, seed=seed, seconds=seconds, difficulty=level, balanced=balanced,
                       menu=menu)
        truth = by_frame(read_mot(seq / "gt" / "gt.txt"))
        with av.open(str(seq / "video.mp4")) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index % every:
                    continue
                img = frame.to_ndarray(format="bgr24")
                name = f"images/s{seed:05d}_f{index + 1:05d}.jpg"
                cv2.imwrite(str(split_dir / name), img, [cv2.IMWRITE_JPEG_QUALITY, quality])
                image_id = seed * 100000 + index + 1
                images.append({
                    "id": image_id, "file_name": name, "width": img.shape[1],
                    "height": img.shape[0], "seed": seed, "frame": index + 1,
                    "difficulty": level,
                })
                for r in truth.get(index + 1, []):
                    anns.append({
                        "id": 0, "image_id": image_id,
                        "category_id": r.class_id,
                        "bbox": [round(v, 2) for v in (r.x, r.y, r.w, r.h)],
                        "area": round(r.w * r.h, 1), "iscrowd": 0,
                        "ignore": int(r.visibility < IGNORE_BELOW),
                        "visibility": r.visibility, "track_id": r.track_id,
                    })
    return {"seed": seed, "difficulty": level, "images": images, "annotations": anns}


def categories(menu: str = "base") -> list[dict[str, Any]]:
    """COCO categories of a menu variant in class-id order."""
    return [{"id": m.id, "name": m.key, "supercategory": m.kind.value} for m in menu_items(menu)]


def _export_job(args: tuple[int, Path, float, int, str, bool, str]) -> tuple[int, Path]:
    seed, split_dir, seconds, every, difficulty, balanced, menu = args
    part = split_dir / "parts" / f"{seed}.json"
    if not part.exists():
        result = export_seed(seed, split_dir, seconds=seconds, every=every,
                             difficulty=difficulty, balanced=balanced, menu=menu)
        tmp = part.with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        tmp.replace(part)
    return seed, part


def export_dataset(
    out: Path, splits: dict[str, list[int]], *, seconds: float = 60.0, every: int = 10,
    difficulty: str = "mix", balanced_train: bool = True, jobs: int = 1, menu: str = "base",
) -> dict[str, Any]:
    """Export every split; returns the provenance written to ``dataset.json``."""
    check_splits(splits)
    menu_items(menu)  # an unknown menu fails before any rendering
    work: list[tuple[int, Path, float, int, str, bool, str]] = []
    for name, seeds in splits.items():
        split_dir = out / name
        (split_dir / "images").mkdir(parents=True, exist_ok=True)
        (split_dir / "parts").mkdir(exist_ok=True)
        balanced = balanced_train and name != "test"
        work += [(s, split_dir, seconds, every, difficulty, balanced, menu) for s in seeds]
    bar = tqdm(total=len(work), desc="dataset", unit="seq")
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            for _ in pool.map(_export_job, work):
                bar.update()
    else:
        for job in work:
            _export_job(job)
            bar.update()
    bar.close()
    summary: dict[str, Any] = {
        "format": "dishtracker-dataset/1", "seconds": seconds, "every": every,
        "difficulty": difficulty, "balanced_train": balanced_train, "menu": menu, "splits": {},
    }
    for name, seeds in splits.items():
        split_dir = out / name
        images: list[dict[str, Any]] = []
        anns: list[dict[str, Any]] = []
        levels: dict[str, int] = {}
        for seed in seeds:
            part = json.loads((split_dir / "parts" / f"{seed}.json").read_text())
            images += part["images"]
            anns += part["annotations"]
            levels[part["difficulty"]] = levels.get(part["difficulty"], 0) + 1
        for i, a in enumerate(anns, 1):
            a["id"] = i
        doc = {"images": images, "annotations": anns, "categories": categories(menu)}
        tmp = split_dir / "annotations.json.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.replace(split_dir / "annotations.json")
        shutil.rmtree(split_dir / "parts")
        summary["splits"][name] = {
            "seeds": _ranges(seeds), "images": len(images), "boxes": len(anns), "levels": levels,
        }
    (out / "dataset.json").write_text(json.dumps(summary, indent=1))
    return summary


def _ranges(seeds: Iterable[int]) -> str:
    s = sorted(seeds)
    out: list[str] = []
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[j] + 1:
            j += 1
        out.append(f"{s[i]}-{s[j]}" if j > i else str(s[i]))
        i = j + 1
    return ",".join(out)


def add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``dishtracker calibrate dataset``."""
    p.add_argument("--out", type=Path, required=True, help="dataset directory to write")
    held_out = f"{HELD_OUT.start}-{HELD_OUT.stop - 1}"
    p.add_argument("--train-seeds", default="1000-1039",
                   help=f"e.g. 1000-1039 (never the held-out {held_out})")
    p.add_argument("--val-seeds", default="2000-2003")
    p.add_argument("--test-seeds", default=f"{DETECTOR_TEST.start}-{DETECTOR_TEST.stop - 1}",
                   help=f"held-out seeds {held_out} are allowed here only")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each sequence")
    p.add_argument("--every", type=int, default=10, help="keep every N-th frame")
    p.add_argument("--difficulty", default="mix", choices=["mix", "easy", "standard", "hard"])
    p.add_argument("--natural", action="store_true",
                   help="train/val dishes follow sales frequencies (default: balanced classes)")
    p.add_argument("--jobs", type=int, default=1, help="parallel render processes")
    p.add_argument("--menu", default="base", choices=list(MENUS),
                   help="menu variant: base (the shipped model's classes) or site2 "
                        "(base plus dishes the shipped model never saw)")


def run_dataset(args: argparse.Namespace) -> int:
    """Entry of ``dishtracker calibrate dataset``."""
    if args.every < 1:
        raise ConfigError(f"--every must be >= 1, got {args.every}")
    splits = {
        name: parse_seeds(getattr(args, f"{name}_seeds"))
        for name in ("train", "val", "test")
        if getattr(args, f"{name}_seeds")
    }
    summary = export_dataset(
        args.out, splits, seconds=args.seconds, every=args.every,
        difficulty=args.difficulty, balanced_train=not args.natural, jobs=args.jobs,
        menu=args.menu,
    )
    for name, s in summary["splits"].items():
        print(f"{name}: {s['images']} images, {s['boxes']} boxes, seeds {s['seeds']}")
    print(f"wrote {args.out}")
    return 0
