"""The project's MOT metrics give motmetrics' and TrackEval's numbers, and pool like them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.eval.mot_metrics import ALPHAS, MotAccumulator, MotCounts
from edge.geometry import box_iou
from edge.groundtruth import by_frame, read_mot

DATA = Path(__file__).parent / "data" / "mot"
REFERENCE = json.loads((DATA / "reference.json").read_text())
CASES = [(seq, tracks) for seq in sorted(REFERENCE) for tracks in sorted(REFERENCE[seq])]


def score(seq: str, tracks: str) -> MotCounts:
    gt = by_frame(read_mot(DATA / seq / "gt" / "gt.txt"))
    tr = by_frame(read_mot(DATA / seq / tracks))
    acc = MotAccumulator()
    for f in range(1, max(*gt, *tr) + 1):
        g, t = gt.get(f, []), tr.get(f, [])
        iou = box_iou(np.array([r.xyxy() for r in g]).reshape(-1, 4),
                      np.array([r.xyxy() for r in t]).reshape(-1, 4))
        acc.update([r.track_id for r in g], [r.track_id for r in t], iou)
    return acc.counts()


def boxes_track(acc: MotAccumulator, frames: range, track_of: dict[int, int]) -> None:
    """One ground-truth object at a fixed box, tracked by ``track_of[frame]`` (-1: missed)."""
    for f in frames:
        tid = track_of.get(f, -1)
        acc.update([1], [tid] if tid >= 0 else [], np.ones((1, 1 if tid >= 0 else 0)))


@pytest.mark.parametrize(("seq", "tracks"), CASES)
def test_clear_mot_and_identity_equal_motmetrics(seq: str, tracks: str) -> None:
    ref = REFERENCE[seq][tracks]["motmetrics"]
    c = score(seq, tracks)
    assert (c.objects, c.misses, c.false_positives, c.switches) == (
        ref["num_objects"], ref["num_misses"], ref["num_false_positives"], ref["num_switches"])
    assert (c.idtp, c.idfp, c.idfn) == (ref["idtp"], ref["idfp"], ref["idfn"])
    s = c.summary()
    assert s["mota"] == pytest.approx(ref["mota"], abs=1e-12)
    assert s["idf1"] == pytest.approx(ref["idf1"], abs=1e-12)


@pytest.mark.parametrize(("seq", "tracks"), CASES)
def test_hota_equals_trackeval(seq: str, tracks: str) -> None:
    ref = REFERENCE[seq][tracks]["trackeval"]
    c = score(seq, tracks)
    assert list(c.hota_tp) == ref["hota_tp"]
    s = c.summary()
    for key in ("hota", "deta", "assa", "loca", "idf1"):
        assert s[key] == pytest.approx(ref[key], abs=1e-9), key


def test_pooling_a_sequence_with_itself_doubles_counts_and_keeps_every_rate() -> None:
    one = score("TUD-Campus", "noisy.txt")
    two = one + one
    assert two.objects == 2 * one.objects
    assert two.hota_tp == tuple(2 * v for v in one.hota_tp)
    for key in ("mota", "idf1", "hota", "deta", "assa", "loca"):
        assert two.summary()[key] == pytest.approx(one.summary()[key]), key


def test_pooled_hota_weights_association_by_true_positives() -> None:
    a, b = score("TUD-Campus", "noisy.txt"), score("TUD-Stadtmitte", "test.txt")
    pooled = (a + b).summary()
    tp = np.array(a.hota_tp) + np.array(b.hota_tp)
    ass = (np.array(a.hota_ass) + np.array(b.hota_ass)) / np.maximum(1, tp)
    assert pooled["assa"] == pytest.approx(float(ass.mean()))
    # pooled counts, never averaged rates: not the mean of the two sequences' HOTA
    assert pooled["hota"] != pytest.approx((a.summary()["hota"] + b.summary()["hota"]) / 2)


def test_a_track_kept_through_a_gap_is_no_switch_but_a_new_id_is() -> None:
    acc = MotAccumulator()
    boxes_track(acc, range(1, 11), {f: 7 for f in range(1, 11) if f not in (4, 5)})
    c = acc.counts()
    assert (c.objects, c.misses, c.switches, c.idtp) == (10, 2, 0, 8)
    acc = MotAccumulator()
    boxes_track(acc, range(1, 11), {f: 7 if f <= 5 else 8 for f in range(1, 11)})
    c = acc.counts()
    assert (c.switches, c.idtp, c.idfp, c.idfn) == (1, 5, 5, 5)
    s = c.summary()
    assert s["mota"] == pytest.approx(0.9)
    assert s["idf1"] == pytest.approx(0.5)
    # half the object's life under each id: every alpha's AssA is 1/2
    assert s["assa"] == pytest.approx(0.5)
    assert s["deta"] == pytest.approx(1.0)


def test_perfect_tracking_scores_one_and_no_tracks_score_zero() -> None:
    acc = MotAccumulator()
    boxes_track(acc, range(1, 6), dict.fromkeys(range(1, 6), 3))
    s = acc.counts().summary()
    assert (s["mota"], s["idf1"], s["hota"], s["loca"]) == (1.0, 1.0, 1.0, 1.0)
    acc = MotAccumulator()
    boxes_track(acc, range(1, 6), {})
    s = acc.counts().summary()
    assert (s["mota"], s["idf1"], s["hota"]) == (0.0, 0.0, 0.0)
    assert MotCounts().summary()["hota"] is None
    assert len(ALPHAS) == 19


def test_a_pair_below_the_threshold_is_a_miss_and_a_false_positive() -> None:
    acc = MotAccumulator()
    acc.update([1], [5], np.array([[0.49]]))
    c = acc.counts()
    assert (c.misses, c.false_positives, c.idtp) == (1, 1, 0)
    # HOTA still credits it at the alphas it reaches (0.05 .. 0.45)
    assert c.hota_tp[:9] == (1.0,) * 9
    assert c.hota_tp[9:] == (0.0,) * 10


def test_ignored_ground_truth_removes_the_track_on_it() -> None:
    acc = MotAccumulator()
    acc.update([1, 2], [5, 6], np.array([[0.9, 0.0], [0.0, 0.8]]),
               ignored=np.array([False, True]))
    c = acc.counts()
    assert (c.objects, c.false_positives, c.ignored_tracks, c.idtp) == (1, 0, 1, 1)
