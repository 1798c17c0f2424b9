"""The bill journal on real SQLite: idempotent commits, paging, corrections, kill -9."""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path

import pytest
from bills_support import MENU, jpeg, kill_writer, make_bill

from edge.billing.corrections import parse_correction
from edge.billing.journal import SCHEMA_VERSION, Journal
from edge.errors import CorrectionError, JournalError


def _correct(journal: Journal, bill_id: str, body: dict[str, object]) -> dict[str, object]:
    view = journal.add_correction(bill_id, parse_correction(body), MENU)
    assert view is not None
    return view


def test_commit_is_idempotent_and_keeps_the_snapshot(tmp_path: Path) -> None:
    image = jpeg()
    with Journal(tmp_path / "var" / "journal.sqlite3") as journal:
        bill = make_bill("cam1-1700000000000-7", snapshot=image)
        assert journal.commit(bill) is True
        assert journal.commit(bill) is False
        assert journal.commit(make_bill("cam1-1700000000000-7", lines=())) is False  # no overwrite
        view = journal.get(bill.bill_id)
        assert view is not None
        assert {k: view[k] for k in bill.to_json()} == bill.to_json()
        assert view["seq"] == 1 and view["corrections"] == []
        assert view["effective"]["total"] == bill.total
        assert view["effective"]["needs_review"] is True
        assert journal.snapshot(bill.bill_id) == image
        assert journal.get("nope") is None and journal.snapshot("nope") is None
    with Journal(tmp_path / "var" / "journal.sqlite3") as journal:  # reopened
        assert journal.list_bills().bills[0]["bill_id"] == bill.bill_id
        assert journal.integrity_check() == "ok"


def test_list_is_newest_first_in_pages_with_filters(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite3") as journal:
        for i in range(7):
            journal.commit(make_bill(f"cam{i % 2 + 1}-1-{i}", stream=f"cam{i % 2 + 1}",
                                     closed_at=1000.0 + 10 * i))
        page = journal.list_bills(3)
        assert [b["bill_id"] for b in page.bills] == ["cam1-1-6", "cam2-1-5", "cam1-1-4"]
        assert page.last_seq == 7
        seen = [b["bill_id"] for b in page.bills]
        while page.next_before is not None:
            page = journal.list_bills(3, before=page.next_before)
            seen += [b["bill_id"] for b in page.bills]
        assert seen == [f"cam{i % 2 + 1}-1-{i}" for i in reversed(range(7))]
        assert [b["bill_id"] for b in journal.list_bills(stream="cam2").bills] == [
            "cam2-1-5", "cam2-1-3", "cam2-1-1"]
        window = journal.list_bills(since=1020.0, until=1050.0)
        assert [b["closed_at"] for b in window.bills] == [1040.0, 1030.0, 1020.0]
        assert window.next_before is None
        assert journal.list_bills(stream="cam3").bills == []
        assert [b["seq"] for b in journal.after(5, 10)] == [6, 7]


def test_corrections_are_stored_beside_the_bill_never_over_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    with Journal(path) as journal:
        bill = make_bill("cam1-1-1")
        journal.commit(bill)
        _correct(journal, bill.bill_id, {"action": "confirm", "line": 2})
        _correct(journal, bill.bill_id, {"action": "change", "line": 1, "class_key": "tea"})
        _correct(journal, bill.bill_id, {"action": "add", "class_key": "espresso",
                                          "note": "behind the cup"})
        view = _correct(journal, bill.bill_id, {"action": "remove", "line": 0})
    eff = view["effective"]
    assert [(ln["line"], ln["key"], ln["status"]) for ln in eff["items"]] == [
        (1, "tea", "changed"), (2, "apple_pie", "confirmed"), (3, "espresso", "added")]
    assert eff["items"][0]["detected"]["key"] == "green_salad"
    assert [r["line"] for r in eff["removed"]] == [0]
    assert eff["total"] == round(MENU["tea"].price + MENU["apple_pie"].price
                                 + MENU["espresso"].price, 2)
    assert eff["needs_review"] is False
    assert [c["action"] for c in view["corrections"]] == ["confirm", "change", "add", "remove"]
    assert view["corrections"][1]["price"] == MENU["tea"].price
    assert view["items"] == bill.to_json()["items"] and view["total"] == bill.total
    with sqlite3.connect(path) as db:  # the stored bill is untouched, and stays so
        assert db.execute("SELECT total, needs_review FROM bills").fetchone() == (bill.total, 1)
        assert db.execute("SELECT count(*) FROM corrections").fetchone() == (4,)
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute("UPDATE bills SET total = 0")


@pytest.mark.parametrize(("body", "error"), [
    ({"action": "confirm", "line": 3}, "line: no line 3 on this bill; lines are 0 to 2"),
    ({"action": "change", "line": 0, "class_key": "caviar"}, "class_key: 'caviar' is not on"),
    ({"action": "add", "class_key": "cutlery"}, "class_key: 'cutlery' (Cutlery) is not billable"),
    ({"action": "change", "line": 0}, "class_key: Field required"),
    ({"action": "confirm", "line": -1}, "line: Input should be greater than or equal to 0"),
    ({"action": "refund", "line": 0}, "action: must be one of confirm, change, remove, add"),
    ({"line": 0}, "action: Field required"),
    ({"action": "remove", "line": 0, "why": "x"}, "why: Extra inputs are not permitted"),
])
def test_invalid_corrections_are_refused_with_the_field(
        tmp_path: Path, body: dict[str, object], error: str) -> None:
    with Journal(tmp_path / "journal.sqlite3") as journal:
        journal.commit(make_bill("cam1-1-1"))
        with pytest.raises(CorrectionError) as info:
            _correct(journal, "cam1-1-1", body)
        assert any(e.startswith(error) for e in info.value.errors), info.value.errors
        assert journal.get("cam1-1-1")["corrections"] == []  # type: ignore[index]


def test_a_removed_line_cannot_be_corrected_again(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite3") as journal:
        journal.commit(make_bill("cam1-1-1"))
        _correct(journal, "cam1-1-1", {"action": "remove", "line": 1})
        with pytest.raises(CorrectionError, match="line: line 1 was removed"):
            _correct(journal, "cam1-1-1", {"action": "confirm", "line": 1})
        assert journal.add_correction(
            "cam9-1-1", parse_correction({"action": "remove", "line": 0}), MENU) is None


def test_files_that_are_not_journals_are_refused_untouched(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not a database at all\n" * 100)
    with pytest.raises(JournalError, match="not a DishTracker journal"):
        Journal(garbage)
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE orders (id INTEGER)")
    db.close()
    with pytest.raises(JournalError, match=r"not a DishTracker journal \(tables: orders\)"):
        Journal(other)
    with sqlite3.connect(other) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # not switched to WAL
    db.close()
    newer = tmp_path / "newer.sqlite3"
    Journal(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.close()
    with pytest.raises(JournalError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        Journal(newer)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(JournalError, match="cannot create the journal folder"):
        Journal(tmp_path / "a-file" / "var" / "journal.sqlite3")


def test_size_limit_fails_commits_like_a_full_disk(tmp_path: Path) -> None:
    with Journal(tmp_path / "journal.sqlite3") as journal:
        journal.commit(make_bill("cam1-1-0"))
        journal.limit_size(1)
        with pytest.raises(JournalError, match="database or disk is full"):
            journal.commit(make_bill("cam1-1-1", snapshot=bytes(64 * 1024)))
        assert journal.get("cam1-1-1") is None
        journal.limit_size(None)
        assert journal.commit(make_bill("cam1-1-1", snapshot=bytes(64 * 1024))) is True
        assert journal.integrity_check() == "ok"


def test_bill_survives_kill_during_commit(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    rng = random.Random(20240501)
    printed: list[str] = []
    started = time.monotonic()
    for r in range(6):
        ids = kill_writer(path, f"r{r}", rng)
        printed += ids
        with Journal(path) as journal:  # "restart": recovery from the WAL
            assert journal.integrity_check() == "ok"
            stored = [b["bill_id"] for b in journal.after(0, 1_000_000)
                      if b["bill_id"].startswith(f"r{r}-")]
        # every acknowledged bill is there; at most one more was committed unacknowledged
        assert stored[:len(ids)] == ids
        assert len(stored) - len(ids) in (0, 1)
    assert len(printed) > 20, "the writer barely ran; the test proves little"
    with Journal(path) as journal:
        with sqlite3.connect(path) as db:
            counts = dict(db.execute("SELECT bill_id, count(*) FROM bills GROUP BY bill_id"))
        db.close()
        assert all(counts.get(i) == 1 for i in printed)
        before = len(counts)
        assert not any(journal.commit(make_bill(i)) for i in printed)  # replay adds nothing
        assert journal.list_bills(1).last_seq == before
        assert journal.integrity_check() == "ok"
    assert time.monotonic() - started < 15
