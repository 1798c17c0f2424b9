"""A fleet publisher in a process of its own, to be killed with SIGKILL.

Run by tests/test_fleet_mqtt.py:
``python tests/fleet_publisher.py JOURNAL PORT [BILLS [STREAMS]]``. Opens the
journal with its outbox, commits ``BILLS`` bills first (ids
``cam{s}-9-{i}``, streams taking turns) unless they are there already, starts
the real :class:`edge.fleet.publisher.FleetPublisher` against the broker on
127.0.0.1:``PORT`` (site ``test``, box ``box1``) and prints ``ready``; runs
until killed, or SIGTERM (a clean stop: ``offline`` status).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from bills_support import make_bill

from edge.billing.service import BillingService
from edge.config import FleetConfig
from edge.fleet import create_fleet
from edge.metrics import Metrics
from edge.observability import configure_logging


async def main() -> None:
    path, port = Path(sys.argv[1]), int(sys.argv[2])
    bills = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    streams = int(sys.argv[4]) if len(sys.argv) > 4 else 1
    configure_logging("warning", json=True, stream=sys.stderr)
    metrics = Metrics()
    billing = BillingService(path, metrics, outbox=True)
    await billing.open()
    for i in range(bills):
        stream = f"cam{i % streams + 1}"
        billing.submit(make_bill(f"{stream}-9-{i}", stream=stream, tray_id=i))
    for _ in range(60_000):  # at most 10 min of commits
        if not billing.pending:
            break
        await asyncio.sleep(0.01)
    config = FleetConfig(enabled=True, host="127.0.0.1", port=port, site="test", box="box1",
                         reconnect_initial_s=0.1, reconnect_max_s=0.5, health_interval_s=60)
    fleet = create_fleet(config, billing, metrics)
    fleet.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await fleet.close()
    await billing.close()


if __name__ == "__main__":
    asyncio.run(main())
