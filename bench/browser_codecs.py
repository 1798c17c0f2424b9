"""Benchmark: the daemon's video codecs as headless Chromium sees them (one viewer per stream).

    python bench/browser_codecs.py [--streams 3] [--seconds 40] [--warmup 8] \
        [--codecs vp8,h264] [--fps 20] [--size 640x480] [--json OUT]

For each codec in turn: ``dishtracker run`` with N synthetic streams,
``server.codec`` set to it (the daemon prefers it and falls back to the
others the browser offers), the shipped model on ONNX Runtime; then one
Debian Chromium page per stream (headless, its own browser context, the
cashier page at ``/`` with the engineer overlay, which carries the corner
stamp) watching its camera. What the page itself measures
(``window.dishtracker``, ``edge/web/static/app.js``): the codec the
connection decodes, frames presented per second, and glass-to-glass latency
(presentation time minus the stamp's capture time), sampled every 2 s; and
the CPU the daemon used over the measured window (its process and children,
``/proc``), with its detection rate per stream from ``/metrics``.

Unlike ``bench/pipeline.py``'s aiortc viewer, the browser presents a frame
as soon as it is decoded: these latencies have no extra frame interval.
Chromium itself runs on the same 2 cores, as a till's browser on the box
would. The machine line says how busy the box was before each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # `python bench/browser_codecs.py` from a checkout
    sys.path.insert(0, str(BENCH))

import harness  # noqa: E402  # bench/harness.py: start_daemon
import pipeline as pl  # noqa: E402  # bench/pipeline.py: /proc, /metrics, machine

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--autoplay-policy=no-user-gesture-required"]
SAMPLE_S = 2.0  # the page's measurement window


async def _viewer(browser: Any, base: str, token: str, stream: str) -> Any:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    await context.add_init_script(
        "localStorage.setItem('dishtracker.overlay', 'engineer');"
        f"localStorage.setItem('dishtracker.stream', '{stream}');")
    page = await context.new_page()
    await page.goto(f"{base}/#token={token}")
    return page


async def _metrics(page: Any) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate("() => ({...window.dishtracker})")
    return result


async def run_codec(codec: str, args: argparse.Namespace, tmp: Path,
                    browser: Any) -> dict[str, Any]:
    """One daemon with ``codec`` preferred, watched by one Chromium page per stream."""
    busy = os.getloadavg()
    folder = tmp / codec
    folder.mkdir()
    # seeds 1..N, as bench/pipeline.py's streams
    started = await harness.start_daemon(folder, streams=args.streams, fps=args.fps,
                                         size=args.size, codec=codec, first_seed=1)
    daemon, base, token, streams = started.child, started.base, started.token, started.streams
    pages: list[Any] = []
    try:
        async with started.session(timeout=aiohttp.ClientTimeout(total=10)) as http:
            pages = [await _viewer(browser, base, token, s) for s in streams]
            deadline = time.monotonic() + 60.0
            while not all([(await _metrics(p)).get("fps", 0) > 0 for p in pages]):
                daemon.check_alive()
                if time.monotonic() > deadline:
                    raise pl.BenchError("a Chromium viewer shows no video after 60 s")
                await asyncio.sleep(0.5)
            await asyncio.sleep(args.warmup)
            before = await pl.scrape(http, base)
            cpu0, t0 = pl.cpu_seconds(daemon.pid), time.monotonic()
            samples: dict[str, dict[str, list[Any]]] = {
                s: {"fps": [], "latency": [], "codec": []} for s in streams}
            while time.monotonic() - t0 < args.seconds:
                await asyncio.sleep(SAMPLE_S)
                for s, page in zip(streams, pages, strict=True):
                    m = await _metrics(page)
                    samples[s]["fps"].append(float(m.get("fps") or 0.0))
                    samples[s]["latency"] += [float(x) for x in m.get("latencySamples") or []]
                    samples[s]["codec"].append(m.get("codec"))
            cpu1, t1 = pl.cpu_seconds(daemon.pid), time.monotonic()
            after = await pl.scrape(http, base)
            dm = pl.daemon_metrics(before, after, streams, t1 - t0)
    finally:
        for page in pages:
            await page.context.close()
        daemon.stop()
    rows = []
    for s in streams:
        lat = samples[s]["latency"]
        codecs = sorted({c for c in samples[s]["codec"] if c})
        rows.append({
            "stream": s, "codec": ",".join(codecs) or "?",
            "fps_median": float(np.median(samples[s]["fps"])),
            "fps_min": float(min(samples[s]["fps"])),
            "latency_p50_ms": float(np.percentile(lat, 50)) if lat else None,
            "latency_p95_ms": float(np.percentile(lat, 95)) if lat else None,
            "detect_hz": dm["streams"][s].get("detect_hz"),
        })
    return {"codec": codec, "streams": rows, "daemon_cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
            "seconds": round(t1 - t0, 1), "load_before": busy}


def _print(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    m = pl.machine()
    print(f"# Chromium viewers: {args.streams} streams {args.size} at {args.fps:g} fps, "
          f"{args.seconds:g} s each; {m['cpu']}, {m['cores']} CPUs, aiortc {m['aiortc']}")
    print("`" + " ".join(["python", "bench/browser_codecs.py", *sys.argv[1:]]) + "`\n")
    print("| preferred | stream | decoded | fps (median / min) | latency p50 / p95 ms "
          "| detection Hz | daemon CPU | load average before |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        for s in r["streams"]:
            p50, p95 = s["latency_p50_ms"], s["latency_p95_ms"]
            lat = "-" if p50 is None else f"{p50:.0f} / {p95:.0f}"
            hz = "-" if s["detect_hz"] is None else f"{s['detect_hz']:.1f}"
            print(f"| {r['codec']} | {s['stream']} | {s['codec']} | {s['fps_median']:.1f} / "
                  f"{s['fps_min']:.1f} | {lat} | {hz} | {r['daemon_cpu_pct']:.0f} % | "
                  f"{r['load_before'][0]:.2f} |")


async def bench(args: argparse.Namespace) -> list[dict[str, Any]]:
    from playwright import async_api  # noqa: PLC0415 -- the dev extra

    results = []
    with tempfile.TemporaryDirectory(prefix="browser-codecs-") as tmp:
        async with async_api.async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS,
                                               headless=True)
            try:
                for codec in args.codecs:
                    results.append(await run_codec(codec, args, Path(tmp), browser))
            finally:
                await browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=3)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--warmup", type=float, default=8.0)
    p.add_argument("--codecs", type=lambda s: s.split(","), default=["vp8", "h264"])
    p.add_argument("--fps", type=float, default=20.0)
    p.add_argument("--size", default="640x480")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not Path(CHROMIUM).exists():
        p.error(f"{CHROMIUM} is missing: apt-get install chromium")
    try:
        results = asyncio.run(bench(args))
    finally:
        for child in list(pl.Child.running):
            child.stop()
    _print(results, args)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
