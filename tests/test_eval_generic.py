"""`dishtracker eval tracking` on a plain MOTChallenge sequence: trackers, one class, no bills."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge import cli
from edge.eval.mot_metrics import MotAccumulator
from edge.eval.sequences import open_sequence
from edge.geometry import box_iou
from edge.groundtruth import by_frame, read_mot

TUD = Path(__file__).parent / "data" / "mot"


@pytest.fixture
def campus(tmp_path: Path) -> Path:
    """TUD-Campus as MOTChallenge ships it: seqinfo.ini and gt/gt.txt, no images."""
    seq = tmp_path / "TUD-Campus"
    (seq / "gt").mkdir(parents=True)
    shutil.copy(TUD / "TUD-Campus" / "seqinfo.ini", seq)
    shutil.copy(TUD / "TUD-Campus" / "gt" / "gt.txt", seq / "gt")
    return seq


def write_det(path: Path, gt: Path, *, columns: int) -> Path:
    """Detections = the ground truth's boxes, score 0.9, without a class (-1 or 7 columns)."""
    lines = []
    for r in read_mot(gt):
        row = f"{r.frame},-1,{r.x},{r.y},{r.w},{r.h},0.9"
        lines.append(row + (",-1,-1,-1" if columns == 10 else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def rescore(gt_txt: Path, tracks_txt: Path) -> float | None:
    gt, tr = by_frame(read_mot(gt_txt)), by_frame(read_mot(tracks_txt))
    acc = MotAccumulator()
    for f in range(1, max(*gt, *tr) + 1):
        g, t = gt.get(f, []), tr.get(f, [])
        acc.update([r.track_id for r in g], [r.track_id for r in t],
                   box_iou(np.array([r.xyxy() for r in g]).reshape(-1, 4),
                           np.array([r.xyxy() for r in t]).reshape(-1, 4)))
    idf1: float | None = acc.counts().summary()["idf1"]
    return idf1


@pytest.mark.parametrize("columns", [10, 7])
def test_plain_mot_sequence_scores_trackers_and_writes_their_tracks(
        campus: Path, tmp_path: Path, columns: int, capsys: pytest.CaptureFixture[str]) -> None:
    det = write_det(campus / "det" / "det.txt", campus / "gt" / "gt.txt", columns=columns)
    out, tracks = tmp_path / "rep.json", tmp_path / "tracks" / "campus.txt"
    code = cli.main(["eval", "tracking", "--data", str(campus), "--detections", str(det),
                     "--json", str(out), "--tracks-out", str(tracks), "--quiet"])
    assert code == 0
    rep = json.loads(out.read_text())
    assert rep["mode"] == "generic"
    assert rep["system"] == "edge.track.norfair_tracker.NorfairTracker"
    assert set(rep["baselines"]) == {"norfair", "bytetrack"}
    assert rep["bill_exact_match"] is None
    for row in (rep, *rep["baselines"].values()):
        assert 0.5 < row["idf1"] <= 1.0
        assert 0.5 < row["hota"] <= 1.0
        assert row["mota"] > 0.5
    printed = capsys.readouterr().out
    assert "HOTA" in printed
    assert "IDF1       " in printed  # the legend explains the columns
    # the written tracks are the ones scored: scoring them again gives the same IDF1
    assert rescore(campus / "gt" / "gt.txt", tracks) == pytest.approx(rep["idf1"])


def test_mot15_ground_truth_has_no_class_or_visibility() -> None:
    seq = open_sequence(TUD / "TUD-Stadtmitte")  # columns 8-10 are world coordinates
    rows = [r for rs in seq.gt.values() for r in rs]
    assert {r.class_id for r in rows} == {-1}
    assert {r.visibility for r in rows} == {-1.0}
    assert (seq.width, seq.height, seq.n_frames, seq.fps) == (640, 480, 179, 25.0)


def test_detections_with_and_without_classes_cannot_mix(
        campus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = write_det(tmp_path / "a" / "det.txt", campus / "gt" / "gt.txt", columns=7)
    classed = tmp_path / "b" / "det.txt"
    classed.parent.mkdir()
    classed.write_text("1,-1,10,10,50,50,0.9,0,-1\n")
    code = cli.main(["eval", "tracking", "--data", str(campus), str(campus),
                     "--detections", str(plain), str(classed), "--quiet"])
    assert code == 2
    assert "mixes files" in capsys.readouterr().err


def test_tracks_out_needs_one_file_per_sequence(campus: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    det = write_det(tmp_path / "det.txt", campus / "gt" / "gt.txt", columns=7)
    code = cli.main(["eval", "tracking", "--data", str(campus), "--detections", str(det),
                     "--tracks-out", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"),
                     "--quiet"])
    assert code == 2
    assert "--tracks-out names 2 file(s)" in capsys.readouterr().err
