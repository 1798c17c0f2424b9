"""Broker outage: bills committed while the MQTT broker is down all arrive, in order, later.

    python bench/outage.py [--bills 2000] [--streams 2] [--outage-s 5] [--json OUT]

Starts a real mosquitto (with persistence, so the subscriber's session and
queue survive the broker's restart) and a subscriber with a persistent
session, then the real :class:`edge.billing.service.BillingService` (outbox
on) and :class:`edge.fleet.publisher.FleetPublisher` in this process. It
stops the broker with SIGTERM, submits ``--bills`` bills over ``--streams``
streams while it is down, keeps it down for at least ``--outage-s`` seconds,
starts it again and measures how long until every bill has reached the
subscriber and the outbox is empty. Checks that no bill is missing and that
each stream's bills first arrived in commit order; prints a table and exits 1
on a violation. The figure is in docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from bills_support import make_bill  # the tests' bill builder
from mqtt_broker import Broker, Recorder  # the tests' broker harness

from edge.billing.service import BillingService
from edge.config import FleetConfig
from edge.fleet import create_fleet
from edge.metrics import Metrics
from edge.observability import configure_logging


async def scenario(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Run the outage once; the figures and the problems found."""
    broker = Broker(work / "broker", persistence=True)
    broker.start()
    metrics = Metrics()
    billing = BillingService(work / "journal.sqlite3", metrics, outbox=True)
    await billing.open()
    config = FleetConfig(enabled=True, host="127.0.0.1", port=broker.port, site="bench",
                         box="box1", reconnect_initial_s=0.2, reconnect_max_s=1.0)
    fleet = create_fleet(config, billing, metrics)
    problems: list[str] = []
    try:
        with Recorder(broker.port, persistent=True, client_id="outage-recorder") as rec:
            fleet.start()
            await rec.until(lambda ms: any(m.topic.endswith("/status") for m in ms))
            down_at = time.monotonic()
            broker.stop()
            ids = [f"cam{i % args.streams + 1}-1-{i}" for i in range(args.bills)]
            for i, bill_id in enumerate(ids):
                billing.submit(make_bill(bill_id, stream=bill_id.split("-")[0], tray_id=i))
            for _ in range(60_000):  # at most 10 min of commits
                if not billing.pending:
                    break
                await asyncio.sleep(0.01)
            committed_s = time.monotonic() - down_at
            depth_down = (await billing.outbox_depth())[0]
            await asyncio.sleep(max(0.0, args.outage_s - (time.monotonic() - down_at)))
            outage_s = time.monotonic() - down_at
            up_at = time.monotonic()
            broker.start()
            await rec.until(lambda ms: len({m.payload["message_id"] for m in ms
                                            if m.topic.endswith("/bills")}) >= len(ids),
                            timeout=300)
            for _ in range(3000):  # the last rows' sent_at, at most 30 s
                if not (await billing.outbox_depth())[0]:
                    break
                await asyncio.sleep(0.01)
            delivered_s = time.monotonic() - up_at
            bills = [m.payload for m in rec.on("/bills")]
            if depth_down != len(ids):
                problems.append(f"outbox held {depth_down} rows during the outage, "
                                f"not {len(ids)}")
            for s in range(1, args.streams + 1):
                stream = f"cam{s}"
                first = list(dict.fromkeys(b["message_id"] for b in bills
                                           if b["stream_id"] == stream))
                if first != [i for i in ids if i.startswith(f"{stream}-")]:
                    problems.append(f"{stream}: bills missing or out of order")
            duplicates = len(bills) - len({b["message_id"] for b in bills})
    finally:
        await fleet.close()
        await billing.close()
        broker.stop()
    return {"bills": len(ids), "streams": args.streams, "outage_s": round(outage_s, 2),
            "committed_during_outage_s": round(committed_s, 2),
            "outbox_depth_during_outage": depth_down,
            "delivered_after_broker_start_s": round(delivered_s, 2),
            "delivered_per_s": round(len(ids) / delivered_s),
            "duplicates": duplicates, "problems": problems,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
                       f"{platform.python_version()}"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bills", type=int, default=2000)
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--outage-s", type=float, default=5.0)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    configure_logging("warning", json=True, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="dishtracker-outage-") as tmp:
        result = asyncio.run(scenario(args, Path(tmp)))
    print("| bills | streams | outage s | outbox depth while down | delivered after broker "
          "start s | messages/s | duplicates | ok |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    print(f"| {result['bills']} | {result['streams']} | {result['outage_s']} | "
          f"{result['outbox_depth_during_outage']} | {result['delivered_after_broker_start_s']}"
          f" | {result['delivered_per_s']} | {result['duplicates']} | "
          f"{'ok' if not result['problems'] else '; '.join(result['problems'])} |")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
