"""Dataset export: simulator seeds -> COCO, disjoint splits, held-out seeds refused."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from calibration.dataset import export_dataset, parse_seeds
from edge.errors import ConfigError, HeldOutSeedError
from edge.sim.menu import MENU


def test_parse_seeds() -> None:
    assert parse_seeds("3-5,9, 1") == [1, 3, 4, 5, 9]
    with pytest.raises(ConfigError):
        parse_seeds("5-3")
    with pytest.raises(ConfigError):
        parse_seeds("a")


def test_held_out_and_shared_seeds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(HeldOutSeedError):
        export_dataset(tmp_path, {"train": [90001], "val": [2]}, seconds=1)
    with pytest.raises(HeldOutSeedError):
        export_dataset(tmp_path, {"train": [1], "val": [95000]}, seconds=1)
    with pytest.raises(ConfigError, match="both"):
        export_dataset(tmp_path, {"train": [1, 2], "test": [2]}, seconds=1)


def test_export_writes_coco_splits(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    summary = export_dataset(out, {"train": [5, 6], "val": [7], "test": [90007]},
                             seconds=4, every=8, difficulty="standard")
    assert summary["splits"]["train"]["images"] == 20  # 80 frames / 8, two seeds
    for split in ("train", "val", "test"):
        doc = json.loads((out / split / "annotations.json").read_text())
        assert [c["name"] for c in doc["categories"]] == [m.key for m in MENU]
        ids = {im["id"] for im in doc["images"]}
        assert len(ids) == len(doc["images"])
        ann_ids = [a["id"] for a in doc["annotations"]]
        assert len(set(ann_ids)) == len(ann_ids)
        for im in doc["images"][:3]:
            img = cv2.imread(str(out / split / im["file_name"]))
            assert img.shape == (im["height"], im["width"], 3)
        for a in doc["annotations"]:
            assert a["image_id"] in ids
            assert a["ignore"] == int(a["visibility"] < 0.5)
            x, _y, w, h = a["bbox"]
            assert x >= 0 and x + w <= 640.01 and w > 0 and h > 0
        assert not (out / split / "parts").exists()
    seeds = {split: {im["seed"] for im in json.loads(
        (out / split / "annotations.json").read_text())["images"]}
        for split in ("train", "val", "test")}
    assert seeds == {"train": {5, 6}, "val": {7}, "test": {90007}}
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["splits"]["test"]["seeds"] == "90007"
