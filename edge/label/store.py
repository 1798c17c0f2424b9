"""The labelling workspace's store: frames, proposals, labels and leases in one SQLite file.

Where it sits: the workspace's memory (:mod:`edge.label`), beside the bill
journal under ``storage.dir`` (``labels/labels.sqlite3``, the frames' images
in ``labels/frames/``), owner-only and in WAL mode with ``synchronous=FULL``
like the journal: a label the server answered for survives a kill -9 or a
power cut.

The rules it keeps, each in one transaction taken at once (``BEGIN
IMMEDIATE``), so they hold between processes too (the daemon, and
``dishtracker label import`` beside it):

- **Work items.** Every frame is labelled once (pass 1); one frame in
  ``double_every`` (chosen at import) a second time (pass 2) by someone
  else, after pass 1 is complete, to measure agreement. A pass is one item.
- **Leases.** An item is leased to one labeller at a time for ``lease_s``
  seconds, renewed by every read and write of its holder; taking another
  item gives the last one back. An expired lease is anybody's.
- **Revisions.** A write is a new revision (append-only: a trigger refuses
  updates) carrying the version it was made from; a write from any other
  version than the newest is refused (:class:`StaleWrite`) and changes
  nothing, so two tabs of one labeller, or a labeller whose lease ran out
  and was taken, never overwrite each other silently. Version 0 is the
  detector's proposals, before anyone wrote.
- **Questions.** A frame the daemon asked about (:mod:`edge.learn.questions`)
  is imported once per question and once per bill; the lines it asks about
  (boxes, reasons, proposals) are kept beside it (schema 2; a schema 1 file
  gets the table when opened).

A :class:`LabelStore` holds one ``sqlite3`` connection: use it from the
thread that opened it.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge.errors import JournalError
from edge.fsutil import make_private_dir, restrict_file

SCHEMA_VERSION = 2
APPLICATION_ID = 0x44544C42  # "DTLB"
LABELS_SUBDIR = "labels"
"""The workspace's folder under ``storage.dir``."""
DB_FILE = "labels.sqlite3"
FRAMES_SUBDIR = "frames"
LEASE_S = 300.0
"""A lease's life without activity (seconds)."""

_QUESTIONS = """CREATE TABLE questions (
        frame_id INTEGER PRIMARY KEY REFERENCES frames (id),
        question_id TEXT NOT NULL UNIQUE,
        bill_id TEXT NOT NULL UNIQUE,
        stream TEXT NOT NULL,
        closed_at REAL NOT NULL,
        lines_json TEXT NOT NULL,
        imported_at REAL NOT NULL)"""

_SCHEMA = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE frames (
        id INTEGER PRIMARY KEY,
        sha256 TEXT NOT NULL UNIQUE,
        file TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        source TEXT NOT NULL,
        source_frame INTEGER,
        passes INTEGER NOT NULL CHECK (passes IN (1, 2)),
        imported_at REAL NOT NULL)""",
    """CREATE TABLE proposals (
        frame_id INTEGER PRIMARY KEY REFERENCES frames (id),
        model TEXT NOT NULL,
        created_at REAL NOT NULL,
        boxes_json TEXT NOT NULL,
        dim INTEGER,
        embeddings BLOB)""",
    """CREATE TABLE revisions (
        id INTEGER PRIMARY KEY,
        frame_id INTEGER NOT NULL REFERENCES frames (id),
        pass INTEGER NOT NULL,
        version INTEGER NOT NULL,
        actor TEXT NOT NULL,
        at REAL NOT NULL,
        boxes_json TEXT NOT NULL,
        complete INTEGER NOT NULL,
        UNIQUE (frame_id, pass, version))""",
    """CREATE TABLE leases (
        frame_id INTEGER NOT NULL REFERENCES frames (id),
        pass INTEGER NOT NULL,
        actor TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (frame_id, pass))""",
    _QUESTIONS,
    """CREATE TRIGGER proposals_append_only BEFORE UPDATE ON proposals
        BEGIN SELECT RAISE(ABORT, 'proposals are written once'); END""",
    """CREATE TRIGGER revisions_append_only BEFORE UPDATE ON revisions
        BEGIN SELECT RAISE(ABORT, 'revisions are append-only: write a new one'); END""",
)

FloatArray = npt.NDArray[np.float32]
Step = Literal["next", "previous"]


class StaleWrite(Exception):  # an answer (409), not a failure of the store
    """A write made from a version that is no longer the newest; ``current`` is the newest."""

    def __init__(self, current: Revision) -> None:
        super().__init__(f"frame {current.frame_id} pass {current.pass_} is at version "
                         f"{current.version} (by {current.actor or 'the detector'}); reload it")
        self.current = current


class LeaseTaken(Exception):  # an answer (409), not a failure of the store
    """The item is leased to someone else (``holder``) until ``expires_at``."""

    def __init__(self, frame_id: int, pass_: int, holder: str, expires_at: float) -> None:
        super().__init__(f"frame {frame_id} pass {pass_} is leased to {holder!r}; take "
                         "the next frame instead")
        self.holder, self.expires_at = holder, expires_at


@dataclass(frozen=True, slots=True)
class Frame:
    """One imported frame; ``file`` is relative to the frames folder."""

    id: int
    file: str
    width: int
    height: int
    source: str
    source_frame: int | None
    passes: int


@dataclass(frozen=True, slots=True)
class Proposals:
    """The detector's boxes on one frame.

    Attributes
    ----------
    boxes : list of dict
        ``{"box": [x1, y1, x2, y2] (frame pixels), "class": str, "score": float}``.
    embeddings : np.ndarray or None
        ``(n, D)`` unit vectors, row for row; None for a model without them.
    """

    frame_id: int
    model: str
    boxes: list[dict[str, Any]]
    embeddings: FloatArray | None


@dataclass(frozen=True, slots=True)
class Revision:
    """The newest state of one item; version 0 (``actor`` None) is nothing written yet.

    ``boxes``: ``{"box": [x1, y1, x2, y2], "class": str | None, "proposal": int |
    None, "rank": int | None}``, ``class`` None for a box not labelled yet.
    """

    frame_id: int
    pass_: int
    version: int
    actor: str | None
    at: float | None
    boxes: list[dict[str, Any]]
    complete: bool


@dataclass(frozen=True, slots=True)
class Lease:
    """Who holds an item, until when (unix seconds)."""

    frame_id: int
    pass_: int
    actor: str
    expires_at: float


class LabelStore:
    """The SQLite store of the labelling workspace.

    Parameters
    ----------
    root : Path
        The workspace folder (``storage.dir/labels``); created owner-only.
    lease_s : float
        Life of a lease without activity, seconds.

    Raises
    ------
    JournalError
        The folder cannot be created, the file is not a workspace, or its
        schema is newer than this version understands.
    """

    def __init__(self, root: Path, *, lease_s: float = LEASE_S) -> None:
        self.root = root
        self.lease_s = lease_s
        self.path = root / DB_FILE
        self.frames_dir = root / FRAMES_SUBDIR
        try:
            make_private_dir(self.frames_dir)
            for name in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                restrict_file(name, create=name == self.path)
            self._conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise JournalError(f"{self.path}: cannot open the labelling workspace: {err}; "
                               "set storage.dir to a folder the daemon can write") from err
        try:
            version = self._check_schema()
            self._conn.execute("PRAGMA journal_mode=WAL").fetchone()
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            if version == 0:
                with self._write():
                    for statement in _SCHEMA:
                        self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    self._conn.execute("INSERT INTO schema_version VALUES (?)",
                                       (SCHEMA_VERSION,))
            elif version == 1:
                with self._write():
                    self._conn.execute(_QUESTIONS)
                    self._conn.execute("INSERT INTO schema_version VALUES (2)")
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise JournalError(f"{self.path}: not a labelling workspace ({err}); move the "
                               "file away") from err
        except JournalError:
            self._conn.close()
            raise

    def _check_schema(self) -> int:
        tables = {r[0] for r in self._conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return 0
        if "schema_version" not in tables or "revisions" not in tables:
            raise JournalError(f"{self.path} is an SQLite database but not a labelling "
                               f"workspace (tables: {', '.join(sorted(tables))}); move it away")
        version = self._conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise JournalError(f"{self.path}: workspace schema version {version} is not one "
                               f"this DishTracker understands ({SCHEMA_VERSION}); upgrade it")
        return version

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
            raise

    # frames and proposals

    def add_frame(self, sha256: str, file: str, size: tuple[int, int], *, source: str,
                  source_frame: int | None, passes: int) -> tuple[int, bool]:
        """Record a frame whose image is already at ``frames_dir / file``.

        Returns ``(id, added)``; a frame with the same image (``sha256``) is
        not added twice.
        """
        with self._write():
            row = self._conn.execute("SELECT id FROM frames WHERE sha256 = ?",
                                     (sha256,)).fetchone()
            if row:
                return int(row[0]), False
            cur = self._conn.execute(
                "INSERT INTO frames (sha256, file, width, height, source, source_frame, passes, "
                "imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sha256, file, size[0], size[1], source, source_frame, passes, time.time()))
            return int(cur.lastrowid or 0), True

    def frame(self, frame_id: int) -> Frame | None:
        """The frame, or None."""
        row = self._conn.execute(
            "SELECT id, file, width, height, source, source_frame, passes FROM frames "
            "WHERE id = ?", (frame_id,)).fetchone()
        return None if row is None else Frame(*row)

    def frames(self) -> list[Frame]:
        """Every frame, in queue order (import order)."""
        return [Frame(*r) for r in self._conn.execute(
            "SELECT id, file, width, height, source, source_frame, passes FROM frames "
            "ORDER BY id")]

    def add_question(self, sha256: str, file: str, size: tuple[int, int], *,
                     question: dict[str, Any]) -> tuple[int, bool]:
        """Record the frame of a daemon's question, its image already at ``frames_dir /
        file``, labelled once.

        ``question``: ``id``, ``bill_id``, ``stream_id``, ``closed_at``,
        ``frame_seq`` and ``lines`` (what
        :meth:`edge.learn.questions.Question.to_json` gives). Returns ``(id,
        added)``; a question already imported (same id or same bill) is not
        added again.
        """
        with self._write():
            row = self._conn.execute(
                "SELECT frame_id FROM questions WHERE question_id = ? OR bill_id = ?",
                (question["id"], question["bill_id"])).fetchone()
            if row:
                return int(row[0]), False
            row = self._conn.execute("SELECT id FROM frames WHERE sha256 = ?",
                                     (sha256,)).fetchone()
            if row:
                frame_id = int(row[0])
            else:
                cur = self._conn.execute(
                    "INSERT INTO frames (sha256, file, width, height, source, source_frame, "
                    "passes, imported_at) VALUES (?, ?, ?, ?, ?, ?, 1, ?)",
                    (sha256, file, size[0], size[1], str(question["stream_id"]),
                     int(question["frame_seq"]), time.time()))
                frame_id = int(cur.lastrowid or 0)
            cur = self._conn.execute(  # ignored only for a frame another question has
                "INSERT OR IGNORE INTO questions (frame_id, question_id, bill_id, stream, "
                "closed_at, lines_json, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (frame_id, question["id"], question["bill_id"], str(question["stream_id"]),
                 float(question["closed_at"]), json.dumps(question["lines"]), time.time()))
            return frame_id, cur.rowcount == 1

    def question(self, frame_id: int) -> dict[str, Any] | None:
        """The question a frame came from (``id``, ``bill_id``, ``stream_id``,
        ``closed_at``, ``lines``), or None for a frame of a selection."""
        row = self._conn.execute(
            "SELECT question_id, bill_id, stream, closed_at, lines_json FROM questions "
            "WHERE frame_id = ?", (frame_id,)).fetchone()
        if row is None:
            return None
        return {"id": str(row[0]), "bill_id": str(row[1]), "stream_id": str(row[2]),
                "closed_at": float(row[3]), "lines": json.loads(row[4])}

    def missing_proposals(self, limit: int = 1000) -> list[int]:
        """Frames without proposals yet, in queue order."""
        return [int(r[0]) for r in self._conn.execute(
            "SELECT f.id FROM frames f LEFT JOIN proposals p ON p.frame_id = f.id "
            "WHERE p.frame_id IS NULL ORDER BY f.id LIMIT ?", (limit,))]

    def put_proposals(self, proposals: Proposals) -> None:
        """Store a frame's proposals once (a second call for the frame does nothing)."""
        emb = proposals.embeddings
        with self._write():
            self._conn.execute(
                "INSERT INTO proposals (frame_id, model, created_at, boxes_json, dim, embeddings) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (frame_id) DO NOTHING",
                (proposals.frame_id, proposals.model, time.time(), json.dumps(proposals.boxes),
                 None if emb is None else int(emb.shape[1]),
                 None if emb is None else np.ascontiguousarray(emb, "<f4").tobytes()))

    def proposals(self, frame_id: int) -> Proposals | None:
        """The frame's proposals, or None when they are not computed yet."""
        row = self._conn.execute("SELECT model, boxes_json, dim, embeddings FROM proposals "
                                 "WHERE frame_id = ?", (frame_id,)).fetchone()
        if row is None:
            return None
        boxes = json.loads(row[1])
        emb = None if row[2] is None else np.frombuffer(row[3], "<f4").astype(
            np.float32).reshape(len(boxes), int(row[2]))
        return Proposals(frame_id, str(row[0]), boxes, emb)

    # revisions

    def revision(self, frame_id: int, pass_: int) -> Revision:
        """The newest revision of an item (version 0: the proposals, unlabelled)."""
        row = self._conn.execute(
            "SELECT version, actor, at, boxes_json, complete FROM revisions WHERE frame_id = ? "
            "AND pass = ? ORDER BY version DESC LIMIT 1", (frame_id, pass_)).fetchone()
        if row is not None:
            return Revision(frame_id, pass_, int(row[0]), str(row[1]), float(row[2]),
                            json.loads(row[3]), bool(row[4]))
        props = self.proposals(frame_id)
        boxes = [] if props is None else [
            {"box": b["box"], "class": None, "proposal": i, "rank": None}
            for i, b in enumerate(props.boxes)]
        return Revision(frame_id, pass_, 0, None, None, boxes, False)

    def latest(self) -> list[Revision]:
        """The newest revision of every item anybody wrote."""
        rows = self._conn.execute(
            "SELECT r.frame_id, r.pass, r.version, r.actor, r.at, r.boxes_json, r.complete "
            "FROM revisions r JOIN (SELECT frame_id, pass, max(version) AS v FROM revisions "
            "GROUP BY frame_id, pass) m ON m.frame_id = r.frame_id AND m.pass = r.pass "
            "AND m.v = r.version ORDER BY r.frame_id, r.pass")
        return [Revision(int(f), int(p), int(v), str(a), float(t), json.loads(b), bool(c))
                for f, p, v, a, t, b, c in rows]

    def authors(self, frame_id: int, pass_: int) -> set[str]:
        """Everybody who wrote a revision of the item."""
        return {str(r[0]) for r in self._conn.execute(
            "SELECT DISTINCT actor FROM revisions WHERE frame_id = ? AND pass = ?",
            (frame_id, pass_))}

    def write(self, frame_id: int, pass_: int, actor: str, version: int,
              boxes: Sequence[dict[str, Any]], *, complete: bool,
              now: float | None = None) -> Revision:
        """Write a new revision of an item made from ``version``; renews the lease.

        Raises
        ------
        StaleWrite
            ``version`` is not the newest; nothing written.
        LeaseTaken
            Someone else holds a live lease on the item; nothing written.
        KeyError
            No such frame, or no such pass of it.
        """
        now = time.time() if now is None else now
        frame = self.frame(frame_id)
        if frame is None or pass_ not in range(1, frame.passes + 1):
            raise KeyError(frame_id)
        with self._write():
            self._check_lease(frame_id, pass_, actor, now)
            current = self.revision(frame_id, pass_)
            if current.version != version:
                raise StaleWrite(current)
            self._conn.execute(
                "INSERT INTO revisions (frame_id, pass, version, actor, at, boxes_json, "
                "complete) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (frame_id, pass_, version + 1, actor, now, json.dumps(list(boxes)),
                 int(complete)))
            self._hold(frame_id, pass_, actor, now)
        return self.revision(frame_id, pass_)

    # leases

    def lease_of(self, frame_id: int, pass_: int, now: float | None = None) -> Lease | None:
        """The live lease on an item, or None."""
        now = time.time() if now is None else now
        row = self._conn.execute("SELECT actor, expires_at FROM leases WHERE frame_id = ? AND "
                                 "pass = ? AND expires_at > ?", (frame_id, pass_, now)).fetchone()
        return None if row is None else Lease(frame_id, pass_, str(row[0]), float(row[1]))

    def leases(self, now: float | None = None) -> list[Lease]:
        """Every live lease."""
        now = time.time() if now is None else now
        return [Lease(int(f), int(p), str(a), float(e)) for f, p, a, e in self._conn.execute(
            "SELECT frame_id, pass, actor, expires_at FROM leases WHERE expires_at > ? "
            "ORDER BY frame_id, pass", (now,))]

    def renew(self, frame_id: int, pass_: int, actor: str, now: float | None = None) -> Lease:
        """Take or renew the lease on one item for ``actor``.

        Raises
        ------
        LeaseTaken
            Someone else holds it.
        """
        now = time.time() if now is None else now
        with self._write():
            self._check_lease(frame_id, pass_, actor, now)
            self._conn.execute("DELETE FROM leases WHERE actor = ? AND NOT (frame_id = ? AND "
                               "pass = ?)", (actor, frame_id, pass_))
            self._hold(frame_id, pass_, actor, now)
        return Lease(frame_id, pass_, actor, now + self.lease_s)

    def release(self, actor: str) -> None:
        """Give back every lease of ``actor``."""
        with self._write():
            self._conn.execute("DELETE FROM leases WHERE actor = ?", (actor,))

    def take(self, actor: str, *, step: Step = "next", after: int | None = None,
             now: float | None = None) -> Lease | None:
        """Lease ``actor`` the next item to label (or, ``step="previous"``, the
        nearest item before ``after`` that ``actor`` wrote), giving back the
        one held before; None when there is none.

        ``after`` is the frame the labeller is on (None: the start of the
        queue; for ``next``, a lease ``actor`` holds already is kept: a
        reloaded page resumes its frame). ``next`` goes forward from
        ``after`` and wraps around.
        """
        now = time.time() if now is None else now
        with self._write():
            self._conn.execute("DELETE FROM leases WHERE expires_at <= ?", (now,))
            held = self._conn.execute("SELECT frame_id, pass FROM leases WHERE actor = ?",
                                      (actor,)).fetchone()
            if held is not None and after is None and step == "next":
                self._hold(int(held[0]), int(held[1]), actor, now)
                return Lease(int(held[0]), int(held[1]), actor, now + self.lease_s)
            pick = self._pick(actor, step, after)
            if pick is None:
                return None
            self._conn.execute("DELETE FROM leases WHERE actor = ?", (actor,))
            self._hold(*pick, actor, now)
            return Lease(*pick, actor, now + self.lease_s)

    def _pick(self, actor: str, step: Step, after: int | None) -> tuple[int, int] | None:
        """The item :meth:`take` leases (inside its transaction)."""
        holders: dict[int, set[str]] = {}  # a frame, whichever pass, is one person's at a time
        for f, a in self._conn.execute("SELECT frame_id, actor FROM leases"):
            holders.setdefault(int(f), set()).add(str(a))
        state = {(r.frame_id, r.pass_): r.complete for r in self.latest()}
        wrote: dict[tuple[int, int], set[str]] = {}
        for f, p, a in self._conn.execute("SELECT DISTINCT frame_id, pass, actor FROM revisions"):
            wrote.setdefault((int(f), int(p)), set()).add(str(a))
        frames = [(int(r[0]), int(r[1])) for r in self._conn.execute(
            "SELECT id, passes FROM frames ORDER BY id")]
        free = [key for key in self._items(frames, state, wrote, actor)
                if holders.get(key[0], set()) <= {actor}]
        if step == "previous":
            mine = [key for key in free if actor in wrote.get(key, set())
                    and (after is None or key[0] < after)]
            return mine[-1] if mine else None
        todo = [key for key in free if not state.get(key, False)]
        later = [key for key in todo if after is None or key[0] > after]
        pool = later or todo
        return pool[0] if pool else None

    @staticmethod
    def _items(frames: list[tuple[int, int]], state: dict[tuple[int, int], bool],
               wrote: dict[tuple[int, int], set[str]], actor: str) -> Iterator[tuple[int, int]]:
        """Every item ``actor`` may work on, in queue order: pass 1 of every frame;
        pass 2 once pass 1 is complete, for anyone who did not write pass 1."""
        for frame_id, passes in frames:
            first = (frame_id, 1)
            if actor not in wrote.get((frame_id, 2), set()):
                yield first
            if passes == 2 and state.get(first, False) \
                    and actor not in wrote.get(first, set()):
                yield (frame_id, 2)

    def _check_lease(self, frame_id: int, pass_: int, actor: str, now: float) -> None:
        row = self._conn.execute(
            "SELECT pass, actor, expires_at FROM leases WHERE frame_id = ? AND actor != ? "
            "AND expires_at > ? LIMIT 1", (frame_id, actor, now)).fetchone()
        if row is not None:
            raise LeaseTaken(frame_id, int(row[0]), str(row[1]), float(row[2]))

    def _hold(self, frame_id: int, pass_: int, actor: str, now: float) -> None:
        self._conn.execute(
            "INSERT INTO leases (frame_id, pass, actor, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (frame_id, pass) DO UPDATE SET actor = excluded.actor, "
            "expires_at = excluded.expires_at", (frame_id, pass_, actor, now + self.lease_s))

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` (``"ok"`` when sound)."""
        return str(self._conn.execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        """Close the connection. Idempotent."""
        self._conn.close()
