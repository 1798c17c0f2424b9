"""Tracking and billing evaluation: bill matching, MOT metrics, baselines, CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge import cli
from edge.billing.model import Bill, BillerStep, BillItem
from edge.config import SiteConfig, StreamConfig
from edge.eval.baselines import BASELINES, baseline_names
from edge.eval.bills import score_bills
from edge.eval.bytetrack import ByteTracker
from edge.eval.sequences import SequenceData, open_sequence, read_detections, write_detections
from edge.eval.tracking import (
    CategoryScorer,
    SystemSpec,
    evaluate_sequence,
    report,
    system_specs,
)
from edge.frames import Detections, Frame, Track
from edge.groundtruth import BillLine, BoxRecord, TrayRecord
from edge.sim.menu import BY_KEY, CLASS_NAMES, MENU
from edge.sim.writer import write_sequence

SEED = 9  # standard, 10 s at 320x240: two trays billed (checkout frames 117 and 175)
REQUIRED_KEYS = ("bill_exact_match", "item_precision", "item_recall", "idf1", "mota",
                 "id_switches", "baselines")


@pytest.fixture(scope="module")
def seq_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trk") / "seq"
    write_sequence(out, seed=SEED, seconds=10, size=(320, 240), difficulty="standard")
    return out


@pytest.fixture(scope="module")
def seq(seq_dir: Path) -> SequenceData:
    return open_sequence(seq_dir)


def gt_detections(seq: SequenceData) -> dict[int, Detections]:
    """Perfect detections: every ground-truth box at least half visible, score 1."""
    out = {}
    for frame, all_rows in seq.gt.items():
        rows = [r for r in all_rows if r.visibility >= 0.5]
        out[frame] = Detections(np.array([r.xyxy() for r in rows], np.float32).reshape(-1, 4),
                                np.ones(len(rows), np.float32),
                                np.array([r.class_id for r in rows], np.int32))
    return out


@pytest.fixture(scope="module")
def det_txt(seq_dir: Path, seq: SequenceData) -> Path:
    path = seq_dir / "gtdet" / "det.txt"
    write_detections(path, gt_detections(seq))
    return path


class Oracle:
    """Tracks = ground truth; one bill per tray at its checkout frame with its expected items."""

    def __init__(self, seq: SequenceData, *, drop: int = 0, extra_bills: Sequence[Bill] = (),
                 duplicate: bool = False) -> None:
        self.seq = seq
        self.due = {t.checkout_frame: t for t in seq.trays or () if t.checkout_frame}
        self.drop = drop  # items to leave off the first bill
        self.extra = {b.frame_seq: b for b in extra_bills}
        self.duplicate = duplicate

    def update(self, frame: Frame, detections: Detections | None) -> BillerStep:
        k = frame.seq + 1
        rows = self.seq.gt.get(k, [])
        tracks = tuple(Track(r.track_id, r.xyxy(), r.class_id, CLASS_NAMES[r.class_id], 1.0,
                             1, True) for r in rows)
        closed = []
        tray = self.due.get(k)
        if tray is not None:
            box = next(r.xyxy() for r in rows if r.track_id == tray.tray_id)
            lines = list(tray.items)
            if self.drop:
                lines, self.drop = lines[self.drop:], 0
            closed.append(make_bill(tray.tray_id, k - 1, box, [i.class_id for i in lines]))
            if self.duplicate:
                closed.append(make_bill(1000 + tray.tray_id, k - 1, box, []))
                self.duplicate = False
        if frame.seq in self.extra:
            closed.append(self.extra[frame.seq])
        return BillerStep(tracks, (), tuple(closed))


def make_bill(tray_id: int, frame_seq: int, box: tuple[float, float, float, float],
              classes: Sequence[int]) -> Bill:
    items = tuple(BillItem(c, MENU[c].key, MENU[c].name, MENU[c].price, 1.0, n, False)
                  for n, c in enumerate(classes))
    return Bill(f"eval-t-{tray_id}", "eval", tray_id, 0.0, 0.0, frame_seq, items,
                round(sum(i.price for i in items), 2), False, "crossed", box)


def oracle_spec(seq: SequenceData, **kw: Any) -> SystemSpec:
    return SystemSpec("oracle", lambda *a, **k: Oracle(seq, **kw), 0.0)


def run(seq: SequenceData, specs: list[SystemSpec]) -> dict[str, Any]:
    results, _ = evaluate_sequence(seq, specs, SiteConfig(), CLASS_NAMES,
                                   detections=gt_detections(seq), decode=False, progress=False)
    return {name: r.summary() for name, r in results.items()}


# ---------------------------------------------------------------- bills


def test_oracle_biller_scores_perfectly(seq: SequenceData) -> None:
    s = run(seq, [oracle_spec(seq)])["oracle"]
    assert s["bills_expected"] == 2
    assert s["bill_exact_match"] == 1.0
    assert s["item_precision"] == 1.0
    assert s["item_recall"] == 1.0
    assert s["false_bills"] == 0
    assert s["wrong_bills"] == []
    # ground truth as tracks: perfect tracking, the MOTChallenge way
    assert s["mota"] == 1.0
    assert s["idf1"] == 1.0
    assert s["id_switches"] == 0
    assert s["tray_mota"] == 1.0
    assert s["tray_idf1"] == 1.0


def test_dropping_one_dish_lowers_recall_by_one_item(seq: SequenceData) -> None:
    n_items = sum(len(t.items) for t in seq.trays or () if t.checkout_frame)
    s = run(seq, [oracle_spec(seq, drop=1)])["oracle"]
    assert s["item_recall"] == pytest.approx((n_items - 1) / n_items)
    assert s["item_precision"] == 1.0
    assert s["bill_exact_match"] == pytest.approx(0.5)
    (wrong,) = s["wrong_bills"]
    assert wrong["error"] == "wrong_items"
    assert sum(wrong["missed"].values()) == 1
    assert sum(v["missed"] for v in s["per_class_errors"].values()) == 1


def test_extra_and_duplicate_bills_count_as_errors(seq: SequenceData) -> None:
    coffee = BY_KEY["coffee"].id
    phantom = make_bill(999, 50, (0.0, 0.0, 8.0, 8.0), [coffee])  # no tray there
    s = run(seq, [oracle_spec(seq, extra_bills=[phantom])])["oracle"]
    assert s["false_bills"] == 1
    assert s["bill_exact_match"] == 1.0
    assert s["bill_error_rate"] == pytest.approx(0.5)
    assert s["item_precision"] < 1.0
    assert s["per_class_errors"] == {"coffee": {"missed": 0, "extra": 1}}

    s = run(seq, [oracle_spec(seq, duplicate=True)])["oracle"]
    assert s["bills_duplicated"] == 1
    assert s["bill_exact_match"] == pytest.approx(0.5)
    assert [w["error"] for w in s["wrong_bills"]] == ["duplicate"]


def _tray(tray_id: int, checkout: int | None, keys: Sequence[str]) -> TrayRecord:
    items = tuple(BillLine(100 + n, BY_KEY[k].id, k, BY_KEY[k].name, BY_KEY[k].price)
                  for n, k in enumerate(keys))
    return TrayRecord(tray_id, 1, 200, checkout, items)


def test_bill_matching_by_tray_box_boundary_and_never_crossed() -> None:
    box_a = (100.0, 50.0, 360.0, 250.0)
    box_b = (400.0, 50.0, 660.0, 250.0)
    trays = [_tray(1, 90, ["coffee", "coffee", "beer"]), _tray(2, 195, ["tea"]),
             _tray(3, None, ["pretzel"])]
    # tray 1 left the view at frame 100; its bill closes late (left_view) at frame 110
    boxes = {1: {f: box_a for f in range(1, 101)}, 2: {f: box_b for f in range(1, 201)},
             3: {f: (0.0, 300.0, 260.0, 480.0) for f in range(1, 201)}}
    coffee, beer, tea, pretzel = (BY_KEY[k].id for k in ("coffee", "beer", "tea", "pretzel"))
    bills = [
        make_bill(7, 109, (104.0, 52.0, 362.0, 251.0), [beer, coffee, coffee]),
        make_bill(8, 197, box_b, [tea]),  # crosses in the last second: ignored
        make_bill(9, 150, (2.0, 300.0, 262.0, 478.0), [pretzel]),  # tray never crossed
    ]
    c = score_bills(bills, trays, boxes, n_frames=200, fps=20.0)
    assert (c.expected, c.exact, c.ignored_bills, c.false_bills) == (1, 1, 1, 1)
    assert (c.item_tp, c.item_fp, c.item_fn) == (3, 1, 0)
    assert c.wrong[0]["why"] == "tray never reached the line"
    missing = score_bills([], trays, boxes, n_frames=200, fps=20.0)
    assert (missing.missing, missing.item_fn) == (1, 3)
    assert missing.summary()["bill_exact_match"] == 0.0


def test_tracks_on_ignored_ground_truth_are_neither_hits_nor_false_positives() -> None:
    coffee = BY_KEY["coffee"].id
    scorer = CategoryScorer({coffee}, {"coffee"})
    for f in range(1, 11):
        vis = 0.2 if 4 <= f <= 6 else 1.0  # under a hand for three frames
        gt = [BoxRecord(f, 5, 10.0 + f, 10.0, 40.0, 40.0, 1.0, coffee, vis)]
        tracks = [Track(77, (10.0 + f, 10.0, 50.0 + f, 50.0), coffee, "coffee", 1.0, f, True)]
        scorer.add(f, gt, tracks)
    c = scorer.counts()
    assert (c.objects, c.misses, c.false_positives, c.switches) == (7, 0, 0, 0)
    assert c.ignored_tracks == 3
    assert c.summary()["mota"] == 1.0


# ---------------------------------------------------------------- baselines


@pytest.mark.parametrize("name", list(BASELINES))
def test_each_baseline_bills_a_simple_sequence(seq: SequenceData, name: str) -> None:
    cls = BASELINES[name]
    spec = SystemSpec(name, cls, cls.min_score or 0.3, cls.identities)
    s = run(seq, [spec])[name]
    assert s["bills_closed"] >= 1
    assert s["item_recall"] > 0.5
    assert s["item_precision"] > 0.5
    if cls.identities:
        assert s["mota"] is not None and s["mota"] > 0.5
    else:
        assert s["mota"] is None


def test_baselines_are_biller_compatible_with_make_biller_arguments(seq: SequenceData) -> None:
    stream = StreamConfig(id="cam", url="synthetic://?seed=1", checkout=seq.checkout)
    for cls in BASELINES.values():
        biller = cls(stream, SiteConfig(), CLASS_NAMES, seq.width, seq.height, run_id="r")
        step = biller.update(Frame("cam", 0, np.zeros((2, 2, 3), np.uint8), 0.0), None)
        assert step.closed == ()


def test_baseline_names_parse() -> None:
    assert baseline_names("none") == []
    assert baseline_names("bytetrack, per_frame") == ["bytetrack", "per_frame"]
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_names("sort")


def test_report_pools_counts_and_names_missing_system(seq: SequenceData) -> None:
    specs = [oracle_spec(seq, drop=1)]
    results, _ = evaluate_sequence(seq, specs, SiteConfig(), CLASS_NAMES,
                                   detections=gt_detections(seq), decode=False, progress=False)
    rep = report([(seq, results), (seq, results)], specs, "edge.billing.biller is not available")
    assert rep["system"] is None
    assert rep["bill_exact_match"] is None
    pooled = rep["baselines"]["oracle"]
    assert pooled["bills_expected"] == 4
    assert pooled["bill_exact_match"] == pytest.approx(0.5)
    assert len(rep["sequences"]) == 2


# ---------------------------------------------------------------- CLI and inputs


def test_cli_writes_the_report(seq_dir: Path, det_txt: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "report.json"
    code = cli.main(["eval", "tracking", "--data", str(seq_dir), "--detections", str(det_txt),
                     "--baselines", "per_frame,bytetrack", "--json", str(out), "--quiet"])
    assert code == 0
    rep = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        assert key in rep
    assert set(rep["baselines"]) == {"per_frame", "bytetrack"}
    for key in REQUIRED_KEYS[:-1]:
        assert key in rep["baselines"]["bytetrack"]
    assert rep["sequences"][0]["frames"] == 200
    assert rep["baselines"]["bytetrack"]["bills_expected"] == 2
    printed = capsys.readouterr().out
    assert "bytetrack" in printed
    assert "exact %" in printed
    if rep["system"] is None:
        assert "edge.billing.biller" in rep["system_note"]


def test_detections_file_round_trips(seq: SequenceData, det_txt: Path) -> None:
    back = read_detections(det_txt, seq, len(CLASS_NAMES))
    mine = gt_detections(seq)
    f = next(f for f in sorted(mine) if len(mine[f]))
    np.testing.assert_allclose(back[f].boxes, mine[f].boxes, atol=0.01)
    np.testing.assert_array_equal(back[f].classes, mine[f].classes)


@pytest.mark.parametrize(("content", "message"), [
    ("1,-1,1,1,5,5,0.9,99,-1\n", "class 99 is not in"),
    ("999,-1,1,1,5,5,0.9,1,-1\n", "beyond the sequence"),
    ("1,-1,1,1,5\n", "columns"),
])
def test_bad_detections_exit_2_with_the_reason(seq_dir: Path, tmp_path: Path, content: str,
                                               message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "det.txt"
    bad.write_text(content)
    code = cli.main(["eval", "tracking", "--data", str(seq_dir), "--detections", str(bad),
                     "--quiet"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_data_dirs_exit_2(seq_dir: Path, det_txt: Path, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["eval", "tracking", "--data", str(tmp_path / "nope"), "--quiet"]) == 2
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli.main(["eval", "tracking", "--data", str(tmp_path / "empty"), "--quiet"]) == 2
    assert "gt/gt.txt" in capsys.readouterr().err
    assert cli.main(["eval", "tracking", "--data", str(seq_dir), str(seq_dir),
                     "--detections", str(det_txt), "--quiet"]) == 2
    assert "one per dir" in capsys.readouterr().err
    assert cli.main(["eval", "tracking", "--data", str(seq_dir),
                     "--detections", str(tmp_path / "missing.txt"), "--quiet"]) == 2
    assert "no such detections file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["eval", "tracking", "--data", str(seq_dir), "--baselines", "sort"])
    assert exc.value.code == 2


def test_system_specs_put_the_full_system_first_when_present() -> None:
    specs, note = system_specs(SiteConfig(), ["per_frame"])
    names = [s.name for s in specs]
    assert names[-1] == "per_frame"
    assert names[0] == "system" or "edge.billing.biller" in note


def test_without_trays_json_only_tracking_is_scored(seq: SequenceData) -> None:
    s = run(replace(seq, trays=None), [oracle_spec(seq)])["oracle"]
    assert s["bill_exact_match"] is None
    assert s["item_recall"] is None
    assert s["mota"] == 1.0


def test_detector_output_is_cached_and_reused(seq_dir: Path, tmp_path: Path) -> None:
    argv = ["eval", "tracking", "--data", str(seq_dir), "--det-cache", str(tmp_path),
            "--baselines", "per_frame", "--quiet", "--blank-frames"]
    assert cli.main([*argv, "--json", str(tmp_path / "a.json")]) == 0
    det = tmp_path / seq_dir.name / "det.txt"
    meta = json.loads((tmp_path / seq_dir.name / "det.json").read_text())
    assert meta["class_names"][0] == "tray"
    assert meta["frames"] == 200
    stamp = det.stat().st_mtime_ns
    assert cli.main([*argv, "--json", str(tmp_path / "b.json")]) == 0
    assert det.stat().st_mtime_ns == stamp
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["baselines"]["per_frame"]["item_recall"] == b["baselines"]["per_frame"]["item_recall"]


def test_bytetrack_low_scores_extend_tracks_but_never_start_them() -> None:
    ids = iter(range(1, 100))
    tracker = ByteTracker(0.5, 0.1, 0.6, 30, lambda: next(ids))
    seen = set()
    for f in range(20):
        x = 10.0 + 4 * f
        score = 0.9 if f < 8 or f >= 14 else 0.2  # blurred for six frames
        out = tracker.update([(x, 10.0, x + 40, 50.0), (300.0, 300.0, 340.0, 340.0)],
                             [score, 0.2], [1, 2])
        assert len(out) == 1  # the low-score box alone never becomes a track
        seen |= {t[0] for t in out if f > 1}
    assert len(seen) == 1
    track_id, box, cls, share, hits = out[0]
    assert track_id in seen
    assert hits == 20  # the low-score frames counted too
    assert cls == 1
    assert share == 1.0
    assert box[0] == pytest.approx(10.0 + 4 * 19, abs=2.0)
