"""Seed ranges: held-out sets stay held out, tuning and validation sets stay outside them."""

from __future__ import annotations

import ast
from itertools import pairwise
from pathlib import Path

import pytest

from edge.errors import HeldOutSeedError
from edge.seeds import (
    BILLING_HELD_OUT,
    BILLING_TUNING,
    BILLING_VALIDATION,
    DETECTOR_TEST,
    DETECTOR_TEST_LARGE,
    FEWLABEL_TEST,
    HELD_OUT,
    INDEPENDENT,
    LEVEL_SPAN,
    PROJECT_HELD_OUT,
    ROTATED_HELD_OUT,
    ROTATED_TUNING,
    SCENE_TUNING,
    level_seeds,
    refuse_held_out,
)

REPO = Path(__file__).resolve().parent.parent
HELD_OUT_SETS = (BILLING_HELD_OUT, ROTATED_HELD_OUT)
CHOICE_SETS = (BILLING_TUNING, BILLING_VALIDATION, SCENE_TUNING, ROTATED_TUNING)


def test_the_project_and_independent_ranges_split_the_held_out_range() -> None:
    assert PROJECT_HELD_OUT.start == HELD_OUT.start
    assert PROJECT_HELD_OUT.stop == INDEPENDENT.start
    assert INDEPENDENT.stop == HELD_OUT.stop


def test_held_out_sets_lie_in_the_projects_range_and_never_reach_the_independent_one() -> None:
    for bases in HELD_OUT_SETS:
        for level in bases:
            seeds = level_seeds(bases, level, LEVEL_SPAN)
            assert seeds.start in PROJECT_HELD_OUT and seeds[-1] in PROJECT_HELD_OUT
    for split in (DETECTOR_TEST, DETECTOR_TEST_LARGE, FEWLABEL_TEST):
        assert split.start in PROJECT_HELD_OUT and split[-1] in PROJECT_HELD_OUT


def test_sets_that_inform_a_choice_are_not_held_out() -> None:
    for bases in CHOICE_SETS:
        for level in bases:
            seeds = level_seeds(bases, level, 100)
            assert not set(seeds) & set(HELD_OUT)


def test_a_level_never_runs_into_the_next_levels_seeds() -> None:
    for bases in (BILLING_HELD_OUT, ROTATED_HELD_OUT, BILLING_TUNING, BILLING_VALIDATION):
        starts = sorted(bases.values())
        assert all(b - a >= LEVEL_SPAN for a, b in pairwise(starts))
    with pytest.raises(ValueError, match="count"):
        level_seeds(BILLING_HELD_OUT, "easy", LEVEL_SPAN + 1)


def test_held_out_seeds_are_refused_and_named() -> None:
    refuse_held_out([1, HELD_OUT.start - 1], "training")
    with pytest.raises(HeldOutSeedError, match=r"\[90000, 99999\].*training"):
        refuse_held_out([5, HELD_OUT.start, HELD_OUT.stop - 1, HELD_OUT.stop], "training")


def test_an_unknown_level_is_named() -> None:
    with pytest.raises(ValueError, match="'medium'"):
        level_seeds(BILLING_HELD_OUT, "medium", 1)


def test_no_bench_or_test_names_an_independent_seed() -> None:
    """97000-99999 are never rendered by the project: no literal seed there in bench/ or tests/."""
    found = []
    for path in sorted([*(REPO / "bench").rglob("*.py"), *(REPO / "tests").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (isinstance(node, ast.Constant) and type(node.value) is int
                    and node.value in INDEPENDENT):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value}")
    assert found == []
