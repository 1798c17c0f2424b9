"""What corrections teach, kept in the journal: line views and examples.

The journal (:mod:`edge.billing.journal`) calls these inside its own write
transactions, so a bill and its views, or a correction and the examples it
makes, are durable together or not at all (``kill -9`` included).

* ``line_views``: with each bill, the views of each line's dish (the
  detector's embedding as float16 and a small JPEG crop; the crop lets
  another model embed it again). Kept ``learning.keep_views_days``.
* ``examples``: labelled views. They are **derived from the bill's
  effective lines** after every correction (:func:`relabel`): a line the
  cashier changed or confirmed teaches its views as the line's dish now; a
  line removed, undone back to what was detected, or never touched teaches
  nothing. So an ``undo`` takes its examples back, and a line changed twice
  teaches only its last dish. Examples that stop being taught are marked
  ``removed_at`` (never deleted: the fleet and the learning bench may ask
  what was taken back); a line taught again revives its rows.
* Examples from other boxes (``origin`` the box's id) have no bill.
* ``examples.shared`` (schema 7) is what the fleet last published of a local
  example: NULL never, 0 in force, 1 taken back (:mod:`edge.fleet.examples`).
  A local example whose state differs is *unshared*: its bill's examples
  are published again. One taken back before it was ever shared never is.

An example's ``uid`` is ``{bill_id}/{line}/{k}/{key}`` on the box that made
it; the fleet prefixes the box id (:mod:`edge.fleet`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.frames import View

SCHEMA_V6 = (
    """CREATE TABLE line_views (
        bill_id TEXT NOT NULL REFERENCES bills (bill_id),
        line INTEGER NOT NULL,
        k INTEGER NOT NULL,
        model_id TEXT NOT NULL,
        embedding BLOB NOT NULL,
        crop BLOB,
        created_at REAL NOT NULL,
        PRIMARY KEY (bill_id, line, k))""",
    """CREATE TABLE examples (
        id INTEGER PRIMARY KEY,
        uid TEXT NOT NULL UNIQUE,
        key TEXT NOT NULL,
        model_id TEXT NOT NULL,
        embedding BLOB NOT NULL,
        crop BLOB,
        origin TEXT NOT NULL,
        bill_id TEXT,
        line INTEGER,
        correction_id INTEGER,
        created_at REAL NOT NULL,
        removed_at REAL)""",
    "CREATE INDEX examples_bill ON examples (bill_id)",
    "CREATE INDEX examples_changed ON examples (id, removed_at)",
)
"""Statements of journal schema version 6."""

_UNSHARED = "origin = 'local' AND coalesce(shared, 1) != (removed_at IS NOT NULL)"
"""A local example whose state the fleet has not published (see the module docstring)."""

SCHEMA_V7 = (
    "ALTER TABLE examples ADD COLUMN shared INTEGER",
    f"CREATE INDEX examples_unshared ON examples (bill_id) WHERE {_UNSHARED}",
)
"""Statements of journal schema version 7: what the fleet published of each example."""

CROP_QUALITY = 90
TAUGHT = ("changed", "confirmed")
"""Effective line statuses whose dish the cashier named (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class StoredExample:
    """An example as the journal holds it."""

    uid: str
    key: str
    model_id: str
    embedding: npt.NDArray[np.float32]
    origin: str
    removed: bool
    crop_jpeg: bytes | None = None


def write_views(conn: sqlite3.Connection, bill_id: str, model_id: str,
                views: Sequence[Sequence[View]], now: float) -> int:
    """Store each line's views with a new bill; the rows written."""
    rows = []
    for line, looks in enumerate(views):
        for k, view in enumerate(looks):
            ok, buf = cv2.imencode(".jpg", view.crop, [cv2.IMWRITE_JPEG_QUALITY, CROP_QUALITY])
            rows.append((bill_id, line, k, model_id,
                         np.asarray(view.embedding, np.float16).tobytes(),
                         buf.tobytes() if ok else None, now))
    conn.executemany("INSERT OR IGNORE INTO line_views (bill_id, line, k, model_id, embedding, "
                     "crop, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    return len(rows)


def relabel(conn: sqlite3.Connection, bill_id: str, state: Mapping[str, Any],
            correction_id: int, now: float) -> tuple[int, int]:
    """Make the bill's examples what its effective lines teach now (``state``:
    :func:`edge.billing.corrections.effective`); ``(added, removed)``."""
    want: dict[tuple[int, str], None] = {}
    for ln in state["items"]:
        if ln.get("status") in TAUGHT and not ln.get("unknown") and not state["voided"]:
            want[(int(ln["line"]), str(ln["key"]))] = None
    in_force = {(int(line), str(key)) for line, key in conn.execute(
        "SELECT DISTINCT line, key FROM examples WHERE bill_id = ? AND origin = 'local' "
        "AND removed_at IS NULL", (bill_id,))}
    removed = 0
    for line, key in in_force:
        if (line, key) not in want:
            removed += conn.execute("UPDATE examples SET removed_at = ? WHERE bill_id = ? AND "
                                    "line = ? AND key = ? AND removed_at IS NULL",
                                    (now, bill_id, line, key)).rowcount
    added = 0
    for line, key in want:
        revived = conn.execute("UPDATE examples SET removed_at = NULL, correction_id = ? "
                               "WHERE bill_id = ? AND line = ? AND key = ? "
                               "AND removed_at IS NOT NULL",
                               (correction_id, bill_id, line, key)).rowcount
        added += revived
        rows = conn.execute("SELECT k, model_id, embedding, crop FROM line_views "
                            "WHERE bill_id = ? AND line = ? ORDER BY k",
                            (bill_id, line)).fetchall()
        for k, model_id, emb, crop in rows:
            cur = conn.execute(
                "INSERT OR IGNORE INTO examples (uid, key, model_id, embedding, crop, origin, "
                "bill_id, line, correction_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, 'local', ?, ?, ?, ?)",
                (f"{bill_id}/{line}/{k}/{key}", key, model_id, emb, crop, bill_id, line,
                 correction_id, now))
            added += cur.rowcount
    return added, removed


def examples_of_bill(conn: sqlite3.Connection, bill_id: str) -> list[StoredExample]:
    """Every example a bill made, taken back or not."""
    return _examples(conn, "WHERE bill_id = ?", (bill_id,))


def active_examples(conn: sqlite3.Connection) -> list[StoredExample]:
    """Every example in force (the index at start)."""
    return _examples(conn, "WHERE removed_at IS NULL", ())


def add_remote(conn: sqlite3.Connection, examples: Iterable[StoredExample], now: float) -> int:
    """Store examples another box shared (idempotent by uid); the rows added or changed."""
    n = 0
    for ex in examples:
        cur = conn.execute(
            "INSERT INTO examples (uid, key, model_id, embedding, crop, origin, created_at, "
            "removed_at) VALUES (?, ?, ?, ?, NULL, ?, ?, ?) ON CONFLICT (uid) DO UPDATE SET "
            "removed_at = excluded.removed_at WHERE (removed_at IS NULL) != "
            "(excluded.removed_at IS NULL)",
            (ex.uid, ex.key, ex.model_id, np.asarray(ex.embedding, np.float16).tobytes(),
             ex.origin, now, now if ex.removed else None))
        n += cur.rowcount
    return n


def unshared(conn: sqlite3.Connection, limit: int) -> list[tuple[str, list[StoredExample]]]:
    """The first ``limit`` bills (oldest example first) whose local examples are not
    published as they are now, each with what to publish: every local example of
    the bill but those taken back before they were ever shared."""
    bills = [str(b) for (b,) in conn.execute(
        f"SELECT bill_id FROM examples WHERE {_UNSHARED} GROUP BY bill_id ORDER BY min(id) "
        "LIMIT ?", (limit,))]
    return [(b, _examples(conn, "WHERE bill_id = ? AND origin = 'local' AND "
                                "NOT (shared IS NULL AND removed_at IS NOT NULL)", (b,)))
            for b in bills]


def unshared_bills(conn: sqlite3.Connection) -> int:
    """How many bills have local examples not published as they are now."""
    return int(conn.execute(f"SELECT count(DISTINCT bill_id) FROM examples WHERE {_UNSHARED}"
                            ).fetchone()[0])


def mark_shared(conn: sqlite3.Connection, examples: Iterable[StoredExample]) -> int:
    """Record that ``examples`` were published in the state they say (``removed``),
    whatever their state now: one that changed since it was read stays unshared.
    The rows marked."""
    return sum(conn.execute("UPDATE examples SET shared = ? WHERE uid = ? AND origin = 'local'",
                            (int(ex.removed), ex.uid)).rowcount for ex in examples)


def example_dims(conn: sqlite3.Connection) -> dict[str, int]:
    """The embedding size of each model's examples (``{model_id: D}``)."""
    return {str(m): int(n) // 2 for m, n in conn.execute(
        "SELECT model_id, max(length(embedding)) FROM examples GROUP BY model_id")}


def prune_views(conn: sqlite3.Connection, before: float) -> int:
    """Forget line views made before ``before`` (Unix seconds); the rows deleted."""
    return conn.execute("DELETE FROM line_views WHERE created_at < ?", (before,)).rowcount


def _examples(conn: sqlite3.Connection, where: str, args: Sequence[Any]) -> list[StoredExample]:
    rows = conn.execute(f"SELECT uid, key, model_id, embedding, origin, removed_at IS NOT NULL, "
                        f"crop FROM examples {where} ORDER BY id", tuple(args)).fetchall()
    return [StoredExample(uid, key, model_id, _unit(np.frombuffer(emb, np.float16)), origin,
                          bool(removed), None if crop is None else bytes(crop))
            for uid, key, model_id, emb, origin, removed, crop in rows]


def _unit(x: npt.NDArray[np.float16]) -> npt.NDArray[np.float32]:
    v = x.astype(np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-6 else v
