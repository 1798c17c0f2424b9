"""A real mosquitto broker and a recording subscriber, for the fleet tests and bench/chaos.py.

:class:`Broker` starts Debian's ``mosquitto`` on 127.0.0.1 on a free port with
a generated config file and stops it by PID (it can be stopped and started
again on the same port: a broker outage). :class:`Recorder` is a paho-mqtt
subscriber in its own network thread that records every message under
``{prefix}/#``; with ``persistent=True`` its session (subscription and queued
QoS 1 messages) outlives its own disconnects and, with a broker started with
``persistence=True``, a broker restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def mosquitto_path() -> str | None:
    """The broker binary (Debian installs it in /usr/sbin, often not on PATH)."""
    return shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """One mosquitto process on 127.0.0.1:``port``.

    Parameters
    ----------
    workdir : Path
        Holds the config file, the log and (with ``persistence``) the database.
    persistence : bool
        Keep sessions and queued messages across a restart (saved on SIGTERM).
    """

    def __init__(self, workdir: Path, *, persistence: bool = False) -> None:
        binary = mosquitto_path()
        if binary is None:
            raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.persistence = persistence
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "mosquitto.conf"
        # as root mosquitto drops to the user "mosquitto", which could not write here
        lines = [f"user {pwd.getpwuid(os.getuid()).pw_name}",
                 f"listener {self.port} 127.0.0.1", "allow_anonymous true",
                 f"persistence {'true' if persistence else 'false'}",
                 f"log_dest file {workdir / 'mosquitto.log'}",
                 "log_type error", "log_type warning", "log_type notice"]
        if persistence:
            lines += [f"persistence_location {workdir}/", "autosave_interval 0"]
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def pid(self) -> int | None:
        """PID of the running broker."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.workdir / "mosquitto.log")
                raise RuntimeError(f"mosquitto exited {self.proc.returncode}: "
                                   f"{log.read_text() if log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not listen on port {self.port}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the broker by its PID (SIGTERM saves the persistence database)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


@dataclass
class Received:
    """One message as the subscriber got it."""

    topic: str
    payload: dict[str, Any]
    qos: int
    retain: bool
    user_properties: dict[str, str] = field(default_factory=dict)


class Recorder:
    """A subscriber to ``{prefix}/#`` at QoS 1 that records what arrives.

    Parameters
    ----------
    port : int
        The broker's port on 127.0.0.1.
    prefix : str
        Topic prefix to subscribe under.
    persistent : bool
        A persistent session (clean start off, session expiry 1 h).
    client_id : str
        Client id (a persistent session is found again by it).
    """

    def __init__(self, port: int, prefix: str = "dishtracker", *, persistent: bool = False,
                 client_id: str = "test-recorder") -> None:
        self.port = port
        self.prefix = prefix
        self.persistent = persistent
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(1, 1)

    def __enter__(self) -> Recorder:
        props = Properties(PacketTypes.CONNECT)
        if self.persistent:
            props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", self.port, keepalive=10,
                            clean_start=not self.persistent, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the recorder did not subscribe")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if not reason.is_failure:
            client.subscribe(f"{self.prefix}/#", qos=1)

    def _on_subscribe(self, *args: Any) -> None:
        self._subscribed.set()

    def _on_disconnect(self, *args: Any) -> None:
        self._subscribed.clear()

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Wait until the subscription is in place again (after a broker restart)."""
        if not self._subscribed.wait(timeout):
            raise RuntimeError("the recorder did not subscribe again")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        user = dict(getattr(msg.properties, "UserProperty", None) or [])
        rec = Received(msg.topic, json.loads(msg.payload), msg.qos, bool(msg.retain), user)
        with self._lock:
            self.messages.append(rec)

    def on(self, suffix: str) -> list[Received]:
        """Messages whose topic ends with ``suffix``, in arrival order."""
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait(self, predicate: Any, timeout: float = 10.0) -> list[Received]:
        """Wait until ``predicate(messages)`` is true; the messages then."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                snapshot = list(self.messages)
            if predicate(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {len(snapshot)} messages, last: "
                                     f"{[(m.topic, m.payload) for m in snapshot[-3:]]}")
            time.sleep(0.02)

    async def until(self, predicate: Any, timeout: float = 10.0) -> list[Received]:
        """:meth:`wait` for a test running on an event loop (the loop keeps running)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                snapshot = list(self.messages)
            if predicate(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; got {len(snapshot)} messages, last: "
                                     f"{[(m.topic, m.payload) for m in snapshot[-3:]]}")
            await asyncio.sleep(0.02)

    def first_arrivals(self, suffix: str = "/bills") -> list[str]:
        """``message_id`` of each message on ``…suffix`` at its first arrival, in order."""
        seen: dict[str, None] = {}
        for m in self.on(suffix):
            seen.setdefault(m.payload["message_id"], None)
        return list(seen)
