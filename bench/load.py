"""Load: 20 viewers on one stream and steady HTTP traffic; do all streams keep 19 fps?

    python bench/load.py [--seconds 60] [--streams 3] [--viewers 20] [--rate 50]
                         [--fps 20] [--size 640x480] [--codec vp8] [--warmup 5]
                         [--per-viewer-encoders] [--json OUT]

``dishtracker run`` with ``--streams`` synthetic cameras (seeds 3, 4, …; the
shipped model on ONNX Runtime, billing into its journal) and
``server.max_peers`` raised to fit. This process connects ``--viewers`` aiortc
viewers to ``cam1`` (they share one annotated, encoded track; each gets its
own RTP stream) and reads the stamp of every frame they decode. The daemon
encodes ``cam1`` once for all its viewers; ``--per-viewer-encoders`` starts
it with ``DISHTRACKER_SHARED_ENCODER=0`` (aiortc's encoder per viewer) to
compare. A second process (this script with ``--http-load``) sends ``--rate`` requests per
second, open loop and alternating, to ``/healthz`` and ``/api/bills``
(the first page, 50 bills), and reports latency and status of each.

Over the same ``--seconds`` window:

* fps per stream through the daemon (``dishtracker_frames_total``, stage
  ``tracked``), the rate ``cam1`` is annotated for its viewers (stage
  ``annotate``) and the unique frames each viewer decoded per second;
* HTTP requests per second achieved, p50/p95/max latency per route, errors;
* CPU of the daemon, of the viewers (this process), of the HTTP load
  process and of everyone else on the machine (a shared box), one core = 100 %.

Verdict: every stream >= 19 fps through the daemon, every viewer >= 19 fps
decoded, the HTTP rate achieved within 5 % with no error. On a 2-core
machine the viewers and the HTTP load run beside the daemon and cost CPU
too: the table says how much, so a miss can be told from a slow daemon.
Exit code 0 whatever the verdict; 1 if the daemon could not start or died.
Figures and the command are in docs/RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
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
    run_report,
    start_daemon,
    thread_cpu,
    thread_ticks,
)

SCRIPT = Path(__file__).resolve()
TARGET_FPS = 19.0
HTTP_RATE_SLACK = 0.05
ROUTES = ("/healthz", "/api/bills")
MAX_IN_FLIGHT = 64
"""Open loop: a request is sent on time even if earlier ones have not come
back, up to this many at once (beyond, it is counted as skipped)."""


# ---------------------------------------------------------------- the HTTP load process


async def http_load(base: str, rate: float, seconds: float,
                    start_at: float) -> dict[str, Any]:
    """Send ``rate`` requests/s for ``seconds`` from wall time ``start_at``.

    Returns
    -------
    dict
        ``requests`` (``[route, sent s, latency s, status]`` each, status 0 for
        a failed connection), ``skipped``, ``seconds`` and ``cpu_s`` (this
        process's CPU over the run).
    """
    records: list[tuple[str, float, float, int]] = []
    skipped = 0
    in_flight: set[asyncio.Task[None]] = set()

    async def one(http: aiohttp.ClientSession, route: str, sent: float) -> None:
        t = time.monotonic()
        try:
            async with http.get(base + route) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientError, asyncio.TimeoutError):
            status = 0
        records.append((route, sent, time.monotonic() - t, status))

    await asyncio.sleep(max(0.0, start_at - time.time()))
    cpu0 = sum(os.times()[:2])
    t0 = time.monotonic()
    n = round(rate * seconds)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=10)) as http:
        for i in range(n):
            due = t0 + i / rate
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if len(in_flight) >= MAX_IN_FLIGHT:
                skipped += 1
                continue
            task = asyncio.create_task(one(http, ROUTES[i % len(ROUTES)], due - t0))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight, timeout=15)
    span = time.monotonic() - t0
    return {"requests": records, "skipped": skipped, "seconds": span,
            "cpu_s": sum(os.times()[:2]) - cpu0}


def http_summary(report: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Achieved rate and latency per route from the load process's report."""
    reqs = report["requests"]
    ok = [r for r in reqs if 200 <= r[3] < 300]
    per: dict[str, Any] = {}
    for route in ROUTES:
        lat = sorted(1000 * r[2] for r in ok if r[0] == route)
        per[route] = {"ok": len(lat),
                      "p50_ms": pl.pct(lat, 50), "p95_ms": pl.pct(lat, 95),
                      "max_ms": max(lat) if lat else None}
    return {"sent": len(reqs), "ok": len(ok), "errors": len(reqs) - len(ok),
            "skipped": report["skipped"], "achieved_rps": len(ok) / seconds,
            "routes": per, "cpu_pct": 100 * report["cpu_s"] / max(1e-6, report["seconds"]),
            "statuses": sorted({r[3] for r in reqs})}


# ---------------------------------------------------------------- the bench


async def connect_viewers(daemon: Daemon, http: aiohttp.ClientSession, stream: str,
                          n: int) -> list[pl.Viewer]:
    """``n`` viewers of ``stream``, connected one after the other."""
    viewers: list[pl.Viewer] = []
    try:
        for _ in range(n):
            viewers.append(await asyncio.wait_for(pl.connect(http, daemon.base, stream), 30))
    except BaseException:
        await pl.close_viewers(viewers)
        raise
    return viewers


async def measure(args: argparse.Namespace, daemon: Daemon, http: aiohttp.ClientSession,
                  tmp: Path) -> dict[str, Any]:
    """Viewers on, warm-up, then the window with the HTTP load process running."""
    t_connect = time.monotonic()
    viewers = await connect_viewers(daemon, http, "cam1", args.viewers)
    connect_s = time.monotonic() - t_connect
    try:
        for _ in range(300):  # every viewer decodes a first frame (30 s at most)
            if all(v.samples for v in viewers):
                break
            daemon.child.check_alive()
            await asyncio.sleep(0.1)
        else:
            raise pl.BenchError(f"{sum(not v.samples for v in viewers)} viewers got no "
                                "readable frame within 30 s")
        out = tmp / "http.json"
        start_at = time.time() + max(args.warmup, 4.0)  # the load process starts meanwhile
        load = pl.Child("http load", [sys.executable, str(SCRIPT),
                                      "--http-load", daemon.base, "--rate", str(args.rate),
                                      "--seconds", str(args.seconds), "--start-at",
                                      str(start_at), "--out", str(out)],
                        tmp / "http.log", dict(os.environ))
        await asyncio.sleep(max(0.0, start_at - time.time()))
        m0, t0 = await pl.scrape(http, daemon.base), time.monotonic()
        cpu0, own0 = pl.cpu_seconds(daemon.pid), sum(os.times()[:2])
        threads0 = thread_ticks(daemon.pid)
        contention = Contention()
        contention.start()
        await asyncio.sleep(args.seconds)
        m1, t1 = await pl.scrape(http, daemon.base), time.monotonic()
        cpu1, own1 = pl.cpu_seconds(daemon.pid), sum(os.times()[:2])
        threads = thread_cpu(daemon.pid, threads0, time.monotonic() - t0)
        others = contention.stop([daemon.pid, os.getpid(), load.pid])
        daemon.child.check_alive()
        for _ in range(300):
            if load.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        load.stop()
        if load.exit_code != 0 or not out.exists():
            raise pl.BenchError(f"the HTTP load process failed ({load.exit_code}):\n"
                                f"{load.tail()}")
        span = t1 - t0
        frames = {s: (metric(m1, "dishtracker_frames_total", stream=s, stage="tracked")
                      - metric(m0, "dishtracker_frames_total", stream=s, stage="tracked"))
                  / span for s in daemon.streams}
        annotated = (metric(m1, "dishtracker_frames_total", stream="cam1", stage="annotate")
                     - metric(m0, "dishtracker_frames_total", stream="cam1",
                              stage="annotate")) / span
        per_viewer = [pl.stream_stats(v, t0, t1) for v in viewers]
        peers = metric(m1, "dishtracker_webrtc_peers", stream="cam1")
        return {
            "seconds": span, "connect_s": connect_s, "stream_fps": frames,
            "annotate_fps": annotated, "peers": peers,
            "viewer_fps": [s["fps"] for s in per_viewer],
            "viewer_p50_ms": [s["latency_ms"]["p50"] for s in per_viewer],
            "viewer_p95_ms": [s["latency_ms"]["p95"] for s in per_viewer],
            "http": http_summary(json.loads(out.read_text()), args.seconds),
            "daemon_cpu_pct": 100 * (cpu1 - cpu0) / span,
            "daemon_threads_cpu_pct": threads,
            "viewers_cpu_pct": 100 * (own1 - own0) / span,
            "rss_mib": pl.rss_bytes(daemon.pid) / 2**20,
            "detect_hz": {s: (metric(m1, "dishtracker_stage_latency_seconds_count", stream=s,
                                     stage="detect")
                              - metric(m0, "dishtracker_stage_latency_seconds_count",
                                       stream=s, stage="detect")) / span
                          for s in daemon.streams},
            "contention": others,
            "heap_trims": (metric(m1, "dishtracker_heap_trim_seconds_count")
                           - metric(m0, "dishtracker_heap_trim_seconds_count")),
            "heap_trim_s": (metric(m1, "dishtracker_heap_trim_seconds_sum")
                            - metric(m0, "dishtracker_heap_trim_seconds_sum")),
        }
    finally:
        await pl.close_viewers(viewers)


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def report_lines(args: argparse.Namespace, r: dict[str, Any],
                 before: dict[str, Any]) -> tuple[list[str], list[tuple[bool, str]]]:
    h = r["http"]
    vf = r["viewer_fps"]
    lines = ["", f"### load: {args.streams} streams {args.size} at {args.fps:g} fps, "
                 f"{args.viewers} viewers on cam1, HTTP {args.rate:g} req/s, "
                 f"{r['seconds']:.0f} s", "",
             "| stream | fps through the daemon | detect Hz | viewers | fps decoded per viewer "
             "(median / min) | viewer latency p50 / p95 ms (median of viewers) |",
             "|---|---|---|---|---|---|"]
    for s, fps in r["stream_fps"].items():
        if s == "cam1":
            p50 = statistics.median(x for x in r["viewer_p50_ms"] if x is not None)
            p95 = statistics.median(x for x in r["viewer_p95_ms"] if x is not None)
            view = (f"{len(vf)} ({r['peers']:.0f} peers; annotated {r['annotate_fps']:.1f} "
                    f"fps) | {statistics.median(vf):.2f} / {min(vf):.2f} | "
                    f"{p50:.0f} / {p95:.0f}")
        else:
            view = "0 | - | -"
        lines.append(f"| {s} | {fps:.2f} | {r['detect_hz'][s]:.1f} | {view} |")
    lines += ["", "| HTTP route | ok | p50 ms | p95 ms | max ms |", "|---|---|---|---|---|"]
    for route, x in h["routes"].items():
        lines.append(f"| {route} | {x['ok']} | {_ms(x['p50_ms'])} | {_ms(x['p95_ms'])} | "
                     f"{_ms(x['max_ms'])} |")
    lines += ["", f"HTTP: {h['achieved_rps']:.1f} req/s achieved of {args.rate:g} "
                  f"({h['errors']} errors, {h['skipped']} skipped, statuses {h['statuses']})",
              f"CPU (one core = 100 %): daemon {r['daemon_cpu_pct']:.0f} %, viewers (this "
              f"process) {r['viewers_cpu_pct']:.0f} %, HTTP load process "
              f"{h['cpu_pct']:.0f} %; daemon RSS {r['rss_mib']:.0f} MiB; "
              f"{args.viewers} viewers connected in {r['connect_s']:.1f} s",
              f"daemon CPU: event loop thread {r['daemon_threads_cpu_pct']['event loop']:.0f} % "
              "(aiortc's RTP and SRTP for every peer, the HTTP routes, the stream loops), "
              f"other threads {r['daemon_threads_cpu_pct']['other threads']:.0f} % "
              f"({'one encoder per viewer' if args.per_viewer_encoders else 'encoding'}, "
              "inference, decoding, the journal)",
              f"heap trims in the window: {r['heap_trims']:.0f}, "
              f"{1000 * r['heap_trim_s'] / max(r['heap_trims'], 1):.1f} ms each on average "
              "(a worker thread; edge/memory.py)",
              f"contention during the window: {describe_contention(r['contention'])}",
              f"(before the bench: {describe_contention(before)})"]
    worst = min(r["stream_fps"].values())
    checks = [
        (worst >= TARGET_FPS, f"every stream >= {TARGET_FPS:g} fps through the daemon: "
                              f"worst {worst:.2f}"),
        (min(vf) >= TARGET_FPS, f"every viewer >= {TARGET_FPS:g} fps decoded: worst "
                                f"{min(vf):.2f} (median {statistics.median(vf):.2f})"),
        (h["errors"] == 0 and h["skipped"] == 0
         and h["achieved_rps"] >= (1 - HTTP_RATE_SLACK) * args.rate,
         f"HTTP {h['achieved_rps']:.1f} req/s >= {(1 - HTTP_RATE_SLACK) * args.rate:.1f}, "
         f"no error"),
    ]
    return lines, checks


async def run(args: argparse.Namespace) -> dict[str, Any]:
    print(f"machine: {machine_line()}", flush=True)
    before = await measure_contention(args.contention_s)
    print(f"before the bench: {describe_contention(before)}", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    if args.per_viewer_encoders:  # the daemon inherits this process's environment
        os.environ["DISHTRACKER_SHARED_ENCODER"] = "0"
    print(f"encoders: {'one per viewer' if args.per_viewer_encoders else 'one per stream'}",
          flush=True)
    daemon = await start_daemon(tmp, streams=args.streams, fps=args.fps, size=args.size,
                                codec=args.codec, max_peers=args.viewers + 4,
                                offers_per_minute=max(30.0, 3.0 * args.viewers),
                                offer_burst=args.viewers + 5)
    print(f"daemon pid {daemon.pid} ready; connecting {args.viewers} viewers to cam1",
          flush=True)
    try:
        async with daemon.session(timeout=aiohttp.ClientTimeout(total=30)) as http:
            result = await measure(args, daemon, http, tmp)
    except BaseException:
        print(f"daemon log: {daemon.child.log}\n{daemon.child.tail()}", file=sys.stderr)
        daemon.child.stop()
        raise
    daemon.child.stop()
    lines, checks = report_lines(args, result, before)
    checks.append((daemon.child.exit_code == 0,
                   f"daemon alive throughout; exit code {daemon.child.exit_code} after SIGTERM"))
    lines += [f"{'PASS' if ok else 'FAIL'}  {text}" for ok, text in checks]
    print("\n".join(lines), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": pl.machine(), "contention_before": before, **result,
            "verdict": [{"pass": ok, "check": text} for ok, text in checks]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window")
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--viewers", type=int, default=20, help="viewers of cam1")
    ap.add_argument("--rate", type=float, default=50.0,
                    help="HTTP requests per second, alternating /healthz and /api/bills")
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--size", default="640x480", help="WxH")
    ap.add_argument("--codec", choices=["vp8", "h264"], default="vp8")
    ap.add_argument("--warmup", type=float, default=5.0,
                    help="seconds after every viewer's first frame before measuring")
    ap.add_argument("--contention-s", type=float, default=10.0,
                    help="seconds to watch the machine before starting anything")
    ap.add_argument("--per-viewer-encoders", action="store_true",
                    help="the daemon without shared encoding (DISHTRACKER_SHARED_ENCODER=0)")
    ap.add_argument("--json", type=Path, help="write every figure here")
    ap.add_argument("--http-load", metavar="BASE", help=argparse.SUPPRESS)
    ap.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.streams < 1 or args.viewers < 1 or args.rate <= 0:
        ap.error("--seconds and --rate must be > 0, --streams and --viewers >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.http_load:
        got = asyncio.run(http_load(args.http_load, args.rate, args.seconds,
                                    args.start_at or time.time()))
        args.out.write_text(json.dumps(got))
        return 0
    return run_report("load.py", run(args), args.json)


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
