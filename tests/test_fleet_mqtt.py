"""Fleet events over MQTT on a real mosquitto broker: the journal's outbox, the
publisher, broker outages, kill -9 of the publisher and of a committing writer.

Every broker is Debian's ``mosquitto`` started by the test on 127.0.0.1 on a
free port (tests/mqtt_broker.py); the subscriber is a real paho-mqtt client.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from bills_support import MENU, make_bill
from mqtt_broker import Broker, Recorder, mosquitto_path

from edge.billing.corrections import parse_correction
from edge.billing.journal import SCHEMA_VERSION, Journal
from edge.billing.service import BillingService
from edge.config import FleetConfig, parse_config
from edge.errors import ConfigError
from edge.fleet import FleetOff, create_fleet
from edge.fleet.publisher import FleetPublisher
from edge.metrics import Metrics

pytest.importorskip("aiomqtt", reason="the mqtt extra is not installed")
needs_broker = pytest.mark.skipif(mosquitto_path() is None,
                                  reason="mosquitto is not installed (apt-get install mosquitto)")

TESTS = Path(__file__).parent
V1_JOURNAL = TESTS / "data" / "journal_v1.sqlite3"
WRITER = TESTS / "journal_writer.py"
PUBLISHER = TESTS / "fleet_publisher.py"
BASE = "dishtracker/test/box1"


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Broker]:
    """mosquitto on a free port, without persistence; stopped by PID afterwards."""
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def _fleet_config(port: int, **over: Any) -> FleetConfig:
    fields: dict[str, Any] = {
        "enabled": True, "host": "127.0.0.1", "port": port, "site": "test", "box": "box1",
        "reconnect_initial_s": 0.1, "reconnect_max_s": 0.4, "health_interval_s": 60.0}
    return FleetConfig(**{**fields, **over})


@asynccontextmanager
async def _running(path: Path, port: int,
                   **over: Any) -> AsyncIterator[tuple[BillingService, FleetPublisher, Metrics]]:
    metrics = Metrics()
    billing = BillingService(path, metrics, outbox=True)
    await billing.open()
    fleet = create_fleet(_fleet_config(port, **over), billing, metrics,
                         health=lambda: {"journal": billing.status()})
    assert isinstance(fleet, FleetPublisher)
    fleet.start()
    try:
        yield billing, fleet, metrics
    finally:
        await fleet.close()
        await billing.close()


async def _drained(billing: BillingService, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (await billing.outbox_depth())[0] or billing.pending:
        assert time.monotonic() < deadline, await billing.outbox_depth()
        await asyncio.sleep(0.02)


def _bills(messages: list[Any], stream: str | None = None) -> list[str]:
    """First-arrival ids of bill messages (of one stream), in order."""
    seen: dict[str, None] = {}
    for m in messages:
        if m.topic.endswith("/bills") and (stream is None or m.payload["stream_id"] == stream):
            seen.setdefault(m.payload["message_id"], None)
    return list(seen)


# ---- the outbox in the journal ---------------------------------------------------------


def test_journal_of_schema_1_gains_the_outbox_without_enqueuing_old_bills(
        tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    shutil.copy(V1_JOURNAL, path)  # made by the journal of commit 08ecd9a (schema 1)
    with Journal(path, outbox=True) as journal:
        assert journal.integrity_check() == "ok"
        assert [b["bill_id"] for b in journal.after(0, 10)] == [
            f"cam1-1700000000000-{i}" for i in range(3)]
        assert journal.outbox_depth() == (0, None)  # old bills are not published
        assert journal.commit(make_bill("cam1-1700000000001-0")) is True
        assert [r.message_id for r in journal.outbox_pending(10)] == ["cam1-1700000000001-0"]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT max(version) FROM schema_version").fetchone() == (
            SCHEMA_VERSION,)
        fresh = tmp_path / "fresh.sqlite3"
        Journal(fresh).close()
        with sqlite3.connect(fresh) as new:  # an upgraded journal has the same schema
            schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
            assert db.execute(schema).fetchall() == new.execute(schema).fetchall()
        new.close()
    db.close()


def test_outbox_rows_carry_the_bill_and_the_correction_and_are_pruned_once_sent(
        tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite3", outbox=True) as journal:
        bill = make_bill("cam2-1-4", stream="cam2")
        journal.commit(bill)
        assert journal.commit(bill) is False  # a replay enqueues nothing either
        journal.add_correction(bill.bill_id, parse_correction(
            {"action": "change", "line": 1, "class_key": "tea"}), MENU)
        rows = journal.outbox_pending(10)
        assert [(r.kind, r.message_id, r.stream_id) for r in rows] == [
            ("bill", "cam2-1-4", "cam2"), ("correction", "cam2-1-4:c1", "cam2")]
        sent = json.loads(rows[0].payload)["bill"]
        assert {k: sent[k] for k in bill.to_json()} == bill.to_json() and sent["seq"] == 1
        fix = json.loads(rows[1].payload)
        assert fix["correction"]["action"] == "change" and fix["correction"]["id"] == 1
        assert fix["effective"] == journal.get(bill.bill_id)["effective"]  # type: ignore[index]
        assert journal.outbox_mark_sent([rows[0].id]) == 1
        assert journal.outbox_depth()[0] == 1
        assert journal.outbox_prune(0.0) == 1  # sent: goes; unsent: stays
        assert [r.id for r in journal.outbox_pending(10)] == [rows[1].id]
        assert journal.outbox_prune(0.0) == 0
    with Journal(tmp_path / "off.sqlite3") as journal:  # fleet disabled: no outbox rows
        journal.commit(bill)
        assert journal.outbox_depth() == (0, None)


def _kill_writer(path: Path, prefix: str, rng: random.Random) -> list[str]:
    proc = subprocess.Popen([sys.executable, str(WRITER), str(path), prefix, "outbox"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        time.sleep(rng.uniform(0.05, 0.3))
    finally:
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    return [line for line in out.split("\n")[:-1] if line]


def test_outbox_is_written_atomically_with_the_bill_through_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    rng = random.Random(20241106)
    printed: list[str] = []
    for r in range(5):
        printed += _kill_writer(path, f"k{r}", rng)
        with Journal(path, outbox=True) as journal:
            assert journal.integrity_check() == "ok"
    with sqlite3.connect(path) as db:
        bills = {r[0] for r in db.execute("SELECT bill_id FROM bills")}
        fixes = {f"{b}:c{i}" for i, b in db.execute("SELECT id, bill_id FROM corrections")}
        rows = dict(db.execute("SELECT message_id, kind FROM outbox"))
    db.close()
    acked = [p for p in printed if not p.endswith(" corrected")]
    assert len(acked) > 20, "the writer barely ran; the test proves little"
    assert set(acked) <= bills
    assert {p.split()[0] for p in printed if p.endswith(" corrected")} <= {
        f.split(":")[0] for f in fixes}
    # every committed bill and correction is in the outbox, and nothing else is
    assert {m for m, k in rows.items() if k == "bill"} == bills
    assert {m for m, k in rows.items() if k == "correction"} == fixes


# ---- publishing ------------------------------------------------------------------------


@needs_broker
def test_committed_bill_and_correction_arrive_with_their_ids_at_qos_1(
        tmp_path: Path, broker: Broker) -> None:
    async def scenario() -> None:
        with Recorder(broker.port) as rec:
            async with _running(tmp_path / "journal.sqlite3", broker.port,
                                health_interval_s=1.0) as (billing, fleet, metrics):
                billing.submit(make_bill("cam1-5-1", tray_id=1))
                got = await rec.until(lambda ms: _bills(ms) == ["cam1-5-1"])
                bill = next(m for m in got if m.topic == f"{BASE}/cam1/bills")
                assert bill.qos == 1 and not bill.retain
                assert bill.payload["message_id"] == bill.payload["bill"]["bill_id"] == "cam1-5-1"
                assert bill.payload["schema"] == 1 and bill.payload["type"] == "bill"
                assert bill.user_properties == {"message_id": "cam1-5-1", "bill_id": "cam1-5-1",
                                                "type": "bill"}
                view = await billing.correct("cam1-5-1", parse_correction(
                    {"action": "remove", "line": 0}), MENU)
                assert view is not None
                got = await rec.until(lambda ms: any(m.topic.endswith("/corrections")
                                                     for m in ms))
                fix = next(m for m in got if m.topic == f"{BASE}/cam1/corrections")
                assert fix.qos == 1 and fix.payload["message_id"] == "cam1-5-1:c1"
                assert fix.payload["correction"]["action"] == "remove"
                assert fix.payload["effective"] == view["effective"]
                await _drained(billing)
                status = fleet.status()
                assert status["state"] == "connected" and status["outbox_depth"] == 0
                assert metrics.value("dishtracker_fleet_broker_connected") == 1
                assert metrics.value("dishtracker_fleet_published_total", kind="bill") == 1
                assert metrics.value("dishtracker_fleet_published_total",
                                     kind="correction") == 1
                health = (await rec.until(lambda ms: any(m.topic == f"{BASE}/health"
                                                         for m in ms)))
                report = next(m for m in health if m.topic == f"{BASE}/health").payload
                assert report["journal"]["fault"] is None and report["box"] == "box1"
                assert "uptime_s" in report and "depth" in report["outbox"]
            online = [m.payload["state"] for m in rec.on("/status")]
            assert online[0] == "online" and online[-1] == "offline"  # clean stop says so
            assert rec.on("/status")[-1].payload["reason"] == "shutdown"

    asyncio.run(scenario())


@needs_broker
def test_last_will_says_offline_when_the_publisher_is_killed(
        tmp_path: Path, broker: Broker) -> None:
    proc = subprocess.Popen([sys.executable, str(PUBLISHER), str(tmp_path / "j.sqlite3"),
                             str(broker.port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        with Recorder(broker.port) as rec:
            rec.wait(lambda ms: [m.payload["state"] for m in ms
                                 if m.topic == f"{BASE}/status"] == ["online"])
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            got = rec.wait(lambda ms: [m.payload["state"] for m in ms
                                       if m.topic == f"{BASE}/status"] == ["online", "offline"])
            will = [m for m in got if m.topic == f"{BASE}/status"][-1]
            assert will.payload["reason"] == "connection lost" and will.qos == 1
        with Recorder(broker.port, client_id="late-subscriber") as late:  # it is retained
            got = late.wait(lambda ms: any(m.topic == f"{BASE}/status" for m in ms))
            status = next(m for m in got if m.topic == f"{BASE}/status")
            assert status.retain and status.payload["state"] == "offline"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        proc.stdout.close()


@needs_broker
def test_broker_outage_loses_nothing_and_keeps_the_order(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", persistence=True)  # the subscriber's session survives
    broker.start()

    async def scenario() -> None:
        with Recorder(broker.port, persistent=True) as rec:
            async with _running(tmp_path / "journal.sqlite3", broker.port) as (
                    billing, fleet, metrics):
                for i in range(5):
                    billing.submit(make_bill(f"cam1-1-{i}", tray_id=i))
                await rec.until(lambda ms: len(_bills(ms)) == 5)
                # a broker that takes the messages but never acknowledges them:
                # nothing is marked sent
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGSTOP)
                billing.submit(make_bill("cam1-1-5", tray_id=5))
                await asyncio.sleep(1.0)
                assert (await billing.outbox_depth())[0] == 1
                os.kill(broker.pid, signal.SIGCONT)
                await _drained(billing)
                broker.stop()  # the outage
                await asyncio.sleep(0.3)
                for i in range(6, 46):
                    stream = f"cam{i % 2 + 1}"
                    billing.submit(make_bill(f"{stream}-1-{i}", stream=stream, tray_id=i))
                await asyncio.sleep(1.0)
                assert (await billing.outbox_depth())[0] == 40
                status = fleet.status()
                assert status["state"] in ("disconnected", "connecting")
                assert status["outbox_depth"] == 40 and status["last_error"]
                assert metrics.value("dishtracker_fleet_broker_connected") == 0
                broker.start()
                await _drained(billing, timeout=15.0)
                await rec.until(lambda ms: len(_bills(ms)) == 46, timeout=15.0)
            assert metrics.value("dishtracker_fleet_connection_errors_total") >= 1
        ids = [f"cam{i % 2 + 1}-1-{i}" if i >= 6 else f"cam1-1-{i}" for i in range(46)]
        for stream in ("cam1", "cam2"):
            assert _bills(rec.messages, stream) == [i for i in ids if i.startswith(stream)]

    try:
        asyncio.run(scenario())
    finally:
        broker.stop()


@needs_broker
def test_publisher_killed_mid_outbox_resumes_from_the_first_unsent_row(
        tmp_path: Path, broker: Broker) -> None:
    path = tmp_path / "journal.sqlite3"
    total = 1500
    with Recorder(broker.port) as rec:
        proc = subprocess.Popen([sys.executable, str(PUBLISHER), str(path), str(broker.port),
                                 str(total), "3"], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        rec.wait(lambda ms: len(_bills(ms)) >= 100, timeout=30)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        with Journal(path, outbox=True) as journal:
            unsent = journal.outbox_depth()[0]
        assert 0 < unsent < total, "the kill did not land mid-outbox"
        proc = subprocess.Popen([sys.executable, str(PUBLISHER), str(path), str(broker.port)],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        try:
            assert proc.stdout.readline() == "ready\n"
            rec.wait(lambda ms: len(_bills(ms)) == total, timeout=30)
        finally:
            proc.terminate()
            proc.wait(10)
            proc.stdout.close()
    with Journal(path) as journal:
        assert journal.outbox_depth()[0] == 0
    for s in (1, 2, 3):
        stream = f"cam{s}"
        expected = [f"{stream}-9-{i}" for i in range(total) if i % 3 == s - 1]
        assert _bills(rec.messages, stream) == expected  # each at least once, in order


# ---- config and the optional extra --------------------------------------------------------


def test_fleet_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"fleet": {"enabled": True, "box": "a/b", "port": 0,
                                "keepalive_s": 1}})
    text = str(info.value)
    assert "fleet.box: Value error, 'a/b' is not one MQTT topic level" in text
    assert "fleet.port: Input should be greater than or equal to 1" in text
    assert "fleet.keepalive_s" in text
    with pytest.raises(ConfigError, match="site is required when enabled is true"):
        parse_config({"fleet": {"enabled": True}})
    with pytest.raises(ConfigError, match="give password or password_file, not both"):
        parse_config({"fleet": {"username": "u", "password": "p", "password_file": "f"}})
    with pytest.raises(ConfigError, match="a password needs a username"):
        parse_config({"fleet": {"password": "p"}})
    config = parse_config({"fleet": {"enabled": True, "site": "s", "tls": True}}).fleet
    assert config.broker_port() == 8883 and config.box_id()
    missing = FleetConfig(enabled=True, site="s", username="u",
                          password_file=Path("/nonexistent/pw"))
    with pytest.raises(ConfigError, match=r"fleet\.password_file: cannot read /nonexistent/pw"):
        missing.read_password()


def test_fleet_off_needs_no_mqtt_client_and_on_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['aiomqtt'] = None\n"  # as if the extra were not installed
        "from edge.fleet import FleetOff, create_fleet\n"
        "from edge.config import FleetConfig\n"
        "from edge.metrics import Metrics\n"
        "assert isinstance(create_fleet(FleetConfig(), None, Metrics()), FleetOff)\n"
        "import edge.daemon\n"  # the daemon imports without it
        "create_fleet(FleetConfig(enabled=True, site='s'), None, Metrics())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 1
    assert ("MissingExtraError: fleet.enabled is true but the MQTT client is not installed "
            "(aiomqtt is missing): pip install 'dishtracker-edge[mqtt]'") in proc.stderr
    assert FleetOff().status() == {"enabled": False}
