"""``dishtracker label import|export``: frames into the labelling workspace, labels out of it.

The shell side of the workspace (:mod:`edge.label`). Both act on the store
under the config's ``storage.dir`` directly (SQLite in WAL mode: a running
daemon goes on serving the page meanwhile):

- ``import DIR``: the frames of a ``calibrate select`` folder (or any folder
  of images) join the queue; the daemon proposes their boxes when a
  labeller first needs them.
- ``export --out DIR``: ``DIR/train/annotations.json`` and
  ``DIR/train/images/``, what ``calibrate train --data DIR`` reads.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edge.config import SiteConfig, load_config
from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.label.coco import write_dataset
from edge.label.importer import DOUBLE_EVERY, import_folder
from edge.label.store import LABELS_SUBDIR, LabelStore


def _site(args: argparse.Namespace) -> SiteConfig:
    return load_config(args.config) if args.config is not None else SiteConfig()


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help="site config (TOML): its storage.dir holds the workspace "
                        "(default: built-in config, ./var)")


def add_import_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``dishtracker label import``."""
    p.add_argument("folder", type=Path, help="a `calibrate select` --out folder, or a folder "
                                             "of images")
    p.add_argument("--double-every", type=int, default=DOUBLE_EVERY, metavar="N",
                   help="label one frame in N twice, by two people, to measure agreement "
                        f"(default {DOUBLE_EVERY}; 0: none)")
    _common(p)


def run_import(args: argparse.Namespace) -> int:
    """Entry of ``dishtracker label import``."""
    store = LabelStore(_site(args).storage.dir / LABELS_SUBDIR)
    try:
        done = import_folder(store, args.folder, double_every=args.double_every)
        total = len(store.frames())
    finally:
        store.close()
    print(f"imported {done.added} new frames of {len(done.frame_ids)} from {done.source} "
          f"into {store.root}; the workspace has {total} frames (open /label.html)")
    return 0


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``dishtracker label export``."""
    p.add_argument("--out", type=Path, required=True,
                   help="dataset folder: train/annotations.json and train/images/")
    p.add_argument("--model", type=Path, default=None,
                   help="the model whose classes come first (default: detector.model)")
    _common(p)


def run_export(args: argparse.Namespace) -> int:
    """Entry of ``dishtracker label export``."""
    site = _site(args)
    detector = OnnxRuntimeDetector(args.model or site.detector.model)
    base = list(detector.info.class_names)
    detector.close()
    store = LabelStore(site.storage.dir / LABELS_SUBDIR)
    try:
        doc = write_dataset(store, args.out, base)
    finally:
        store.close()
    complete = sum(im["complete"] for im in doc["images"])
    print(f"wrote {args.out / 'train'}: {len(doc['images'])} frames ({complete} complete), "
          f"{len(doc['annotations'])} boxes, {len(doc['categories'])} classes "
          f"({len(doc['categories']) - len(base)} new); train with "
          f"dishtracker calibrate train --data {args.out} "
          f"--init {args.model or site.detector.model}")
    return 0
