"""A site's new dishes: the ``site2`` simulator menu and label proposals.

``site2`` adds dishes the shipped model never saw (``edge.sim.menu.NEW_DISHES``)
without changing how base-menu seeds render. ``calibrate propose`` ranks the
detector's unlabelled objects by nearest-neighbour similarity to a few
labelled ones; here it runs for real (shipped model, ONNX Runtime) on short
rendered site2 sequences.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from detect_models import square_finder

from calibration.dataset import categories, export_seed
from calibration.propose import (
    Embedder,
    build_support,
    knn_scores,
    propose,
    score_proposals,
    unlabelled_images,
)
from edge.cli import main
from edge.config import DEFAULT_MODEL
from edge.errors import InputFormatError, ModelError
from edge.sim.difficulty import get_level
from edge.sim.menu import CLASS_NAMES, ITEMS, MENU, NEW_DISHES, menu_dish_ids, menu_frequencies
from edge.sim.sprites import draw_item
from edge.sim.timeline import choose_classes


def test_site2_menu_appends_new_dishes_after_the_base_classes() -> None:
    assert [m.id for m in ITEMS] == list(range(len(ITEMS)))
    assert ITEMS[:len(MENU)] == MENU
    assert not {m.key for m in NEW_DISHES} & set(CLASS_NAMES)
    freqs = menu_frequencies("site2")
    assert len(freqs) == len(menu_dish_ids("site2")) and freqs.sum() == pytest.approx(1.0)
    for item in NEW_DISHES:
        sprite = draw_item(item, 1.0, np.random.default_rng(0))
        assert sprite.shape[2] == 4 and sprite[..., 3].max() == 255
    with pytest.raises(ValueError, match="menu 'nope' is unknown"):
        menu_dish_ids("nope")


def test_base_menu_draws_are_unchanged_and_site2_draws_new_dishes() -> None:
    level = get_level("standard")
    for seed in range(20):
        a = choose_classes(np.random.default_rng(seed), level, False)
        b = choose_classes(np.random.default_rng(seed), level, False, "base")
        assert a == b
    new_ids = {m.id for m in NEW_DISHES}
    drawn = [c for s in range(60)
             for c in choose_classes(np.random.default_rng(s), level, False, "site2")]
    assert new_ids <= set(drawn)  # 40 % of site2 sales are new dishes


def _write(split: Path, images: list[dict[str, Any]], anns: list[dict[str, Any]]) -> Path:
    ids = {im["id"] for im in images}
    mine = [dict(a, id=i) for i, a in enumerate((a for a in anns if a["image_id"] in ids), 1)]
    doc = {"images": images, "annotations": mine, "categories": categories("site2")}
    (split / "annotations.json").write_text(json.dumps(doc))
    return split


def _splits(root: Path, seed: int) -> tuple[Path, Path]:
    """One rendered site2 video: every other kept frame labelled, the rest the pool."""
    split = root / "frames"
    (split / "images").mkdir(parents=True)
    part = export_seed(seed, split, seconds=16.0, every=4, difficulty="easy", balanced=True,
                       menu="site2")
    labelled, pool = root / "labelled", root / "pool"
    labelled.mkdir()
    pool.mkdir()
    for target in (labelled, pool):
        (target / "images").symlink_to(split / "images")
    images = part["images"]
    return (_write(labelled, images[0::2], part["annotations"]),
            _write(pool, images[1::2], part["annotations"]))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("site2")
    labelled, unlabelled = _splits(root, 31000)
    embedder = Embedder(DEFAULT_MODEL, threads=2)
    support = build_support(embedder, labelled, progress=False)
    doc = propose(embedder, support, unlabelled_images(unlabelled), progress=False)
    embedder.close()
    return {"root": root, "labelled": labelled, "pool": unlabelled, "support": support,
            "doc": doc}


def test_proposals_rank_the_true_class_first_for_most_objects(site: dict[str, Any]) -> None:
    doc, support = site["doc"], site["support"]
    assert doc["annotations"], "the detector found nothing to propose"
    assert [c["name"] for c in doc["categories"]] == [m.key for m in ITEMS]
    margins = [a["margin"] for a in doc["annotations"]]
    assert margins == sorted(margins, reverse=True)
    for ann in doc["annotations"]:
        sims = [s for _, s in ann["candidates"]]
        assert sims == sorted(sims, reverse=True)
        assert ann["candidates"][0][0] == doc["categories"][ann["category_id"]]["name"]
        assert ann["review"] == (ann["margin"] < 0.05)
    scored = score_proposals(doc, site["pool"], classes=list(support.counts))
    # the embedding carries class identity: far above chance (1 / number of classes)
    assert scored["proposals"] >= 10
    assert scored["top1"] >= 0.6 and scored["top3"] >= scored["top1"]


def test_propose_command_writes_proposals_and_a_contact_sheet(site: dict[str, Any],
                                                              capsys: pytest.CaptureFixture[str],
                                                              ) -> None:
    out = site["root"] / "out" / "proposals.json"
    code = main(["calibrate", "propose", "--labelled", str(site["labelled"]), "--images",
                 str(site["pool"] / "images"), "--out", str(out), "--quiet"])
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "dishtracker-proposals/1" and doc["annotations"]
    assert out.with_suffix(".jpg").stat().st_size > 1000
    assert "proposals on" in capsys.readouterr().out


def test_knn_scores_average_each_class_nearest_examples() -> None:
    support = np.array([[1, 0], [0.8, 0.6], [0, 1]], np.float32)
    labels = np.array([0, 0, 1])
    query = np.array([[1, 0], [0, 1]], np.float32)
    scores = knn_scores(support, labels, query, classes=[0, 1, 2], k=2)
    assert scores[0].tolist() == pytest.approx([0.9, 0.0, -1.0])  # class 2 has no example
    assert scores[1].tolist() == pytest.approx([0.3, 1.0, -1.0])


def test_bad_inputs_are_refused_with_the_reason(tmp_path: Path, site: dict[str, Any]) -> None:
    with pytest.raises(InputFormatError, match="no images"):
        unlabelled_images(tmp_path)
    with pytest.raises(InputFormatError, match="no such folder"):
        unlabelled_images(tmp_path / "missing")
    plain = square_finder(tmp_path / "plain.onnx")  # meets the contract, no DishNet features
    with pytest.raises(ModelError, match="no feature tensor"):
        Embedder(plain)
    assert main(["calibrate", "propose", "--labelled", str(site["labelled"]), "--images",
                 str(tmp_path), "--out", str(tmp_path / "p.json")]) == 2
