"""Bills robust to a detector's noise: phantoms, fixed false spots, dropouts, class flicker.

Scripted detections of trays sliding at a steady speed, as in test_trays.py,
with one kind of detector error each, billed with ``billing.noise_guard`` on
(the rules are opt-in: off, the first three fail).
"""

from __future__ import annotations

import numpy as np
from test_trays import COFFEE, SOUP, Obj, _on, _run, _tray

from edge.billing.biller import TrayBiller, make_biller
from edge.billing.model import Bill
from edge.config import SiteConfig, StreamConfig
from edge.sim.menu import BY_KEY, CLASS_NAMES
from edge.track.evidence import DishRecord

BEER = BY_KEY["beer"].id
PIZZA = BY_KEY["pizza_slice"].id
BRATWURST = BY_KEY["bratwurst"].id


def _biller(*, guard: bool = True) -> TrayBiller:
    site = SiteConfig.model_validate({"billing": {"noise_guard": guard}})
    return make_biller(StreamConfig(id="cam", url="synthetic://?seed=1"), site, CLASS_NAMES,
                       640, 480, run_id="test", clock_offset=0.0, snapshots=False)


def _items(bills: list[Bill]) -> list[list[int]]:
    return [sorted(i.class_id for i in b.items) for b in bills]


def test_a_three_frame_false_dish_inside_a_tray_is_never_billed() -> None:
    for score in (0.45, 0.6, 0.8):
        def scene(i: int, score: float = score) -> list[Obj]:
            x = 20.0 + 6 * i
            objs = [_tray(x), _on(x, 20, 30, SOUP)]
            if 30 <= i < 33:
                objs.append(_on(x, 120, 60, COFFEE, score))
            return objs

        bills, _ = _run(_biller(), 80, scene)
        assert _items(bills) == [[SOUP]], score


def test_a_false_dish_fixed_in_the_picture_is_not_billed_to_the_trays_under_it() -> None:
    rng = np.random.default_rng(3)
    fires = rng.random(200) < 0.35
    spot = (240.0, 190.0, 290.0, 240.0, BEER, 0.5)

    def scene(i: int) -> list[Obj]:
        objs: list[Obj] = []
        for start in (0, 60):
            x = -200.0 + 6 * (i - start)
            if -200 <= x <= 640:
                objs += [_tray(x), _on(x, 20, 30, SOUP), _on(x, 120, 60, COFFEE)]
        if fires[i]:
            objs.append(spot)
        return objs

    bills, _ = _run(_biller(), 200, scene)
    assert _items(bills) == [sorted([SOUP, COFFEE])] * 2


def test_a_dish_seen_again_after_an_11_frame_tray_dropout_at_15_px_per_frame_is_billed_once(
) -> None:
    def scene(i: int) -> list[Obj]:
        x = -60.0 + 15 * i
        if 8 <= i < 19:  # blur: nothing of the tray is detected
            return []
        return [_tray(x), _on(x, 20, 60, COFFEE), _on(x, 80, 60, COFFEE), _on(x, 140, 20, SOUP)]

    bills, _ = _run(_biller(), 40, scene)
    assert _items(bills) == [sorted([COFFEE, COFFEE, SOUP])]


def test_a_dish_flickering_between_unrelated_classes_is_billed_once_as_its_majority() -> None:
    rng = np.random.default_rng(5)
    draws = rng.random(100)

    def scene(i: int) -> list[Obj]:
        x = 20.0 + 6 * i
        objs = [_tray(x), _on(x, 20, 30, SOUP)]
        if draws[i] < 0.2:  # seen as something unrelated
            objs.append(_on(x, 120, 60, PIZZA if i % 2 else BRATWURST, 0.5))
        else:
            objs.append(_on(x, 120, 60, COFFEE, 0.8))
        if draws[i] > 0.85:  # and now and then twice, a little off
            objs.append(_on(x, 128, 66, PIZZA, 0.45))
        return objs

    bills, _ = _run(_biller(), 80, scene)
    assert _items(bills) == [sorted([SOUP, COFFEE])]


def test_a_record_fixed_in_the_picture_while_its_tray_slides_is_no_dish() -> None:
    rec = DishRecord(1, np.ones(3), rel_box=np.array([0.0, 0.0, 50.0, 50.0]))
    here = np.array([300.0, 200.0])
    rec.seen_at(here, np.array([100.0, 200.0]))
    rec.seen_at(here + 2.0, np.array([130.0, 200.0]))  # the tray slid 30 px (0.6 sizes)
    assert rec.fixed_in_picture()
    real = DishRecord(2, np.ones(3), rel_box=np.array([0.0, 0.0, 50.0, 50.0]))
    real.seen_at(here, np.array([100.0, 200.0]))
    real.seen_at(here + np.array([31.0, 1.0]), np.array([130.0, 200.0]))  # moved with it
    assert not real.fixed_in_picture()
    still = DishRecord(3, np.ones(3), rel_box=np.array([0.0, 0.0, 50.0, 50.0]))
    still.seen_at(here, np.array([100.0, 200.0]))
    still.seen_at(here, np.array([110.0, 200.0]))  # a tray that hardly moved: no verdict
    assert not still.fixed_in_picture()


def test_merged_records_keep_the_span_of_their_evidence() -> None:
    first = DishRecord(1, np.zeros(3), first_seq=10)
    for seq in (10, 11, 12):
        first.vote(0, 0.9, seq, seq)
    later = DishRecord(2, np.zeros(3), first_seq=20)
    for seq in (20, 21):
        later.vote(0, 0.9, seq, seq)
    assert (first.span, later.span) == (3, 2)
    first.absorb(later)
    assert first.span == 12 and first.hits == 5
    assert first.density == 5 / 12  # seen in 5 of the 12 detected frames


def test_the_noise_guard_is_off_by_default_and_then_a_short_false_dish_is_billed() -> None:
    """Off (the default), bills are what they were before the guard existed."""
    assert SiteConfig().billing.noise_guard is False

    def scene(i: int) -> list[Obj]:
        x = 20.0 + 6 * i
        objs = [_tray(x), _on(x, 20, 30, SOUP)]
        if 30 <= i < 33:
            objs.append(_on(x, 120, 60, COFFEE, 0.8))
        return objs

    bills, _ = _run(_biller(guard=False), 80, scene)
    assert _items(bills) == [sorted([SOUP, COFFEE])]
