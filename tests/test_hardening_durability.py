"""Durability hardening: a bill is announced only once it is durable, and the
daemon's state under ``storage.dir`` is owner-only whatever the umask.

The journal is real SQLite; a second connection holding the write lock stands
in for a commit that takes long (a slow disk). The end-to-end test runs the
real daemon with a permissive umask and kills it with SIGKILL at the moment
the first bill is announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bills_support import jpeg, make_bill
from structlog.testing import capture_logs
from test_daemon import _cli, _free_port, _Lines

from edge.billing.journal import Journal
from edge.billing.service import BillingService
from edge.config import DEFAULT_MODEL, parse_config
from edge.detect.worker import DetectionWorker
from edge.metrics import Metrics
from edge.pipeline import StreamRunner


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and everything under it, by relative path."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def _loose(modes: dict[str, int], root: Path) -> dict[str, str]:
    return {name: oct(mode) for name, mode in modes.items()
            if mode != (0o700 if (root / name).is_dir() else 0o600)}


def test_bill_is_announced_only_after_its_commit(tmp_path: Path) -> None:
    """The stream loop used to log ``bill_closed`` when it handed the bill to the
    journal: a kill -9 after that line lost the bill. Now nothing names the bill
    until the commit has returned; ``bill_committed`` then carries the window."""
    path = tmp_path / "journal.sqlite3"
    site = parse_config({"storage": {"dir": str(tmp_path)},
                         "streams": [{"id": "cam1", "url": "synthetic://?seed=3"}]})
    bill = make_bill("cam1-run-7", snapshot=jpeg())
    held_s = 0.8

    async def main() -> list[dict[str, object]]:
        metrics = Metrics()
        billing = BillingService(path, metrics)
        await billing.open()
        worker = DetectionWorker(site.detector, metrics)
        runner = StreamRunner(site.streams[0], site, worker, metrics, billing)
        lock = sqlite3.connect(path, isolation_level=None)
        try:
            with capture_logs() as logs:
                lock.execute("BEGIN IMMEDIATE")  # the commit waits (busy timeout 10 s)
                runner._bill((bill,), (), 0.0)
                await asyncio.sleep(held_s)
                early = [e for e in logs if e.get("bill_id") == bill.bill_id]
                assert not early, f"announced before it was durable: {early}"
                assert billing.pending == 1
                lock.execute("ROLLBACK")
                for _ in range(200):
                    if billing.pending == 0:
                        break
                    await asyncio.sleep(0.02)
            return [e for e in logs if e.get("bill_id") == bill.bill_id]
        finally:
            lock.close()
            await billing.close()
            await worker.close()

    lines = asyncio.run(main())
    assert [e["event"] for e in lines] == ["bill_committed"]
    line = lines[0]
    assert line["tray"] == bill.tray_id and line["reason"] == "crossed"
    assert held_s * 1000 <= float(line["submit_ms"]) < held_s * 1000 + 2000  # type: ignore[arg-type]
    assert float(line["durable_ms"]) > 0  # type: ignore[arg-type]
    with Journal(path) as journal:
        assert journal.get(bill.bill_id) is not None


def test_journal_and_its_folder_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    storage = tmp_path / "var" / "site"
    with _umask(0o022), Journal(storage / "journal.sqlite3") as journal:
        journal.commit(make_bill("b1", snapshot=jpeg()))  # the photo is in there
        modes = _modes(tmp_path / "var")
    assert {"site/journal.sqlite3", "site/journal.sqlite3-wal"} <= set(modes)
    assert _loose(modes, tmp_path / "var") == {}


def test_a_journal_left_world_readable_is_tightened_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with Journal(path) as journal:
        journal.commit(make_bill("b1", snapshot=jpeg()))
    for name in tmp_path.iterdir():
        name.chmod(0o644)  # as an earlier version made it outside systemd
    with Journal(path):
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes and set(modes.values()) == {0o600}, modes


CONFIG = """
[server]
host = "127.0.0.1"
port = {port}

[storage]
dir = "{storage}"

[[streams]]
id = "cam1"
url = "synthetic://?seed=3&fps=20&size=640x480"
"""


def _first_announcement(out: _Lines, timeout: float) -> str:
    """The first line announcing a bill, by either name the daemon has used."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(out.lines):
            if line.endswith("\n") and any(f'"event": "{e}"' in line
                                            for e in ("bill_committed", "bill_closed")):
                return line
        time.sleep(0.005)
    raise AssertionError(f"no bill announced; got {''.join(out.lines)[-3000:]}")


@pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="shipped model missing")
def test_daemon_state_is_owner_only_and_an_announced_bill_survives_kill_9(
        tmp_path: Path) -> None:
    """Started with umask 022 (outside systemd), killed the moment it announces
    its first bill: the bill is journaled, and nothing under storage.dir is
    readable by others."""
    storage = tmp_path / "var"
    site = tmp_path / "site.toml"
    site.write_text(CONFIG.format(port=_free_port(), storage=storage))
    with _umask(0o022):
        proc = _cli("run", "--config", str(site), merge_stderr=True)
    out = _Lines(proc.stdout)
    try:
        out.wait_for("open http://127.0.0.1:", 90)
        line = _first_announcement(out, 60)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        out.join()
        if proc.stdout is not None:
            proc.stdout.close()
    announced = json.loads(line)["bill_id"]
    with contextlib.closing(sqlite3.connect(storage / "journal.sqlite3")) as db:
        ids = [r[0] for r in db.execute("SELECT bill_id FROM bills")]
    assert announced in ids
    modes = _modes(storage)
    assert {"journal.sqlite3", "token"} <= set(modes)
    assert _loose(modes, storage) == {}
