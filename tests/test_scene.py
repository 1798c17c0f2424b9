"""Scene calibration: tray direction and speed from video, the scene file, the config merge."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

from calibration.motion import MotionEstimator, NoMotionError, checkout_line, simulated_motion
from edge.cli import main
from edge.config import load_config, parse_config, to_toml
from edge.errors import ConfigError
from edge.groundtruth import read_mot, read_trays
from edge.scene import SceneCalibration, read_scene, write_scene
from edge.sim.menu import CLASS_NAMES, TRAY_ID
from edge.sim.scene import Scene
from edge.sim.writer import write_sequence

SIZE = (320, 240)
SECONDS = 9.0


def _angle_error(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)


@pytest.fixture(scope="module")
def turned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short standard sequence filmed with the counter turned by 120 degrees."""
    out = tmp_path_factory.mktemp("sim") / "turned"
    write_sequence(out, seed=15301, seconds=SECONDS, size=SIZE, angle_deg=120.0)
    return out


def _calibrate(video: Path | str, out: Path, *extra: str) -> int:
    return main(["calibrate", "scene", "--source", str(video), "--seconds", "60",
                 "--out", str(out), "--quiet", *extra])


def test_plain_sequence_direction_speed_and_line(tmp_path: Path) -> None:
    seq = tmp_path / "plain"
    write_sequence(seq, seed=15300, seconds=SECONDS, size=SIZE, difficulty="hard")
    assert _calibrate(seq / "video.mp4", tmp_path / "scene.toml") == 0
    scene = read_scene(tmp_path / "scene.toml")
    true_deg, true_speed = simulated_motion(Scene(15300, size=SIZE, difficulty="hard"),
                                            round(SECONDS * 20))
    assert _angle_error(scene.direction_deg, true_deg) < 5.0
    assert scene.speed_px_s == pytest.approx(true_speed, rel=0.10)
    assert scene.size == SIZE
    (x1, _), (x2, _) = scene.line
    assert x1 == pytest.approx(x2, abs=3)  # vertical, as the hand-set line
    assert x1 == pytest.approx(0.62 * SIZE[0], abs=0.05 * SIZE[0])
    assert (tmp_path / "scene.png").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain", "scene.png", "scene.toml"]


def test_turned_camera_direction_and_speed(turned: Path, tmp_path: Path) -> None:
    assert _calibrate(turned / "video.mp4", tmp_path / "scene.toml") == 0
    scene = read_scene(tmp_path / "scene.toml")
    true_deg, true_speed = simulated_motion(Scene(15301, size=SIZE, angle_deg=120.0),
                                            round(SECONDS * 20))
    assert true_deg == pytest.approx(120.0)
    assert _angle_error(scene.direction_deg, 120.0) < 5.0
    assert scene.speed_px_s == pytest.approx(true_speed, rel=0.10)
    (x1, y1), (x2, y2) = scene.line
    along_line = (x2 - x1) * scene.direction[0] + (y2 - y1) * scene.direction[1]
    assert abs(along_line) < 1e-3 * math.hypot(x2 - x1, y2 - y1) + 0.05  # perpendicular


def test_turned_simulator_ground_truth_follows_the_camera(turned: Path) -> None:
    _, meta = read_trays(turned / "gt" / "trays.json")
    dx, dy = meta["direction"]
    assert math.degrees(math.atan2(dy, dx)) == pytest.approx(120.0)
    assert meta["angle_deg"] == 120.0
    (x1, y1), (x2, y2) = meta["checkout_line"]
    assert (x2 - x1) * dx + (y2 - y1) * dy == pytest.approx(0.0, abs=1e-6)
    # a tray's box centre moves along the direction between its first and last full view
    tray = [r for r in read_mot(turned / "gt" / "gt.txt") if r.class_id == TRAY_ID]
    first_id = tray[0].track_id
    mine = [r for r in tray if r.track_id == first_id and r.visibility > 0.99]
    (ax, ay), (bx, by) = ((r.x + r.w / 2, r.y + r.h / 2) for r in (mine[0], mine[-1]))
    moved = math.degrees(math.atan2(by - ay, bx - ax))
    assert _angle_error(moved, 120.0) < 12.0


def test_synthetic_source_calibrates_without_a_file(tmp_path: Path) -> None:
    url = "synthetic://?seed=15302&size=320x240&difficulty=easy"
    assert main(["calibrate", "scene", "--source", url, "--seconds", "8",
                 "--out", str(tmp_path / "s.toml"), "--quiet"]) == 0
    scene = read_scene(tmp_path / "s.toml")
    assert _angle_error(scene.direction_deg, 0.0) < 5.0
    assert scene.source == url and scene.frames == 161


def test_zero_angle_renders_exactly_as_before() -> None:
    plain, zero = Scene(7, size=SIZE), Scene(7, size=SIZE, angle_deg=0.0)
    for f in (0, 40, 80):
        a, ta = plain.render(f)
        b, tb = zero.render(f)
        assert np.array_equal(a, b) and ta == tb
    assert zero.direction == (1.0, 0.0) and zero.to_picture(3.0, 4.0) == (3.0, 4.0)


def test_still_video_says_no_trays_moved(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    video = tmp_path / "still.mp4"
    rng = np.random.default_rng(0)
    still = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    with av.open(str(video), "w") as container:
        stream = container.add_stream("libx264", rate=20)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(still, format="bgr24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    out = tmp_path / "out" / "scene.toml"
    assert _calibrate(video, out) == 2
    assert "no trays moved in 3 s" in capsys.readouterr().err
    assert not out.parent.exists() or not any(out.parent.iterdir())  # nothing half-written


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: str(d / "missing.mp4"), "no such file"),
    (lambda d: (d / "notes.mp4").write_text("not a video") and str(d / "notes.mp4"),
     "cannot open"),
    (lambda d: "ftp://host/x", "unsupported scheme"),
    (lambda d: "synthetic://?seed=x", "seed"),
])
def test_bad_sources_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      make: object, message: str) -> None:
    source = make(tmp_path)  # type: ignore[operator]
    assert _calibrate(source, tmp_path / "scene.toml") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "scene.toml").exists()


def test_estimator_ignores_stops_and_reversals() -> None:
    """A textured block moves 3 px/frame, stands still, is pulled back briefly, moves again."""
    rng = np.random.default_rng(3)
    texture = rng.integers(0, 255, (60, 90), dtype=np.uint8)
    steps = [3.0] * 30 + [0.0] * 25 + [-2.0] * 6 + [3.0] * 30
    est = MotionEstimator(320, 240)
    x = 10.0
    for i, step in enumerate([0.0, *steps]):
        x += step
        img = np.full((240, 320), 90, np.uint8)
        img[100:160, round(x):round(x) + 90] = texture
        est.add(np.dstack([img] * 3), i / 20)
    motion = est.result()
    assert _angle_error(math.degrees(math.atan2(*motion.direction[::-1])), 0.0) < 1.0
    assert motion.speed_px_s == pytest.approx(60.0, rel=0.05)  # 3 px x 20 fps, stops excluded
    assert motion.moving_frames <= 62
    with pytest.raises(NoMotionError, match="no trays moved"):
        MotionEstimator(320, 240).result()


def test_line_sits_across_the_region() -> None:
    region = ((0.0, 100.0), (640.0, 100.0), (640.0, 380.0), (0.0, 380.0))
    assert checkout_line(region, (1.0, 0.0), 0.62, (640, 480)) == ((396.8, 100.0),
                                                                  (396.8, 380.0))
    (x1, _), (x2, _) = checkout_line(region, (-1.0, 0.0), 0.62, (640, 480))
    assert x1 == x2 == pytest.approx(640 - 396.8)  # entry on the right


def _scene(**kw: object) -> SceneCalibration:
    base: dict[str, object] = {
        "size": (640, 480), "direction": (0.0, 1.0), "speed_px_s": 150.25,
        "region": ((100.0, 0.0), (500.0, 0.0), (500.0, 480.0), (100.0, 480.0)),
        "line": ((100.0, 297.6), (500.0, 297.6)), "source": "rtsp://u:***@cam/1",
        "seconds": 60.0, "frames": 1200, "moving_frames": 900,
        "direction_spread_deg": 2.5, "created": "2025-01-01T00:00:00+00:00"}
    return SceneCalibration(**{**base, **kw})  # type: ignore[arg-type]


def test_scene_file_round_trip(tmp_path: Path) -> None:
    scene = _scene()
    write_scene(tmp_path / "s.toml", scene)
    assert read_scene(tmp_path / "s.toml") == scene
    assert (tmp_path / "s.toml").stat().st_mode & 0o777 == 0o644  # the daemon's user reads it
    assert scene.direction_deg == pytest.approx(90.0)


def test_site_config_uses_the_scene_for_line_and_tray_motion(tmp_path: Path) -> None:
    from edge.billing.biller import make_biller  # Norfair only for this test

    (tmp_path / "scenes").mkdir()
    write_scene(tmp_path / "scenes" / "cam1.toml", _scene())
    site = tmp_path / "site.toml"
    site.write_text('[[streams]]\nid = "cam1"\nurl = "synthetic://?seed=1"\n'
                    'scene = "scenes/cam1.toml"\n'
                    '[streams.checkout]\nhysteresis_px = 20.0\nline = [[1, 1], [2, 2]]\n')
    config = load_config(site)
    stream = config.streams[0]
    assert stream.scene == (tmp_path / "scenes" / "cam1.toml").absolute()
    assert stream.checkout.line == ((100.0, 297.6), (500.0, 297.6))  # the scene wins
    assert stream.checkout.direction == (0.0, 1.0)
    assert stream.checkout.speed_px_s == 150.25 and len(stream.checkout.region or ()) == 4
    assert stream.checkout.hysteresis_px == 20.0  # the site's
    biller = make_biller(stream, config, CLASS_NAMES, 640, 480, snapshots=False)
    assert biller.line.direction == (0.0, 1.0)
    assert biller.line.distance(300.0, 310.0) == pytest.approx(12.4)
    # written back and read again (scene path now absolute): the same config
    again = tmp_path / "again.toml"
    again.write_text(to_toml(config))
    assert load_config(again) == config


def test_bad_scene_files_name_stream_file_and_field(tmp_path: Path) -> None:
    def errors(text: str | None) -> str:
        path = tmp_path / "bad.toml"
        path.unlink(missing_ok=True)
        if text is not None:
            path.write_text(text)
        with pytest.raises(ConfigError) as info:
            parse_config({"streams": [{"id": "a", "url": "synthetic://"},
                                      {"id": "b", "url": "x.mp4", "scene": str(path)}]})
        return str(info.value)

    assert "streams.1.scene" in errors(None) and "cannot read scene file" in errors(None)
    assert "not valid TOML" in errors("format = ")
    assert "expected 'dishtracker-scene/1'" in errors('format = "other"\n')
    good = (tmp_path / "good.toml")
    write_scene(good, _scene())
    text = good.read_text()
    assert "checkout.speed_px_s: missing" in errors(text.replace("speed_px_s = 150.25\n", ""))
    assert "line needs two distinct points" in errors(
        text.replace("line = [[100.0, 297.6], [500.0, 297.6]]",
                     "line = [[1.0, 1.0], [1.0, 1.0]]"))
    assert "set hysteresis_px in the site config" in errors(
        text.replace("[checkout]\n", "[checkout]\nhysteresis_px = 3.0\n"))
    assert "calibration.size" in errors(text.replace("size = [640, 480]", "size = [640]"))
    assert "[checkout] table missing" in errors('format = "dishtracker-scene/1"\n')
