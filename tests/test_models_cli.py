"""``dishtracker models`` against the model routes on a real socket (a real pipeline,
registry and rollout controller; the server and token found through a site
config, as on a box), over HTTPS with the config's certificate pinned, and with
no daemon at all.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from model_variants import dishnet_variant
from test_hardening_config import needs_model
from test_model_routes import serve
from test_security import _self_signed

from edge.cli import main
from edge.config import load_config
from edge.web.tls import server_ssl_context


def _site(tmp_path: Path, port: int, tls: str = "", host: str = "127.0.0.1") -> Path:
    path = tmp_path / "site.toml"
    path.write_text(f'[server]\nhost = "{host}"\nport = {port}\n{tls}\n'
                    f'[storage]\ndir = "{tmp_path / "var"}"\n')
    return path


def _without_logs(out: str) -> str:
    """``out`` without the log lines of the daemon in this process."""
    return "".join(line for line in out.splitlines(keepends=True)
                   if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[", line))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@needs_model
def test_the_shell_lists_adds_shadows_promotes_and_rolls_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    candidate = dishnet_variant(tmp_path / "canteen-v2.onnx", "dishnet-v2")

    async def main_() -> None:
        async with serve(tmp_path) as box:
            assert box.client.server.port is not None
            site = str(_site(tmp_path, box.client.server.port))

            async def shell(*argv: str) -> tuple[int, str, str]:
                code = await asyncio.to_thread(main, ["models", *argv, "--config", site])
                out, err = capsys.readouterr()
                return code, _without_logs(out), err

            code, out, _ = await shell("list")
            header, row = out.splitlines()
            assert header.split() == ["ID", "VERSION", "STATE", "SOURCE", "ADDED", "SIZE", "NAME"]
            assert row.split()[1:4] == ["dishnet-1.1", "serving", "config"]
            code, out, _ = await shell("add", str(candidate), "--name", "canteen.onnx")
            assert code == 0 and "(dishnet-v2) is in the registry (candidate" in out
            v2 = out.split()[1]
            assert (await shell("shadow", v2))[1] == f"model {v2} (dishnet-v2) is shadow\n"
            assert f"shadowing {v2} (dishnet-v2) for " in (await shell("list"))[1]
            assert (await shell("promote", v2[:6]))[1].endswith("is serving\n")
            assert box.rollout.status()["serving"]["version"] == "dishnet-v2"
            code, out, _ = await shell("rollback")
            assert out == (f"rolled back from model {v2} (dishnet-v2): model "
                           f"{box.rollout.store.entries()[-1].id} (dishnet-1.1) is serving\n")
            code, _, err = await shell("promote", "abcdef")
            assert code == 2
            assert err.startswith("dishtracker: error: POST /api/models/abcdef/promote: 404 "
                                  "no model 'abcdef'")
            assert "\n" not in err.rstrip("\n")  # one line
            assert [e["actor"] for e in box.rollout.store.history(3)] == ["owner"] * 3

    asyncio.run(main_())


@needs_model
def test_over_https_the_configured_certificate_is_trusted_and_no_other(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert, key = _self_signed(tmp_path)
    (tmp_path / "other").mkdir()
    other, _ = _self_signed(tmp_path / "other")
    tls = f'tls_cert = "{cert}"\ntls_key = "{key}"'
    context = server_ssl_context(load_config(_site(tmp_path, 1, tls)).server)

    async def main_() -> None:
        async with serve(tmp_path, ssl=context) as box:
            assert box.client.server.port is not None
            # "localhost" is not in the certificate (127.0.0.1 is): pinned, the name is moot
            site = _site(tmp_path, box.client.server.port, tls, host="localhost")
            code = await asyncio.to_thread(main, ["models", "list", "--config", str(site)])
            assert code == 0 and "dishnet-1.1" in _without_logs(capsys.readouterr().out)
            url = f"https://localhost:{box.client.server.port}"  # not pinned: the name counts
            code = await asyncio.to_thread(main, ["models", "list", "--config", str(site),
                                                  "--url", url])
            assert code == 2 and "give --url with the name" in capsys.readouterr().err
            site.write_text(site.read_text().replace(str(cert), str(other)))
            code = await asyncio.to_thread(main, ["models", "list", "--config", str(site)])
            err = capsys.readouterr().err
            assert code == 2 and "TLS failed" in err and "does not show server.tls_cert" in err

    asyncio.run(main_())


def test_without_a_daemon_the_shell_says_so_and_how_to_start_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = str(_site(tmp_path, _free_port()))  # no token file either
    for argv in (["list"], ["promote", "abcdef"], ["rollback"]):
        assert main(["models", *argv, "--config", site]) == 2
        err = capsys.readouterr().err
        assert "no daemon answers at http://127.0.0.1:" in err
        assert "dishtracker run --config" in err
    assert main(["models", "add", str(tmp_path / "missing.onnx"), "--config", site]) == 2
    assert "missing.onnx: No such file" in capsys.readouterr().err
    assert main(["models", "list", "--url", "ftp://box", "--config", site]) == 2
    assert "not an http:// or https://" in capsys.readouterr().err
    for argv in (["models"], ["models", "promote"], ["models", "add"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2


@needs_model
def test_the_shell_drives_a_running_daemon(tmp_path: Path) -> None:
    """The installed command against ``dishtracker run`` (one synthetic camera):
    a candidate added, shadowed, promoted and rolled back from the shell."""
    from bench.harness import start_daemon

    candidate = dishnet_variant(tmp_path / "canteen-v2.onnx", "dishnet-v2")

    def shell(site: Path, *argv: str) -> str:
        done = subprocess.run([sys.executable, "-m", "edge.cli", "models", *argv,
                               "--config", str(site)], capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    async def main_() -> None:
        daemon = await start_daemon(tmp_path, streams=1, fps=5, size="320x240")
        try:
            listed = await asyncio.to_thread(shell, daemon.site, "list")
            assert "dishnet-1.1  serving  config" in listed
            added = await asyncio.to_thread(shell, daemon.site, "add", str(candidate))
            v2 = added.split()[1]
            for action, state in (("shadow", "shadow"), ("promote", "serving")):
                out = await asyncio.to_thread(shell, daemon.site, action, v2)
                assert out == f"model {v2} (dishnet-v2) is {state}\n"
            async with daemon.session() as http, http.get(f"{daemon.base}/api/streams") as r:
                streams = await r.json()
            assert streams[0]["model"]["version"] == "dishnet-v2"
            out = await asyncio.to_thread(shell, daemon.site, "rollback")
            assert out.endswith("(dishnet-1.1) is serving\n")
        finally:
            daemon.child.stop()

    asyncio.run(main_())
