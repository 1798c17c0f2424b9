"""Benchmark learning on the job on the real daemon: a scripted cashier over HTTP, and
what learning costs the video.

    python bench/learning.py [--seconds 60] [--streams 3] [--fps 20] [--size 640x480] \
        [--codec h264] [--order on,off,off,on] [--seed 17000] [--quiet-below PCT] \
        [--json OUT]

``dishtracker run`` (shipped model, ONNX Runtime on the CPU) with ``--streams``
synthetic cameras of the ``site2`` menu (``synthetic://?…&menu=site2``: five
dishes the shipped model never saw, 40 % of sales; seeds ``--seed``, ``+1`` …
from ``edge.seeds.LEARNING_TUNING``, 17000-17099) and those five dishes on its
menu at their prices (``edge.sim.menu.NEW_DISHES``), once per entry of
``--order``: ``[learning] enabled`` true for ``on``, false for ``off``, each on
a fresh journal (no examples), same seeds, same machine, one after the other
(the default, on, off, off, on, spreads a drift of the machine's load over
both; the latencies of the runs of one setting are pooled).

In each run:

* one aiortc viewer per stream (bench/pipeline.py's), reading the engineer
  overlay's corner stamp: fps per stream and glass-to-glass p50/p95 over
  ``--seconds`` after ``--warmup``, the detection rate from ``/metrics``, the
  daemon's CPU, and the other processes' CPU on the machine (a shared box);
* a **scripted cashier** reading ``GET /api/events`` from the first bill on.
  It knows the ground truth: the same scene rendered here from the same seed
  (:class:`edge.sim.scene.Scene`, deterministic per frame index). A bill's
  scene frame is its ``closed_at`` on the camera's clock, which the viewer's
  stamps give (frame id and capture time), so a frame the camera skipped
  under load does not shift it (``frame_seq`` counts delivered frames and
  does); the bill is matched to its tray by ``tray_box`` and its lines to the
  tray's dishes by ``line_boxes`` (:mod:`edge.eval.learning`), and the
  cashier posts one correction per changed, removed or added line (a bill
  for no tray, or a second bill for one tray, is voided) to
  ``POST /api/bills/{id}/corrections``, one at a time, as a till does;
* **correction-to-effect**, for every ``change`` (the corrections that
  teach): from the POST's answer to the first ``GET /api/learning`` whose
  ``index_version`` has moved past its value before the POST (polled every
  10 ms: an upper bound, one request's round trip included), beside the
  daemon's own ``last_effect_s`` (correction stored to index updated).

Bills are scored per tray that crossed the checkout line, as ``dishtracker
eval learning`` scores them: exact when billed once with the tray's dishes.
Trays with a new dish count as *untaught* when one of their new dishes had no
correction yet when the bill closed, *taught* once each had one (and
``>= 5``); known-only trays apart. The cashier works in both runs (the same
HTTP and journal work), so ``on - off`` is what learning itself costs.

Targets (PASS/FAIL, issue 14): every stream >= fps - 0.5 in every run; p95
with learning on within 10 ms of the run with it off; every correction's
effect <= 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # `python bench/learning.py` from a checkout
    sys.path.insert(0, str(BENCH))
import harness  # noqa: E402  # bench/harness.py: site config, daemon child, contention

from edge.billing.model import Bill, BillItem  # noqa: E402
from edge.config import (  # noqa: E402
    DEFAULT_MODEL,
    CheckoutConfig,
    load_config,
    write_config_atomic,
)
from edge.eval.bills import BOX_SEARCH_S  # noqa: E402
from edge.eval.cli_learning import site2_entries  # noqa: E402
from edge.eval.learning import SequenceTruth, cashier_actions, match_lines  # noqa: E402
from edge.eval.sequences import SequenceData  # noqa: E402
from edge.groundtruth import BoxRecord  # noqa: E402
from edge.seeds import LEARNING_TUNING, refuse_held_out  # noqa: E402
from edge.sim.live import parse_size  # noqa: E402
from edge.sim.menu import NEW_DISHES  # noqa: E402
from edge.sim.scene import Scene  # noqa: E402
from edge.sim.writer import tray_records  # noqa: E402

pl = harness.pl
MENU = "site2"
DIFFICULTY = "standard"
SEEDS = range(LEARNING_TUNING[DIFFICULTY], LEARNING_TUNING[DIFFICULTY] + 100)
"""17000-17099: the site2 scenes the learning loop is tuned on (edge.seeds)."""
FPS_SLACK = 0.5
P95_OVER_OFF_MS = 10.0
EFFECT_MAX_S = 2.0
EFFECT_TIMEOUT_S = 3.0
EFFECT_POLL_S = 0.01
HORIZON_SLACK_S = 60.0
"""Truth rendered beyond warm-up + window: the daemon's start and the cashier's last bills."""
TAIL_GRACE_S = 3.0
"""A tray crossing this close to the run's end may not be billed yet: not counted."""
NEW_KEYS = frozenset(d.key for d in NEW_DISHES)


# ---------------------------------------------------------------- ground truth


def render_truth(seed: int, fps: float, size: tuple[int, int], start: int,
                 stop: int) -> list[BoxRecord]:
    """Ground truth of frames ``start .. stop-1`` of a site2 scene (boxes 1-based frames)."""
    scene = Scene(seed, fps=fps, size=size, difficulty=DIFFICULTY, menu=MENU)
    out: list[BoxRecord] = []
    for f in range(start, stop):
        out += scene.render(f)[1]
    return out


class StreamTruth:
    """What the cashier knows of one stream: its scene's trays and boxes, rendered
    here up to a frame horizon (extended when a bill closes past it)."""

    def __init__(self, stream: str, seed: int, fps: float, size: tuple[int, int]) -> None:
        self.stream, self.seed, self.fps, self.size = stream, seed, fps, size
        self.records: list[BoxRecord] = []
        self.frames = 0
        self.extended = 0  # frames rendered while a run was going
        self.truth: SequenceTruth | None = None

    def render(self, frames: int) -> None:
        """Render up to ``frames`` frames (no-op when there already)."""
        if frames <= self.frames:
            return
        self.records += render_truth(self.seed, self.fps, self.size, self.frames, frames)
        self.frames = frames
        scene = Scene(self.seed, fps=self.fps, size=self.size, difficulty=DIFFICULTY, menu=MENU)
        scene.plan_until(frames)
        gt: dict[int, list[BoxRecord]] = {}
        for r in self.records:
            gt.setdefault(r.frame, []).append(r)
        seq = SequenceData(Path(self.stream), self.stream, self.fps, self.size[0], self.size[1],
                           frames, gt, tray_records(scene, self.records, frames),
                           CheckoutConfig())
        billed = self.truth.billed if self.truth is not None else {}
        self.truth = SequenceTruth.of(seq)
        self.truth.billed = billed

    def fresh(self) -> SequenceTruth:
        """The truth with nothing billed (a new run)."""
        assert self.truth is not None
        self.truth = SequenceTruth.of(self.truth.seq)
        return self.truth


# ---------------------------------------------------------------- the cashier


@dataclass
class Effect:
    """One teaching correction's effect."""

    bill_id: str
    key: str
    seen_s: float | None  # POST answer -> GET /api/learning shows the new index (None: never)
    daemon_s: float | None  # the daemon's last_effect_s then


@dataclass
class Cashier:
    """Reads the bills as they close and corrects each wrong one over HTTP."""

    daemon: harness.Daemon
    truths: dict[str, StreamTruth]
    fps: float
    clocks: dict[str, float] = field(default_factory=dict)  # stream -> camera's wall ms at frame 0
    bills: list[dict[str, Any]] = field(default_factory=list)
    actions: Counter[str] = field(default_factory=Counter)
    taught: Counter[str] = field(default_factory=Counter)  # new dish -> corrections so far
    effects: list[Effect] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    clocked: asyncio.Event = field(default_factory=asyncio.Event)  # every camera's clock known

    async def run(self, http: aiohttp.ClientSession) -> None:
        """Follow ``GET /api/events`` from the first bill; review each in order."""
        worker = asyncio.create_task(self._work(http), name="cashier")
        after = 0
        try:
            while True:
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    after = await self._follow(http, after)
                await asyncio.sleep(0.5)
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker

    async def _follow(self, http: aiohttp.ClientSession, after: int) -> int:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with http.get(f"{self.daemon.base}/api/events", params={"after": str(after)},
                            timeout=timeout) as r:
            event, data = "", []
            async for raw in r.content:
                line = raw.decode().rstrip("\r\n")
                if line.startswith(":"):
                    continue
                if line:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        event = value
                    elif name == "data":
                        data.append(value)
                    continue
                if event == "bill" and data:
                    bill = json.loads("\n".join(data))
                    after = max(after, int(bill["seq"]))
                    self.queue.put_nowait(bill)
                event, data = "", []
        return after

    async def _work(self, http: aiohttp.ClientSession) -> None:
        while True:
            data = await self.queue.get()
            try:
                await self.review(http, data)
            except (aiohttp.ClientError, asyncio.TimeoutError, pl.BenchError) as err:
                self.errors.append(f"{data.get('bill_id')}: {err!r}")
            finally:
                self.queue.task_done()

    def scene_frame(self, data: dict[str, Any]) -> int:
        """The bill's scene frame (0-based) on its camera's clock, else ``frame_seq``."""
        zero = self.clocks.get(str(data["stream_id"]))
        if zero is None:
            return int(data["frame_seq"])
        return round((float(data["closed_at"]) * 1000.0 - zero) * self.fps / 1000.0)

    async def review(self, http: aiohttp.ClientSession, data: dict[str, Any]) -> None:
        """Score ``data`` (a bill as the API gives it) and correct it."""
        await self.clocked.wait()  # every viewer's first stamp
        truth = self.truths[str(data["stream_id"])]
        frame = self.scene_frame(data)
        horizon = frame + round(BOX_SEARCH_S * self.fps) + 2
        if horizon > truth.frames:
            truth.extended += horizon + 200 - truth.frames
            await asyncio.to_thread(truth.render, horizon + 200)
        bill = bill_of(data, frame)
        known = truth.truth
        assert known is not None
        tray = known.tray_of(bill)
        stamped = dict(self.taught)
        record: dict[str, Any] = {
            "bill_id": bill.bill_id, "stream": bill.stream_id, "frame": frame,
            "frame_seq": int(data["frame_seq"]), "closed_at": bill.closed_at,
            "keys": sorted(i.key for i in bill.items), "taught": stamped,
            "tray": None if tray is None else tray.tray_id}
        self.bills.append(record)
        if tray is None or tray.tray_id in known.billed:
            if tray is not None:
                known.billed[tray.tray_id].append(bill)
            reason = "no such tray" if tray is None else "a second bill for one tray"
            await self.correct(http, bill.bill_id, {"action": "void", "reason": reason})
            return
        known.billed[tray.tray_id] = [bill]
        expected = {d.dish_id: d.key for d in tray.items}
        record["expected"] = sorted(expected.values())
        for body in cashier_actions(bill, match_lines(known.seq, bill, tray), expected):
            await self.correct(http, bill.bill_id, body)

    async def correct(self, http: aiohttp.ClientSession, bill_id: str,
                      body: dict[str, Any]) -> None:
        """Post one correction; time a ``change``'s effect on the index."""
        teaches = body["action"] == "change"
        before = (await self.learning(http))["index_version"] if teaches else 0
        url = f"{self.daemon.base}/api/bills/{bill_id}/corrections"
        async with http.post(url, json=body) as r:
            answer = await r.json(content_type=None)
            if r.status != 200:
                raise pl.BenchError(f"POST {url} {body}: HTTP {r.status} {answer}")
        answered = time.monotonic()
        self.actions[body["action"]] += 1
        key = body.get("class_key")
        if key in NEW_KEYS:
            self.taught[key] += 1
        if teaches:
            seen, daemon_s = None, None
            while time.monotonic() - answered < EFFECT_TIMEOUT_S:
                status = await self.learning(http)
                if status["index_version"] > before:
                    seen, daemon_s = time.monotonic() - answered, status["last_effect_s"]
                    break
                await asyncio.sleep(EFFECT_POLL_S)
            self.effects.append(Effect(bill_id, str(key), seen, daemon_s))

    async def learning(self, http: aiohttp.ClientSession) -> dict[str, Any]:
        async with http.get(f"{self.daemon.base}/api/learning") as r:
            body = await r.json(content_type=None)
            if r.status != 200:
                raise pl.BenchError(f"GET /api/learning: HTTP {r.status} {body}")
            return dict(body)


def bill_of(data: dict[str, Any], frame: int) -> Bill:
    """A bill of the API as :class:`Bill`, ``frame_seq`` replaced by its scene frame."""
    items = tuple(BillItem(-1 if i.get("class_id") is None else int(i["class_id"]),
                           str(i["key"]), str(i["name"]), float(i["price"]),
                           float(i.get("confidence") or 0.0), int(i.get("track_id") or -1),
                           bool(i.get("needs_review")), bool(i.get("unknown")))
                  for i in data["items"])
    boxes = [None if b is None else (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
             for b in data.get("line_boxes") or ()]
    boxes += [None] * (len(items) - len(boxes))
    x1, y1, x2, y2 = (float(v) for v in data["tray_box"])
    return Bill(str(data["bill_id"]), str(data["stream_id"]), int(data["tray_id"]),
                float(data["opened_at"]), float(data["closed_at"]), frame, items,
                float(data["total"]), bool(data["needs_review"]), str(data["reason"]),
                (x1, y1, x2, y2), line_boxes=tuple(boxes))


def camera_clock(viewer: pl.Viewer, fps: float) -> float | None:
    """The camera's wall-clock ms at scene frame 0, from the viewer's stamps
    (capture time = the viewer's wall time at decode minus the latency)."""
    if not viewer.samples:
        return None
    offset_ms = (time.time() - time.monotonic()) * 1000.0
    zeros = [mono * 1000.0 + offset_ms - lat - fid * 1000.0 / fps
             for mono, fid, lat in viewer.samples[:50]]
    return statistics.median(zeros)


# ---------------------------------------------------------------- scoring


def score(cashier: Cashier, stop_frame: dict[str, int], fps: float) -> dict[str, Any]:
    """Trays that crossed the line before the run's end, as eval learning scores them."""
    grace = round(TAIL_GRACE_S * fps)
    groups: dict[str, list[bool]] = {k: [] for k in (
        "all", "known_only", "new_untaught", "new_taught", "new_taught_5")}
    by_id = {b["bill_id"]: b for b in cashier.bills}
    for stream, truth in cashier.truths.items():
        known = truth.truth
        assert known is not None
        for t in known.trays:
            if t.checkout_frame is None or t.checkout_frame > stop_frame[stream] - grace:
                continue
            mine = known.billed.get(t.tray_id, [])
            keys = Counter(i.key for i in t.items)
            exact = len(mine) == 1 and Counter(i.key for i in mine[0].items) == keys
            taught = (by_id[mine[0].bill_id]["taught"] if mine else dict(cashier.taught))
            new = [k for k in keys if k in NEW_KEYS]
            groups["all"].append(exact)
            if not new:
                groups["known_only"].append(exact)
            elif min(taught.get(k, 0) for k in new) == 0:
                groups["new_untaught"].append(exact)
            else:
                groups["new_taught"].append(exact)
                if min(taught.get(k, 0) for k in new) >= 5:
                    groups["new_taught_5"].append(exact)
    return {k: {"trays": len(v), "exact": sum(v), "rate": sum(v) / len(v) if v else None}
            for k, v in groups.items()}


def effect_stats(effects: list[Effect]) -> dict[str, Any]:
    seen = [e.seen_s for e in effects if e.seen_s is not None]
    daemon = [e.daemon_s for e in effects if e.daemon_s is not None]

    def ms(values: list[float]) -> dict[str, float | None]:
        return {"median_ms": 1000 * statistics.median(values) if values else None,
                "max_ms": 1000 * max(values) if values else None}

    return {"changes": len(effects), "seen": len(seen), "not_seen": len(effects) - len(seen),
            "after_answer": ms(seen), "daemon": ms(daemon)}


# ---------------------------------------------------------------- one run


async def start_daemon(tmp: Path, args: argparse.Namespace, learning: bool) -> harness.Daemon:
    """``dishtracker run`` on harness's site config with the site2 cameras and menu."""
    site, token, port, ids = harness.write_site(
        tmp, streams=args.streams, fps=args.fps, size=args.size, codec=args.codec,
        max_peers=max(8, args.streams), first_seed=args.seed)
    config = load_config(site)
    config = config.model_copy(update={
        "menu": {**config.menu, **site2_entries()},
        "learning": config.learning.model_copy(update={"enabled": learning}),
        "streams": [s.model_copy(update={"url": f"{s.url}&difficulty={DIFFICULTY}&menu={MENU}"})
                    for s in config.streams]})
    write_config_atomic(site, config)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    cmd = [sys.executable, "-m", "edge.cli", "run", "--config", str(site), "--log-level", "info"]
    child = pl.Child("daemon", cmd, tmp / "daemon.log", env)
    daemon = harness.Daemon(child, f"http://127.0.0.1:{port}", token, site, ids)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await pl._wait_ready(http, daemon.base, child, args.start_timeout)
    except BaseException:
        child.stop()
        raise
    return daemon


async def run_once(args: argparse.Namespace, mode: str, truths: dict[str, StreamTruth],
                   tmp: Path) -> tuple[dict[str, Any], list[float]]:
    """One daemon run; its report and its pooled latencies (ms)."""
    contention = harness.Contention()
    t_start = time.monotonic()
    daemon = await start_daemon(tmp, args, learning=mode == "on")
    ready_s = time.monotonic() - t_start
    for truth in truths.values():
        truth.fresh()
    cashier = Cashier(daemon, truths, args.fps)
    viewers: list[pl.Viewer] = []
    task: asyncio.Task[None] | None = None
    try:
        async with daemon.session(timeout=aiohttp.ClientTimeout(total=10)) as http:
            task = asyncio.create_task(cashier.run(http), name="cashier-events")
            for sid in daemon.streams:
                viewers.append(await pl.connect(http, daemon.base, sid))
            contention.start()  # the viewers' first frames, the warm-up and the window
            clocks = asyncio.create_task(_clocks(cashier, viewers, args.fps))
            w, before, after = await pl.measure(viewers, daemon.child, args.seconds,
                                                args.warmup, http=http, base=daemon.base)
            others = contention.stop([daemon.pid, os.getpid()])  # while the daemon lives
            await clocks
            offset_ms = (time.time() - time.monotonic()) * 1000.0
            stop_frame = {v.stream: round((w.t1 * 1000 + offset_ms - cashier.clocks[v.stream])
                                          * args.fps / 1000) for v in viewers}
            await _drain(cashier)
            status = await cashier.learning(http)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        result = pl.summarise("daemon", viewers, daemon.child, w)
        pooled = [lat for v in viewers for lat in pl.stream_stats(v, w.t0, w.t1)["_latencies"]]
        metrics = pl.daemon_metrics(before, after, daemon.streams, w.t1 - w.t0)
        for s in result["streams"]:
            s.update({k: v for k, v in metrics["streams"][s["stream"]].items()
                      if k in ("detect_hz", "drops")})
    finally:
        if task is not None and not task.done():
            task.cancel()
        await pl.close_viewers(viewers)
        daemon.child.stop()
    result.update(
        learning=mode, ready_after_s=round(ready_s, 1), learning_status=status,
        contention=others,
        detect_calls_per_s=metrics["detect_calls_per_s"],
        detect_call_mean_ms=metrics["detect_call_mean_ms"],
        cashier={"bills": len(cashier.bills), "actions": dict(cashier.actions),
                 "corrections": sum(cashier.actions.values()),
                 "taught": dict(sorted(cashier.taught.items())),
                 "errors": cashier.errors[:20],
                 # scene frame - frame_seq per bill: frames the camera skipped before it
                 "frames_skipped_before_bill": [
                     min((b["frame"] - b["frame_seq"] for b in cashier.bills), default=0),
                     max((b["frame"] - b["frame_seq"] for b in cashier.bills), default=0)],
                 "truth_rendered_during_run": sum(t.extended for t in truths.values())},
        effect=effect_stats(cashier.effects),
        effects=[vars(e) for e in cashier.effects],
        exact=score(cashier, stop_frame, args.fps),
        log_effect_ms=_logged_effects(daemon.child.log),
        server_exit_code=daemon.child.exit_code)
    for t in truths.values():
        t.extended = 0
    return result, pooled


async def _clocks(cashier: Cashier, viewers: list[pl.Viewer], fps: float) -> None:
    """Give the cashier each camera's clock once its viewer has read a stamp."""
    while len(cashier.clocks) < len(viewers):
        for v in viewers:
            zero = camera_clock(v, fps)
            if zero is not None:
                cashier.clocks[v.stream] = zero
        await asyncio.sleep(0.1)
    cashier.clocked.set()


async def _drain(cashier: Cashier, timeout: float = 20.0) -> None:
    """Let the cashier finish the bills already closed."""
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(cashier.queue.join(), timeout)


def _logged_effects(log: Path) -> list[float]:
    """``effect_ms`` of the daemon's ``examples_updated`` log lines."""
    out = []
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if '"examples_updated"' in line:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    out.append(float(json.loads(line)["effect_ms"]))
    return out


# ---------------------------------------------------------------- report


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def _pct(group: dict[str, Any]) -> str:
    rate = group["rate"]
    return "-" if rate is None else f"{100 * rate:.0f} % of {group['trays']}"


def report_lines(runs: list[dict[str, Any]], pooled: dict[str, dict[str, float | None]],
                 verdicts: list[dict[str, Any]]) -> list[str]:
    out = ["", "| run | learning | fps per stream | p50 / p95 / max ms | detection Hz per "
           "stream | server CPU | others' CPU | load |", "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(runs, 1):
        lat = r["latency_ms"]
        c = r["contention"]
        fps = " / ".join(f"{s['fps']:.2f}" for s in r["streams"])
        hz = " / ".join(f"{s['detect_hz']:.1f}" for s in r["streams"])
        out.append(
            f"| {i} | {r['learning']} | {fps} | {_ms(lat['p50'])} / {_ms(lat['p95'])} / "
            f"{_ms(lat['max'])} | {hz} | {r['server_cpu_pct']:.0f} % | "
            f"{c['others_cpu_pct']:.0f} % | {c['load_start'][0]:.2f} -> "
            f"{c['load_end'][0]:.2f} |")
    out += ["", "| run | learning | bills | corrections (change/remove/add/void) | effect after "
            "the answer median / max ms (daemon's) | exact: all | known only | new, untaught | "
            "new, taught >= 1 | taught >= 5 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(runs, 1):
        a, e, x = r["cashier"]["actions"], r["effect"], r["exact"]
        seen, inside = e["after_answer"], e["daemon"]
        never = f", {e['not_seen']} never seen" if e["not_seen"] else ""
        out.append(
            f"| {i} | {r['learning']} | {r['cashier']['bills']} | "
            f"{a.get('change', 0)}/{a.get('remove', 0)}/{a.get('add', 0)}/{a.get('void', 0)} | "
            f"{_ms(seen['median_ms'])} / {_ms(seen['max_ms'])} "
            f"({_ms(inside['median_ms'])} / {_ms(inside['max_ms'])}){never} | "
            f"{_pct(x['all'])} | {_pct(x['known_only'])} | {_pct(x['new_untaught'])} | "
            f"{_pct(x['new_taught'])} | {_pct(x['new_taught_5'])} |")
    lines = []
    for k in ("p50", "p95"):
        on, off, gap = pooled.get("on", {}).get(k), pooled.get("off", {}).get(k), _gap(pooled, k)
        if on is not None and off is not None and gap is not None:
            lines.append(f"{k} {on:.0f} - {off:.0f} = {gap:+.0f} ms")
    if lines:
        out += ["", "learning on - off (every run of each, all streams' frames pooled): "
                + ", ".join(lines)]
    out.append("")
    for t in verdicts:
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        out.append(f"{'PASS' if t['pass'] else 'FAIL'}  {t['target']}: {value}")
    return out


def _gap(pooled: dict[str, dict[str, float | None]], key: str) -> float | None:
    """Learning on minus off for ``key`` of the pooled latencies (None: a mode not run)."""
    on, off = pooled.get("on", {}).get(key), pooled.get("off", {}).get(key)
    return None if on is None or off is None else on - off


def judge(runs: list[dict[str, Any]], pooled: dict[str, dict[str, float | None]],
          fps: float) -> list[dict[str, Any]]:
    worst = min(r["min_stream_fps"] for r in runs)
    out = [{"target": f">= {fps - FPS_SLACK:g} fps per stream, every run", "value": worst,
            "pass": worst >= fps - FPS_SLACK}]
    if {"on", "off"} <= set(pooled):
        gap = _gap(pooled, "p95")
        out.append({"target": f"p95 learning on <= off + {P95_OVER_OFF_MS:g} ms", "value": gap,
                    "pass": gap is not None and gap <= P95_OVER_OFF_MS})
    effects = [e for r in runs if r["learning"] == "on" for e in r["effects"]]
    late = [e["seen_s"] for e in effects]
    worst_s = max((s for s in late if s is not None), default=None)
    ok = bool(effects) and all(s is not None and s <= EFFECT_MAX_S for s in late)
    out.append({"target": f"correction-to-effect <= {EFFECT_MAX_S:g} s, every change "
                          f"(learning on; {len(effects)} changes)",
                "value": worst_s, "pass": ok})
    return out


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    info = pl.machine()
    load0 = os.getloadavg()
    size = parse_size(args.size)
    seeds = list(range(args.seed, args.seed + args.streams))
    print(f"machine: {harness.machine_line()}; load average at start {load0[0]:.2f} "
          f"{load0[1]:.2f} {load0[2]:.2f} (1/5/15 min)", flush=True)
    print(f"setup: {args.streams} synthetic {MENU} stream(s) {args.size} at {args.fps:g} fps "
          f"(seeds {seeds[0]}-{seeds[-1]}), {args.codec}; runs {args.order}: {args.seconds:g} s "
          f"each after {args.warmup:g} s warm-up; model {DEFAULT_MODEL.name}", flush=True)
    truths = {f"cam{i + 1}": StreamTruth(f"cam{i + 1}", s, args.fps, size)
              for i, s in enumerate(seeds)}
    frames = math.ceil(args.fps * (args.seconds + args.warmup + HORIZON_SLACK_S))
    t0 = time.monotonic()
    for truth in truths.values():
        await asyncio.to_thread(truth.render, frames)
    print(f"ground truth: {frames} frames per stream rendered in "
          f"{time.monotonic() - t0:.1f} s", flush=True)
    runs: list[dict[str, Any]] = []
    latencies: dict[str, list[float]] = {}
    for i, mode in enumerate(args.order, 1):
        print(f"\n[{i}/{len(args.order)}] learning {mode} ...", flush=True)
        if args.quiet_below is not None:
            await wait_quiet(args.quiet_below, args.quiet_wait)
        with tempfile.TemporaryDirectory(prefix=f"bench-learning-{mode}-") as tmp:
            result, pooled = await run_once(args, mode, truths, Path(tmp))
        runs.append(result)
        latencies.setdefault(mode, []).extend(pooled)
        print("\n".join(report_lines([result], {}, [])[:4]), flush=True)
    pooled_stats = {m: {"p50": pl.pct(v, 50), "p95": pl.pct(v, 95), "frames": len(v)}
                    for m, v in latencies.items()}
    verdicts = judge(runs, pooled_stats, args.fps)
    load1 = os.getloadavg()
    print("\n".join([f"\nmachine: {harness.machine_line()}",
                     *report_lines(runs, pooled_stats, verdicts),
                     f"\nload average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end; "
                     f"viewers are aiortc (about one frame interval, {1000 / args.fps:.0f} ms, "
                     "more than a browser sees)"]), flush=True)
    return {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": info, "model": pl.model_info(DEFAULT_MODEL),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "seeds": seeds,
            "load_start": load0, "load_end": load1, "runs": runs, "pooled": pooled_stats,
            "on_minus_off_p95_ms": _gap(pooled_stats, "p95"),
            "on_minus_off_p50_ms": _gap(pooled_stats, "p50"),
            "targets": verdicts}


async def wait_quiet(below: float, patience: float) -> None:
    """Wait until other processes use at most ``below`` % of one core over 5 s
    (a shared machine), or ``patience`` seconds have passed."""
    deadline = time.monotonic() + patience
    while True:
        c = await harness.measure_contention(5.0)
        if c["others_cpu_pct"] <= below or time.monotonic() > deadline:
            print(f"  before the run: {harness.describe_contention(c)}", flush=True)
            return
        await asyncio.sleep(5.0)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="measured window per run")
    ap.add_argument("--streams", type=int, default=3)
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--size", default="640x480", help="WxH")
    ap.add_argument("--codec", choices=["vp8", "h264"], default="h264")
    ap.add_argument("--warmup", type=float, default=3.0,
                    help="seconds after every viewer's first frame before measuring")
    ap.add_argument("--order", default="on,off,off,on",
                    help="runs, one daemon each: 'on' and 'off' in this order (e.g. on,off,off,on)")
    ap.add_argument("--seed", type=int, default=SEEDS.start,
                    help=f"first stream's seed, the others follow ({SEEDS.start}-"
                         f"{SEEDS.stop - 1}: edge.seeds.LEARNING_TUNING)")
    ap.add_argument("--start-timeout", type=float, default=180.0,
                    help="seconds to wait for the daemon's /readyz")
    ap.add_argument("--quiet-below", type=float, default=None, metavar="PCT",
                    help="before each run, wait until other processes use at most PCT %% of "
                         "one core over 5 s (a shared machine; at most --quiet-wait s)")
    ap.add_argument("--quiet-wait", type=float, default=900.0,
                    help="seconds --quiet-below waits at most per run")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)
    parse_size(args.size)
    args.order = [m.strip() for m in args.order.split(",") if m.strip()]
    if not args.order or set(args.order) - {"on", "off"}:
        ap.error("--order takes 'on' and 'off', comma-separated")
    if args.streams < 1 or args.seconds <= 0:
        ap.error("--streams must be >= 1 and --seconds > 0")
    seeds = range(args.seed, args.seed + args.streams)
    refuse_held_out(seeds, "bench/learning.py")
    if seeds.start not in SEEDS or seeds[-1] not in SEEDS:
        ap.error(f"seeds {seeds.start}-{seeds[-1]} leave the learning tuning set "
                 f"{SEEDS.start}-{SEEDS.stop - 1}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return harness.run_report("learning.py", bench(args), args.json)


if __name__ == "__main__":
    sys.exit(main())
