"""``dishtracker check-config`` is the daemon's own start check: every problem at once.

The CLI runs in this process (``edge.cli.main``) except where the test is
about the process: ``dishtracker run`` refusing the same file with the same
lines. Real files, folders and permissions in ``tmp_path``; the shipped model.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge.checks import check_config, check_site
from edge.cli import main
from edge.config import DEFAULT_MODEL, SiteConfig, load_config, parse_config
from edge.daemon import serve
from edge.errors import ConfigError
from edge.pipeline import Pipeline
from edge.stream_url import check_stream_url
from edge.web.app import make_app

pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="shipped model missing")

TOKEN = "t" * 43


def _site(tmp_path: Path, body: str = "", *, name: str = "site.toml") -> Path:
    """A site config in ``tmp_path`` whose storage is ``tmp_path/var`` unless ``body`` says."""
    path = tmp_path / name
    storage = "" if "[storage]" in body else f'[storage]\ndir = "{tmp_path / "var"}"\n'
    path.write_text(storage + body)
    return path


def _check(capsys: pytest.CaptureFixture[str], path: Path, *flags: str) -> tuple[int, str, str]:
    code = main(["check-config", *flags, str(path)])
    out, err = capsys.readouterr()
    return code, out, err


BAD = """
[detector]
model = "{model}"

[[streams]]
id = "counter"
url = "rtsp://admin:pw@cam 1:554/live"
"""


def test_missing_model_and_malformed_rtsp_url_are_both_listed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(tmp_path, BAD.format(model=tmp_path / "gone.onnx"))
    code, out, err = _check(capsys, site)
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert f"{site}: detector.model: {tmp_path / 'gone.onnx'}: no such model file" in lines
    assert any(line.startswith(f"{site}: streams.0.url: ") and "space" in line
               for line in lines), lines
    assert len(lines) == 2, lines
    assert "pw" not in err  # the camera password stays out of the messages


def test_json_output_lists_the_same_errors(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(tmp_path, BAD.format(model=tmp_path / "gone.onnx"))
    code, out, _ = _check(capsys, site, "--json")
    body = json.loads(out)
    assert code == 2
    assert body["valid"] is False and body["errors"] == check_site(site)
    assert [e.split(":")[0] for e in body["errors"]] == ["streams.0.url", "detector.model"]
    clean = _site(tmp_path, "", name="clean.toml")
    code, out, _ = _check(capsys, clean, "--json")
    assert code == 0 and json.loads(out) == {"file": str(clean), "valid": True, "errors": []}


def test_clean_default_config_is_valid_and_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(tmp_path)
    code, out, err = _check(capsys, site)
    assert (code, err) == (0, "")
    assert out == f"valid: {site} (1 stream, model {DEFAULT_MODEL}, onnxruntime)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.toml"]  # no var/, no token


def test_toml_syntax_error_names_line_and_column(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(tmp_path, '[server]\nport = 8080\nhost = = "x"\n')
    code, _, err = _check(capsys, site)
    assert code == 2
    assert err.startswith(f"{site}: line 5, column 8: not valid TOML: ")  # 2 storage lines above
    (tmp_path / "latin1.toml").write_bytes(b'[server]\nhost = "caf\xe9"\n')
    assert check_site(tmp_path / "latin1.toml") == [
        "line 2, column 12: not UTF-8 text (TOML files are UTF-8)"]
    assert check_site(tmp_path / "absent.toml") == ["cannot read: No such file or directory"]


def test_every_schema_error_at_once(tmp_path: Path) -> None:
    site = _site(tmp_path, """
[server]
port = 70000
max_peers = 0

[tracker]
iou_threshold = 2

[[streams]]
id = "a b"
url = "udp://239.0.0.1"

[[streams]]
id = "ok"
url = "rtsp://cam:99999/x"
""")
    paths = [line.split(":")[0] for line in check_site(site)]
    assert paths == ["server.port", "server.max_peers", "tracker.iou_threshold",
                     "streams.0.id", "streams.0.url", "streams.1.url"]


def test_sections_that_validate_are_still_checked_when_others_do_not(tmp_path: Path) -> None:
    """A schema error in [server] does not hide a bad synthetic query or scene of a valid
    stream; an invalid stream gets no file checks (its schema error says enough)."""
    site = _site(tmp_path, f"""
[server]
port = 0

[[streams]]
id = "sim"
url = "synthetic://?seed=1&colour=red"
scene = "{tmp_path / 'nowhere.toml'}"

[[streams]]
id = "clip"
url = "{tmp_path / 'missing.mp4'}"

[[streams]]
id = "bad id"
url = "{tmp_path / 'also-missing.mp4'}"
""")
    lines = check_site(site)
    assert [line.split(":")[0] for line in lines] == [
        "server.port", "streams.2.id", "streams.0.url", "streams.0.scene", "streams.1.url"]
    assert "unknown key(s) ['colour']" in lines[2]
    assert "cannot read scene file" in lines[3]
    assert lines[4] == f"streams.1.url: {tmp_path / 'missing.mp4'}: no such file"


def test_bad_scene_files(tmp_path: Path) -> None:
    (tmp_path / "not-a-scene.toml").write_text('format = "something else"\n')
    (tmp_path / "broken.toml").write_text("format = \n")
    site = _site(tmp_path, """
[[streams]]
id = "a"
url = "synthetic://?seed=1"
scene = "not-a-scene.toml"

[[streams]]
id = "b"
url = "synthetic://?seed=2"
scene = "broken.toml"
""")
    lines = check_site(site)
    assert len(lines) == 2, lines
    assert lines[0].startswith("streams.0.scene: ") and "expected 'dishtracker-scene" in lines[0]
    assert lines[1].startswith("streams.1.scene: ") and "not valid TOML" in lines[1]


@pytest.mark.parametrize("where", ["default", "token_file"])
def test_a_token_file_others_may_read_is_refused(tmp_path: Path, where: str) -> None:
    token = tmp_path / "var" / "token" if where == "default" else tmp_path / "secret"
    token.parent.mkdir(exist_ok=True)
    token.write_text(TOKEN + "\n")
    token.chmod(0o644)
    body = f'[server]\ntoken_file = "{token}"\n' if where == "token_file" else ""
    lines = check_site(_site(tmp_path, body))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"server.token_file: the token file {token} has mode 0644")
    token.chmod(0o600)
    assert check_site(_site(tmp_path, body)) == []


def test_a_token_store_others_may_read_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "var" / "tokens.json"
    store.parent.mkdir()
    store.write_text('{"tokens": []}')
    store.chmod(0o644)
    lines = check_site(_site(tmp_path))
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"storage.dir: the token store {store} has mode 0644")
    store.chmod(0o600)
    assert check_site(_site(tmp_path)) == []


def test_a_named_token_file_must_exist_and_the_default_one_is_not_made(tmp_path: Path) -> None:
    missing = tmp_path / "no-token"
    lines = check_site(_site(tmp_path, f'[server]\ntoken_file = "{missing}"\n'))
    assert len(lines) == 1 and lines[0].startswith(f"server.token_file: {missing} does not exist")
    (tmp_path / "var").mkdir()
    assert check_site(_site(tmp_path)) == []
    assert not (tmp_path / "var" / "token").exists()


def test_storage_tls_and_fleet_problems(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    site = _site(tmp_path, f"""
[server]
tls_cert = "{tmp_path / 'cert.pem'}"
tls_key = "{tmp_path / 'key.pem'}"

[storage]
dir = "{tmp_path / 'a-file' / 'var'}"

[fleet]
enabled = true
site = "north"
username = "box"
password_file = "{tmp_path / 'pw'}"
""")
    lines = [line for line in check_site(site) if "aiomqtt" not in line]  # an optional extra
    assert lines == [
        f"server.tls_cert: {tmp_path / 'cert.pem'} is not a file",
        f"storage.dir: cannot create the journal folder {tmp_path / 'a-file' / 'var'}: "
        f"{tmp_path / 'a-file'} is not a folder; set storage.dir to a folder the daemon "
        "can write",
        f"fleet.password_file: cannot read {tmp_path / 'pw'}: No such file or directory",
    ]


def test_stream_files_devices_and_synthetic_queries(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    site = _site(tmp_path, f"""
[[streams]]
id = "clip"
url = "file://{clip}"

[[streams]]
id = "folder"
url = "{tmp_path}"

[[streams]]
id = "usb"
url = "/dev/video99"

[[streams]]
id = "off"
url = "/dev/video98"
enabled = false

[[streams]]
id = "fast"
url = "synthetic://?fps=500"
enabled = false
""")
    assert check_site(site) == [
        f"streams.1.url: {tmp_path}: not a file",
        "streams.2.url: /dev/video99: no such device (camera unplugged?)",
        "streams.4.url: fps must be in [1, 120], got 500.0",
    ]


@pytest.mark.parametrize(("url", "reason"), [
    ("rtsp://:554/live", "without a host"),
    ("rtsp://cam:0/live", "port '0' is not a number in 1-65535"),
    ("rtsps://cam:65536/live", "port '65536'"),
    ("rtsp://cam:abc/live", "port 'abc'"),
    ("rtsp://cam/live\x01", "control character"),
    ("http://cam one/mjpg", "space"),
    ("https://ca$m/mjpg", "not a host name"),
    ("rtsp://[fe80::1/live", "cannot be parsed"),
    ("udp://239.0.0.1", "without a port"),
    ("rtp://host:70000", "port '70000'"),
    ("file://", "without a path"),
    ("gopher://cam/x", "unsupported URL scheme 'gopher'"),
])
def test_stream_url_syntax_per_scheme(url: str, reason: str) -> None:
    with pytest.raises(ValueError, match="URL") as info:
        check_stream_url(url)
    assert reason in str(info.value)


@pytest.mark.parametrize("url", [
    "rtsp://admin:p@ss@10.0.0.5:554/stream1", "rtsps://cam.local/live",
    "rtsp://[fe80::1%25eth0]:554/x", "http://cam:8080/mjpg?user=a&pwd=b",
    "udp://@:5000", "udp://0.0.0.0:5000", "rtp://239.0.0.1:1234", "file:///tmp/a%20b.mp4",
    "synthetic://?whatever", "./café clip.mp4", "/dev/video0",
])
def test_valid_stream_urls_pass(url: str) -> None:
    check_stream_url(url)


def test_the_daemon_refuses_the_same_config_with_the_same_lines(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = _site(tmp_path, BAD.format(model=tmp_path / "gone.onnx"))
    _, _, listed = _check(capsys, site)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--config", str(site)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc.stderr
    assert time.monotonic() - started < 30  # refused before anything loads
    assert "Traceback" not in proc.stderr
    refused = [line.strip() for line in proc.stderr.splitlines()[1:]]
    assert refused == [line.removeprefix(f"{site}: ") for line in listed.splitlines()]
    assert not (tmp_path / "var").exists()  # no journal, no token


def test_serve_runs_the_start_check_before_anything_starts(tmp_path: Path) -> None:
    """In process too (a schema-valid config): every problem, nothing created."""
    config = parse_config({
        "detector": {"model": str(tmp_path / "gone.onnx")},
        "storage": {"dir": str(tmp_path / "var")},
        "streams": [{"id": "sim", "url": "synthetic://?seed=1&fps=0"},
                    {"id": "clip", "url": str(tmp_path / "clip.mp4")}],
    })
    expected = check_config(config)
    assert [line.split(":")[0] for line in expected] == [
        "detector.model", "streams.0.url", "streams.1.url"]
    with pytest.raises(ConfigError) as info:
        asyncio.run(serve(config, config_path=None, stop=asyncio.Event()))
    assert info.value.errors == expected  # type: ignore[attr-defined]
    assert not (tmp_path / "var").exists()


def test_put_config_refuses_a_malformed_camera_url_with_its_field_path(tmp_path: Path) -> None:
    config = SiteConfig.model_validate({"storage": {"dir": str(tmp_path / "var")}})
    body = json.loads(config.model_dump_json())
    body["streams"].append({"id": "cam2", "url": "rtsp://cam2:0/live"})

    async def run() -> None:
        app = make_app(Pipeline(config), config_path=None, token=TOKEN)
        async with TestClient(TestServer(app, host="127.0.0.1", port=0),
                              headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            resp = await client.put("/api/config", json=body)
            answer = await resp.json()
            assert resp.status == 422, answer
            assert answer["errors"] == [
                "streams.1.url: Value error, rtsp URL port '0' is not a number in 1-65535"]

    asyncio.run(run())


def test_load_config_and_check_site_agree_on_a_clean_file(tmp_path: Path) -> None:
    site = _site(tmp_path, '[[streams]]\nid = "cam"\nurl = "rtsp://cam.local:554/live"\n')
    assert check_site(site) == []
    assert load_config(site).streams[0].url == "rtsp://cam.local:554/live"
    assert [p.name for p in tmp_path.iterdir()] == ["site.toml"]
