"""``bench/onboard.py``'s pure parts: the scripted labeller's choices and counts, the
uniform sampling, the choice over several recordings, the seed ranges.

The labeller runs against a small in-memory workspace that answers as the
real one does (a save is a new version; candidates per proposal; a drawn box
proposes the classes labelled most), so what is checked is what the bench
counts: one action per accepted or corrected class, deleted or drawn box and
completed frame.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.onboard_frames import load_scan, nearest_shown, save_scan, uniform_picks
from bench.onboard_labeller import Tally, Truth, label_all, match, next_action, read_log
from bench.onboard_training import process_cpu_s
from calibration.select import Scan, choose_frames
from edge.seeds import (
    BILLING_HELD_OUT,
    BILLING_TUNING,
    BILLING_VALIDATION,
    DETECTOR_TEST,
    DETECTOR_TEST_LARGE,
    FEWLABEL_TEST,
    HELD_OUT,
    LEARNING_BANK,
    LEARNING_HELD_OUT,
    LEARNING_TUNING,
    LEVEL_SPAN,
    ONBOARD_HELD_OUT,
    ONBOARD_RECORDING,
    ONBOARD_TUNING,
    PROJECT_HELD_OUT,
    ROTATED_HELD_OUT,
    ROTATED_TUNING,
    SCENE_TUNING,
    Bases,
)


def _box(x: float, y: float, w: float = 40.0, h: float = 40.0) -> list[float]:
    return [x, y, x + w, y + h]


def _proposal(box: list[float], n: int, *names: str) -> dict[str, Any]:
    return {"box": box, "class": None, "proposal": n, "rank": None,
            "candidates": [{"class": c, "score": 0.5} for c in names]}


class FakeWorkspace:
    """Frames in a queue; each save a new version; drawn boxes propose the classes
    labelled most, as the workspace's ranking fills empty places."""

    def __init__(self, frames: list[dict[str, Any]]) -> None:
        self.frames = {f["frame"]: f for f in frames}
        self.saves = 0
        self.labelled: Counter[str] = Counter()

    async def lease(self, after: int | None) -> dict[str, Any] | None:
        for n in sorted(self.frames):
            if (after is None or n > after) and not self.frames[n]["complete"]:
                return copy.deepcopy(self.frames[n])
        return None

    async def save(self, item: dict[str, Any], boxes: list[dict[str, Any]], *,
                   complete: bool) -> dict[str, Any]:
        frame = self.frames[item["frame"]]
        assert item["version"] == frame["version"], "a stale save"
        self.saves += 1
        shown = []
        for b in boxes:
            cands = b.get("candidates") or [{"class": c, "score": 0.0}
                                             for c, _ in self.labelled.most_common(3)]
            shown.append({**b, "candidates": cands})
        self.labelled = Counter(b["class"] for f in self.frames.values()
                                for b in (shown if f is frame else f["boxes"]) if b["class"])
        frame.update(boxes=shown, complete=complete, version=frame["version"] + 1)
        return copy.deepcopy(frame)


def _frame(n: int, boxes: list[dict[str, Any]]) -> dict[str, Any]:
    return {"frame": n, "pass": 1, "version": 0, "width": 640, "height": 480,
            "complete": False, "boxes": boxes, "source": "seq", "source_frame": n}


TRUTH = [
    Truth((100, 100, 140, 140), "coffee", 1.0),   # proposed, first candidate
    Truth((200, 100, 240, 140), "ramen", 1.0),    # proposed, second candidate
    Truth((300, 100, 340, 140), "sushi", 0.9),    # proposed, not among the candidates
    Truth((400, 100, 440, 140), "donut", 0.8),    # missed by the detector: drawn
    Truth((500, 100, 540, 140), "tray", 0.3),     # missed, mostly hidden: not drawn
    Truth((620, 300, 680, 340), "phone", 0.6),    # missed, half outside: drawn clipped
]


def _scene() -> dict[str, Any]:
    return _frame(1, [
        _proposal(_box(102, 101), 0, "coffee", "tea"),
        _proposal(_box(198, 98), 1, "greek_salad", "ramen", "pasta"),
        _proposal(_box(303, 104), 2, "phone", "wallet", "tray"),
        _proposal(_box(10, 400), 3, "napkin"),        # a false detection
        _proposal(_box(105, 104), 4, "coffee"),       # a second box on the coffee
    ])


def test_the_labeller_counts_one_action_per_accept_correct_delete_draw_and_completion(
        tmp_path: Path) -> None:
    workspace = FakeWorkspace([_scene()])
    log = tmp_path / "actions.jsonl"
    tally = asyncio.run(label_all(workspace, lambda item: TRUTH, Tally(), log=log))
    assert dict(tally.kinds) == {"accept": 2, "correct": 3, "delete": 2, "draw": 2,
                                 "complete": 1}
    assert tally.total == workspace.saves == 10
    assert tally.of("ramen") == 1 and tally.of("sushi") == 1
    assert dict(tally.by_class["donut"]) == {"draw": 1, "correct": 1}  # nothing labelled donut
    final = workspace.frames[1]
    assert final["complete"]
    assert sorted(b["class"] for b in final["boxes"]) == ["coffee", "donut", "phone", "ramen",
                                                          "sushi"]
    phone = next(b for b in final["boxes"] if b["class"] == "phone")
    assert phone["box"] == [620.0, 300.0, 640.0, 340.0] and phone["proposal"] is None
    ramen = next(b for b in final["boxes"] if b["class"] == "ramen")
    assert ramen["rank"] == 2 and ramen["proposal"] == 1  # the detector's box, accepted
    assert read_log(log).summary() == tally.summary()


def test_a_drawn_box_is_accepted_when_its_class_is_among_the_most_labelled() -> None:
    frames = [_frame(1, [_proposal(_box(100, 100), 0, "ramen")]), _frame(2, [])]
    truth = {1: [Truth((100, 100, 140, 140), "ramen", 1.0)],
             2: [Truth((300, 200, 340, 240), "ramen", 1.0)]}
    tally = asyncio.run(label_all(FakeWorkspace(frames), lambda item: truth[item["frame"]],
                                  Tally()))
    assert dict(tally.by_class["ramen"]) == {"accept": 2, "draw": 1}
    assert tally.kinds["complete"] == 2 and tally.total == 5


def test_boxes_pair_with_objects_best_overlap_first_once_each() -> None:
    boxes = [{"box": _box(105, 104)}, {"box": _box(102, 101)}, {"box": _box(300, 300)}]
    truth = [Truth((100, 100, 140, 140), "coffee", 1.0)]
    assert match(boxes, truth) == {1: 0}
    assert match(boxes, truth, box_iou=0.95) == {}


def test_a_half_labelled_frame_goes_on_from_where_it_stands() -> None:
    item = _scene()
    item["boxes"][0]["class"] = "coffee"
    action = next_action(item, TRUTH)
    assert action is not None and (action.kind, action.name, action.rank) == ("accept",
                                                                               "ramen", 2)
    assert action.boxes[0]["class"] == "coffee"
    assert next_action({**item, "complete": True}, TRUTH) is None


def test_a_workspace_that_does_not_keep_a_save_stops_the_labeller() -> None:
    class Forgetful(FakeWorkspace):
        async def save(self, item: dict[str, Any], boxes: list[dict[str, Any]], *,
                       complete: bool) -> dict[str, Any]:
            self.saves += 1
            return copy.deepcopy(item)

    with pytest.raises(RuntimeError, match="not complete"):
        asyncio.run(label_all(Forgetful([_scene()]), lambda item: TRUTH, Tally()))


def test_uniform_sampling_takes_the_middles_of_equal_spans_across_files() -> None:
    assert uniform_picks([100, 100], 4) == [(0, 26), (0, 76), (1, 26), (1, 76)]
    picks = uniform_picks([30, 50, 20], 10)
    assert len(set(picks)) == 10
    assert all(1 <= f <= (30, 50, 20)[s] for s, f in picks)
    assert [s for s, _ in picks] == sorted(s for s, _ in picks)
    shown = [18, 19, 40, 41]  # frames with a dish in view
    assert [nearest_shown(f, shown) for f in (1, 19, 20, 41, 60)] == [18, 19, 40, 41, 41]
    assert nearest_shown(7, []) == 7


def _scan(rng: np.random.Generator, frames: int, spread: float) -> Scan:
    """A scan with one dish track per frame whose look drifts by ``spread`` a frame."""
    out = Scan()
    for i in range(frames):
        out.numbers.append(i + 1)
        out.sharp.append(100.0)
        out.covered.append(False)
        out.has_tray.append(True)
        out.descriptors.append((np.full(8, i * spread) + rng.normal(0, 0.01, 8))
                               .astype(np.float32))
        out.det_frame.append(i)
        out.det_track.append(0)
    return out


def test_frames_are_chosen_from_every_recording_together(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    still, moving = _scan(rng, 40, 0.0), _scan(rng, 40, 0.5)
    choice = choose_frames([still, moving], 6)
    assert len(choice.picks) == 6 and choice.frames_read == 80
    assert sum(s == 0 for s, _ in choice.picks) <= 1  # the still file is one view
    assert all(1 <= f <= 40 for _, f in choice.picks)
    alone = choose_frames([moving], 6)
    assert {s for s, _ in alone.picks} == {0} and len({f for _, f in alone.picks}) == 6
    path = tmp_path / "scan.npz"
    save_scan(moving, path)
    again = load_scan(path)
    assert again.numbers == moving.numbers and again.det_track == moving.det_track
    assert np.allclose(np.stack(again.descriptors), np.stack(moving.descriptors))


def test_a_work_folder_made_with_other_options_is_refused(tmp_path: Path) -> None:
    from bench import onboard

    args = onboard.parse_args(["--work", str(tmp_path), "--epochs", "2"])
    onboard.check_work(args)
    onboard.check_work(onboard.parse_args(["--work", str(tmp_path), "--epochs", "2",
                                           "--held-out", "--threads", "1"]))
    with pytest.raises(SystemExit, match=r"epochs.*2 then, 6 now"):
        onboard.check_work(onboard.parse_args(["--work", str(tmp_path)]))


def test_the_trainers_cpu_time_is_read_from_proc() -> None:
    used = process_cpu_s(os.getpid())
    assert used is not None and used > 0
    assert process_cpu_s(2**22 + 1) is None


def _others() -> list[range]:
    def spans(bases: Bases, count: int = LEVEL_SPAN) -> list[range]:
        return [range(b, b + count) for b in bases.values()]

    return [DETECTOR_TEST, DETECTOR_TEST_LARGE, FEWLABEL_TEST, LEARNING_BANK,
            *spans(BILLING_HELD_OUT), *spans(ROTATED_HELD_OUT), *spans(BILLING_TUNING),
            *spans(BILLING_VALIDATION), *spans(SCENE_TUNING, 100), *spans(ROTATED_TUNING, 100),
            *spans(LEARNING_TUNING, 100), *spans(LEARNING_HELD_OUT, 100),
            range(1000, 1060), range(2000, 2005)]  # the shipped model's train and val seeds


def test_the_onboarding_seed_ranges_overlap_no_other_and_only_one_is_held_out() -> None:
    mine = [ONBOARD_RECORDING, ONBOARD_TUNING, ONBOARD_HELD_OUT]
    for i, a in enumerate(mine):
        assert not any(set(a) & set(b) for b in [*mine[i + 1:], *_others()]), a
    assert not set(ONBOARD_RECORDING) & set(HELD_OUT)
    assert not set(ONBOARD_TUNING) & set(HELD_OUT)
    assert ONBOARD_HELD_OUT.start in PROJECT_HELD_OUT
    assert ONBOARD_HELD_OUT[-1] in PROJECT_HELD_OUT


@pytest.mark.slow
def test_the_bench_runs_the_whole_way_on_the_real_daemon_and_resumes(tmp_path: Path) -> None:
    from bench import onboard

    out = tmp_path / "report.json"
    argv = ["--work", str(tmp_path / "work"), "--minutes", "0.5", "--seconds", "30",
            "--frames-per-dish", "1", "--every", "4", "--eval-sequences", "1",
            "--eval-seconds", "15", "--eval-every", "10", "--replay-seeds", "1000",
            "--replay-seconds", "10", "--epochs", "1", "--epoch-images", "8",
            "--threads", "1", "--train-threads", "1", "--json", str(out)]
    assert onboard.main(argv) == 0
    report = json.loads(out.read_text())
    assert report["recording"]["seeds"] == "18000" and report["k"] == 5
    assert report["evaluation"] == {"set": "tuning", "seeds": "19000", "seconds": 15.0,
                                    "every": 10}
    for method in ("select", "uniform"):
        row = report["rows"][method]
        assert row["frames"] == 5 and row["labelled"]["frames"] == 5
        assert row["labelled"]["by_kind"]["complete"] == 5
        assert row["labelled"]["actions"] >= 5 + row["labelled"]["by_kind"]["accept"]
        assert row["training"]["job"]["state"] == "done" and row["training"]["cpu_s"] > 0
        assert row["training"]["exported_epoch"] == 1
        assert 0.0 <= row["eval"]["base_dishes_map50"] <= 1.0
        assert row["eval"]["bills"]["bills_expected"] >= 1
    assert report["rows"]["select"]["picks"]["every"] == 4
    started = time.monotonic()
    assert onboard.main(argv) == 0  # everything is there: nothing is done again
    assert time.monotonic() - started < 60
    again = json.loads(out.read_text())
    assert again["rows"]["select"]["labelled"] == report["rows"]["select"]["labelled"]
