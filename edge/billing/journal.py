"""The bill journal: every closed bill on disk before anyone is told about it.

``bill ─▶ journal ─▶ events``: :class:`edge.billing.service.BillingService`
commits each closed :class:`~edge.billing.model.Bill` here, in its one
journal thread, and only then publishes it. One SQLite file
(``storage.dir/journal.sqlite3``) in WAL mode with ``synchronous=FULL``: when
:meth:`Journal.commit` returns, the bill survives a kill -9 or a power cut.

Bills are append-only (a trigger refuses updates); cashier corrections are
rows of their own (see :mod:`edge.billing.corrections`). Committing a bill
id that is already there is a no-op, so a replay after a restart adds
nothing. The schema is documented in ``docs/API.md``.

With ``outbox=True`` (the fleet is enabled) each new bill and each
correction also gets a row in the ``outbox`` table in the same transaction
(:mod:`edge.billing.outbox`), for the MQTT publisher. Schema version 2 added
that table; a version 1 journal gains it when opened (its bills are not
enqueued: see ``docs/FLEET.md``). Schema version 3 added ``bills.review_json``
(:attr:`Bill.review <edge.billing.model.Bill.review>`); the bills of an older
journal read back with no review reason. Schema version 4 added the
``handovers`` table (a bill handed over to the POS, once, append-only) and
rebuilt the outbox with a ``target`` per row (``fleet`` or ``pos``) and the
``handover`` kind; a hand-over and its outbox rows are written in one
transaction, like a bill. Schema version 5 added ``bills.model_id`` and
``bills.model_version``: the model that served when the bill closed (empty
for the bills of an older journal). Schema version 6 added what corrections
teach (``line_views``, ``examples``: :mod:`edge.billing.teach`), version 7
``examples.shared``, what the fleet published of each example.

A :class:`Journal` holds one ``sqlite3`` connection and must be used from the
thread that opened it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge.billing import outbox as ob
from edge.billing import teach
from edge.billing.corrections import AnyCorrection, CorrectionConflict, effective, resolve
from edge.billing.model import REVIEW_REASONS, Bill
from edge.config import MenuEntry
from edge.errors import JournalError
from edge.fsutil import make_private_dir, restrict_file

SCHEMA_VERSION = 7
APPLICATION_ID = 0x44544A4E  # "DTJN" in the SQLite header: `file` and tools can tell it apart

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE bills (
        seq INTEGER PRIMARY KEY,
        bill_id TEXT NOT NULL UNIQUE,
        stream_id TEXT NOT NULL,
        tray_id INTEGER NOT NULL,
        opened_at REAL NOT NULL,
        closed_at REAL NOT NULL,
        frame_seq INTEGER NOT NULL,
        total REAL NOT NULL,
        needs_review INTEGER NOT NULL,
        reason TEXT NOT NULL,
        items_json TEXT NOT NULL,
        tray_box_json TEXT NOT NULL,
        created_at REAL NOT NULL)""",
    "CREATE INDEX bills_stream_seq ON bills (stream_id, seq)",
    "CREATE INDEX bills_closed_at ON bills (closed_at)",
    """CREATE TABLE snapshots (
        bill_id TEXT PRIMARY KEY REFERENCES bills (bill_id),
        jpeg BLOB NOT NULL)""",
    """CREATE TABLE corrections (
        id INTEGER PRIMARY KEY,
        bill_id TEXT NOT NULL REFERENCES bills (bill_id),
        created_at REAL NOT NULL,
        body_json TEXT NOT NULL)""",
    "CREATE INDEX corrections_bill ON corrections (bill_id, id)",
    """CREATE TRIGGER bills_append_only BEFORE UPDATE ON bills
        BEGIN SELECT RAISE(ABORT, 'bills are append-only: add a correction instead'); END""",
    """CREATE TRIGGER corrections_append_only BEFORE UPDATE ON corrections
        BEGIN SELECT RAISE(ABORT, 'corrections are append-only: add another one'); END""",
)

# Schema version -> the statements that reach it from the version before. A new
# journal runs _SCHEMA (version 1) and then every migration, so a fresh journal
# and an upgraded one are built by the same statements.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ob.SCHEMA,
    # bill-level review reasons; the append-only trigger fires on UPDATE, not on ALTER
    3: ("ALTER TABLE bills ADD COLUMN review_json TEXT NOT NULL DEFAULT '[]'",),
    4: (*ob.SCHEMA_V4,
        """CREATE TABLE handovers (
            bill_id TEXT PRIMARY KEY REFERENCES bills (bill_id),
            handed_over_at REAL NOT NULL,
            actor TEXT,
            pos INTEGER NOT NULL)""",
        """CREATE TRIGGER handovers_append_only BEFORE UPDATE ON handovers
            BEGIN SELECT RAISE(ABORT, 'a hand-over is written once'); END"""),
    # the model that made each bill (docs/MODELS.md)
    5: ("ALTER TABLE bills ADD COLUMN model_id TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE bills ADD COLUMN model_version TEXT NOT NULL DEFAULT ''"),
    # what corrections teach: line views and examples (docs/LEARNING.md); where
    # each line's dish was at closing
    6: (*teach.SCHEMA_V6,
        "ALTER TABLE bills ADD COLUMN line_boxes_json TEXT NOT NULL DEFAULT '[]'"),
    # what the fleet published of each example (docs/FLEET.md)
    7: teach.SCHEMA_V7,
}

T = TypeVar("T")

_PAGE = 500
"""Bills read at once by :meth:`Journal.between` (under SQLite's bound-parameter limit)."""

_COLUMNS = ("b.seq, b.bill_id, b.stream_id, b.tray_id, b.opened_at, b.closed_at, b.frame_seq, "
            "b.total, b.needs_review, b.reason, b.items_json, b.tray_box_json, b.review_json, "
            "b.created_at, b.model_id, b.model_version, b.line_boxes_json, "
            "s.bill_id IS NOT NULL, "
            "h.handed_over_at, h.actor")
_SELECT = (f"SELECT {_COLUMNS} FROM bills b LEFT JOIN snapshots s ON s.bill_id = b.bill_id "
           "LEFT JOIN handovers h ON h.bill_id = b.bill_id")


@dataclass(frozen=True, slots=True)
class BillPage:
    """One page of :meth:`Journal.list_bills`, newest first.

    ``next_before`` is the cursor of the next (older) page, None on the last;
    ``last_seq`` the newest ``seq`` in the whole journal when the page was
    read (an event stream opened with ``after=last_seq`` misses nothing).
    """

    bills: list[dict[str, Any]]
    next_before: int | None
    last_seq: int


class Journal:
    """The SQLite bill journal.

    Parameters
    ----------
    path : Path
        The journal file; created (with its folder) when missing.
    outbox : bool
        Write an outbox row with every new bill and correction, in the same
        transaction (the fleet is enabled).

    Raises
    ------
    JournalError
        The folder cannot be created or written, the file is not a SQLite
        database or not a DishTracker journal, or its schema is newer than
        this version understands.
    """

    def __init__(self, path: Path, *, outbox: bool = False) -> None:
        self.path = path
        self.outbox = outbox
        _check_writable(path)
        _make_private(path)
        try:
            self._conn = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        except sqlite3.Error as err:
            raise JournalError(f"{path}: cannot open the journal: {err}") from err
        try:
            version = self._check_schema()  # before any PRAGMA that would change a foreign file
            self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
            # FULL: the WAL is fsynced at every commit (NORMAL would lose the
            # last commits on power loss, though not on a process kill)
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._default_max_pages = int(
                self._conn.execute("PRAGMA max_page_count").fetchone()[0])
            if version < SCHEMA_VERSION:
                self._create_schema(version)
        except sqlite3.OperationalError as err:  # locked, I/O error, read-only medium
            self._conn.close()
            raise JournalError(f"{path}: cannot open the journal: {err}") from err
        except sqlite3.DatabaseError as err:  # "file is not a database"
            self._conn.close()
            raise JournalError(f"{path}: not a DishTracker journal ({err}); move the file "
                               "away or point storage.dir elsewhere") from err
        except JournalError:
            self._conn.close()
            raise

    def _create_schema(self, version: int) -> None:
        """Create the schema (``version`` 0) or migrate it up, in one transaction."""
        with self._write():
            if version == 0:
                for statement in _SCHEMA:  # not executescript(): it would commit early
                    self._conn.execute(statement)
                self._conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                version = 1
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    self._conn.execute(statement)
            self._conn.execute("INSERT INTO schema_version (version) VALUES (?)",
                               (SCHEMA_VERSION,))

    def _check_schema(self) -> int:
        """The schema version (0 for an empty database, a new journal); raises
        for a foreign or newer one."""
        tables = {r[0] for r in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return 0
        if "schema_version" not in tables:
            raise JournalError(
                f"{self.path} is an SQLite database but not a DishTracker journal (tables: "
                f"{', '.join(sorted(tables))}); move it away or point storage.dir elsewhere")
        row = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] if row else None
        if not isinstance(version, int):
            raise JournalError(f"{self.path}: the journal has no schema version")
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"{self.path}: journal schema version {version} is newer than this "
                f"DishTracker understands ({SCHEMA_VERSION}); upgrade DishTracker, or move "
                "the file away to start a new journal")
        return version

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise

    def commit(self, bill: Bill) -> bool:
        """Write a closed bill (and its snapshot) durably.

        Returns
        -------
        bool
            True if the bill is new, False if its ``bill_id`` was already
            journaled (nothing is written then).

        Raises
        ------
        JournalError
            The write failed (disk full, I/O error); nothing was written.
        """
        created_at = time.time()
        try:
            with self._write():
                cur = self._conn.execute(
                    "INSERT INTO bills (bill_id, stream_id, tray_id, opened_at, closed_at, "
                    "frame_seq, total, needs_review, reason, items_json, tray_box_json, "
                    "review_json, created_at, model_id, model_version, line_boxes_json) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (bill_id) DO NOTHING",
                    (bill.bill_id, bill.stream_id, bill.tray_id, bill.opened_at,
                     bill.closed_at, bill.frame_seq, bill.total, int(bill.needs_review),
                     bill.reason, json.dumps([i.to_json() for i in bill.items]),
                     json.dumps(list(bill.tray_box)), json.dumps(list(bill.review)),
                     created_at, bill.model_id, bill.model_version,
                     json.dumps([None if b is None else list(b) for b in bill.line_boxes])))
                new = cur.rowcount == 1
                if new and bill.snapshot_jpeg is not None:
                    self._conn.execute("INSERT INTO snapshots (bill_id, jpeg) VALUES (?, ?)",
                                       (bill.bill_id, bill.snapshot_jpeg))
                if new and bill.views:
                    teach.write_views(self._conn, bill.bill_id, bill.model_id, bill.views,
                                      created_at)
                if new and self.outbox:
                    payload = ob.bill_payload(bill.to_json(), int(cur.lastrowid or 0),
                                              created_at)
                    ob.enqueue(self._conn, kind="bill", message_id=bill.bill_id,
                               bill_id=bill.bill_id, stream_id=bill.stream_id, payload=payload,
                               created_at=created_at)
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot commit bill {bill.bill_id}: {err}") from err
        return new

    def get(self, bill_id: str) -> dict[str, Any] | None:
        """The bill as JSON with ``seq``, ``created_at``, ``corrections``,
        ``effective`` (see :func:`edge.billing.corrections.effective`) and
        ``review_text`` (what the cashier is told for each ``review`` reason,
        :data:`~edge.billing.model.REVIEW_REASONS`; the reason itself when it
        has no text), or None."""
        rows = self._read(f"{_SELECT} WHERE b.bill_id = ?", (bill_id,))
        return self._views(rows)[0] if rows else None

    def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Bills committed after ``seq``, oldest first, at most ``limit``."""
        rows = self._read(f"{_SELECT} WHERE b.seq > ? ORDER BY b.seq LIMIT ?", (seq, limit))
        return self._views(rows)

    def last_tray_ids(self) -> dict[str, int]:
        """The highest tray number billed per stream."""
        rows = self._read("SELECT stream_id, max(tray_id) FROM bills GROUP BY stream_id", ())
        return {str(sid): int(tid) for sid, tid in rows}

    def last_seq(self) -> int:
        """``seq`` of the newest bill (0 for an empty journal)."""
        rows = self._read("SELECT coalesce(max(seq), 0) FROM bills", ())
        return int(rows[0][0])

    def list_bills(self, limit: int = 50, *, before: int | None = None,
                   stream: str | None = None, since: float | None = None,
                   until: float | None = None) -> BillPage:
        """Bills newest first (by commit order), one page.

        Parameters
        ----------
        limit
            Page size, at least 1.
        before
            Cursor: only bills committed before this ``seq`` (the previous
            page's ``next_before``).
        stream
            Only this stream's bills.
        since, until
            Only bills closed at or after ``since`` and before ``until``
            (Unix seconds).
        """
        where, args = [], []
        for clause, value in (("b.seq < ?", before), ("b.stream_id = ?", stream),
                              ("b.closed_at >= ?", since), ("b.closed_at < ?", until)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = _SELECT + (f" WHERE {' AND '.join(where)}" if where else "")
        rows = self._read(f"{sql} ORDER BY b.seq DESC LIMIT ?", (*args, limit + 1))
        more = len(rows) > limit
        views = self._views(rows[:limit])
        return BillPage(views, views[-1]["seq"] if more else None, self.last_seq())

    def snapshot(self, bill_id: str) -> bytes | None:
        """JPEG of the frame at closing, or None (no such bill or no image)."""
        rows = self._read("SELECT jpeg FROM snapshots WHERE bill_id = ?", (bill_id,))
        return bytes(rows[0][0]) if rows else None

    def add_correction(self, bill_id: str, correction: AnyCorrection,
                       menu: Mapping[str, MenuEntry], *,
                       actor: str | None = None) -> dict[str, Any] | None:
        """Store a correction beside the bill; the updated bill, or None if unknown.

        The stored body records ``actor`` (who made it; None: unknown) and,
        for a bill already handed over, ``after_handover: true``; the POS
        then gets the correction too (an outbox row for the ``pos`` target,
        when the hand-over went there).

        Raises
        ------
        CorrectionConflict
            The bill's state refuses it (void; nothing to undo); nothing stored.
        CorrectionError
            The correction does not fit the bill or the menu (nothing stored).
        JournalError
            The write failed.
        """
        try:
            with self._write():
                row = self._conn.execute(
                    "SELECT b.items_json, b.stream_id, b.review_json, h.bill_id IS NOT NULL, "
                    "coalesce(h.pos, 0) FROM bills b LEFT JOIN handovers h "
                    "ON h.bill_id = b.bill_id WHERE b.bill_id = ?", (bill_id,)).fetchone()
                if row is None:
                    return None
                items = json.loads(row[0])
                review = json.loads(row[2])
                earlier = self._corrections_of(bill_id)
                body = {**resolve(correction, items, earlier, menu), "actor": actor}
                if row[3]:
                    body["after_handover"] = True
                created_at = time.time()
                cur = self._conn.execute(
                    "INSERT INTO corrections (bill_id, created_at, body_json) VALUES (?, ?, ?)",
                    (bill_id, created_at, json.dumps(body)))
                cid = int(cur.lastrowid or 0)
                stored = {"id": cid, "created_at": created_at, **body}
                state = effective(items, [*earlier, stored], review=review)
                teach.relabel(self._conn, bill_id, state, cid, created_at)
                targets = (["fleet"] if self.outbox else []) + (["pos"] if row[4] else [])
                if targets:  # the payload only for somebody to send it to
                    payload = ob.correction_payload(stored, state)
                    for target in targets:
                        ob.enqueue(self._conn, kind="correction",
                                   message_id=ob.correction_message_id(bill_id, cid),
                                   bill_id=bill_id, stream_id=str(row[1]), payload=payload,
                                   created_at=created_at, target=target)
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot store the correction of {bill_id}: "
                               f"{err}") from err
        return self.get(bill_id)

    # ---- what corrections teach (edge.billing.teach) -----------------------------

    def examples_of_bill(self, bill_id: str) -> list[teach.StoredExample]:
        """Every example ``bill_id``'s corrections made, taken back or not."""
        return self._teach_read(teach.examples_of_bill, bill_id)

    def active_examples(self) -> list[teach.StoredExample]:
        """Every example in force, local and shared by other boxes."""
        return self._teach_read(teach.active_examples)

    def add_remote_examples(self, examples: Sequence[teach.StoredExample]) -> int:
        """Store examples another box shared (idempotent by uid); rows added or changed."""
        try:
            with self._write():
                return teach.add_remote(self._conn, examples, time.time())
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot store shared examples: {err}") from err

    def examples_to_share(self, limit: int) -> list[tuple[str, list[teach.StoredExample]]]:
        """Up to ``limit`` bills whose local examples the fleet has not published as
        they are now, each with the examples to publish (:func:`teach.unshared`)."""
        return self._teach_read(teach.unshared, limit)

    def unshared_example_bills(self) -> int:
        """How many bills have local examples the fleet has not published as they are now."""
        return self._teach_read(teach.unshared_bills)

    def mark_examples_shared(self, examples: Sequence[teach.StoredExample]) -> int:
        """Record that the broker acknowledged ``examples`` as they say; rows marked."""
        try:
            with self._write():
                return teach.mark_shared(self._conn, examples)
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot mark examples shared: {err}") from err

    def example_dims(self) -> dict[str, int]:
        """The embedding size of each model's examples in the journal."""
        return self._teach_read(teach.example_dims)

    def prune_views(self, before: float) -> int:
        """Forget the line views of bills journaled before ``before``; rows deleted."""
        try:
            with self._write():
                return teach.prune_views(self._conn, before)
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot prune line views: {err}") from err

    def _teach_read(self, op: Callable[..., T], *args: Any) -> T:
        try:
            return op(self._conn, *args)
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot read the journal: {err}") from err

    def handover(self, bill_id: str, *, actor: str | None = None,
                 pos: bool = False) -> dict[str, Any] | None:
        """Mark the bill handed over to the POS, once; the bill, or None if unknown.

        A second call changes nothing and answers the bill with the first
        hand-over's time and actor. The first one writes, in its transaction,
        an outbox row of kind ``handover`` (message id
        ``{bill_id}:handover``) for the fleet when the outbox is on, and for
        the POS webhook when ``pos`` is true.

        Raises
        ------
        CorrectionConflict
            The bill is void (nothing written).
        JournalError
            The write failed; nothing was written.
        """
        try:
            with self._write():
                row = self._conn.execute(
                    "SELECT b.items_json, b.stream_id, b.review_json, h.bill_id IS NOT NULL "
                    "FROM bills b LEFT JOIN handovers h ON h.bill_id = b.bill_id "
                    "WHERE b.bill_id = ?", (bill_id,)).fetchone()
                if row is None:
                    return None
                if not row[3]:
                    self._first_handover(bill_id, str(row[1]), actor, pos, effective(
                        json.loads(row[0]), self._corrections_of(bill_id),
                        review=json.loads(row[2])))
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot hand over {bill_id}: {err}") from err
        return self.get(bill_id)

    def _first_handover(self, bill_id: str, stream_id: str, actor: str | None, pos: bool,
                        state: dict[str, Any]) -> None:
        """Inside :meth:`handover`'s transaction: the row and its outbox rows."""
        if state["voided"]:
            raise CorrectionConflict([f"bill: {bill_id} is void ({state['void_reason']}); "
                                      "a void bill is not handed over"])
        at = time.time()
        self._conn.execute("INSERT INTO handovers (bill_id, handed_over_at, actor, pos) "
                           "VALUES (?, ?, ?, ?)", (bill_id, at, actor, int(pos)))
        targets = (["fleet"] if self.outbox else []) + (["pos"] if pos else [])
        if not targets:
            return
        view = self._views(self._read(f"{_SELECT} WHERE b.bill_id = ?", (bill_id,)))[0]
        payload = {"handover": {"bill_id": bill_id, "handed_over_at": at,
                                "handed_over_by": actor}, "bill": view}
        for target in targets:
            ob.enqueue(self._conn, kind="handover", message_id=ob.handover_message_id(bill_id),
                       bill_id=bill_id, stream_id=stream_id, payload=payload,
                       created_at=at, target=target)

    def _corrections_of(self, bill_id: str) -> list[dict[str, Any]]:
        """The bill's stored corrections, oldest first, each with its ``id``."""
        return [{"id": cid, **json.loads(body)} for cid, body in self._conn.execute(
            "SELECT id, body_json FROM corrections WHERE bill_id = ? ORDER BY id", (bill_id,))]

    def between(self, since: float, until: float, stream: str | None = None
                ) -> list[dict[str, Any]]:
        """Every bill closed in ``[since, until)`` (Unix seconds), oldest first,
        as :meth:`get` answers it; only ``stream``'s when given."""
        sql = f"{_SELECT} WHERE b.closed_at >= ? AND b.closed_at < ? AND b.seq > ?"
        args: list[Any] = [since, until]
        if stream is not None:
            sql += " AND b.stream_id = ?"
        out: list[dict[str, Any]] = []
        last = 0
        while True:  # in pages: _views binds one parameter per bill
            rows = self._read(f"{sql} ORDER BY b.seq LIMIT {_PAGE}",
                              [*args, last, *([stream] if stream is not None else [])])
            out += self._views(rows)
            if len(rows) < _PAGE:
                return out
            last = int(rows[-1][0])

    def outbox_pending(self, limit: int, target: str = "fleet") -> list[ob.OutboxRow]:
        """The first ``limit`` unsent outbox rows of ``target``, oldest first."""
        try:
            return ob.pending(self._conn, limit, target)
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot read the outbox: {err}") from err

    def outbox_mark_sent(self, ids: Sequence[int]) -> int:
        """Mark outbox rows sent (the broker acknowledged them); how many changed.

        Raises
        ------
        JournalError
            The write failed; the rows stay unsent and go out again.
        """
        try:
            with self._write():
                return ob.mark_sent(self._conn, ids, time.time())
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot mark outbox rows sent: {err}") from err

    def outbox_prune(self, keep_s: float) -> int:
        """Delete outbox rows sent more than ``keep_s`` seconds ago; how many went."""
        try:
            with self._write():
                return ob.prune(self._conn, time.time() - keep_s)
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot prune the outbox: {err}") from err

    def outbox_depth(self, target: str = "fleet") -> tuple[int, float | None]:
        """``(unsent outbox rows of target, created_at of the oldest or None)``."""
        try:
            return ob.depth(self._conn, target)
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot read the outbox: {err}") from err

    def limit_size(self, max_bytes: int | None) -> None:
        """Cap the database at ``max_bytes`` (rounded down to pages; never below
        its current size); None lifts the cap. A commit that would grow the file
        past it fails as on a full disk. For a storage quota and for tests."""
        if max_bytes is None:
            pages = self._default_max_pages
        else:
            page_size = int(self._conn.execute("PRAGMA page_size").fetchone()[0])
            pages = max(1, max_bytes // page_size)
        self._conn.execute(f"PRAGMA max_page_count = {int(pages)}")

    def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"`` or SQLite's list of problems."""
        rows = self._read("PRAGMA integrity_check", ())
        return "\n".join(str(r[0]) for r in rows)

    def close(self) -> None:
        """Checkpoint the WAL into the main file and close the connection."""
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._conn.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._conn.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as err:
            raise JournalError(f"{self.path}: cannot read the journal: {err}") from err

    def _views(self, rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        ids = [r[1] for r in rows]
        corrections: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
        if ids:
            marks = ", ".join("?" * len(ids))
            for cid, bill_id, created_at, body in self._read(
                    f"SELECT id, bill_id, created_at, body_json FROM corrections "
                    f"WHERE bill_id IN ({marks}) ORDER BY id", ids):
                corrections[bill_id].append({"id": cid, "created_at": created_at,
                                             **json.loads(body)})
        out = []
        for (seq, bill_id, stream_id, tray_id, opened_at, closed_at, frame_seq, total,
             needs_review, reason, items_json, box_json, review_json, created_at,
             model_id, model_version, line_boxes_json, has_snapshot, handed_over_at,
             handed_over_by) in rows:
            items = json.loads(items_json)
            review = json.loads(review_json)
            fixes = corrections[bill_id]
            out.append({
                "seq": seq, "bill_id": bill_id, "stream_id": stream_id, "tray_id": tray_id,
                "opened_at": opened_at, "closed_at": closed_at, "frame_seq": frame_seq,
                "items": items, "total": total, "needs_review": bool(needs_review),
                "reason": reason, "tray_box": json.loads(box_json), "review": review,
                "review_text": [REVIEW_REASONS.get(r, r) for r in review],
                "has_snapshot": bool(has_snapshot), "created_at": created_at,
                "handed_over_at": handed_over_at, "handed_over_by": handed_over_by,
                "model": {"id": model_id, "version": model_version},
                "line_boxes": json.loads(line_boxes_json),
                "corrections": fixes, "effective": effective(items, fixes, review=review),
            })
        return out


def _check_writable(path: Path) -> None:
    folder = path.parent
    try:
        make_private_dir(folder)  # bill photos: owner-only, whatever the umask
    except OSError as err:
        raise JournalError(f"cannot create the journal folder {folder}: {err.strerror}; set "
                           "storage.dir to a folder the daemon can write") from err
    # WAL mode creates journal.sqlite3-wal and -shm beside the file
    if not os.access(folder, os.W_OK | os.X_OK):
        raise JournalError(f"the journal folder {folder} is not writable by the daemon; "
                           "fix its permissions or set storage.dir")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise JournalError(f"the journal {path} is not readable and writable by the daemon; "
                           "fix its permissions")


def _make_private(path: Path) -> None:
    """Create the journal 0600 before SQLite opens it (SQLite gives its -wal and
    -shm files the database file's mode), and tighten files of older versions."""
    try:
        for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            restrict_file(name, create=name == path)
    except OSError as err:
        raise JournalError(f"cannot create the journal {path} owner-only: {err.strerror}") \
            from err
