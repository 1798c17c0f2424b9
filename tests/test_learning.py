"""Learning on the job: examples from corrections, the open-set decision, kill -9.

Real SQLite journals, real corrections; the embeddings are made up here (unit
vectors per dish), since what is tested is the bookkeeping and the decision
rule, not the detector (``bench/openset.py`` and ``dishtracker eval learning``
measure those with the shipped model).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from pathlib import Path

import numpy as np
import pytest
from bills_support import MENU, kill_writer, make_bill, views, with_views

from edge.billing.corrections import parse_correction
from edge.billing.journal import Journal
from edge.billing.menu import Menu
from edge.billing.service import BillingService
from edge.config import LearningConfig, MenuEntry
from edge.frames import DishEvidence
from edge.learn.bank import KnownBank
from edge.learn.examples import Example, ExampleIndex
from edge.learn.openset import Learner
from edge.learn.service import LearningService
from edge.metrics import Metrics

D = 128
CLASSES = ("tray", "coffee", "yogurt", "phone")
ENTRIES = {"coffee": MenuEntry(name="Coffee", price=2.0),
           "yogurt": MenuEntry(name="Yogurt", price=1.5),
           "donut": MenuEntry(name="Donut", price=1.8),  # no class in the model
           "phone": MenuEntry(name="Phone", price=0.0, billable=False)}


def unit(seed: int, near: np.ndarray | None = None, spread: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.normal(size=D).astype(np.float32)
    v /= np.linalg.norm(v)
    if near is not None:
        v = near + spread * v
        v /= np.linalg.norm(v)
    return v.astype(np.float32)


CENTRES = {"coffee": unit(1), "yogurt": unit(2), "donut": unit(3)}


def bank() -> KnownBank:
    """A bank over the whole embedding: coffee and yogurt prototypes near their centres."""
    protos, labels = [], []
    for c, key in ((1, "coffee"), (2, "yogurt")):
        for s in range(8):
            protos.append(unit(100 * c + s, CENTRES[key], 0.15))
            labels.append(c)
    return KnownBank(np.stack(protos), np.array(labels), np.array([np.nan, 0.95, 0.95, np.nan]),
                     model_sha256="0" * 64, dims=(0, D))


def dish(class_id: int, appearance: np.ndarray, track_id: int = 7) -> DishEvidence:
    return DishEvidence(track_id, class_id, 0.95, 40, 30.0, appearance=appearance)


def learner(index: ExampleIndex | None = None, with_bank: bool = True) -> Learner:
    return Learner(LearningConfig(), index or ExampleIndex(),
                   bank() if with_bank else None, model_id="m1")


MENU_T = Menu(ENTRIES, CLASSES, confirm_below=0.75)


def examples(key: str, n: int, seed: int, spread: float = 0.15) -> list[Example]:
    return [Example(f"{key}-{seed}-{i}", key, "m1", unit(seed * 1000 + i, CENTRES[key], spread))
            for i in range(n)]


# ---- the decision ---------------------------------------------------------------------


def test_a_dish_that_looks_like_its_class_keeps_the_detectors_name() -> None:
    line = learner().name(dish(2, unit(9, CENTRES["yogurt"], 0.1)), MENU_T)
    assert line is not None and (line.key, line.source, line.unknown) == ("yogurt", "detector",
                                                                          False)


def test_a_dish_far_from_its_class_is_an_unknown_line_with_proposals() -> None:
    line = learner().name(dish(2, CENTRES["donut"]), MENU_T)  # a donut the model calls yogurt
    assert line is not None
    assert line.unknown and line.needs_review and line.source == "unknown"
    assert (line.key, line.name, line.price, line.class_id) == ("unknown", "Unknown dish", 0.0, -1)
    assert 1 <= len(line.proposals) <= 3
    assert {p.key for p in line.proposals} <= {"coffee", "yogurt"}  # only what has evidence


def test_without_a_bank_nothing_is_flagged_unknown() -> None:
    line = learner(with_bank=False).name(dish(2, CENTRES["donut"]), MENU_T)
    assert line is not None and line.key == "yogurt" and not line.unknown


def test_examples_name_a_dish_the_model_has_no_class_for() -> None:
    index = ExampleIndex()
    index.update(add=examples("donut", 4, seed=5))
    line = learner(index).name(dish(2, unit(77, CENTRES["donut"], 0.15)), MENU_T)
    assert line is not None
    assert (line.key, line.name, line.price, line.class_id, line.source) == (
        "donut", "Donut", 1.8, -1, "examples")


def test_one_wrong_correction_does_not_flip_a_dish_many_examples_support() -> None:
    index = ExampleIndex()
    index.update(add=examples("yogurt", 12, seed=6))
    q = unit(55, CENTRES["yogurt"], 0.15)
    # a cashier's slip: one yogurt taught as a donut, the very look of this dish
    index.update(add=[Example("slip", "donut", "m1", q)])
    line = learner(index).name(dish(2, q), MENU_T)
    assert line is not None and line.key == "yogurt"
    # against the bank alone too (no yogurt examples at all)
    index2 = ExampleIndex()
    index2.update(add=[Example("slip", "donut", "m1", q)])
    line2 = learner(index2).name(dish(2, q), MENU_T)
    assert line2 is not None and line2.key == "yogurt"


def test_examples_of_another_model_say_nothing() -> None:
    index = ExampleIndex()
    index.update(add=[Example(f"o{i}", "donut", "m0", unit(i, CENTRES["donut"], 0.1))
                      for i in range(5)])
    line = learner(index).name(dish(2, CENTRES["donut"]), MENU_T)
    assert line is not None and line.unknown  # m1 serves: m0's examples are not comparable


def test_the_index_is_capped_per_class_keeping_diverse_examples() -> None:
    index = ExampleIndex(per_class=4)
    same = unit(1)
    twins = [Example(f"t{i}", "coffee", "m1", same) for i in range(6)]
    spread = [Example(f"s{i}", "coffee", "m1", unit(200 + i)) for i in range(3)]
    index.update(add=twins + spread)
    assert index.counts() == {"coffee": 9}
    assert index.in_use("m1") == {"coffee": 4}
    assert index.similarity("m1", unit(201))["coffee"] > 0.3  # a diverse one was kept
    assert index.update(remove=["s1"]) and index.counts() == {"coffee": 8}
    assert not index.update(remove=["nope"])


# ---- corrections teach, undo takes back -------------------------------------------------


def _correct(journal: Journal, bill_id: str, body: dict[str, object]) -> None:
    assert journal.add_correction(bill_id, parse_correction(body), MENU) is not None


def _active(journal: Journal, bill_id: str) -> dict[tuple[str, bool], int]:
    out: dict[tuple[str, bool], int] = {}
    for ex in journal.examples_of_bill(bill_id):
        out[(ex.key, ex.removed)] = out.get((ex.key, ex.removed), 0) + 1
    return out


def test_a_change_teaches_the_lines_views_and_undo_takes_them_back(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.sqlite3") as journal:
        bill = with_views(make_bill("cam1-1-1"))
        journal.commit(bill)
        assert journal.examples_of_bill("cam1-1-1") == []  # nothing taught yet
        _correct(journal, "cam1-1-1", {"action": "change", "line": 2, "class_key": "green_salad"})
        assert _active(journal, "cam1-1-1") == {("green_salad", False): 3}
        ex = journal.examples_of_bill("cam1-1-1")[0]
        assert ex.model_id == "m1" and ex.crop_jpeg and ex.crop_jpeg[:2] == b"\xff\xd8"
        assert np.allclose(ex.embedding, bill.views[2][0].embedding, atol=2e-3)  # float16
        _correct(journal, "cam1-1-1", {"action": "confirm", "line": 0})
        assert _active(journal, "cam1-1-1") == {("green_salad", False): 3,
                                                 ("schnitzel_fries", False): 3}
        _correct(journal, "cam1-1-1", {"action": "undo"})  # the confirm
        _correct(journal, "cam1-1-1", {"action": "undo"})  # the change
        assert _active(journal, "cam1-1-1") == {("green_salad", True): 3,
                                                 ("schnitzel_fries", True): 3}
        assert journal.active_examples() == []
        # changed twice: only the last dish is taught
        journal.commit(with_views(make_bill("cam1-1-2"), seed=2))
        _correct(journal, "cam1-1-2", {"action": "change", "line": 1, "class_key": "coffee"})
        _correct(journal, "cam1-1-2", {"action": "change", "line": 1, "class_key": "tea"})
        assert _active(journal, "cam1-1-2") == {("coffee", True): 3, ("tea", False): 3}
        _correct(journal, "cam1-1-2", {"action": "remove", "line": 1})
        assert _active(journal, "cam1-1-2") == {("coffee", True): 3, ("tea", True): 3}


def test_an_unknown_line_cannot_be_confirmed_only_picked(tmp_path: Path) -> None:
    from edge.errors import CorrectionError

    with Journal(tmp_path / "j.sqlite3") as journal:
        bill = with_views(make_bill("cam1-1-1"))
        unknown = dataclasses.replace(bill.items[1], class_id=-1, key="unknown",
                                      name="Unknown dish", price=0.0, needs_review=True,
                                      unknown=True, source="unknown")
        journal.commit(dataclasses.replace(bill, items=(bill.items[0], unknown, bill.items[2])))
        with pytest.raises(CorrectionError, match="unknown dish"):
            _correct(journal, "cam1-1-1", {"action": "confirm", "line": 1})
        _correct(journal, "cam1-1-1", {"action": "change", "line": 1, "class_key": "coffee"})
        view = journal.get("cam1-1-1")
        assert view is not None
        line = view["effective"]["items"][1]
        assert (line["key"], line["unknown"], line["price"]) == ("coffee", False,
                                                                 MENU["coffee"].price)
        assert _active(journal, "cam1-1-1") == {("coffee", False): 3}


def test_examples_survive_kill_9_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    rng = random.Random(7)
    taught: list[str] = []
    for r in range(4):
        out = kill_writer(path, f"r{r}", rng, "teach", longest=0.4)
        taught += [ln.split()[0] for ln in out if ln.endswith(" taught")]
    assert taught, "the writer taught nothing before the kills"
    with Journal(path) as journal:
        assert journal.integrity_check() == "ok"
        active = {ex.uid.split("/")[0] for ex in journal.active_examples()}
        assert set(taught) <= active  # every acknowledged correction kept its examples
        for ex in journal.active_examples():
            assert ex.key == "green_salad" and ex.embedding.shape == (D,)


# ---- the live loop: a correction names the next tray's dish -------------------------------


def test_a_correction_reaches_the_next_trays_line_within_two_seconds(tmp_path: Path) -> None:
    async def run() -> None:
        billing = BillingService(tmp_path / "journal.sqlite3", Metrics())
        await billing.open()
        service = LearningService(LearningConfig(), billing)
        try:
            await service.start()
            service.learner.use_model("m1", None, CLASSES)
            # a donut the model calls yogurt; no bank here, so it is billed as yogurt
            donut_looks = views(31, count=3)
            bill = dataclasses.replace(
                with_views(make_bill("cam1-9-1", lines=(("yogurt", 0.9),))), views=(donut_looks,))
            billing.submit(bill)
            for _ in range(100):
                if await billing.get("cam1-9-1") is not None:
                    break
                await asyncio.sleep(0.02)
            menu = {**MENU, "donut": MenuEntry(name="Donut", price=1.8)}
            next_tray = dish(2, unit(0, donut_looks[0].embedding, 0.05))
            names = Menu(menu, CLASSES, 0.75)
            before = service.learner.name(next_tray, names)
            assert before is not None and before.key == "yogurt"
            started = time.monotonic()
            await billing.correct("cam1-9-1", parse_correction(
                {"action": "change", "line": 0, "class_key": "donut"}), menu)
            while service.learner.name(next_tray, names).key != "donut":  # type: ignore[union-attr]
                assert time.monotonic() - started < 2.0, "no effect within 2 s"
                await asyncio.sleep(0.01)
            assert service.last_effect_s is not None and service.last_effect_s < 2.0
            await billing.correct("cam1-9-1", parse_correction({"action": "undo"}), menu)
            while service.learner.name(next_tray, names).key != "yogurt":  # type: ignore[union-attr]
                assert time.monotonic() - started < 4.0, "the undo did not take effect"
                await asyncio.sleep(0.01)
        finally:
            await service.close()
            await billing.close()
        # a restart loads what was taught and is still in force (nothing, after the undo)
        billing2 = BillingService(tmp_path / "journal.sqlite3", Metrics())
        await billing2.open()
        service2 = LearningService(LearningConfig(), billing2)
        try:
            await service2.start()
            assert service2.examples_loaded == 0
        finally:
            await service2.close()
            await billing2.close()

    asyncio.run(run())
