"""Onboarding a new site end to end: recording, frame selection, labelling over HTTP, training.

    python bench/onboard.py --work runs/onboard [--minutes 120] [--seconds 60] \\
        [--frames-per-dish 5] [--every 5] [--sampling select,uniform] \\
        [--eval-sequences 20] [--held-out] [--json OUT]

Issue 15 item 5, the whole way a site goes with the product:

1. **Recording**: ``--minutes`` of ``site2`` service (standard level; five dishes
   the shipped model never saw, 40 % of sales: ``edge.sim.menu.NEW_DISHES``),
   rendered as sequences of ``--seconds`` from :data:`edge.seeds.ONBOARD_RECORDING`
   (a service recorded in files, as a box would keep it).
2. **Frames**: K = ``--frames-per-dish`` x the new dishes (5 x 5 = 25), from all
   the recording at once. ``select``: ``calibrate select``'s scan of every
   ``--every``-th frame of each file (:func:`calibration.select.scan`; a stride
   of 5 reads 4 frames a second and makes the two hours a 15-30-minute scan
   instead of over an hour), then one greedy choice over every file's
   detections (:func:`calibration.select.choose_frames`). ``uniform``: K frames
   evenly spaced over the recording's time (the middle of K equal spans), as a
   person with ``ffmpeg -vf fps=…`` would take them, an empty counter skipped
   for the next frame with a dish. Each file's picks are
   written as a ``calibrate select`` folder and imported with ``dishtracker
   label import`` (files in the order of their first pick).
3. **Labelling**: ``dishtracker run`` (no camera; the ``site2`` dishes on its
   menu) with a manager's and a labeller's token; the scripted labeller
   (``bench/onboard_labeller.py``) knows the ground truth and labels every
   frame through the workspace's HTTP API, one action per accepted proposal,
   corrected class, deleted or drawn box and completed frame.
4. **Training**: ``POST /api/label/training`` with replay of the known classes
   (``dishtracker calibrate dataset`` on the base menu, ``--replay-seeds``, as
   docs/SITE_SETUP.md says); the trainer's CPU time is read from ``/proc``
   while it runs (user + system of the trainer process and its children; not
   the daemon's). The job holds back one frame for its own check
   (``--val-every``), so K - 1 frames are trained on.
5. **Evaluation** on held-back ``site2`` sequences never used above:
   :data:`edge.seeds.ONBOARD_TUNING` (what the bench is developed on), or with
   ``--held-out`` :data:`edge.seeds.ONBOARD_HELD_OUT` (90600-90699: the final
   figures, once per decision). New-dish AP@0.5 and base-dish mAP@0.5 on every
   ``--eval-every``-th frame, bill exact-match of whole sequences, for the new
   model and the shipped one.

Everything lands under ``--work``; a step whose output is there is not done
again (a labelling run goes on from its log, a training job is resumed), so an
interrupted run resumes. A work folder belongs to the options its frames,
labels and models were made with (``WORK/options.json``; another value is
refused); the evaluation set may change between runs (a tuning run first,
then ``--held-out`` once on the same folder). Targets (issue 15) are printed as PASS/FAIL; they
are meant for the full scale (two hours, 25 frames, 20 evaluation minutes).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402

from bench import onboard_eval as ev  # noqa: E402
from bench import pipeline as pl  # noqa: E402
from bench.onboard_frames import (  # noqa: E402
    LEVEL,
    MENU,
    SAMPLINGS,
    pick,
    render,
    replay_split,
    selection_folders,
)
from bench.onboard_labeller import (  # noqa: E402
    BOX_IOU,
    HttpWorkspace,
    Truth,
    TruthOf,
    label_all,
    read_log,
)
from bench.onboard_training import JobFailed, train  # noqa: E402
from edge.config import (  # noqa: E402
    DEFAULT_MODEL,
    ServerConfig,
    SiteConfig,
    StorageConfig,
    write_config_atomic,
)
from edge.eval.cli_learning import site2_entries  # noqa: E402
from edge.fsutil import write_atomic  # noqa: E402
from edge.seeds import (  # noqa: E402
    ONBOARD_HELD_OUT,
    ONBOARD_RECORDING,
    ONBOARD_TUNING,
    refuse_held_out,
)
from edge.web.tokens import TOKENS_FILE, TokenStore  # noqa: E402


def say(text: str) -> None:
    """A progress line, flushed."""
    print(text, flush=True)


def seed_span(seeds: Sequence[int]) -> str:
    """``18000-18119`` (or one seed)."""
    return f"{seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else str(seeds[0])


# ---------------------------------------------------------------- the box: labelling, training


@dataclass
class Site:
    """One sampling's box: its config, storage and tokens."""

    root: Path

    @property
    def config(self) -> Path:
        """Its site config."""
        return self.root / "site.toml"

    @property
    def storage(self) -> Path:
        """Its ``storage.dir`` (the workspace, the tokens, the model registry)."""
        return self.root / "var"

    def write_config(self, port: int) -> None:
        """``site.toml``: no camera, the ``site2`` dishes on the menu, ``port``."""
        base = SiteConfig()
        write_config_atomic(self.config, SiteConfig(
            streams=[], server=ServerConfig(host="127.0.0.1", port=port),
            storage=StorageConfig(dir=self.storage), menu={**base.menu, **site2_entries()}))

    def tokens(self) -> dict[str, str]:
        """The manager's and the labeller's tokens (made once, kept beside the box)."""
        path = self.root / "bench-tokens.json"
        if path.is_file():
            tokens: dict[str, str] = json.loads(path.read_text())
            return tokens
        self.storage.mkdir(mode=0o700, parents=True, exist_ok=True)
        store = TokenStore(self.storage / TOKENS_FILE)
        tokens = {"manager": store.create("bench-manager", "manager"),
                  "labeller": store.create("bench-labeller", "labeller")}
        write_atomic(path, json.dumps(tokens).encode(), mode=0o600)
        return tokens

    def import_frames(self, folders: Sequence[Path]) -> None:
        """``dishtracker label import`` each folder (importing twice adds nothing)."""
        for folder in folders:
            subprocess.run([sys.executable, "-m", "edge.cli", "label", "import", str(folder),
                            "--config", str(self.config), "--double-every", "0"],
                           check=True, stdout=subprocess.DEVNULL)


async def start_daemon(site: Site, timeout: float) -> tuple[pl.Child, str]:
    """``dishtracker run`` on ``site``; the child and its base URL once ready."""
    port = pl.free_port()
    site.write_config(port)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    child = pl.Child("daemon", [sys.executable, "-m", "edge.cli", "run", "--config",
                                str(site.config), "--log-level", "info"],
                     site.root / "daemon.log", env)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await pl._wait_ready(http, base, child, timeout)
    except BaseException:
        child.stop()
        raise
    return child, base


def truth_source(root: Path) -> TruthOf:
    """``item -> [Truth]``: the ground truth of a leased frame, read once per sequence."""
    cache: dict[str, dict[int, list[Truth]]] = {}

    def truth_of(item: dict[str, Any]) -> list[Truth]:
        name = Path(item["source"]).name
        if name not in cache:
            cache[name] = {f: [Truth(*row) for row in rows]
                           for f, rows in ev.truth_by_frame(root / name).items()}
        return cache[name].get(int(item["source_frame"]), [])

    return truth_of


async def label_and_train(site: Site, args: argparse.Namespace, recording: Path,
                          replay: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Steps 3 and 4 on one box (the daemon runs only while needed)."""
    labelled, trained = site.root / "labelled.json", site.root / "training.json"
    if labelled.is_file() and trained.is_file():
        return json.loads(labelled.read_text()), json.loads(trained.read_text())
    tokens = site.tokens()
    child, base = await start_daemon(site, args.start_timeout)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as http:
            if not labelled.is_file():
                log = site.root / "actions.jsonl"
                tally = read_log(log)
                started = time.monotonic()
                workspace = HttpWorkspace(http, base, tokens["labeller"])
                await label_all(workspace, truth_source(recording), tally,
                                box_iou=args.box_iou, log=log,
                                progress=lambda line: say(f"  {line}"))
                labelled.write_text(json.dumps({**tally.summary(),
                                                "wall_s": round(time.monotonic() - started, 1)},
                                               indent=1))
            options = {"epochs": args.epochs, "epoch_images": args.epoch_images,
                       "time_budget_s": args.time_budget_s, "threads": args.train_threads,
                       "val_every": args.val_every, "replay": str(replay)}
            options |= {key: getattr(args, key) for key in ("noisy_labels", "unlabelled")
                        if getattr(args, key) is not None}  # else the job's defaults
            result = await train(http, base, tokens["manager"], site.root, options)
            trained.write_text(json.dumps(result, indent=1))
    finally:
        child.stop()
    return json.loads(labelled.read_text()), result


def exported_epoch(history: Path) -> int | None:
    """The epoch the trainer exported: its best on the job's held-back frames."""
    best = None
    for line in history.read_text().splitlines():
        row = json.loads(line)
        if row.get("best"):
            best = int(row["epoch"])
    return best


# ---------------------------------------------------------------- evaluation


def scores(model: Path, tag: str, evals: Sequence[Path], args: argparse.Namespace,
           out: Path) -> dict[str, Any]:
    """Detector and bill figures of ``model`` on the evaluation set (cached in ``out``)."""
    path = out / f"eval-{tag}.json"
    if path.is_file():
        doc: dict[str, Any] = json.loads(path.read_text())
        return doc
    started = time.monotonic()
    say(f"  {model.name}: mAP on every {args.eval_every}th frame, bills of {len(evals)} "
        "sequences")
    doc = {**ev.detector_scores(model, evals, every=args.eval_every, threads=args.threads),
           "bills": ev.bill_scores(model, evals, config=args.work / "eval-site.toml",
                                   cache=args.work / "det-cache", out=out / f"bills-{tag}.json",
                                   threads=args.threads)}
    doc["seconds"] = round(time.monotonic() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1))
    return doc


# ---------------------------------------------------------------- report


def judge(rows: dict[str, dict[str, Any]], shipped: dict[str, Any]) -> list[tuple[str, bool]]:
    """Issue 15's targets for the onboarding (meant for the full scale)."""
    out: list[tuple[str, bool]] = []
    sel = rows.get("select")
    if sel is not None:
        new_frames = sel["coverage"]["frames_with"]
        out += [
            (f"new dishes mAP@0.5 {sel['eval']['new_map50']:.3f} >= 0.90",
             sel["eval"]["new_map50"] >= 0.90),
            (f"selected frames {sel['frames']} <= 5 per new dish ({5 * len(ev.NEW)}); "
             f"frames showing each: {new_frames}", sel["frames"] <= 5 * len(ev.NEW)),
            (f"labeller actions {sel['labelled']['actions']} <= 300",
             sel["labelled"]["actions"] <= 300),
            (f"base dishes mAP@0.5 {sel['eval']['base_dishes_map50']:.3f} >= shipped "
             f"{shipped['base_dishes_map50']:.3f} - 0.01",
             sel["eval"]["base_dishes_map50"] >= shipped["base_dishes_map50"] - 0.01),
            (f"training {sel['training']['cpu_s'] / 60:.1f} CPU min <= 45",
             sel["training"]["cpu_s"] <= 45 * 60),
            (f"bill exact-match {_pct(sel['eval']['bills']['bill_exact_match'])} >= 98.2 %",
             (sel["eval"]["bills"]["bill_exact_match"] or 0.0) >= 0.982)]
    uni = rows.get("uniform")
    if sel is not None and uni is not None:
        out += [
            (f"selection covers more (class, pose-bin) pairs than uniform: "
             f"{sel['coverage']['pairs']} vs {uni['coverage']['pairs']}",
             sel["coverage"]["pairs"] > uni["coverage"]["pairs"]),
            (f"selection reaches a higher new-dish mAP@0.5 than uniform: "
             f"{sel['eval']['new_map50']:.3f} vs {uni['eval']['new_map50']:.3f}",
             sel["eval"]["new_map50"] > uni["eval"]["new_map50"])]
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f} %"


def table(rows: dict[str, dict[str, Any]], shipped: dict[str, Any]) -> list[str]:
    """The markdown table: the shipped model, then one row per sampling."""
    short = "/".join(n.split("_")[0][:5] for n in ev.NEW)
    lines = [f"| model | frames | frames with {short} | pairs (new) | actions | "
             f"actions on {short} | train CPU min (epoch kept) | new mAP@0.5 | {short} AP | "
             "base mAP@0.5 | bills exact |", "|" + "---|" * 11]

    def aps(e: dict[str, Any]) -> str:
        return " / ".join(f"{e['new_ap50'][n]:.2f}" for n in ev.NEW)

    lines.append(f"| shipped | - | - | - | - | - | - | {shipped['new_map50']:.3f} | "
                 f"{aps(shipped)} | {shipped['base_dishes_map50']:.3f} | "
                 f"{_pct(shipped['bills']['bill_exact_match'])} |")
    for method, r in rows.items():
        cov, lab = r["coverage"], r["labelled"]
        per = " / ".join(str(sum(lab["by_class"].get(n, {}).values())) for n in ev.NEW)
        lines.append(
            f"| {method} | {r['frames']} | "
            f"{' / '.join(str(cov['frames_with'][n]) for n in ev.NEW)} | "
            f"{cov['pairs']} ({cov['new_pairs']}) | {lab['actions']} | {per} | "
            f"{r['training']['cpu_s'] / 60:.1f} (e{r['training']['exported_epoch']} of "
            f"{r['training']['job']['options']['epochs']}) | {r['eval']['new_map50']:.3f} | "
            f"{aps(r['eval'])} | {r['eval']['base_dishes_map50']:.3f} | "
            f"{_pct(r['eval']['bills']['bill_exact_match'])} |")
    return lines


FIXED = ("minutes", "seconds", "frames_per_dish", "every", "box_iou", "replay_seeds",
         "replay_seconds", "epochs", "epoch_images", "time_budget_s", "val_every",
         "train_threads", "noisy_labels", "unlabelled")
"""Options a work folder is made with: its recording, frames, labels and models depend on
them (the evaluation set, the samplings run and the threads may change between runs)."""


def check_work(args: argparse.Namespace) -> None:
    """Remember :data:`FIXED` in ``WORK/options.json``; refuse a folder made with others."""
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / "options.json"
    mine = {key: getattr(args, key) for key in FIXED}
    if not path.is_file():
        path.write_text(json.dumps(mine, indent=1))
        return
    theirs = json.loads(path.read_text())
    changed = {key: f"{theirs.get(key)} then, {value} now" for key, value in mine.items()
               if theirs.get(key) != value}
    if changed:
        raise SystemExit(f"{args.work} was made with other options ({changed}): its frames, "
                         "labels and models would not be these options'; give another --work")


def eval_seeds(args: argparse.Namespace) -> list[int]:
    """The evaluation set's seeds: the tuning range, or with ``--held-out`` the held-out one."""
    span = ONBOARD_HELD_OUT if args.held_out else ONBOARD_TUNING
    if not 1 <= args.eval_sequences <= len(span):
        raise SystemExit(f"--eval-sequences must be in 1..{len(span)}")
    return list(span[:args.eval_sequences])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every step for every sampling; the report."""
    t0 = time.monotonic()
    count = round(args.minutes * 60 / args.seconds)
    if not 1 <= count <= len(ONBOARD_RECORDING):
        raise SystemExit(f"--minutes / --seconds gives {count} sequences; the recording range "
                         f"holds 1..{len(ONBOARD_RECORDING)}")
    seeds = list(ONBOARD_RECORDING[:count])
    refuse_held_out(seeds, "the onboarding recording")
    k = args.frames_per_dish * len(ev.NEW)
    held = eval_seeds(args)
    check_work(args)
    say(f"onboard: recording seeds {seed_span(seeds)} ({count} x {args.seconds:g} s = "
        f"{count * args.seconds / 60:g} min, site2 {LEVEL}); K = {args.frames_per_dish} x "
        f"{len(ev.NEW)} new dishes = {k}; evaluation on "
        f"{'HELD-OUT' if args.held_out else 'tuning'} seeds {seed_span(held)}")
    say("1. recording and evaluation sequences")
    recording = args.work / "recording"
    seqs = render(seeds, args.seconds, recording, args.jobs)
    kind = "held-out" if args.held_out else "tuning"
    evals = render(held, args.eval_seconds, args.work / f"{kind}-{args.eval_seconds:g}s",
                   args.jobs)
    replay = replay_split(args.work, args.replay_seeds, args.replay_seconds, args.jobs)
    base = SiteConfig()
    write_config_atomic(args.work / "eval-site.toml", SiteConfig(
        streams=[], menu={**base.menu, **site2_entries()}))
    tag = f"{kind}-{seed_span(held)}-{args.eval_seconds:g}s-every{args.eval_every}"
    say("5. the shipped model on the evaluation set")
    shipped = scores(DEFAULT_MODEL, tag, evals, args, args.work / "shipped")
    rows: dict[str, dict[str, Any]] = {}
    for method in args.sampling:
        out = args.work / method
        say(f"2. frames: {method}, K = {k}")
        doc = pick(method, seqs, k, out, scan_root=args.work / "scans", every=args.every,
                   threads=args.threads)
        picks = [(recording / name, int(n)) for name, n in doc["picks"]]
        folders = selection_folders(doc, recording, out / "frames")
        site = Site(out)
        site.write_config(pl.free_port())
        site.import_frames(folders)
        say(f"3-4. labelling over HTTP and training ({method})")
        labelled, trained = await label_and_train(site, args, recording, replay)
        run_dir = out / "var" / "labels" / "jobs" / trained["job"]["id"] / "run"
        model = run_dir / "model.onnx"
        trained["exported_epoch"] = exported_epoch(run_dir / "history.jsonl")
        say(f"5. {method}: the new model on the evaluation set")
        rows[method] = {"frames": len(picks), "picks": doc, "coverage": ev.coverage(picks, LEVEL),
                        "labelled": labelled, "training": trained,
                        "eval": scores(model, tag, evals, args, out)}
    report = {"recording": {"seeds": seed_span(seeds), "sequences": count,
                            "seconds": args.seconds, "level": LEVEL, "menu": MENU},
              "k": k, "evaluation": {"set": kind, "seeds": seed_span(held),
                                     "seconds": args.eval_seconds, "every": args.eval_every},
              "replay_seeds": args.replay_seeds, "shipped": shipped, "rows": rows,
              "options": {key: str(v) for key, v in vars(args).items()},
              "machine": pl.machine(), "wall_s": round(time.monotonic() - t0, 1)}
    checks = judge(rows, shipped)
    report["checks"] = [{"check": text, "pass": ok} for text, ok in checks]
    say(f"\nOnboarding site2 ({report['machine']['cpu']}, {os.cpu_count()} cores): recording "
        f"seeds {seed_span(seeds)} ({count} x {args.seconds:g} s), K = {k}; evaluated on "
        f"{kind} seeds {seed_span(held)} ({len(held)} x {args.eval_seconds:g} s; mAP on every "
        f"{args.eval_every}th frame, {shipped['map_images']} frames; "
        f"{shipped['bills']['bills_expected']} bills); {report['wall_s'] / 60:.1f} min\n")
    for line in table(rows, shipped):
        say(line)
    say("")
    for text, ok in checks:
        say(f"{'PASS' if ok else 'FAIL'}  {text}")
    for method, r in rows.items():
        job, kept = r["training"]["job"], r["training"]["exported_epoch"]
        if kept != job["options"]["epochs"]:
            say(f"NOTE  {method}: the job exported epoch {kept} of {job['options']['epochs']}, "
                f"its best on {job['frames']['val']} held-back frame(s) (a tie keeps the "
                "later epoch); the figures above are that epoch's")
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The bench's options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("runs/onboard"),
                    help="everything the bench makes, reused when run again")
    ap.add_argument("--minutes", type=float, default=120.0, help="recorded service")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each recorded file")
    ap.add_argument("--frames-per-dish", type=int, default=5,
                    help="K = this x the new dishes (5)")
    ap.add_argument("--every", type=int, default=5,
                    help="calibrate select scans every N-th frame of the recording")
    ap.add_argument("--sampling", type=lambda s: [m for m in s.split(",") if m],
                    default=list(SAMPLINGS), help="select, uniform or both (comma-separated)")
    ap.add_argument("--box-iou", type=float, default=BOX_IOU,
                    help="the labeller accepts a proposed box this close to an object")
    ap.add_argument("--replay-seeds", default="1000-1019",
                    help="base-menu seeds of the replay split (calibrate dataset)")
    ap.add_argument("--replay-seconds", type=float, default=60.0)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--epoch-images", type=int, default=320)
    ap.add_argument("--time-budget-s", type=float, default=5400.0,
                    help="the training job's wall-clock budget")
    ap.add_argument("--val-every", type=int, default=100,
                    help="the job holds back every N-th complete frame (at least one)")
    ap.add_argument("--noisy-labels", choices=["drop", "trust"], default=None,
                    help="the job's noisy_labels (default: the job's own)")
    ap.add_argument("--unlabelled", choices=["proposals", "background"], default=None,
                    help="the job's unlabelled (default: the job's own)")
    ap.add_argument("--eval-sequences", type=int, default=20)
    ap.add_argument("--eval-seconds", type=float, default=60.0)
    ap.add_argument("--eval-every", type=int, default=20,
                    help="mAP on every N-th frame of the evaluation sequences")
    ap.add_argument("--held-out", action="store_true",
                    help="evaluate on the held-out seeds 90600+ (final figures, once per "
                         "decision) instead of the tuning seeds 19000+")
    ap.add_argument("--threads", type=int, default=2,
                    help="inference threads (scan, evaluation)")
    ap.add_argument("--train-threads", type=int, default=1,
                    help="the trainer's torch threads (the job's default, 1: more threads "
                         "spin and cost CPU time on a shared box)")
    ap.add_argument("--jobs", type=int, default=2, help="render processes")
    ap.add_argument("--start-timeout", type=float, default=180.0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    bad = [m for m in args.sampling if m not in SAMPLINGS]
    if bad or not args.sampling:
        ap.error(f"--sampling: {bad or 'none'}; choose from {', '.join(SAMPLINGS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench; 0 when it ran (the PASS/FAIL lines are its verdict)."""
    args = parse_args(argv)
    # `kill PID` stops the daemon and its trainer as Ctrl-C does (the job resumes next run)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report = asyncio.run(run(args))
    except (pl.BenchError, JobFailed) as err:
        print(f"bench/onboard: error: {err}", file=sys.stderr)
        return 1
    finally:
        for child in list(pl.Child.running):
            child.stop()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str) + "\n")
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
