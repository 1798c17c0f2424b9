"""Chaos: kill -9 the real daemon again and again; no bill may be lost, doubled or unpublished.

    python bench/chaos.py [--cycles 100] [--min-run 1] [--max-run 9] [--seed 1]
                          [--streams 2] [--outage-every 3] [--kill-at-bill]
                          [--work DIR] [--json OUT]

Starts a real mosquitto broker (Debian's ``mosquitto``, tests/mqtt_broker.py)
on 127.0.0.1 and a subscriber recording every bill message, then runs
``dishtracker run`` (synthetic cameras of seeds 3, 4, … at 320x240, 20 fps,
the shipped model, ``[fleet]`` enabled) ``--cycles`` times on one journal.
Each cycle waits for the daemon to serve, lets it bill for a random
``--min-run`` to ``--max-run`` seconds and kills it with SIGKILL; with
``--kill-at-bill`` it kills instead the moment the daemon announces a bill
(the first complete ``bill_committed`` line of the cycle after ``--min-run``,
or a ``bill_closed`` line, which older versions logged before the commit),
and at ``--max-run`` if none came. Every
``--outage-every``-th cycle the broker is stopped 0.5 s after the daemon
serves and started again only after the kill, so that cycle's bills are
still in the outbox when the daemon dies (the next start must send them).
Then it checks:

* **journal**: ``PRAGMA integrity_check`` is ok; no ``bill_id`` twice; every
  bill the daemon announced (``bill_committed``, or ``bill_closed``) before
  the kill is there;
* **outbox**: every journaled bill has its outbox row (same transaction);
* **broker**: every bill journaled in earlier cycles has reached the
  subscriber once the restarted daemon serves (checked at the start of the
  next cycle; after the last one a final start publishes the rest and stops
  with SIGTERM).

Prints one row per cycle and a summary; exits 1 on any violation. MQTT
delivery is at least once: bills delivered more than once (a kill between
``PUBACK`` and marking the row sent) are counted, not failed. ``--json``
writes the rows and the summary.

The **crossing-to-durable window** (a kill -9 inside it loses the bill: the
tray is past the line when the daemon comes back, and is not billed again)
is read from every ``bill_committed`` line: ``durable_ms`` from the capture
of the frame in which the tray crossed to the commit's return (tracking,
queueing and the fsync'ed commit), ``submit_ms`` from the stream loop's hand-
over to it; the summary gives their median, p99 and maximum. The figures and the command are in
docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mqtt_broker import Broker, Recorder, free_port  # the tests' broker harness

SITE = """
[server]
host = "127.0.0.1"
port = {port}

[storage]
dir = "{storage}"

[fleet]
enabled = true
host = "127.0.0.1"
port = {broker}
site = "chaos"
box = "box1"
reconnect_initial_s = 0.2
reconnect_max_s = 1.0
"""
STREAM = """
[[streams]]
id = "cam{n}"
url = "synthetic://?seed={seed}&fps=20&size=320x240"
"""
READY_TIMEOUT_S = 90.0
DELIVERY_TIMEOUT_S = 30.0


ANNOUNCE = ("bill_committed", "bill_closed")
"""Log events that announce a bill (``bill_closed`` before the commit, in older versions)."""


@dataclass
class Cycle:
    """What one kill -9 cycle did and found."""

    cycle: int
    run_s: float
    killed_at_bill: bool
    logged: int
    journal: int
    outage: bool
    outbox_unsent: int
    backlog_delivered_s: float | None
    received: int
    duplicates: int
    problems: list[str]


class _Lines:
    """Collects the daemon's stdout lines in a thread (a full pipe would block it)."""

    def __init__(self, pipe: Any) -> None:
        self.lines: list[str] = []
        self.killed_at_bill = threading.Event()
        self._armed: tuple[subprocess.Popen[str], float] | None = None
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            self.lines.append(line)
            armed = self._armed
            if (armed is not None and time.monotonic() >= armed[1] and line.endswith("\n")
                    and any(f'"event": "{e}"' in line for e in ANNOUNCE)):
                armed[0].send_signal(signal.SIGKILL)  # in this thread: no polling delay
                self._armed = None
                self.killed_at_bill.set()

    def kill_at_bill(self, proc: subprocess.Popen[str], after_s: float) -> None:
        """SIGKILL ``proc`` as soon as a line announcing a bill is read, from ``after_s``
        seconds on."""
        self._armed = (proc, time.monotonic() + after_s)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in list(self.lines)):
                return True
            time.sleep(0.05)
        return False

    def join(self) -> None:
        self._thread.join(10)

    def announced(self) -> list[dict[str, Any]]:
        """Complete lines announcing a bill (:data:`ANNOUNCE`; one cut by the kill is not)."""
        out = []
        for line in list(self.lines):
            if not line.endswith("\n") or not any(f'"{e}"' in line for e in ANNOUNCE):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") in ANNOUNCE and "bill_id" in event:
                out.append(event)
        return out

    def committed(self) -> list[str]:
        """Bill ids the daemon announced, in order, once each."""
        return list(dict.fromkeys(e["bill_id"] for e in self.announced()))



def _start(site: Path) -> tuple[subprocess.Popen[str], _Lines]:
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(site)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = _Lines(proc.stdout)
    if not lines.wait_for("DishTracker is running", READY_TIMEOUT_S):
        proc.kill()
        proc.wait(10)
        raise RuntimeError("the daemon did not start: " + "".join(lines.lines)[-3000:])
    return proc, lines


def _journal(path: Path) -> tuple[str, list[str], set[str], int]:
    """integrity, bill ids in commit order, outbox bill ids, unsent outbox rows."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        integrity = str(db.execute("PRAGMA integrity_check").fetchone()[0])
        ids = [r[0] for r in db.execute("SELECT bill_id FROM bills ORDER BY seq")]
        outbox = {r[0] for r in db.execute("SELECT message_id FROM outbox WHERE kind = 'bill'")}
        unsent = int(db.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0])
    db.close()
    return integrity, ids, outbox, unsent


def _received(rec: Recorder) -> tuple[set[str], int]:
    ids = [m.payload["message_id"] for m in rec.on("/bills")]
    return set(ids), len(ids) - len(set(ids))


def _await_delivery(rec: Recorder, wanted: set[str], timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if wanted <= _received(rec)[0]:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def _end(proc: subprocess.Popen[str], broker: Broker, rec: Recorder, run_s: float, *,
         outage: bool, final: bool, lines: _Lines, at_bill: float | None) -> bool:
    """Let the daemon bill for ``run_s`` and kill it (SIGTERM on the ``final`` start);
    with ``at_bill`` (seconds) kill it at the first bill announced after that long
    instead, or at ``run_s`` if none comes; True when the kill came at a bill. With
    ``outage`` the broker is down from 0.5 s after the start until after the kill."""
    at = False
    if final:
        proc.send_signal(signal.SIGTERM)
    else:
        if outage:
            time.sleep(0.5)
            broker.stop()
        waited = 0.5 if outage else 0.0
        if at_bill is not None:
            lines.kill_at_bill(proc, max(0.0, at_bill - waited))
            at = lines.killed_at_bill.wait(max(0.0, run_s - waited))
        else:
            time.sleep(max(0.0, run_s - waited))
        if not at:
            proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    if outage:
        broker.start()
        rec.wait_subscribed()
    return at


def _check(journal: Path, logged: list[str], rec: Recorder, *,
           final: bool, returncode: int | None) -> tuple[list[str], list[str], int]:
    """The problems after a kill (or the final stop), the journaled ids, unsent rows."""
    integrity, ids, outbox, unsent = _journal(journal)
    problems = []
    if integrity != "ok":
        problems.append(f"integrity: {integrity}")
    if len(ids) != len(set(ids)):
        problems.append(f"{len(ids) - len(set(ids))} bill ids twice in the journal")
    lost = set(logged) - set(ids)
    if lost:
        problems.append(f"lost announced bills: {sorted(lost)}")
    if set(ids) - outbox:
        problems.append(f"bills without outbox row: {sorted(set(ids) - outbox)}")
    if final and returncode != 0:
        problems.append(f"clean stop exited {returncode}")
    if final and _await_delivery(rec, set(ids), 5.0) is None:  # the last start sent the rest
        problems.append(f"bills never reached the broker: "
                        f"{sorted(set(ids) - _received(rec)[0])}")
    return problems, ids, unsent


def _print(row: Cycle, final: bool) -> None:
    delivered = row.backlog_delivered_s
    print(f"| {row.cycle}{' (final)' if final else ''} | "
          f"{row.run_s:.1f}{' (bill)' if row.killed_at_bill else ''} | "
          f"{'down' if row.outage else 'up'} | {row.logged} | {row.journal} | "
          f"{row.outbox_unsent} | {'-' if delivered is None else f'{delivered:.2f}'} | "
          f"{row.received} | {row.duplicates} | "
          f"{'ok' if not row.problems else '; '.join(row.problems)} |", flush=True)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the cycles; the rows and the summary."""
    rng = random.Random(args.seed)
    work = Path(args.work or tempfile.mkdtemp(prefix="dishtracker-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    broker = Broker(work / "broker")
    broker.start()
    site = work / "site.toml"
    site.write_text(SITE.format(port=free_port(), storage=work / "var", broker=broker.port)
                    + "".join(STREAM.format(n=n + 1, seed=3 + n) for n in range(args.streams)))
    rows: list[Cycle] = []
    windows: list[dict[str, Any]] = []
    started = time.monotonic()
    print("| cycle | ran s | broker | logged | journal | unsent | backlog s | received | dup "
          "| ok |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---|")
    try:
        with Recorder(broker.port, client_id="chaos-recorder") as rec:
            before: list[str] = []
            for cycle in range(1, args.cycles + 2):
                final = cycle == args.cycles + 1
                outage = not final and args.outage_every > 0 and cycle % args.outage_every == 0
                proc, lines = _start(site)
                delivered = _await_delivery(rec, set(before), DELIVERY_TIMEOUT_S)
                run_s = 0.0 if final else rng.uniform(args.min_run, args.max_run)
                if args.kill_at_bill and not final:
                    run_s = args.max_run
                cycle_started = time.monotonic()
                at = _end(proc, broker, rec, run_s, outage=outage, final=final, lines=lines,
                          at_bill=args.min_run if args.kill_at_bill else None)
                if at:
                    run_s = time.monotonic() - cycle_started
                lines.join()
                if proc.stdout is not None:
                    proc.stdout.close()
                logged = lines.committed()
                windows += [e for e in lines.announced() if "durable_ms" in e]
                problems, ids, unsent = _check(work / "var" / "journal.sqlite3", logged, rec,
                                               final=final, returncode=proc.returncode)
                if delivered is None:
                    problems.insert(0, f"{len(set(before) - _received(rec)[0])} bills of "
                                       "earlier cycles never reached the broker")
                got, dup = _received(rec)
                rows.append(Cycle(cycle, round(run_s, 2), at, len(logged), len(ids), outage,
                                  unsent,
                                  None if delivered is None else round(delivered, 2),
                                  len(got), dup, problems))
                _print(rows[-1], final)
                before = ids
    finally:
        broker.stop()
    backlog = [r.backlog_delivered_s for r in rows if r.backlog_delivered_s is not None]
    summary = {
        "cycles": args.cycles, "kills": args.cycles, "streams": args.streams,
        "outages": sum(r.outage for r in rows),
        "unsent_at_kill_max": max((r.outbox_unsent for r in rows), default=0),
        "bills": rows[-1].journal if rows else 0,
        "received": rows[-1].received if rows else 0,
        "duplicates_delivered": rows[-1].duplicates if rows else 0,
        "violations": sum(len(r.problems) for r in rows),
        "backlog_delivered_s_max": max(backlog) if backlog else None,
        "killed_at_bill": sum(r.killed_at_bill for r in rows),
        "window": {key: _spread([float(e[key]) for e in windows])
                   for key in ("durable_ms", "submit_ms")},
        "wall_s": round(time.monotonic() - started, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                   f"{platform.python_version()}",
        "work": str(work),
    }
    durable, submit = summary["window"]["durable_ms"], summary["window"]["submit_ms"]
    print(f"\ncrossing-to-durable window over {durable['n']} bills: durable_ms p50 "
          f"{durable['p50']} p99 {durable['p99']} max {durable['max']}; submit_ms p50 "
          f"{submit['p50']} p99 {submit['p99']} max {submit['max']}")
    print(f"{summary['cycles']} kill -9 cycles ({summary['outages']} with the broker down, "
          f"{summary['killed_at_bill']} killed at a bill), "
          f"{summary['bills']} bills journaled, "
          f"{summary['received']} distinct bills at the broker "
          f"({summary['duplicates_delivered']} delivered twice), "
          f"{summary['violations']} violations, {summary['wall_s']} s")
    return {"rows": [asdict(r) for r in rows], "summary": summary,
            "windows": [{k: e.get(k) for k in ("bill_id", "durable_ms", "submit_ms")}
                        for e in windows]}


def _spread(values: list[float]) -> dict[str, float | int | None]:
    """n, median, p99 and maximum of ``values`` (None when empty)."""
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"n": len(ordered), "p50": at(0.5), "p99": at(0.99), "max": round(ordered[-1], 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cycles", type=int, default=100)
    p.add_argument("--min-run", type=float, default=1.0, help="seconds before the kill, least")
    p.add_argument("--max-run", type=float, default=9.0, help="seconds before the kill, most")
    p.add_argument("--streams", type=int, default=2, help="synthetic cameras (seeds 3, 4, …)")
    p.add_argument("--seed", type=int, default=1, help="of the kill times")
    p.add_argument("--outage-every", type=int, default=3,
                   help="stop the broker during every K-th cycle (0: never)")
    p.add_argument("--work", default=None, help="folder for the journal and broker (default: "
                   "a new temporary one, kept)")
    p.add_argument("--kill-at-bill", action="store_true",
                   help="kill the moment a bill is announced (after --min-run s), not at a "
                        "random time; --max-run bounds the wait")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    result = run(args)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["summary"]["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
