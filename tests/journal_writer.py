"""Commits bills to a journal in a loop; prints each bill id once commit() returned.

Run by tests/test_journal.py, which kills it with SIGKILL at random moments:
``python tests/journal_writer.py JOURNAL PREFIX``. Prints ``ready`` once the
journal is open. ``… JOURNAL PREFIX outbox`` (tests/test_fleet_mqtt.py) writes
the fleet outbox too and adds a correction to every third bill, printing
``{bill_id} corrected`` once that returned. ``… JOURNAL PREFIX teach``
(tests/test_learning.py) journals each bill with its lines' views and
changes its first line to ``green_salad``, printing ``{bill_id} taught``
once that correction (and the examples it makes) returned.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bills_support import MENU, make_bill, with_views

from edge.billing.corrections import parse_correction
from edge.billing.journal import Journal


def main() -> None:
    path, prefix = Path(sys.argv[1]), sys.argv[2]
    outbox = sys.argv[3:] == ["outbox"]
    teach = sys.argv[3:] == ["teach"]
    snapshot = bytes(range(256)) * 64  # 16 KiB: commits span several pages
    journal = Journal(path, outbox=outbox)
    confirm = parse_correction({"action": "confirm", "line": 2})
    change = parse_correction({"action": "change", "line": 0, "class_key": "green_salad"})
    print("ready", flush=True)
    i = 0
    while True:
        bill_id = f"{prefix}-{i}"
        bill = make_bill(bill_id, snapshot=snapshot)
        journal.commit(with_views(bill, seed=i) if teach else bill)
        print(bill_id, flush=True)
        if teach:
            journal.add_correction(bill_id, change, MENU)
            print(f"{bill_id} taught", flush=True)
        if outbox and i % 3 == 0:
            journal.add_correction(bill_id, confirm, MENU)
            print(f"{bill_id} corrected", flush=True)
        i += 1


if __name__ == "__main__":
    main()
