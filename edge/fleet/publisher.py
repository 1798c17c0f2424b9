"""The fleet publisher: the journal's outbox to the MQTT broker, at least once, in order.

``journal (outbox) ─▶ publisher ─▶ broker``: the journal writes an outbox row
in the same transaction as each bill and correction
(:mod:`edge.billing.outbox`). This stage reads the unsent rows in ``id``
order, publishes them with QoS 1 and marks them sent only after the broker's
``PUBACK``, so a row is sent at least once whatever dies when: the broker, the
network or the daemon (kill -9 included) — it starts again from the first
unsent row. Rows go out in windows of :data:`WINDOW` on one connection; only
the acknowledged prefix of a window is marked sent, and whatever follows is
sent again on the next connection, so the first arrival of each message keeps
the outbox order (MQTT keeps a connection's order per topic).

On connect it publishes the retained ``online`` status; the connection's
last will is the retained ``offline`` status, which the broker publishes when
the box dies or the network drops; a clean shutdown publishes ``offline``
itself. A health report goes out every ``health_interval_s``. Lost or refused
connections are retried with exponential backoff, one log line per change:
``fleet_broker_connected``, ``fleet_broker_lost`` / ``fleet_broker_connect_failed``
(with the reason), ``fleet_broker_reconnecting`` (with ``in_s``).

With ``fleet.models`` the same connection carries the fleet's model messages
the other way: each connection subscribes to them (the broker hands over the
retained ones), hands them to the model pull (:mod:`edge.fleet.models`, a task
of its own that outlives reconnections) and publishes its retained state.
With ``fleet.share_examples`` it also carries the examples the cashiers' corrections
teach (:mod:`edge.fleet.examples`): this box's out, retained per bill, and the
site's other boxes' in, merged by a task of its own.

MQTT client: aiomqtt 2 (asyncio on paho-mqtt 2, MQTT v5), the ``mqtt`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import ssl
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.billing.outbox import OutboxRow
from edge.config import FleetConfig
from edge.errors import JournalError
from edge.fleet.examples import WINDOW as EXAMPLES_WINDOW
from edge.fleet.messages import (
    Topics,
    health_message,
    model_state_message,
    outbox_message,
    status_message,
)
from edge.metrics import Metrics

if TYPE_CHECKING:
    from edge.fleet.examples import ExampleShare
    from edge.fleet.models import ModelPuller

WINDOW = 32
"""Outbox rows in flight at once (published, not yet acknowledged)."""

ACK_TIMEOUT_S = 10.0
"""A ``PUBACK`` later than this counts as a lost connection (reconnect, re-send)."""

POLL_S = 5.0
"""The outbox is read at least this often even without a commit's wake-up."""

HOUSEKEEPING_S = 3600.0
"""Sent rows older than the retention are pruned this often (and at start)."""

DEPTH_REFRESH_S = 1.0
"""The outbox depth gauge is refreshed this often while the broker is away."""

log = structlog.get_logger(__name__)


class Outbox(Protocol):
    """What the publisher needs from the journal
    (:class:`edge.billing.service.BillingService` provides it)."""

    async def outbox_pending(self, limit: int) -> list[OutboxRow]:
        """The first ``limit`` unsent rows, oldest first."""
        ...

    async def outbox_mark_sent(self, ids: Sequence[int]) -> int:
        """Mark rows sent; how many changed."""
        ...

    async def outbox_prune(self, keep_s: float) -> int:
        """Delete rows sent more than ``keep_s`` seconds ago; how many went."""
        ...

    async def outbox_depth(self) -> tuple[int, float | None]:
        """``(unsent rows, created_at of the oldest or None)``."""
        ...

    def add_outbox_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after commits that added rows."""
        ...


class _ConnectionLost(Exception):
    """The broker stopped acknowledging (or the connection broke) mid-window."""


class FleetPublisher:
    """Publishes the outbox, the status and health to the broker of ``config``.

    Parameters
    ----------
    config : FleetConfig
        Broker, credentials, topic levels, intervals.
    outbox : Outbox
        The journal's outbox (the billing service).
    metrics : Metrics
        ``fleet_*`` gauges and counters.
    health : callable, optional
        Returns the JSON-ready part of the health report the daemon knows
        (streams, journal); the publisher adds uptime and the outbox.
    password : str, optional
        The broker password (``config.read_password()``).
    models : ModelPuller, optional
        The model pull (``fleet.models``): fed the model messages, its state published.
    examples : ExampleShare, optional
        The examples of the site (``fleet.share_examples``): this box's published,
        the others' fed to it.
    """

    def __init__(self, config: FleetConfig, outbox: Outbox, metrics: Metrics, *,
                 health: Callable[[], dict[str, Any]] | None = None,
                 password: str | None = None, models: ModelPuller | None = None,
                 examples: ExampleShare | None = None) -> None:
        self.config = config
        self.outbox = outbox
        self.metrics = metrics
        self.health = health
        self.password = password
        self.models = models
        self.examples = examples
        self.topics = self.topics_of(config)
        self.client_id = f"dishtracker-{config.site}-{self.topics.box}"
        self.broker = f"{config.host}:{config.broker_port()}"
        self._wake = asyncio.Event()
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._models_task: asyncio.Task[None] | None = None
        self._examples_task: asyncio.Task[None] | None = None
        self._state = "starting"
        self._since = time.time()
        self._last_error: str | None = None
        self._depth: tuple[int, float | None] = (0, None)
        self._started = time.monotonic()
        outbox.add_outbox_listener(self._wake.set)

    @staticmethod
    def topics_of(config: FleetConfig) -> Topics:
        """The topics of the box ``config`` describes (``site`` must be set)."""
        if config.site is None:
            raise ValueError("fleet.site is required to publish")
        return Topics(config.topic_prefix, config.site, config.box_id())

    # ---- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Start publishing (on the loop); see :meth:`tasks`."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="fleet-publisher")
        if self.models is not None and self._models_task is None:
            self._models_task = asyncio.create_task(self.models.run(), name="fleet-models")
        if self.examples is not None and self._examples_task is None:
            self._examples_task = asyncio.create_task(self.examples.run(),
                                                      name="fleet-examples")

    def tasks(self) -> list[asyncio.Task[None]]:
        """The tasks the daemon's supervisor watches (they end only on a bug)."""
        return [t for t in (self._task, self._models_task, self._examples_task)
                if t is not None]

    async def close(self, timeout_s: float = 5.0) -> None:
        """Publish what is still unsent for up to ``timeout_s`` while connected,
        publish the ``offline`` status and disconnect. Unsent rows stay in the
        outbox for the next start."""
        self._closing.set()
        self._wake.set()
        # a download resumes at the next start; examples not merged yet come again
        # with the broker's retained copies
        for side in (self._models_task, self._examples_task):
            if side is not None:
                side.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await side
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except asyncio.TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        except Exception as err:  # the task crashed; the supervisor has logged it
            log.error("fleet_publisher_failed", error=repr(err))
        with contextlib.suppress(JournalError):
            self._depth = await self.outbox.outbox_depth()
        log.info("fleet_publisher_stopped", unsent=self._depth[0])

    def status(self) -> dict[str, Any]:
        """JSON-ready state for ``GET /api/fleet`` and the health report."""
        depth, oldest = self._depth
        status = {"enabled": True, "state": self._state, "broker": self.broker,
                  "tls": self.config.tls, "client_id": self.client_id,
                  "topics": self.topics.base, "since": self._since,
                  "last_error": self._last_error, "outbox_depth": depth,
                  "oldest_unsent_age_s": None if oldest is None else
                  round(max(0.0, time.time() - oldest), 3)}
        if self.models is not None:
            status["models"] = self.models.status()
        if self.examples is not None:
            status["examples"] = self.examples.status()
        return status

    # ---- the connection loop ---------------------------------------------------------

    async def run(self) -> None:
        """Connect, publish, reconnect with backoff; returns once :meth:`close` is called."""
        housekeeping = asyncio.create_task(self._housekeeping(), name="fleet-housekeeping")
        delay = self.config.reconnect_initial_s
        try:
            while not self._closing.is_set():
                self._set_state("connecting")
                connected = False
                try:
                    async with self._client() as client:
                        connected = True
                        self.metrics.fleet_broker_connected.set(1)
                        self._set_state("connected", error=None)
                        log.info("fleet_broker_connected", broker=self.broker,
                                 client_id=self.client_id, topics=self.topics.base)
                        delay = self.config.reconnect_initial_s
                        await self._session(client)
                except (aiomqtt.MqttError, _ConnectionLost) as err:
                    reason = _reason(err)
                    self.metrics.fleet_connection_errors.inc()
                    if connected:
                        log.warning("fleet_broker_lost", broker=self.broker, reason=reason)
                    else:
                        log.warning("fleet_broker_connect_failed", broker=self.broker,
                                    reason=reason)
                    self._last_error = reason
                finally:
                    self.metrics.fleet_broker_connected.set(0)
                if self._closing.is_set():
                    break
                wait = delay * random.uniform(0.8, 1.0)  # jitter spreads a fleet's reconnects
                self._set_state("disconnected")
                log.info("fleet_broker_reconnecting", broker=self.broker, in_s=round(wait, 2))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), wait)
                delay = min(delay * 2, self.config.reconnect_max_s)
        finally:
            self._set_state("stopped")
            housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await housekeeping

    def _client(self) -> aiomqtt.Client:
        will_props = Properties(PacketTypes.WILLMESSAGE)  # type: ignore[no-untyped-call]
        will_props.ContentType = "application/json"
        will = aiomqtt.Will(self.topics.status, status_message(
            self.topics, "offline", "connection lost"), qos=1, retain=True,
            properties=will_props)
        tls = ssl.create_default_context(
            cafile=str(self.config.ca_file) if self.config.ca_file else None) \
            if self.config.tls else None
        client = aiomqtt.Client(
            self.config.host, self.config.broker_port(), username=self.config.username,
            password=self.password, identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5, will=will, keepalive=self.config.keepalive_s,
            timeout=ACK_TIMEOUT_S, max_inflight_messages=WINDOW, tls_context=tls)
        # aiomqtt warns above 10 by default; the outbox and the examples have windows
        client.pending_calls_threshold = WINDOW + EXAMPLES_WINDOW + 8
        return client

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection: status, then outbox and health until closing or a failure."""
        await client.publish(self.topics.status, status_message(self.topics, "online"),
                             qos=1, retain=True, properties=_json_props())
        tasks = [asyncio.create_task(self._watch(client), name="fleet-watch"),
                 asyncio.create_task(self._pump(client), name="fleet-pump"),
                 asyncio.create_task(self._report(client), name="fleet-health")]
        if self.models is not None:
            for topic in self.models.follows:
                await self._subscribe(client, topic, "fleet_model_subscribe_refused")
            tasks.append(asyncio.create_task(self._model_state(client, self.models),
                                             name="fleet-model-state"))
        if self.examples is not None:
            await self._subscribe(client, self.examples.follows,
                                  "fleet_examples_subscribe_refused")
            tasks.append(asyncio.create_task(self.examples.pump(functools.partial(
                self._retain, client)), name="fleet-examples-out"))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises the failure that ended the session
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                    await task
        # the pump returned: closing, outbox drained
        await client.publish(self.topics.status, status_message(
            self.topics, "offline", "shutdown"), qos=1, retain=True, properties=_json_props())

    @staticmethod
    async def _subscribe(client: aiomqtt.Client, topic: str, event: str) -> None:
        granted = await client.subscribe(topic, qos=1)
        refused = [str(c) for c in granted if getattr(c, "is_failure", False)]
        if refused:  # e.g. the broker's ACL: nothing will come from there
            log.warning(event, topic=topic, reason=refused)

    @staticmethod
    async def _retain(client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        await client.publish(topic, payload, qos=1, retain=True, properties=_json_props())

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Hands model messages to the model pull and examples to the examples'
        share; raises once the connection drops (aiomqtt ends message iteration
        then): a publish waiting for its ``PUBACK`` would only notice at its timeout."""
        async for message in client.messages:  # only these topics are subscribed
            topic = message.topic.value
            if self.examples is not None and self.examples.wants(topic):
                self.examples.offer(topic, _bytes(message.payload))
                await asyncio.sleep(0)  # the retained copies of a site come in one burst
            elif self.models is not None:
                self.models.offer(topic, _bytes(message.payload),
                                  retained=bool(message.retain))
        raise _ConnectionLost("message iteration ended")

    async def _model_state(self, client: aiomqtt.Client, models: ModelPuller) -> None:
        """Publish the model pull's state (retained) on connect and at each change."""
        while True:
            models.changed.clear()
            report = models.last_report()
            if report is not None:
                await client.publish(self.topics.model, model_state_message(self.topics, report),
                                     qos=1, retain=True, properties=_json_props())
            await models.changed.wait()

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Publish unsent rows in order until closing finds the outbox empty."""
        while True:
            self._wake.clear()
            try:
                rows = await self.outbox.outbox_pending(WINDOW)
            except JournalError as err:
                log.error("fleet_outbox_read_failed", error=str(err))
                await self._idle(POLL_S)
                continue
            if not rows:
                await self._refresh_depth()
                if self._closing.is_set():
                    return
                await self._idle(POLL_S)
                continue
            acked, error = await self._publish(client, rows)
            if acked:
                try:
                    await self.outbox.outbox_mark_sent([r.id for r in acked])
                except JournalError as err:  # they go out again: at least once
                    log.error("fleet_outbox_mark_failed", error=str(err), rows=len(acked))
                    await self._idle(POLL_S)
                for row in acked:
                    self.metrics.fleet_published.labels(kind=row.kind).inc()
                await self._refresh_depth()
            if error is not None:
                raise _ConnectionLost(f"{len(rows) - len(acked)} of {len(rows)} messages "
                                      f"not acknowledged: {_reason(error)}") from error

    async def _publish(self, client: aiomqtt.Client,
                       rows: list[OutboxRow]) -> tuple[list[OutboxRow], BaseException | None]:
        """Publish ``rows`` in order (tasks start in creation order); the
        acknowledged prefix and the first failure."""
        sends = [asyncio.create_task(client.publish(
            self.topics.of(row), outbox_message(row, self.topics), qos=1,
            properties=_json_props(row)), name=f"fleet-send-{row.id}") for row in rows]
        results = await asyncio.gather(*sends, return_exceptions=True)
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                return rows[:i], result
        return rows, None

    async def _report(self, client: aiomqtt.Client) -> None:
        while True:
            report: dict[str, Any] = dict(self.health()) if self.health is not None else {}
            report["uptime_s"] = round(time.monotonic() - self._started, 1)
            status = self.status()
            report["outbox"] = {"depth": status["outbox_depth"],
                                "oldest_unsent_age_s": status["oldest_unsent_age_s"]}
            await client.publish(self.topics.health, health_message(self.topics, report),
                                 qos=1, properties=_json_props())
            await asyncio.sleep(self.config.health_interval_s)

    async def _housekeeping(self) -> None:
        """Prune sent rows past the retention; keep the depth gauge fresh offline."""
        keep_s = self.config.retention_days * 86400.0
        next_prune = 0.0
        while True:
            now = time.monotonic()
            if now >= next_prune:
                next_prune = now + HOUSEKEEPING_S
                try:
                    pruned = await self.outbox.outbox_prune(keep_s)
                except JournalError as err:
                    log.error("fleet_outbox_prune_failed", error=str(err))
                else:
                    if pruned:
                        log.info("fleet_outbox_pruned", rows=pruned,
                                 retention_days=self.config.retention_days)
            if self._state != "connected":
                await self._refresh_depth()
            await asyncio.sleep(DEPTH_REFRESH_S)

    async def _refresh_depth(self) -> None:
        with contextlib.suppress(JournalError):
            self._depth = await self.outbox.outbox_depth()
        self.metrics.fleet_outbox_depth.set(self._depth[0])

    async def _idle(self, timeout_s: float) -> None:
        """Wait for a commit's wake-up (or closing), at most ``timeout_s``."""
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout_s)

    def _set_state(self, state: str, **fields: Any) -> None:
        if state != self._state:
            self._state = state
            self._since = time.time()
        if "error" in fields:
            self._last_error = fields["error"]


def _json_props(row: OutboxRow | None = None) -> Properties:
    """MQTT v5 properties: JSON content, and the message's ids as user properties."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho is untyped here
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1  # UTF-8
    if row is not None:
        props.UserProperty = [("message_id", row.message_id), ("bill_id", row.bill_id),
                              ("type", row.kind)]
    return props


def _bytes(payload: bytes | bytearray | str | float | None) -> bytes:
    """A message's payload as paho hands it over (always bytes for a received one)."""
    if isinstance(payload, (bytes, bytearray)):
        return bytes(payload)
    return b"" if payload is None else str(payload).encode()


def _reason(err: BaseException) -> str:
    text = str(err) or type(err).__name__
    cause = err.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text
