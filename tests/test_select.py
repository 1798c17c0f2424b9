"""``dishtracker calibrate select``: distinct views over near-copies, skipped frames, output."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
import pytest

from calibration.numbered_frames import NumberedFrames
from calibration.select import open_detector, select_frames
from edge.cli import main
from edge.config import DEFAULT_MODEL
from edge.detect.onnxrt import OnnxRuntimeDetector
from edge.sim.scene import Scene

Image = npt.NDArray[np.uint8]
SEED = 1002  # a training seed: a tray with five dishes enters at frame 56 (easy level)
MOVING = range(56, 100, 4)  # 11 frames of the tray sliding in
STILL = 100  # then it stands still
STILL_COPIES = 30


@pytest.fixture(scope="module")
def renders() -> tuple[list[Image], Image]:
    scene = Scene(SEED, difficulty="easy")
    frames = {f: img for f, img, _ in scene.frames(STILL + 1)}
    return [frames[f] for f in MOVING], frames[STILL]


@pytest.fixture(scope="module")
def detector() -> OnnxRuntimeDetector:
    return open_detector(DEFAULT_MODEL, 2, 0.25)


def _noisy(image: Image, seed: int) -> Image:
    noise = np.random.default_rng(seed).normal(0, 2.0, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def _clip(renders: tuple[list[Image], Image]) -> list[Image]:
    """The tray slides in (11 frames), then stands still (30 near-copies)."""
    moving, still = renders
    return [*moving, *(_noisy(still, i) for i in range(STILL_COPIES))]


def _write_dir(folder: Path, images: list[Image], *, names: str = "{:06d}.png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images, 1):
        cv2.imwrite(str(folder / names.format(i)), image)
    return folder


def _write_video(path: Path, images: list[Image]) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=20)
        stream.width, stream.height = images[0].shape[1], images[0].shape[0]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for image in images:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")))
        container.mux(stream.encode())
    return path


def test_selection_prefers_distinct_views_over_a_tray_standing_still(
        tmp_path: Path, renders: tuple[list[Image], Image],
        detector: OnnxRuntimeDetector) -> None:
    source = _write_dir(tmp_path / "clip", _clip(renders))
    k = 5
    doc = select_frames(NumberedFrames(str(source)), detector, k, progress=False)
    still = set(range(len(MOVING) + 1, len(MOVING) + STILL_COPIES + 1))
    uniform = np.linspace(1, len(MOVING) + STILL_COPIES, k).round().astype(int)
    assert sum(int(n) in still for n in uniform) >= 3  # uniform picks near-copies
    assert len(doc["frames"]) == k
    assert sum(n in still for n in doc["frames"]) <= 1
    assert doc["tracks_covered"] >= 3


def test_every_nth_frame_is_scanned_and_only_those_are_chosen(
        tmp_path: Path, renders: tuple[list[Image], Image],
        detector: OnnxRuntimeDetector, capsys: pytest.CaptureFixture[str]) -> None:
    clip = _clip(renders)
    source = _write_dir(tmp_path / "clip", clip)
    doc = select_frames(NumberedFrames(str(source)), detector, 4, every=3, progress=False)
    scanned = set(range(1, len(clip) + 1, 3))
    assert doc["frames_read"] == len(scanned) and doc["method"]["every"] == 3
    assert len(doc["frames"]) == 4 and set(doc["frames"]) <= scanned
    assert main(["calibrate", "select", "--source", str(source), "--frames", "2",
                 "--every", "0", "--out", str(tmp_path / "sel"), "--quiet"]) == 2
    assert "--every must be >= 1" in capsys.readouterr().err


def test_blurred_frames_and_a_hand_over_the_tray_are_skipped(
        tmp_path: Path, renders: tuple[list[Image], Image],
        detector: OnnxRuntimeDetector) -> None:
    images = _clip(renders)
    blurred = {3, 6, 9}  # 1-based: sliding frames, each a new view if it were sharp
    for n in blurred:
        images[n - 1] = cv2.GaussianBlur(images[n - 1], (0, 0), 4)
    covered = set(range(20, 26))  # a hand (skin over the whole tray) while it stands
    for n in covered:
        image = images[n - 1].copy()
        cv2.rectangle(image, (0, 130), (639, 360), (140, 170, 215), -1)
        images[n - 1] = image
    source = _write_dir(tmp_path / "clip", images)
    doc = select_frames(NumberedFrames(str(source)), detector, 10, progress=False)
    assert not blurred & set(doc["frames"])
    assert not covered & set(doc["frames"])
    assert doc["skipped"]["blurred"] >= len(blurred)
    assert doc["skipped"]["hand"] >= len(covered) - 2  # the first frames: tracks still alive


def test_cli_writes_images_and_selection_json_with_1_based_numbers(
        tmp_path: Path, renders: tuple[list[Image], Image], capsys: pytest.CaptureFixture[str],
) -> None:
    images = _clip(renders)[:20]
    video = _write_video(tmp_path / "clip.mp4", images)
    out = tmp_path / "sel"
    assert main(["calibrate", "select", "--source", str(video), "--frames", "4",
                 "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "selection.json").read_text())
    assert doc["source"] == str(video)
    assert doc["frames"] == sorted(doc["frames"])
    assert len(doc["frames"]) == len(set(doc["frames"])) == 4
    assert all(1 <= n <= len(images) for n in doc["frames"])
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(f"frame_{n:06d}.jpg" for n in doc["frames"]), "selection.json"])
    for n in doc["frames"]:  # frame n is the n-th picture of the video (1-based, as gt.txt)
        written = cv2.imread(str(out / f"frame_{n:06d}.jpg")).astype(float)
        errors = [np.abs(written - im).mean() for im in images]
        assert int(np.argmin(errors)) + 1 == n or errors[n - 1] < 3.0
    assert "wrote" in capsys.readouterr().out


def test_image_folder_without_numbered_names_counts_from_one(
        tmp_path: Path, renders: tuple[list[Image], Image],
        detector: OnnxRuntimeDetector) -> None:
    source = _write_dir(tmp_path / "shots", renders[0][:6], names="shot_{}.png")
    frames = NumberedFrames(str(source))
    assert [n for n, _ in frames.frames()] == [1, 2, 3, 4, 5, 6]
    doc = select_frames(frames, detector, 2, progress=False)
    assert set(doc["frames"]) <= {1, 2, 3, 4, 5, 6}


def test_more_frames_asked_than_usable_selects_each_usable_frame_once(
        tmp_path: Path, renders: tuple[list[Image], Image],
        capsys: pytest.CaptureFixture[str]) -> None:
    source = _write_dir(tmp_path / "clip", renders[0][:8])
    out = tmp_path / "sel"
    assert main(["calibrate", "select", "--source", str(source), "--frames", "50",
                 "--out", str(out), "--quiet"]) == 0
    doc = json.loads((out / "selection.json").read_text())
    assert len(doc["frames"]) == len(set(doc["frames"])) == doc["usable"] <= 8
    assert "only" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["missing", "text", "empty", "corrupt_video"])
def test_bad_source_is_a_clear_error(tmp_path: Path, kind: str,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "src"
    if kind == "text":
        source = tmp_path / "notes.txt"
        source.write_text("hello")
    elif kind == "empty":
        source.mkdir()
    elif kind == "corrupt_video":
        source = tmp_path / "broken.mp4"
        source.write_bytes(b"\x00not a video" * 100)
    out = tmp_path / "sel"
    assert main(["calibrate", "select", "--source", str(source), "--frames", "3",
                 "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"--source {source}" in err
    assert not out.exists()


def test_a_crash_while_writing_leaves_nothing_half_written(
        tmp_path: Path, renders: tuple[list[Image], Image],
        monkeypatch: pytest.MonkeyPatch) -> None:
    source = _write_dir(tmp_path / "clip", renders[0][:6])
    written: list[str] = []
    real = cv2.imwrite

    def failing(path: str, image: Image, params: list[int]) -> bool:
        if written:
            raise OSError("disk full")
        written.append(path)
        return bool(real(path, image, params))

    monkeypatch.setattr("calibration.select.cv2.imwrite", failing)
    with pytest.raises(OSError, match="disk full"):
        main(["calibrate", "select", "--source", str(source), "--frames", "3",
              "--out", str(tmp_path / "sel"), "--quiet"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip"]


def test_an_existing_output_folder_is_refused(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sel"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["calibrate", "select", "--source", str(tmp_path), "--frames", "3",
                 "--out", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
