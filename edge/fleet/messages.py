"""What the box sends to the fleet's MQTT broker: topics and JSON payloads.

``journal (outbox) ─▶ publisher ─▶ broker``: this module only shapes
messages; :mod:`edge.fleet.publisher` sends them. The layout, the schema and
the delivery semantics are documented in ``docs/FLEET.md``::

    {prefix}/{site}/{box}/{stream}/bills         a closed bill      (QoS 1)
    {prefix}/{site}/{box}/{stream}/corrections   a cashier's fix    (QoS 1)
    {prefix}/{site}/{box}/{stream}/handovers     a bill to the POS  (QoS 1)
    {prefix}/{site}/{box}/status                 online / offline   (QoS 1, retained, will)
    {prefix}/{site}/{box}/health                 every health_interval_s (QoS 1)

Every payload is one JSON object with ``"schema": 1``. Nothing here imports
the MQTT client, so the daemon runs without the ``mqtt`` extra.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from edge import __version__
from edge.billing.outbox import OutboxRow

SCHEMA = 1
"""``schema`` of every payload; a consumer ignores messages of a newer one it
does not know."""


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one box.

    Parameters
    ----------
    prefix, site, box : str
        One topic level each (``fleet.topic_prefix``, ``fleet.site``, the box id).
    """

    prefix: str
    site: str
    box: str

    @property
    def base(self) -> str:
        """``{prefix}/{site}/{box}``."""
        return f"{self.prefix}/{self.site}/{self.box}"

    @property
    def status(self) -> str:
        """Retained ``online``/``offline`` state (also the last will)."""
        return f"{self.base}/status"

    @property
    def health(self) -> str:
        """Periodic health report."""
        return f"{self.base}/health"

    def of(self, row: OutboxRow) -> str:
        """Topic of an outbox message: ``{base}/{stream}/bills``, ``…/corrections``
        or ``…/handovers``."""
        return f"{self.base}/{row.stream_id}/{row.kind}s"


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def outbox_message(row: OutboxRow, topics: Topics) -> bytes:
    """The payload of an outbox row: a header that identifies the message, and
    the row's content (``bill``; ``correction`` and ``effective``; or
    ``handover`` and ``bill``)."""
    return _dumps({"schema": SCHEMA, "type": row.kind, "message_id": row.message_id,
                   "bill_id": row.bill_id, "site": topics.site, "box": topics.box,
                   "stream_id": row.stream_id, "outbox_id": row.id,
                   "committed_at": row.created_at, **json.loads(row.payload)})


def status_message(topics: Topics, state: str, reason: str | None = None) -> bytes:
    """Retained status: ``state`` is ``online`` or ``offline`` (``reason`` says why)."""
    return _dumps({"schema": SCHEMA, "state": state, "site": topics.site, "box": topics.box,
                   "version": __version__, "at": time.time(), "reason": reason})


def health_message(topics: Topics, report: dict[str, Any]) -> bytes:
    """A health report: ``report`` (uptime, outbox, journal, streams) with the header."""
    return _dumps({"schema": SCHEMA, "site": topics.site, "box": topics.box,
                   "version": __version__, "at": time.time(), **report})
