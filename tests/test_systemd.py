"""sd_notify over a real AF_UNIX datagram socket, and the unit checked by systemd-analyze."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.systemd import Notifier

UNIT = Path(__file__).parent.parent / "systemd" / "dishtracker.service"
EXECUTABLE = "/opt/dishtracker/.venv/bin/dishtracker"
MAX_EXPOSURE = 2.5  # systemd-analyze security (systemd 252) scores the unit 1.6 "OK"


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify"
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"dishtracker-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    yield sock, "@" + name
    sock.close()


def _received(sock: socket.socket) -> list[str]:
    out: list[str] = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        return out
    finally:
        sock.settimeout(2.0)


def test_lifecycle_messages_arrive_in_order(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier(environ={"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("serving 3 streams")
    assert n.status("3 streams,\n20 fps")
    assert n.watchdog()
    assert n.extend_timeout(2.5)
    assert n.stopping()
    n.close()
    assert _received(sock) == ["READY=1\nSTATUS=serving 3 streams", "STATUS=3 streams, 20 fps",
                               "WATCHDOG=1", "EXTEND_TIMEOUT_USEC=2500000", "STOPPING=1"]


def test_abstract_namespace_socket(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, address = abstract_socket
    n = Notifier(environ={"NOTIFY_SOCKET": address})
    assert n.ready()
    n.close()
    assert sock.recv(4096) == b"READY=1"


def test_notify_socket_from_environment(notify_socket: tuple[socket.socket, str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sock, path = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    n = Notifier()
    assert n.watchdog()
    n.close()
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_without_notify_socket_everything_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Notifier()
    assert not n.enabled
    assert not n.ready()
    assert not n.watchdog()
    assert not Notifier(environ={}).enabled


def test_vanished_manager_does_not_raise(tmp_path: Path) -> None:
    n = Notifier(environ={"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert n.enabled
    assert not n.ready()
    assert not n.watchdog()
    n.close()


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "30000000"}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_is_half_of_watchdog_usec(env: dict[str, str],
                                                    expected: float | None) -> None:
    assert Notifier(address="", environ=env).watchdog_interval() == expected


def test_watchdog_pings_only_while_the_pipeline_advances(
        notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    n = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"})
    assert n.watchdog_interval() == 0.02
    script = [True, True, False, False, False, True]
    calls: list[bool] = []

    async def main() -> None:
        done = asyncio.Event()

        def progress() -> bool:
            calls.append(script[len(calls)] if len(calls) < len(script) else True)
            if len(calls) >= len(script):
                done.set()
            return calls[-1]

        task = asyncio.create_task(n.run_watchdog(progress, summary=lambda: "2 streams"))
        await done.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    n.close()
    messages = _received(sock)
    kinds = [m.split("=")[0] for m in messages]
    # ping + status, ping, three ticks without a ping (stalled status), then ping + status
    assert kinds[:3] == ["WATCHDOG", "STATUS", "WATCHDOG"]
    assert messages[1] == "STATUS=2 streams"
    stalled = [m for m in messages if m.startswith("STATUS=stalled")]
    assert len(stalled) >= 1
    first_stall = messages.index(stalled[0])
    next_ping = messages.index("WATCHDOG=1", first_stall)
    assert all(m.startswith("STATUS=stalled") for m in messages[first_stall:next_ping])
    assert messages[next_ping + 1] == "STATUS=2 streams"
    assert kinds.count("WATCHDOG") == calls.count(True)


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    return tool


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = _analyze()
    # verify checks that ExecStart= points to an executable file, and this machine has no
    # /opt/dishtracker: check a copy whose commands point to a stand-in script instead.
    fake = tmp_path / "bin" / "dishtracker"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(EXECUTABLE) == 2
    unit = tmp_path / "dishtracker.service"
    unit.write_text(text.replace(EXECUTABLE, str(fake)))
    proc = subprocess.run([tool, "verify", "--man=no", str(unit)],
                          check=False, capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys but prints them: any output is a finding
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "" and proc.stdout.strip() == "", proc.stderr + proc.stdout


def test_unit_sandbox_exposure_stays_low() -> None:
    tool = _analyze()
    proc = subprocess.run([tool, "security", "--offline=true", "--no-pager", str(UNIT)],
                          check=False, capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", proc.stdout)
    if match is None and "offline" in proc.stderr:
        pytest.skip(f"systemd-analyze too old for --offline: {proc.stderr.strip()}")
    assert match is not None, proc.stdout + proc.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, proc.stdout
    # systemd's scale, best first: PERFECT, SAFE, OK, MEDIUM, EXPOSED, UNSAFE, DANGEROUS
    assert match.group(2) in ("PERFECT", "SAFE", "OK"), proc.stdout


def test_unit_has_the_settings_operators_rely_on() -> None:
    settings = dict(line.split("=", 1) for line in UNIT.read_text().splitlines()
                    if "=" in line and not line.startswith("#"))
    assert settings["Type"] == "notify"
    assert settings["NotifyAccess"] == "main"
    assert settings["WatchdogSec"] == "30"
    assert settings["Restart"] == "on-failure"
    assert settings["ExecStart"].endswith("run --config /etc/dishtracker/site.toml")
    assert settings["ExecStartPre"].endswith("check-config /etc/dishtracker/site.toml")


_MDWE_PROBE = """
import ctypes, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, REFUSE_EXEC_GAIN
    sys.exit(3)  # kernel < 6.3
try:
    from OpenSSL import SSL
except ImportError:
    sys.exit(5)
ctx = SSL.Context(SSL.DTLS_METHOD)
try:
    ctx.set_verify(SSL.VERIFY_PEER, lambda *args: True)  # what aiortc's DTLS transport does
except MemoryError:
    sys.exit(4)
"""


def test_memory_deny_write_execute_matches_what_webrtc_needs() -> None:
    # Linux >= 6.3 offers per process what MemoryDenyWriteExecute=yes does by seccomp.
    proc = subprocess.run([sys.executable, "-c", _MDWE_PROBE], check=False,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode == 3:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    if proc.returncode == 5:
        pytest.skip("pyOpenSSL (aiortc's DTLS) not installed")
    assert proc.returncode in (0, 4), proc.stderr
    setting = re.search(r"^MemoryDenyWriteExecute=(\w+)$", UNIT.read_text(), re.MULTILINE)
    assert setting is not None
    if proc.returncode == 4:  # pyOpenSSL's cffi callback needs W+X memory
        assert setting.group(1) == "no", "WebRTC (DTLS) cannot start under MDWE"
