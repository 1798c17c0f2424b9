"""Fan-out of billing events to the open ``GET /api/events`` streams.

``journal ─▶ events``: :class:`edge.billing.service.BillingService`
publishes a bill here only after the journal committed it. Each subscriber
(one server-sent-event stream, :mod:`edge.web.bills`) has

- a bounded FIFO of **reliable** events (closed bills, corrections, journal
  state), never dropped: a subscriber that falls :data:`MAX_PENDING` events
  behind is disconnected, with the reason logged, and its browser reconnects
  and catches up from the journal (``Last-Event-ID``);
- the **latest tray state per stream**, overwritten by newer state (live
  video may drop; the open bill on screen only needs the latest).

Bill events carry the journal's ``seq`` as their event id; other events carry
none, so a browser's ``Last-Event-ID`` is always the last bill it received.
Everything here runs on the event loop.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog

MAX_PENDING = 256
"""Reliable events a subscriber may fall behind before it is disconnected."""

MAX_SUBSCRIBERS = 32
"""Open event streams at most (a checkout has a screen or two)."""

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event.

    Parameters
    ----------
    kind : str
        SSE event name: ``bill``, ``bill_corrected``, ``journal``, ``tray``, ``resync``.
    data : str
        One line of JSON.
    id : str or None
        SSE event id (bills only: the journal ``seq``).
    """

    kind: str
    data: str
    id: str | None = None

    @classmethod
    def of(cls, kind: str, payload: Any, event_id: int | None = None) -> Event:
        """An event of JSON-ready ``payload`` (one line: ``json.dumps`` never breaks lines)."""
        return cls(kind, json.dumps(payload, separators=(",", ":")),
                   None if event_id is None else str(event_id))

    def encode(self) -> bytes:
        """The event in the ``text/event-stream`` wire format."""
        head = f"id: {self.id}\n" if self.id is not None else ""
        return f"{head}event: {self.kind}\ndata: {self.data}\n\n".encode()


class SubscriptionClosed(Exception):
    """The subscription ended: the hub closed, or the subscriber fell behind."""


class Subscription:
    """What one event stream receives; see the module docstring."""

    def __init__(self, trays: dict[str, Event], max_pending: int) -> None:
        self._reliable: deque[Event] = deque()
        self._trays = dict(trays)
        self._max_pending = max_pending
        self._ready = asyncio.Event()
        self.closed_reason: str | None = None
        if trays:
            self._ready.set()

    @property
    def pending(self) -> int:
        """Reliable events not yet taken."""
        return len(self._reliable)

    async def get(self) -> Event:
        """The next event: reliable ones first, then the newest tray state per stream.

        Cancelling a waiting ``get`` loses nothing.

        Raises
        ------
        SubscriptionClosed
            Once the subscription is closed (with the reason).
        """
        while True:
            if self.closed_reason is not None:
                raise SubscriptionClosed(self.closed_reason)
            if self._reliable:
                return self._reliable.popleft()
            if self._trays:
                stream = next(iter(self._trays))
                return self._trays.pop(stream)
            self._ready.clear()
            await self._ready.wait()

    def _push(self, event: Event) -> bool:
        if self.closed_reason is not None:
            return True
        if len(self._reliable) >= self._max_pending:
            return False
        self._reliable.append(event)
        self._ready.set()
        return True

    def _push_tray(self, stream_id: str, event: Event) -> None:
        self._trays.pop(stream_id, None)  # re-insert: streams take turns in update order
        self._trays[stream_id] = event
        self._ready.set()

    def _close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self._ready.set()


class EventHub:
    """Publishes billing events to every :class:`Subscription`.

    Parameters
    ----------
    max_pending : int
        Reliable events a subscriber may fall behind before it is disconnected.
    max_subscribers : int
        :meth:`subscribe` refuses more (returns None).
    """

    def __init__(self, *, max_pending: int = MAX_PENDING,
                 max_subscribers: int = MAX_SUBSCRIBERS) -> None:
        self.max_pending = max_pending
        self.max_subscribers = max_subscribers
        self._subs: list[Subscription] = []
        self._trays: dict[str, Event] = {}
        self._closed = False

    @property
    def subscribers(self) -> int:
        """Open subscriptions."""
        return len(self._subs)

    def subscribe(self) -> Subscription | None:
        """A new subscription, holding the latest tray state of every stream;
        None when :attr:`max_subscribers` are open. After :meth:`close` the
        subscription comes back closed."""
        sub = Subscription(self._trays, self.max_pending)
        if self._closed:
            sub._close("server shutting down")
            return sub
        if len(self._subs) >= self.max_subscribers:
            return None
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub`` (safe to call twice)."""
        if sub in self._subs:
            self._subs.remove(sub)
        sub._close("unsubscribed")

    def publish(self, event: Event) -> None:
        """Deliver a reliable event to every subscriber; one that is too far
        behind is disconnected (its client reconnects and replays)."""
        for sub in list(self._subs):
            if not sub._push(event):
                reason = (f"fell {sub.pending} events behind (limit {self.max_pending}); "
                          "the client reconnects and replays from the journal")
                log.warning("sse_subscriber_dropped", reason=reason)
                self._subs.remove(sub)
                sub._close(reason)

    def publish_tray(self, stream_id: str, event: Event) -> None:
        """Latest tray state of a stream; replaces what a subscriber has not taken yet."""
        self._trays[stream_id] = event
        for sub in self._subs:
            sub._push_tray(stream_id, event)

    def forget_stream(self, stream_id: str) -> None:
        """Drop a stream's last tray state (the stream was removed)."""
        self._trays.pop(stream_id, None)

    def close(self) -> None:
        """End every subscription (shutdown): their streams finish at once."""
        self._closed = True
        subs, self._subs = self._subs, []
        for sub in subs:
            sub._close("server shutting down")
