"""Site config: defaults, TOML round trip, error messages, atomic writes, change lists."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from edge.config import (
    SiteConfig,
    changed_fields,
    classify_changes,
    json_schema,
    load_config,
    parse_config,
    to_toml,
    write_config_atomic,
)
from edge.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib


def _rich_config() -> SiteConfig:
    return parse_config({
        "server": {"port": 9090, "codec": "h264",
                   "ice_servers": [{"urls": ["stun:stun.example.org:3478"]},
                                   {"urls": ["turn:t.example.org"], "username": "u",
                                    "credential": 'p"w\\d'}]},
        "detector": {"threads": 2, "score_threshold": 0.45, "min_rate_hz": 5.0},
        "tracker": {"hit_counter_max": 30},
        "storage": {"dir": "/var/lib/dishtracker"},
        "streams": [
            {"id": "counter-1", "url": "rtsp://user:secret@10.0.0.5:554/stream1",
             "options": {"rtsp_flags": "prefer_tcp", "weird key": "tab\there"}},
            {"id": "usb_cam", "url": "/dev/video0", "enabled": False},
            {"id": "sim", "url": "synthetic://?seed=7&fps=20", "loop": False},
            {"id": "unicode", "url": "./caf\u00e9 \U0001F37D\x7f\x01.mp4"},
        ],
    })


def _errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return list(info.value.errors)  # type: ignore[attr-defined]


def test_defaults_are_valid_and_survive_a_round_trip() -> None:
    config = SiteConfig()
    assert parse_config({}) == config
    assert parse_config(tomllib.loads(to_toml(config))) == config
    assert [s.id for s in config.streams] == ["cam1"]


def test_toml_round_trip_keeps_every_field(tmp_path: Path) -> None:
    config = _rich_config()
    path = tmp_path / "site.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    assert load_config(path) == config


def test_load_without_path_gives_defaults() -> None:
    assert load_config(None) == SiteConfig()


@pytest.mark.parametrize(("data", "expected"), [
    ({"servr": {}}, "servr: Extra inputs are not permitted"),
    ({"server": {"prot": 1}}, "server.prot: Extra inputs are not permitted"),
    ({"server": {"port": "eighty"}}, "server.port: Input should be a valid integer"),
    ({"server": {"port": 0}}, "server.port: Input should be greater than or equal to 1"),
    ({"server": {"port": 70000}}, "server.port: Input should be less than or equal to 65535"),
    ({"detector": {"threads": 1.5}}, "detector.threads: Input should be a valid integer"),
    ({"detector": {"backend": "tflite"}}, "detector.backend: Input should be 'onnxruntime'"),
    ({"detector": {"min_rate_hz": 30.0, "max_rate_hz": 10.0}},
     "detector: Value error, min_rate_hz must not exceed max_rate_hz"),
    ({"streams": [{"id": "a", "url": "x.mp4"}, {"id": "a", "url": "y.mp4"}]},
     "(root): Value error, stream ids must be unique, repeated: ['a']"),
    ({"streams": [{"id": "bad id!", "url": "x.mp4"}]},
     "streams.0.id: String should match pattern"),
    ({"streams": [{"id": "x" * 33, "url": "x.mp4"}]}, "streams.0.id: String should match"),
    ({"streams": [{"id": "a"}]}, "streams.0.url: Field required"),
    ({"streams": [{"id": "a", "url": "ftp://cam/x"}]},
     "streams.0.url: Value error, unsupported URL scheme in 'ftp://cam/x'"),
    ({"streams": "cam1"}, "streams: Input should be a valid list"),
    ({"streams": [{"id": "a", "url": "x.mp4", "checkout": {"direction": [0, 0]}}]},
     "streams.0.checkout: Value error, direction must not be (0, 0)"),
    ({"streams": [{"id": "a", "url": "x.mp4",
                   "checkout": {"line": [[10, 0], [10, 0]]}}]},
     "streams.0.checkout: Value error, line needs two distinct points"),
    ({"menu": {"coffee": {"name": "Coffee", "price": -1}}},
     "menu.coffee.price: Input should be greater than or equal to 0"),
    ({"menu": {"coffee": {"price": 2.0}}}, "menu.coffee.name: Field required"),
    ({"billing": {"confirm_below": 1.5}},
     "billing.confirm_below: Input should be less than or equal to 1"),
])
def test_invalid_config_names_field_and_reason(data: dict[str, Any], expected: str) -> None:
    errors = _errors(data)
    assert any(e.startswith(expected) for e in errors), errors


def test_every_error_is_reported_at_once() -> None:
    errors = _errors({"server": {"port": -1, "codec": "mjpeg"}, "tracker": {"x": 1}})
    paths = sorted(e.split(":")[0] for e in errors)
    assert paths == ["server.codec", "server.port", "tracker.x"]


def test_malformed_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[server]\nport = 8080\nhost = "open\n')
    with pytest.raises(ConfigError, match=r"site\.toml: not valid TOML: .*line 3"):
        load_config(path)


def test_invalid_toml_values_name_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[server]\nport = 0\n')
    with pytest.raises(ConfigError, match=r"site\.toml: 1 error.*\n  server\.port: "):
        load_config(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: cannot read: No such file"):
        load_config(tmp_path / "nope.toml")


def test_write_is_atomic_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "site.toml"
    write_config_atomic(path, SiteConfig())
    first_inode = path.stat().st_ino
    config = _rich_config()
    write_config_atomic(path, config)
    assert load_config(path) == config
    assert path.stat().st_ino != first_inode  # replaced by rename, not rewritten in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["site.toml"]


def test_readers_never_see_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    configs = [SiteConfig(), _rich_config()]
    write_config_atomic(path, configs[0])
    seen: list[SiteConfig] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(load_config(path))  # raises on a torn file

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(40):
            write_config_atomic(path, configs[i % 2])
    finally:
        stop.set()
        thread.join()
    assert seen
    assert all(c in configs for c in seen)


def test_failed_write_keeps_old_file_and_cleans_up(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "site.toml"
    write_config_atomic(path, SiteConfig())
    before = path.read_bytes()

    def no_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_fsync)
    with pytest.raises(OSError, match="No space left"):
        write_config_atomic(path, _rich_config())
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["site.toml"]


def test_changes_are_listed_by_field_path_and_stream_id() -> None:
    old = SiteConfig()
    new = parse_config({"server": {"port": 9000}, "tracker": {"iou_threshold": 0.5},
                        "streams": [{"id": "cam1", "url": "synthetic://?seed=2"},
                                    {"id": "cam2", "url": "/dev/video0"}]})
    assert changed_fields(old, new) == ["server.port", "tracker.iou_threshold",
                                        "streams.cam1.url", "streams.cam2"]
    assert classify_changes(old, new) == {
        "applied": ["tracker.iou_threshold", "streams.cam1.url", "streams.cam2"],
        "restart_required": ["server.port"]}
    assert changed_fields(new, new) == []


def test_reordered_streams_count_as_one_change() -> None:
    a = _rich_config()
    b = a.model_copy(update={"streams": list(reversed(a.streams))})
    assert changed_fields(a, b) == ["streams"]


def test_schema_describes_every_table() -> None:
    schema = json_schema()
    assert set(schema["properties"]) == {"max_streams", "server", "detector", "tracker",
                                         "storage", "billing", "menu", "streams", "fleet",
                                         "till", "rollout", "learning"}
