"""bench/imperfect_labels.py's label degradation: the share of boxes dropped and of dishes
mislabelled is what it says, ignored boxes stay, and a wrong label is always another dish."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.imperfect_labels import degrade


def _doc() -> dict:
    anns, aid = [], 0
    for image in range(20):
        for k in range(6):
            anns.append({"id": aid, "image_id": image, "category_id": 0 if k == 0 else 1 + k % 4,
                         "bbox": [10 * k, 10, 8, 8], "ignore": int(k == 5 and image % 5 == 0)})
            aid += 1
    return {"images": [{"id": i, "file_name": f"{i}.jpg"} for i in range(20)],
            "categories": [{"id": i, "name": f"c{i}"} for i in range(6)], "annotations": anns}


def test_degrade_drops_and_mislabels_the_stated_shares() -> None:
    doc = _doc()
    labelled = [a for a in doc["annotations"] if not a["ignore"]]
    dishes = [a for a in labelled if a["category_id"] != 0]
    out, changes = degrade(doc, missing=0.3, wrong=0.1, seed=3)
    assert len(changes["dropped"]) == round(0.3 * len(labelled))
    assert len(changes["relabelled"]) == round(0.1 * len(dishes))
    kept = {a["id"]: a for a in out["annotations"]}
    assert all(a["id"] in kept for a in doc["annotations"] if a["ignore"])
    assert not set(changes["dropped"]) & set(kept)
    original = {a["id"]: a["category_id"] for a in doc["annotations"]}
    for aid, cls in changes["relabelled"].items():
        assert kept[aid]["category_id"] == cls and cls not in (0, original[aid])
    unchanged = set(kept) - set(changes["relabelled"])
    assert all(kept[i]["category_id"] == original[i] for i in unchanged)
    again, _ = degrade(doc, missing=0.3, wrong=0.1, seed=3)
    assert again == out  # seeded
