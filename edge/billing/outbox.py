"""The fleet outbox: messages for the MQTT broker, in the journal's own SQLite file.

``bill ─▶ journal (+ outbox) ─▶ fleet publisher ─▶ broker``: when the fleet
is enabled, :class:`edge.billing.journal.Journal` writes one outbox row in
the same transaction as each new bill and each correction, so a committed
bill is always in the outbox and a rolled-back one never is (a kill -9 or a
power cut cannot split them). :class:`edge.fleet.publisher.FleetPublisher`
sends the unsent rows in ``id`` order and marks them sent once the broker
acknowledged them (QoS 1 ``PUBACK``); rows sent more than the retention ago
are deleted. The table is documented in ``docs/FLEET.md``.

Schema version 4 gave each row a ``target``: ``fleet`` rows go to the MQTT
broker, ``pos`` rows to the POS webhook (:mod:`edge.billing.pos`); each
destination marks its own rows sent. It also added the kind ``handover`` (a
bill handed over to the POS, ``message_id`` ``{bill_id}:handover``).

The payload is fixed at commit time (the bill as journaled, or the
correction with the effective bill after it), so every re-send of a message
carries the same content. Functions here take the journal's connection and
run inside its transactions; they never commit.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("bill", "correction", "handover")
"""What an outbox row carries; the MQTT topic's last level is ``{kind}s``."""

TARGETS = ("fleet", "pos")
"""Where an outbox row goes: the MQTT broker, or the POS webhook."""

SCHEMA = (
    """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('bill', 'correction')),
        message_id TEXT NOT NULL UNIQUE,
        bill_id TEXT NOT NULL REFERENCES bills (bill_id),
        stream_id TEXT NOT NULL,
        payload_json TEXT NOT NULL,
        created_at REAL NOT NULL,
        sent_at REAL)""",
    "CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL",
    "CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL",
)
"""Statements of schema version 2 (the outbox), run in one migration transaction."""

SCHEMA_V4 = (
    # SQLite cannot alter a CHECK constraint: the table is rebuilt, its rows copied
    # with their ids (publication order) and sent marks
    """CREATE TABLE outbox_v4 (
        id INTEGER PRIMARY KEY,
        target TEXT NOT NULL DEFAULT 'fleet' CHECK (target IN ('fleet', 'pos')),
        kind TEXT NOT NULL CHECK (kind IN ('bill', 'correction', 'handover')),
        message_id TEXT NOT NULL,
        bill_id TEXT NOT NULL REFERENCES bills (bill_id),
        stream_id TEXT NOT NULL,
        payload_json TEXT NOT NULL,
        created_at REAL NOT NULL,
        sent_at REAL,
        UNIQUE (target, message_id))""",
    "INSERT INTO outbox_v4 (id, target, kind, message_id, bill_id, stream_id, payload_json, "
    "created_at, sent_at) SELECT id, 'fleet', kind, message_id, bill_id, stream_id, "
    "payload_json, created_at, sent_at FROM outbox",
    "DROP TABLE outbox",
    "ALTER TABLE outbox_v4 RENAME TO outbox",
    "CREATE INDEX outbox_unsent ON outbox (target, id) WHERE sent_at IS NULL",
    "CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL",
)
"""Statements of schema version 4's outbox (targets, the ``handover`` kind)."""


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One message waiting for (or past) its publication.

    Parameters
    ----------
    id : int
        Outbox order: publication order, across streams.
    kind : str
        ``"bill"``, ``"correction"`` or ``"handover"``.
    message_id : str
        Stable id of the message: the ``bill_id`` for a bill,
        ``{bill_id}:c{correction id}`` for a correction, ``{bill_id}:handover``
        for a hand-over. Consumers dedupe by it.
    bill_id, stream_id : str
        The bill the message is about, and its stream.
    payload : str
        JSON object fixed at commit time (see :func:`bill_payload`,
        :func:`correction_payload`).
    created_at : float
        Unix seconds of the commit.
    """

    id: int
    kind: str
    message_id: str
    bill_id: str
    stream_id: str
    payload: str
    created_at: float


def correction_message_id(bill_id: str, correction_id: int) -> str:
    """The stable message id of a correction (``bill_id`` never holds a colon)."""
    return f"{bill_id}:c{correction_id}"


def handover_message_id(bill_id: str) -> str:
    """The stable message id of a bill's hand-over to the POS."""
    return f"{bill_id}:handover"


def bill_payload(bill: dict[str, Any], seq: int, created_at: float) -> dict[str, Any]:
    """The payload of a bill message: ``{"bill": …}``, ``Bill.to_json()`` with
    the journal's ``seq`` and ``created_at`` (the shape of
    ``GET /api/bills/{id}`` without ``corrections`` and ``effective``)."""
    return {"bill": {"seq": seq, **bill, "created_at": created_at}}


def correction_payload(correction: dict[str, Any],
                       effective: dict[str, Any]) -> dict[str, Any]:
    """The payload of a correction message: the correction as stored (``id``,
    ``created_at``, ``action`` …) and the effective bill after it."""
    return {"correction": correction, "effective": effective}


def enqueue(conn: sqlite3.Connection, *, kind: str, message_id: str, bill_id: str,
            stream_id: str, payload: dict[str, Any], created_at: float,
            target: str = "fleet") -> None:
    """Add a row for ``target`` inside the caller's write transaction (a message
    id already there for that target is left as it was: replays add nothing)."""
    conn.execute(
        "INSERT INTO outbox (target, kind, message_id, bill_id, stream_id, payload_json, "
        "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (target, message_id) DO NOTHING",
        (target, kind, message_id, bill_id, stream_id,
         json.dumps(payload, separators=(",", ":")), created_at))


def pending(conn: sqlite3.Connection, limit: int, target: str = "fleet") -> list[OutboxRow]:
    """The first ``limit`` unsent rows of ``target``, oldest first."""
    rows = conn.execute(
        "SELECT id, kind, message_id, bill_id, stream_id, payload_json, created_at "
        "FROM outbox WHERE sent_at IS NULL AND target = ? ORDER BY id LIMIT ?",
        (target, limit)).fetchall()
    return [OutboxRow(*r) for r in rows]


def mark_sent(conn: sqlite3.Connection, ids: Sequence[int], sent_at: float) -> int:
    """Mark rows sent (inside the caller's transaction); how many changed."""
    changed = 0
    for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
        chunk = list(ids[start:start + 500])
        marks = ", ".join("?" * len(chunk))
        changed += conn.execute(
            f"UPDATE outbox SET sent_at = ? WHERE sent_at IS NULL AND id IN ({marks})",
            (sent_at, *chunk)).rowcount
    return changed


def prune(conn: sqlite3.Connection, sent_before: float) -> int:
    """Delete rows sent before ``sent_before`` (Unix seconds); how many went.
    Unsent rows are never deleted."""
    return int(conn.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?",
                            (sent_before,)).rowcount)


def depth(conn: sqlite3.Connection, target: str = "fleet") -> tuple[int, float | None]:
    """``(unsent rows of target, created_at of the oldest unsent row or None)``."""
    count, oldest = conn.execute(
        "SELECT count(*), min(created_at) FROM outbox WHERE sent_at IS NULL AND target = ?",
        (target,)).fetchone()
    return int(count), (None if oldest is None else float(oldest))
