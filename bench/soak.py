"""Soak: the daemon for half an hour with viewers coming and going and live config changes.

    python bench/soak.py [--minutes 30] [--streams 3] [--fps 20] [--size 640x480]
                         [--codec vp8] [--churn-s 3] [--max-viewers 6] [--config-s 20]
                         [--sample-s 10] [--bucket-minutes 5] [--seed 1] [--json OUT]

``dishtracker run`` with ``--streams`` synthetic cameras (seeds 3, 4, …, the
shipped model, ONNX Runtime, billing into its journal) runs for ``--minutes``
while this process

* every ``--churn-s`` seconds lets an aiortc viewer join a random stream or
  a random viewer leave (0 to ``--max-viewers`` open, a join when none is;
  a viewer that saw no frame counts as blind);
* every ``--config-s`` seconds puts the config back with
  ``detector.score_threshold`` switched between 0.30 and 0.31 (``PUT
  /api/config`` with the token; a field that applies live without restarting
  a stream or resetting a tracker);
* every ``--sample-s`` seconds records the daemon's resident memory, open file
  descriptors and threads (``/proc``), its event loop's task count
  (``dishtracker_asyncio_tasks``), WebRTC peers, frames and bills
  (``/metrics``), and the CPU used by everyone else on the machine.

Before the soak each stream has had one viewer and the config one change
(one-time set-up: codec modules, encoder threads), and the daemon is sampled
idle (no viewer, after the hub's idle grace has released the streams' tracks
and encoders) -- and again after the soak once every viewer has left. A
table per ``--bucket-minutes`` bucket and the verdict follow:

* **RSS** grows by at most 5 % from the median of the second bucket to the
  median of the last. The first bucket is left out: allocator arenas, the
  ONNX Runtime and codec buffers, the journal's page cache and Python's
  free lists fill during the first minutes, which is warm-up, not a leak.
* **tasks, fds** idle after the soak are within 2 of idle before it:
  hundreds of viewers and config changes have left nothing behind.
  **threads**: the median of the last bucket within 2 of the second's (the
  loop's default executor, which aiortc encodes in, grows to its cap of
  ``min(32, cores + 4)`` threads on demand and keeps them, so idle counts
  before and after differ by design).
* **peers**: 0 once the viewers left, never more than ``--max-viewers``.
* no join refused, no config change refused, no blind viewer, the daemon
  alive throughout and exit code 0 after SIGTERM.

Exit code 0 whatever the verdict (figures to read); 1 if the daemon could not
start or died. Figures and the command are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from harness import (
    Contention,
    Daemon,
    describe_contention,
    machine_line,
    measure_contention,
    metric,
    pl,
    proc_status,
    run_report,
    start_daemon,
)

from edge.web.webrtc import DEFAULT_IDLE_GRACE_S

GRACE_S = 8.0 + DEFAULT_IDLE_GRACE_S
"""After the last viewer leaves: the hub drops a peer at once on ``closed`` and
5 s after ``disconnected`` (``disconnect_grace_s``), 8 s covers both; then it
keeps the stream's track and encoder for its idle grace. Idle means after both."""

RSS_GROWTH_MAX_PCT = 5.0
IDLE_SLACK = 2
THRESHOLDS = (0.30, 0.31)


@dataclass
class Sample:
    """One look at the daemon; ``t`` in seconds since the soak started."""

    t: float
    rss_mib: float
    fds: int
    threads: int
    tasks: float
    peers: float
    viewers: int
    frames: dict[str, float]
    bills: float
    cpu_s: float
    busy: tuple[float, float]
    load1: float


@dataclass
class Churn:
    """What the viewers and config changes did."""

    joins: int = 0
    leaves: int = 0
    join_failures: list[str] = field(default_factory=list)
    blind: int = 0
    frames_per_viewer: list[int] = field(default_factory=list)
    config_ok: int = 0
    config_failures: list[str] = field(default_factory=list)
    config_ms: list[float] = field(default_factory=list)


async def sample(daemon: Daemon, http: aiohttp.ClientSession, t0: float,
                 viewers: int) -> Sample:
    """Read ``/proc`` and ``/metrics`` once."""
    daemon.child.check_alive()
    proc = proc_status(daemon.pid)
    m = await pl.scrape(http, daemon.base)
    return Sample(
        t=time.monotonic() - t0, rss_mib=proc["rss"] / 2**20, fds=proc["fds"],
        threads=proc["threads"], tasks=m.get(("dishtracker_asyncio_tasks", ()), math.nan),
        peers=sum(metric(m, "dishtracker_webrtc_peers", stream=s) for s in daemon.streams),
        viewers=viewers,
        frames={s: metric(m, "dishtracker_frames_total", stream=s, stage="tracked")
                for s in daemon.streams},
        bills=sum(metric(m, "dishtracker_bills_committed_total", stream=s)
                  for s in daemon.streams),
        cpu_s=pl.cpu_seconds(daemon.pid), busy=pl.machine_busy(), load1=_load1())


def _load1() -> float:
    return os.getloadavg()[0]


async def idle_sample(daemon: Daemon, http: aiohttp.ClientSession, t0: float) -> Sample:
    """The median of three samples a second apart, with no viewer connected."""
    got = []
    for _ in range(3):
        got.append(await sample(daemon, http, t0, 0))
        await asyncio.sleep(1.0)
    got.sort(key=lambda s: (s.tasks, s.fds, s.threads))
    return got[1]


async def change_config(daemon: Daemon, http: aiohttp.ClientSession, churn: Churn,
                        n: int) -> None:
    """Put the config back with ``detector.score_threshold`` switched (live field)."""
    started = time.monotonic()
    try:
        async with http.get(f"{daemon.base}/api/config") as r:
            config = await r.json()
        config["detector"]["score_threshold"] = THRESHOLDS[n % 2]
        async with http.put(f"{daemon.base}/api/config", json=config) as r:
            body = await r.json(content_type=None)
            if r.status != 200 or "detector.score_threshold" not in body.get("applied", []):
                churn.config_failures.append(f"HTTP {r.status}: {body}")
                return
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        churn.config_failures.append(repr(err))
        return
    churn.config_ok += 1
    churn.config_ms.append(1000 * (time.monotonic() - started))


async def leave(viewer: pl.Viewer, churn: Churn) -> None:
    """Close one viewer and count what it saw."""
    await pl.close_viewers([viewer])
    frames = len({fid for _, fid, _ in viewer.samples})
    churn.leaves += 1
    churn.frames_per_viewer.append(frames)
    if frames == 0:
        churn.blind += 1


async def join(daemon: Daemon, http: aiohttp.ClientSession, stream: str,
               churn: Churn) -> pl.Viewer | None:
    """Connect one viewer; a refusal is counted, not raised."""
    try:
        viewer = await asyncio.wait_for(pl.connect(http, daemon.base, stream), 20)
    except (pl.BenchError, asyncio.TimeoutError, aiohttp.ClientError) as err:
        churn.join_failures.append(f"{stream}: {err!r}"[:300])
        return None
    churn.joins += 1
    return viewer


async def warm_up(daemon: Daemon, http: aiohttp.ClientSession, churn: Churn) -> None:
    """One viewer per stream until it decodes 20 frames, then all leave; one config change."""
    viewers = [v for s in daemon.streams if (v := await join(daemon, http, s, churn))]
    for _ in range(150):  # 30 s at most
        if all(len(v.samples) >= 20 for v in viewers):
            break
        await asyncio.sleep(0.2)
    for v in viewers:
        await leave(v, churn)
    await change_config(daemon, http, churn, 1)
    await asyncio.sleep(GRACE_S)


async def soak(args: argparse.Namespace, daemon: Daemon,
               http: aiohttp.ClientSession) -> dict[str, Any]:
    """Warm up, sample idle, churn for ``--minutes``, sample idle again."""
    churn = Churn()
    rng = random.Random(args.seed)
    await warm_up(daemon, http, churn)
    t0 = time.monotonic()
    idle_before = await idle_sample(daemon, http, t0)
    print(f"idle before: RSS {idle_before.rss_mib:.0f} MiB, {idle_before.fds} fds, "
          f"{idle_before.tasks:.0f} tasks, {idle_before.threads} threads", flush=True)
    t0 = time.monotonic()
    end = t0 + 60 * args.minutes
    viewers: list[pl.Viewer] = []
    samples: list[Sample] = []
    contention = Contention()
    contention.start()
    next_churn, next_config, next_sample = t0, t0 + args.config_s, t0
    n_config = 0
    last_print = t0
    while (now := time.monotonic()) < end:
        if now >= next_sample:
            samples.append(await sample(daemon, http, t0, len(viewers)))
            next_sample += args.sample_s
            if now - last_print >= 60:
                s = samples[-1]
                print(f"{s.t / 60:5.1f} min: RSS {s.rss_mib:.0f} MiB, {s.fds} fds, "
                      f"{s.tasks:.0f} tasks, {s.threads} threads, {s.peers:.0f} peers, "
                      f"{churn.joins} joins, {churn.config_ok} config changes, "
                      f"load {s.load1:.1f}", flush=True)
                last_print = now
        if now >= next_churn:
            want_join = (len(viewers) < 1 or (len(viewers) < args.max_viewers
                                              and rng.random() < 0.5))
            if want_join:
                v = await join(daemon, http, rng.choice(daemon.streams), churn)
                if v is not None:
                    viewers.append(v)
            else:
                await leave(viewers.pop(rng.randrange(len(viewers))), churn)
            next_churn += args.churn_s
        if now >= next_config:
            n_config += 1
            await change_config(daemon, http, churn, n_config + 1)
            next_config += args.config_s
        await asyncio.sleep(max(0.0, min(next_churn, next_config, next_sample, end)
                                - time.monotonic()))
    samples.append(await sample(daemon, http, t0, len(viewers)))
    others = contention.stop([daemon.pid, os.getpid()])
    while viewers:
        await leave(viewers.pop(), churn)
    await asyncio.sleep(GRACE_S)
    idle_after = await idle_sample(daemon, http, t0)
    return {"idle_before": idle_before, "idle_after": idle_after, "samples": samples,
            "churn": churn, "contention": others}


# ---------------------------------------------------------------- report


def buckets(samples: list[Sample], minutes: float, total: float) -> list[list[Sample]]:
    """Samples split into consecutive ``minutes``-long buckets of a ``total``-minute
    soak (the closing sample, taken at ``total``, joins the last bucket)."""
    last = max(0, math.ceil(total / minutes - 1e-9) - 1)
    out: dict[int, list[Sample]] = {}
    for s in samples:
        out.setdefault(min(last, int(s.t // (60 * minutes))), []).append(s)
    return [out[k] for k in sorted(out)]


def bucket_row(i: int, b: list[Sample], prev: Sample | None, minutes: float,
               streams: list[str]) -> dict[str, Any]:
    """Figures of one bucket; rates from the last sample before it to its last sample."""
    first = prev if prev is not None else b[0]
    last = b[-1]
    dt = max(1e-6, last.t - first.t)
    busy = (last.busy[0] - first.busy[0]) / max(1.0, last.busy[1] - first.busy[1])
    return {
        "bucket": f"{i * minutes:g}-{(i + 1) * minutes:g}",
        "samples": len(b),
        "rss_mib_median": statistics.median(s.rss_mib for s in b),
        "rss_mib_max": max(s.rss_mib for s in b),
        "fds_median": statistics.median(s.fds for s in b),
        "fds_max": max(s.fds for s in b),
        "tasks_median": statistics.median(s.tasks for s in b),
        "tasks_max": max(s.tasks for s in b),
        "threads_median": statistics.median(s.threads for s in b),
        "peers_mean": statistics.fmean(s.peers for s in b),
        "peers_max": max(s.peers for s in b),
        "fps": {sid: (last.frames[sid] - first.frames[sid]) / dt for sid in streams},
        "bills": last.bills - first.bills,
        "cpu_pct": 100 * (last.cpu_s - first.cpu_s) / dt,
        "machine_busy_pct": 100 * busy,
        "load1_mean": statistics.fmean(s.load1 for s in b),
    }


def table(rows: list[dict[str, Any]]) -> Iterator[str]:
    yield ("| minutes | RSS MiB median (max) | fds median (max) | tasks median (max) | threads "
           "| peers mean (max) | fps per stream | bills | daemon CPU | machine busy | load |")
    yield "|---|---|---|---|---|---|---|---|---|---|---|"
    for r in rows:
        fps = " / ".join(f"{v:.1f}" for v in r["fps"].values())
        yield (f"| {r['bucket']} | {r['rss_mib_median']:.0f} ({r['rss_mib_max']:.0f}) | "
               f"{r['fds_median']:.0f} ({r['fds_max']}) | {r['tasks_median']:.0f} "
               f"({r['tasks_max']:.0f}) | {r['threads_median']:.0f} | {r['peers_mean']:.1f} "
               f"({r['peers_max']:.0f}) | {fps} | {r['bills']:.0f} | {r['cpu_pct']:.0f} % | "
               f"{r['machine_busy_pct']:.0f} % | {r['load1_mean']:.1f} |")


def verdicts(result: dict[str, Any], rows: list[dict[str, Any]],
             max_viewers: int) -> list[tuple[bool, str]]:
    out: list[tuple[bool, str]] = []
    if len(rows) >= 3:
        ref, ref_name = rows[1], "second"
    elif rows:
        ref, ref_name = rows[0], "first (run too short for a second)"
    else:
        return [(False, "no samples")]
    growth = 100 * (rows[-1]["rss_mib_median"] / ref["rss_mib_median"] - 1)
    out.append((growth <= RSS_GROWTH_MAX_PCT,
                f"RSS median {ref['rss_mib_median']:.1f} MiB ({ref_name} bucket, "
                f"{ref['bucket']} min) -> {rows[-1]['rss_mib_median']:.1f} MiB (last, "
                f"{rows[-1]['bucket']} min): {growth:+.1f} % (<= {RSS_GROWTH_MAX_PCT:g} %)"))
    before, after = result["idle_before"], result["idle_after"]
    if math.isnan(before.tasks):
        out.append((False, "tasks: the daemon exports no dishtracker_asyncio_tasks (older "
                           "than the soak bench)"))
    for name in ("tasks", "fds"):
        a, b = getattr(before, name), getattr(after, name)
        out.append((b - a <= IDLE_SLACK,
                    f"{name} idle before {a:.0f} -> idle after {b:.0f} "
                    f"(flat: at most +{IDLE_SLACK})"))
    a, b = ref["threads_median"], rows[-1]["threads_median"]
    out.append((b - a <= IDLE_SLACK,
                f"threads median {a:.0f} ({ref_name} bucket) -> {b:.0f} (last bucket) "
                f"(flat: at most +{IDLE_SLACK}; idle {before.threads} before, "
                f"{after.threads} after: the default executor grows to its cap on demand)"))
    peak = max(r["peers_max"] for r in rows)
    out.append((after.peers == 0 and peak <= max_viewers,
                f"peers idle after {after.peers:.0f} (0), at most {peak:.0f} during the soak "
                f"(<= {max_viewers})"))
    churn: Churn = result["churn"]
    out.append((not churn.join_failures and churn.blind == 0,
                f"{churn.joins} viewer joins, {len(churn.join_failures)} refused, "
                f"{churn.blind} blind"))
    out.append((not churn.config_failures,
                f"{churn.config_ok} live config changes, {len(churn.config_failures)} refused"))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    print(f"machine: {machine_line()}", flush=True)
    before = await measure_contention(args.contention_s)
    print(f"before the bench: {describe_contention(before)}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    daemon = await start_daemon(tmp, streams=args.streams, fps=args.fps, size=args.size,
                                codec=args.codec, max_peers=args.max_viewers + 2,
                                offers_per_minute=120.0, offer_burst=20)
    print(f"daemon pid {daemon.pid} ready: {args.streams} streams {args.size} at "
          f"{args.fps:g} fps, {args.codec}; soak {args.minutes:g} min", flush=True)
    try:
        async with daemon.session(timeout=aiohttp.ClientTimeout(total=30)) as http:
            result = await soak(args, daemon, http)
    except BaseException:
        print(f"daemon log: {daemon.child.log}\n{daemon.child.tail()}", file=sys.stderr)
        daemon.child.stop()
        raise
    daemon.child.stop()
    result["exit_code"] = daemon.child.exit_code
    result["stop_s"] = daemon.child.stop_seconds
    result["contention_before"] = before
    rows = []
    prev: Sample | None = None
    for i, b in enumerate(buckets(result["samples"], args.bucket_minutes,
                                       args.minutes)):
        rows.append(bucket_row(i, b, prev, args.bucket_minutes, daemon.streams))
        prev = b[-1]
    checks = verdicts(result, rows, args.max_viewers)
    checks.append((result["exit_code"] == 0,
                   f"daemon alive throughout; exit code {result['exit_code']} "
                   f"{result['stop_s'] or 0:.1f} s after SIGTERM"))
    churn: Churn = result["churn"]
    lines = ["", f"### soak: {args.streams} streams {args.size} at {args.fps:g} fps, "
                 f"{args.minutes:g} min, viewers joining/leaving every {args.churn_s:g} s "
                 f"(0-{args.max_viewers} open), config change every {args.config_s:g} s",
             "", *table(rows), ""]
    fpv = churn.frames_per_viewer
    lines.append(f"viewers: {churn.joins} joins, {churn.leaves} leaves, frames per viewer "
                 f"median {statistics.median(fpv) if fpv else 0:.0f}; config PUT median "
                 f"{statistics.median(churn.config_ms) if churn.config_ms else 0:.0f} ms")
    lines.append(f"RSS with no viewer: {result['idle_before'].rss_mib:.0f} MiB before the soak, "
                 f"{result['idle_after'].rss_mib:.0f} MiB after it")
    lines.append(f"contention during the soak: {describe_contention(result['contention'])}")
    lines.append(f"(before the bench: {describe_contention(before)})")
    for ok, text in checks:
        lines.append(f"{'PASS' if ok else 'FAIL'}  {text}")
    for what in churn.join_failures[:5] + churn.config_failures[:5]:
        lines.append(f"  refused: {what}")
    print("\n".join(lines), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"args": vars(args) | {"json": str(args.json) if args.json else None},
            "machine": pl.machine(), "rows": rows,
            "verdict": [{"pass": ok, "check": text} for ok, text in checks],
            "contention_before": before, "contention": result["contention"],
            "idle_before": vars(result["idle_before"]), "idle_after": vars(result["idle_after"]),
            "churn": vars(churn), "samples": [vars(s) for s in result["samples"]]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="soak length")
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--size", default="640x480", help="WxH")
    ap.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    ap.add_argument("--churn-s", type=float, default=3.0,
                    help="a viewer joins or leaves this often (seconds)")
    ap.add_argument("--max-viewers", type=int, default=6, help="viewers open at most")
    ap.add_argument("--config-s", type=float, default=20.0,
                    help="a live config change this often (seconds)")
    ap.add_argument("--sample-s", type=float, default=10.0, help="sampling interval (seconds)")
    ap.add_argument("--bucket-minutes", type=float, default=5.0, help="table rows")
    ap.add_argument("--contention-s", type=float, default=10.0,
                    help="seconds to watch the machine before starting anything")
    ap.add_argument("--seed", type=int, default=1, help="who joins and leaves")
    ap.add_argument("--json", type=Path, help="write every sample and figure here")
    args = ap.parse_args(argv)
    if args.minutes <= 0 or args.streams < 1 or args.max_viewers < 1:
        ap.error("--minutes must be > 0, --streams and --max-viewers >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return run_report("soak.py", run(args), args.json)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
