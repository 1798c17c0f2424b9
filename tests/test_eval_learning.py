"""``dishtracker eval learning`` end to end: the shipped model on a site2 scene, played twice.

A short ``site2`` scene (tuning seed 17090: new dishes the shipped model never
saw) is played twice as one service. The scripted cashier corrects the first
pass; with learning on, the second pass names the new dishes it was taught
and bills more trays exactly; with learning off the two passes bill alike.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.cli import main
from edge.seeds import LEARNING_TUNING
from edge.sim.writer import write_sequence

SEED = LEARNING_TUNING["standard"] + 90


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("learn") / f"site2-{SEED}"
    write_sequence(out, seed=SEED, seconds=40.0, menu="site2")
    return out


def _run(scene: Path, out: Path, *extra: str) -> dict[str, object]:
    code = main(["eval", "learning", "--data", str(scene), str(scene), "--json", str(out),
                 "--quiet", *extra])
    assert code == 0
    report: dict[str, object] = json.loads(out.read_text())
    return report


@pytest.mark.slow
def test_the_second_pass_bills_what_the_first_taught(scene: Path, tmp_path: Path) -> None:
    on = _run(scene, tmp_path / "on.json", "--no-bank")
    off = _run(scene, tmp_path / "off.json", "--no-learning")
    for key in ("exact_match", "exact_match_known_only", "unknown_flag_rate",
                "unknown_false_accept", "corrections_per_new_dish", "windows",
                "cashier_actions"):
        assert key in on
    passes_on = _passes(on)
    passes_off = _passes(off)
    assert passes_off[0] == passes_off[1]  # nothing learnt: the same bills twice
    assert on["corrections_per_new_dish"], "the scene's new dishes were never corrected"
    assert passes_on[1] > passes_on[0]  # what the first pass taught, the second bills
    assert passes_on[0] == passes_off[0]  # before any correction, learning changes nothing


def _passes(report: dict[str, object]) -> tuple[int, int]:
    """Exact trays in the first and the second pass."""
    first = second = 0
    wrong = report["wrong"]
    assert isinstance(wrong, list)
    total = int(report["trays"])  # type: ignore[call-overload]
    wrong_first = sum(1 for w in wrong if w["at_s"] < 40.0)
    wrong_second = len(wrong) - wrong_first
    first = total // 2 - wrong_first
    second = total // 2 - wrong_second
    return first, second
