"""Benchmark: a model uploaded, shadowed and promoted while streams run and are watched.

    python bench/model_swap.py [--streams 3] [--seconds 90] [--fps 20] [--size 640x480]
                               [--codec h264] [--no-baseline] [--json OUT]

The real daemon (``dishtracker run``, shipped model, ONNX Runtime on the CPU)
with ``--streams`` synthetic cameras (seeds 3, 4, …) and one aiortc viewer
each, run twice for ``--seconds`` after a 5 s warm-up:

- **baseline**: nothing changes;
- **swap**: at 20 % of the run a candidate (the shipped network under another
  ``model_version``, so a new model to the registry that detects alike) is
  uploaded with ``POST /api/models`` and shadowed; at 60 % it is promoted.

For each run it prints every stream's frame rate at the viewer (distinct
frames per second, by the engineer overlay's frame stamp) over the phases
before the shadow, while shadowing, the 5 s around the promotion and after,
and the worst single second; then checks the journal: ``seq`` continuous,
no tray number repeated per stream, every bill stamped with the model that
served when it closed, and the swap run's bills against the baseline's over
the frames both runs covered, paired by stream and closing frame (none lost,
none added; how many carry the same dishes: two live runs differ a little in
which frames the load controller detects).

PASS needs every stream >= 19 fps in every phase of the swap run, the journal
checks, the candidate's shadow figures present, and every baseline bill
paired with one of the swap run, none left over.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import onnx

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # `python bench/model_swap.py` from a checkout
    sys.path.insert(0, str(BENCH))
import harness  # noqa: E402  # bench/harness.py: the daemon child and its site config

from edge.billing.journal import Journal  # noqa: E402
from edge.config import DEFAULT_MODEL  # noqa: E402

pl = harness.pl
WARMUP_S = 5.0
SHADOW_AT = 0.2
PROMOTE_AT = 0.6
TARGET_FPS = 19.0
CANDIDATE_VERSION = "dishnet-swap-candidate"


def candidate_model(path: Path, version: str = CANDIDATE_VERSION) -> Path:
    """The shipped network under ``model_version = version`` (another SHA-256)."""
    model = onnx.load(str(DEFAULT_MODEL))
    for prop in model.metadata_props:
        if prop.key == "model_version":
            prop.value = version
    onnx.save(model, str(path))
    return path


async def _post(http: aiohttp.ClientSession, url: str, **kwargs: Any) -> dict[str, Any]:
    async with http.post(url, **kwargs) as r:
        body = await r.json(content_type=None)
        if r.status >= 300:
            raise pl.BenchError(f"POST {url}: HTTP {r.status} {body}")
        return dict(body)


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as r:
        return await r.json(content_type=None)


def per_second(viewer: pl.Viewer, t0: float, t1: float) -> list[int]:
    """Distinct frames the viewer decoded in each whole second of [t0, t1)."""
    bins = [set() for _ in range(int(t1 - t0))]  # type: list[set[int]]
    for mono, fid, _ in viewer.samples:
        i = int(mono - t0)
        if 0 <= i < len(bins):
            bins[i].add(fid)
    return [len(b) for b in bins]


def phase_fps(viewer: pl.Viewer, phases: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean distinct frames per second of ``viewer`` in each phase."""
    return {name: pl.stream_stats(viewer, a, b)["fps"] for name, (a, b) in phases.items()}


async def run(args: argparse.Namespace, tmp: Path, *, swap: bool) -> dict[str, Any]:
    """One run of the daemon; the swap run uploads, shadows and promotes."""
    daemon = await harness.start_daemon(tmp, streams=args.streams, fps=args.fps,
                                        size=args.size, codec=args.codec)
    viewers: list[pl.Viewer] = []
    out: dict[str, Any] = {"swap": swap}
    try:
        async with daemon.session(timeout=aiohttp.ClientTimeout(total=60)) as http:
            viewers = [await pl.connect(http, daemon.base, s) for s in daemon.streams]
            deadline = time.monotonic() + 30
            while not all(v.samples for v in viewers):
                daemon.child.check_alive()
                if time.monotonic() > deadline:
                    raise pl.BenchError("no frame on some viewer within 30 s")
                await asyncio.sleep(0.1)
            await asyncio.sleep(WARMUP_S)
            t0 = time.monotonic()
            t_shadow, t_promote = t0 + SHADOW_AT * args.seconds, t0 + PROMOTE_AT * args.seconds
            end = t0 + args.seconds
            events: dict[str, Any] = {}
            while time.monotonic() < end:
                daemon.child.check_alive()
                now = time.monotonic()
                if swap and "shadowed" not in events and now >= t_shadow:
                    path = candidate_model(tmp / "candidate.onnx")
                    t = time.monotonic()
                    entry = await _post(http, f"{daemon.base}/api/models",
                                        data=io.BytesIO(path.read_bytes()),
                                        headers={"Content-Type": "application/octet-stream"})
                    events["uploaded_s"] = round(time.monotonic() - t, 3)
                    t = time.monotonic()
                    await _post(http, f"{daemon.base}/api/models/{entry['id']}/shadow")
                    events.update(shadowed=time.monotonic() - t0, model=entry["id"],
                                  shadow_call_s=round(time.monotonic() - t, 3))
                if swap and "promoted" not in events and now >= t_promote:
                    listing = await _get(http, f"{daemon.base}/api/models")
                    events["shadow_stats"] = (listing["rollout"]["shadow"] or {}).get("stats")
                    t = time.monotonic()
                    await _post(http, f"{daemon.base}/api/models/{events['model']}/promote")
                    events.update(promoted=time.monotonic() - t0, promoted_unix=time.time(),
                                  promote_call_s=round(time.monotonic() - t, 3))
                await asyncio.sleep(0.2)
            streams = await _get(http, f"{daemon.base}/api/streams")
            out["serving"] = [s.get("model") for s in streams]
        t_s = t0 + events.get("shadowed", SHADOW_AT * args.seconds)
        t_p = t0 + events.get("promoted", PROMOTE_AT * args.seconds)
        phases = {"before": (t0, t_s), "shadow": (t_s, t_p - 2.5), "swap": (t_p - 2.5, t_p + 2.5),
                  "after": (t_p + 2.5, end)}
        out["events"] = events
        out["fps"] = {v.stream: phase_fps(v, phases) for v in viewers}
        out["worst_second"] = {v.stream: min(per_second(v, t0, end)) for v in viewers}
        out["per_second"] = {v.stream: per_second(v, t0, end) for v in viewers}
    finally:
        await pl.close_viewers(viewers)
        daemon.child.stop()
    out["journal"] = journal_checks(tmp / "var" / "journal.sqlite3",
                                    events.get("promoted_unix") if swap else None)
    return out


def journal_checks(path: Path, promoted_unix: float | None) -> dict[str, Any]:
    """Continuity of the journal and the model each bill carries."""
    with Journal(path) as journal:
        bills = list(reversed(journal.list_bills(100000).bills))
    seqs = [b["seq"] for b in bills]
    trays: dict[str, list[int]] = {}
    for b in bills:
        trays.setdefault(b["stream_id"], []).append(b["tray_id"])
    # a tray seen without dishes takes a number and is not billed: numbers rise, with gaps
    rising = all(t == sorted(set(t)) for t in trays.values())
    wrong_model = 0
    if promoted_unix is not None:
        for b in bills:
            version = b["model"]["version"]
            if b["closed_at"] < promoted_unix - 0.3 and version == CANDIDATE_VERSION:
                wrong_model += 1
            if b["closed_at"] > promoted_unix + 0.3 and version != CANDIDATE_VERSION:
                wrong_model += 1
    return {"bills": len(bills), "seq_continuous": seqs == list(range(1, len(seqs) + 1)),
            "trays_rising": rising, "wrong_model": wrong_model,
            "versions": sorted({b["model"]["version"] for b in bills}),
            "trays": {sid: [(b["tray_id"], b["frame_seq"], sorted(i["key"] for i in b["items"]))
                            for b in bills if b["stream_id"] == sid] for sid in trays}}


MATCH_FRAMES = 40
"""Two runs' bills of one stream closed this many frames apart or fewer are the same tray."""


def compare(base: dict[str, Any], swap: dict[str, Any]) -> dict[str, Any]:
    """The swap run's bills against the baseline's, over the frames both runs covered.

    Bills are paired by stream and closing frame (within :data:`MATCH_FRAMES`),
    not by tray number: a tray seen without dishes takes a number and is not
    billed, and two live runs need not see the same such trays.
    """
    paired = alike = compared = 0
    unpaired: list[str] = []
    for sid, rows in base["journal"]["trays"].items():
        other = list(swap["journal"]["trays"].get(sid, []))
        if not rows or not other:
            unpaired.append(f"{sid}: no bills in one run")
            continue
        cutoff = min(rows[-1][1], other[-1][1]) - MATCH_FRAMES
        for _, frame, keys in rows:
            if frame > cutoff:
                continue
            compared += 1
            near = [o for o in other if abs(o[1] - frame) <= MATCH_FRAMES]
            if not near:
                unpaired.append(f"{sid}: baseline bill at frame {frame}")
                continue
            match = min(near, key=lambda o: abs(o[1] - frame))
            other.remove(match)
            paired += 1
            alike += match[2] == keys
        unpaired += [f"{sid}: swap-run bill at frame {f}" for _, f, _ in other
                     if f <= cutoff]
    return {"compared": compared, "paired": paired, "alike": alike, "unpaired": unpaired}


def verdicts(swap: dict[str, Any], cmp: dict[str, Any] | None) -> list[tuple[str, bool, str]]:
    """(target, pass, value) rows."""
    worst = min(f for phases in swap["fps"].values() for f in phases.values())
    j = swap["journal"]
    stats = swap["events"].get("shadow_stats") or {}
    rows = [
        (f"every stream >= {TARGET_FPS:g} fps in every phase", worst >= TARGET_FPS,
         f"{worst:.2f}"),
        ("journal seq continuous, no tray number repeated", j["seq_continuous"]
         and j["trays_rising"], f"{j['bills']} bills"),
        ("every bill stamped with the model that served", j["wrong_model"] == 0
         and CANDIDATE_VERSION in j["versions"], f"{j['wrong_model']} wrong"),
        ("shadow compared bills before the promotion", stats.get("compared", 0) > 0,
         f"{stats.get('compared', 0)} compared, agreement {stats.get('agreement')}"),
        ("all streams serve the candidate after", all(
            s and s.get("version") == CANDIDATE_VERSION for s in swap["serving"]),
         str({s.get('version') for s in swap['serving'] if s})),
    ]
    if cmp is not None:
        rows.append(("every bill of the run without a swap billed, none added",
                     cmp["paired"] == cmp["compared"] and not cmp["unpaired"],
                     f"{cmp['paired']}/{cmp['compared']} (dishes alike "
                     f"{cmp['alike']}/{cmp['compared']})"))
    return rows


def table(name: str, r: dict[str, Any]) -> list[str]:
    phases = ("before", "shadow", "swap", "after")
    out = [f"### {name}", "", "| stream | " + " | ".join(f"fps {p}" for p in phases)
           + " | worst second |", "|---" * (len(phases) + 2) + "|"]
    for sid, fps in r["fps"].items():
        out.append(f"| {sid} | " + " | ".join(f"{fps[p]:.2f}" for p in phases)
                   + f" | {r['worst_second'][sid]} |")
    j = r["journal"]
    out += ["", f"journal: {j['bills']} bills, seq continuous {j['seq_continuous']}, no tray "
                f"number repeated {j['trays_rising']}, models {j['versions']}"]
    if r["swap"]:
        e = r["events"]
        out.append(f"upload {e.get('uploaded_s')} s, shadow call {e.get('shadow_call_s')} s, "
                   f"promote call {e.get('promote_call_s')} s; shadow at promotion: "
                   f"{e.get('shadow_stats')}")
    return [*out, ""]


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    print(f"machine: {harness.machine_line()}", flush=True)
    print(f"setup: {args.streams} streams {args.size} at {args.fps:g} fps, {args.codec}, one "
          f"aiortc viewer each, {args.seconds:g} s per run", flush=True)
    report: dict[str, Any] = {"machine": pl.machine(), "args": vars(args)}
    base = None
    if not args.no_baseline:
        with tempfile.TemporaryDirectory(prefix="bench-swap-base-") as tmp:
            print("\n[1/2] baseline: no model change ...", flush=True)
            base = await run(args, Path(tmp), swap=False)
        report["baseline"] = base
        print("\n".join(table("baseline (no change)", base)), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-swap-") as tmp:
        print("[2/2] swap: upload + shadow at 20 %, promote at 60 % ...", flush=True)
        swap = await run(args, Path(tmp), swap=True)
    report["swap"] = swap
    print("\n".join(table("swap (upload, shadow, promote)", swap)), flush=True)
    cmp = compare(base, swap) if base is not None else None
    report["compare"] = cmp
    rows = verdicts(swap, cmp)
    report["targets"] = [{"target": t, "pass": p, "value": v} for t, p, v in rows]
    for t, p, v in rows:
        print(f"{'PASS' if p else 'FAIL'}  {t}: {v}")
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--streams", type=int, default=3)
    p.add_argument("--seconds", type=float, default=90.0)
    p.add_argument("--fps", type=float, default=20.0)
    p.add_argument("--size", default="640x480")
    p.add_argument("--codec", default="h264", choices=("h264", "vp8"))
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the run without a swap (and the tray comparison)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.seconds < 30:
        p.error("--seconds must be at least 30 (phases of a few seconds each)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    return harness.run_report("model_swap.py", bench(args), args.json)


if __name__ == "__main__":
    sys.exit(main())
