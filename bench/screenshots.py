"""The docs' screenshots of the cashier page: ``docs/cashier.png``, ``docs/cashier_tablet.png``
and ``docs/cashier_bill.png``.

    python bench/screenshots.py [--out docs]

Runs the two browser stories of the test suite and keeps their screenshots
(PNG, 1280x800 pages; the bill panel alone for the third), so the pictures
show exactly what the tests check:

* ``cashier.png``: ``dishtracker run`` with its built-in defaults (one
  synthetic camera, the shipped model), its page with live annotated video
  and the first closed bill (``tests/test_daemon_browser.py``);
  ``cashier_tablet.png``: the same page on an 820x1180 tablet, stacked;
* ``cashier_bill.png``: the bill panel alone on the real app and billing
  service, after a cashier confirmed and changed lines of a bill to review
  (``tests/test_cashier_bills.py``; its video is a scripted test view, left
  out of the picture).

The tests write their screenshots to a temporary folder only; this command is
the one that changes the files in ``docs/``. It needs Debian's Chromium
(``apt-get install chromium``) and the ``playwright`` package, as the browser
tests do.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
if str(REPO / "tests") not in sys.path:  # the stories live beside the tests
    sys.path.insert(0, str(REPO / "tests"))
if str(REPO) not in sys.path:  # `python bench/screenshots.py` from a checkout
    sys.path.insert(0, str(REPO))


def main(argv: Sequence[str] | None = None) -> int:
    """Make both screenshots in ``--out``; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs",
                    help="folder for the three screenshots (default: docs/)")
    args = ap.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"{CHROMIUM} missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    # After the check: without Chromium, test_browser skips its module as it is imported.
    from test_cashier_bills import cashier_bill_story  # noqa: PLC0415
    from test_daemon_browser import daemon_page_story  # noqa: PLC0415

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dishtracker-shots-") as tmp:
        work = Path(tmp)
        (work / "daemon").mkdir()
        (work / "bills").mkdir()
        daemon_page_story(work / "daemon", out / "cashier.png", out / "cashier_tablet.png")
        print(f"wrote {out / 'cashier.png'} and {out / 'cashier_tablet.png'}")
        cashier_bill_story(work / "bills", out / "cashier_bill.png")
        print(f"wrote {out / 'cashier_bill.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
