"""The labelling workspace's store: leases, versions, second labellings, agreement, kill -9.

Real SQLite files in ``tmp_path``; the kill -9 test kills a child process that
writes labels as fast as it can and checks that every write it reported is
there after a reopen.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge.errors import JournalError
from edge.label.progress import agreement, summary
from edge.label.store import LabelStore, LeaseTaken, StaleWrite

BOX = {"box": [10.0, 10.0, 50.0, 50.0], "class": "coffee", "proposal": None, "rank": None}


def _store(root: Path, frames: int = 4, *, double: tuple[int, ...] = (), lease_s: float = 300.0
           ) -> LabelStore:
    store = LabelStore(root, lease_s=lease_s)
    for n in range(1, frames + 1):
        store.add_frame(f"{n:064x}", f"{n}.jpg", (640, 480), source="test", source_frame=n,
                        passes=2 if n in double else 1)
    return store


def test_two_labellers_never_hold_the_same_frame_and_a_reload_resumes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    a = store.take("ana")
    b = store.take("ben")
    assert a is not None and b is not None
    assert (a.frame_id, b.frame_id) == (1, 2)
    assert store.take("ana").frame_id == 1  # a reloaded page resumes its frame
    a2 = store.take("ana", after=1)
    assert a2 is not None and a2.frame_id == 3  # frame 2 is ben's
    assert store.take("cleo").frame_id == 1  # ana gave frame 1 back by taking another
    with pytest.raises(LeaseTaken, match="ben"):
        store.write(2, 1, "ana", 0, [BOX], complete=True)
    store.close()


def test_a_lease_expires_without_activity_and_every_write_renews_it(tmp_path: Path) -> None:
    store = _store(tmp_path, 2, lease_s=60.0)
    now = 1000.0
    assert store.take("ana", now=now).frame_id == 1
    store.write(1, 1, "ana", 0, [BOX], complete=False, now=now + 50)  # renews to +110
    assert store.take("ben", now=now + 100).frame_id == 2
    assert store.lease_of(1, 1, now=now + 100).actor == "ana"
    assert store.lease_of(1, 1, now=now + 111) is None
    assert store.take("cleo", now=now + 111).frame_id == 1  # expired: anybody's
    store.close()


def test_a_stale_write_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path, 1)
    store.take("ana")
    first = store.write(1, 1, "ana", 0, [BOX], complete=False)
    assert first.version == 1
    with pytest.raises(StaleWrite) as err:  # a second tab still on version 0
        store.write(1, 1, "ana", 0, [], complete=True)
    assert err.value.current.version == 1 and err.value.current.boxes == [BOX]
    assert store.revision(1, 1).boxes == [BOX] and not store.revision(1, 1).complete
    second = store.write(1, 1, "ana", 1, [BOX, BOX], complete=True)
    assert (second.version, second.complete, len(second.boxes)) == (2, True, 2)
    store.close()


def test_revisions_are_append_only(tmp_path: Path) -> None:
    store = _store(tmp_path, 1)
    store.take("ana")
    store.write(1, 1, "ana", 0, [BOX], complete=True)
    with pytest.raises(Exception, match="append-only"):
        store._conn.execute("UPDATE revisions SET complete = 0")
    store.close()


def test_a_second_labelling_goes_to_someone_else_after_the_first_is_complete(
        tmp_path: Path) -> None:
    store = _store(tmp_path, 2, double=(1,))
    assert store.take("ana").frame_id == 1
    assert store.take("ben").frame_id == 2
    store.write(1, 1, "ana", 0, [BOX], complete=True)
    assert store.take("ana", after=1) is None or store.take("ana", after=1).pass_ == 1
    store.release("ana")
    store.write(2, 1, "ben", 0, [BOX], complete=True)
    second = store.take("ben", after=2)
    assert second is not None and (second.frame_id, second.pass_) == (1, 2)
    assert store.take("ana", after=None) is None  # ana wrote pass 1: pass 2 is not hers
    other = {**BOX, "class": "tea"}
    store.write(1, 2, "ben", 0, [other], complete=True)
    figures = summary(store.frames(), store.latest(), store.leases(), 0)
    people = {p["name"]: p for p in figures["labellers"]}
    assert people["ana"]["agreement"] == 0.0 and people["ben"]["compared"] == 1
    assert figures["complete"] == 3 and figures["items"] == 3
    assert [c["name"] for c in figures["classes"]] == ["coffee"]  # pass 2 is not counted
    store.close()


def test_previous_goes_back_to_the_labellers_own_frames(tmp_path: Path) -> None:
    store = _store(tmp_path, 3)
    store.take("ana")
    store.write(1, 1, "ana", 0, [BOX], complete=True)
    assert store.take("ana", after=1).frame_id == 2
    back = store.take("ana", step="previous", after=2)
    assert back is not None and back.frame_id == 1
    assert store.take("ana", step="previous", after=1) is None
    store.close()


def test_agreement_pairs_boxes_by_overlap_and_compares_classes() -> None:
    a = [{"box": [0, 0, 10, 10], "class": "tea"}, {"box": [20, 20, 30, 30], "class": "beer"}]
    b = [{"box": [1, 1, 10, 10], "class": "tea"}, {"box": [20, 20, 30, 30], "class": "coffee"},
         {"box": [50, 50, 60, 60], "class": "tea"}]
    assert agreement(a, b) == pytest.approx(1 / 3)
    assert agreement([], []) == 1.0
    assert agreement(a, []) == 0.0


def test_a_foreign_database_is_refused_with_the_file_named(tmp_path: Path) -> None:
    import sqlite3

    root = tmp_path / "labels"
    root.mkdir()
    conn = sqlite3.connect(root / "labels.sqlite3")
    conn.execute("CREATE TABLE x (y)")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError, match="not a labelling workspace"):
        LabelStore(root)


def test_the_files_are_owner_only(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        store = _store(tmp_path / "labels", 1)
        store.take("ana")
        store.write(1, 1, "ana", 0, [BOX], complete=True)
    finally:
        os.umask(umask)
    assert (tmp_path / "labels").stat().st_mode & 0o077 == 0
    for name in ("labels.sqlite3", "labels.sqlite3-wal"):
        assert (tmp_path / "labels" / name).stat().st_mode & 0o077 == 0, name
    store.close()


_WRITER = """
import sys
from pathlib import Path
from edge.label.store import LabelStore
store = LabelStore(Path(sys.argv[1]))
store.take("ana")
version = store.revision(1, 1).version
while True:
    box = {"box": [1.0, 1.0, 9.0, 9.0], "class": f"c{version}", "proposal": None, "rank": None}
    version = store.write(1, 1, "ana", version, [box], complete=False).version
    print(version, flush=True)
"""


def test_every_write_reported_survives_a_kill_9(tmp_path: Path) -> None:
    root = tmp_path / "labels"
    _store(root, 1).close()
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(root)], stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    reported = 0
    deadline = time.monotonic() + 30
    while reported < 40 and time.monotonic() < deadline:
        reported = int(child.stdout.readline())
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    store = LabelStore(root)
    assert store.integrity_check() == "ok"
    newest = store.revision(1, 1)
    assert newest.version >= reported >= 40
    assert newest.boxes[0]["class"] == f"c{newest.version - 1}"
    store.close()
