"""Commits bills to a journal in a loop; prints each bill id once commit() returned.

Run by tests/test_journal.py, which kills it with SIGKILL at random moments:
``python tests/journal_writer.py JOURNAL PREFIX``. Prints ``ready`` once the
journal is open.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bills_support import make_bill

from edge.billing.journal import Journal


def main() -> None:
    path, prefix = Path(sys.argv[1]), sys.argv[2]
    snapshot = bytes(range(256)) * 64  # 16 KiB: commits span several pages
    journal = Journal(path)
    print("ready", flush=True)
    i = 0
    while True:
        bill_id = f"{prefix}-{i}"
        journal.commit(make_bill(bill_id, snapshot=snapshot))
        print(bill_id, flush=True)
        i += 1


if __name__ == "__main__":
    main()
