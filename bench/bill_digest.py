"""Every bill and track of the full system on cached detections, for diffing two versions.

    python bench/bill_digest.py --cache var/bench-billing [--stride 1] [--biller MODULE:FUNC]
                                --out digest.jsonl

A refactor of tracking or billing must not change a single bill. This runs
the full system (default: :func:`edge.billing.biller.make_biller`) over every
sequence of a billing-bench cache (``bench/billing.py --cache DIR``: rendered
sequences with their cached detections, ``det/det.txt``) on the decoded
frames, and writes one JSON line per closed bill (every field but the
snapshot) and one per frame with every track (sorted) and open tray state, rounded to
1e-6 px. ``--stride N`` withholds detections from all but every N-th frame,
as the scheduler does under load (the tracker then predicts and uses optical
flow). Two digests of the same cache are equal exactly when the two versions
behaved the same::

    cmp before.jsonl after.jsonl

Prints a table: sequences, frames, bills and dish lines per sequence, and
the SHA-256 of the digest.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from edge.config import SiteConfig
from edge.eval.sequences import CACHE_SCORE_THRESHOLD, DetectionCache, open_sequence, video_frames
from edge.eval.tracking import above_score, frame_time_base, stream_for
from edge.frames import Frame

DEFAULT_BILLER = "edge.billing.biller:make_biller"


def _r(v: float) -> float:
    return round(float(v), 6)


def digest_sequence(path: Path, factory: Any, stride: int) -> Iterator[dict[str, Any]]:
    """JSON-ready records of one cached sequence: a ``frame`` record per frame, a
    ``bill`` record per closed bill."""
    seq = open_sequence(path)
    cache = DetectionCache(path / "det")
    meta = json.loads(cache.meta_json.read_text())
    loaded = cache.load(seq, meta["model_sha256"], CACHE_SCORE_THRESHOLD)
    if loaded is None:
        raise SystemExit(f"{path}: no usable cached detections (run bench/billing.py first)")
    detections, names = loaded
    site = SiteConfig()
    stream = stream_for(seq)
    biller = factory(stream, site, names, seq.width, seq.height, run_id="eval",
                     clock_offset=0.0, snapshots=False)
    time_base = frame_time_base(seq.fps)
    for k, image in enumerate(video_frames(seq), 1):
        frame = Frame(stream.id, k - 1, image, (k - 1) / seq.fps, k - 1, time_base)
        det = (above_score(detections.get(k), site.detector.score_threshold)
               if (k - 1) % stride == 0 else None)
        step = biller.update(frame, det)
        yield {"seq": seq.name, "frame": k,
               # in a stable order: which tray's tracks come first is not behaviour
               "tracks": sorted([t.track_id, [_r(v) for v in t.box], t.class_id, t.class_name,
                                 _r(t.confidence), t.hits, t.detected,
                                 -1 if t.tray_id is None else t.tray_id]
                                for t in step.tracks),
               "trays": [[s.tray_id, [_r(v) for v in s.box],
                          [i.to_json() for i in s.items], s.total] for s in step.trays]}
        for bill in step.closed:
            yield {"seq": seq.name, "bill": bill.to_json()}


def main(argv: Sequence[str] | None = None) -> int:
    """Write the digest; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=Path("var/bench-billing"))
    ap.add_argument("--stride", type=int, default=1, help="detect every N-th frame only")
    ap.add_argument("--biller", default=DEFAULT_BILLER, help="MODULE:FUNCTION of the system")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.stride < 1:
        ap.error("--stride must be >= 1")
    module, _, func = args.biller.partition(":")
    factory = getattr(importlib.import_module(module), func)
    paths = sorted(p for p in args.cache.iterdir() if (p / "det" / "det.txt").is_file())
    if not paths:
        ap.error(f"{args.cache}: no cached sequences (run bench/billing.py --cache first)")
    sha = hashlib.sha256()
    rows = []
    with args.out.open("w") as out:
        for path in tqdm(paths, desc="digest", unit="seq"):
            frames = bills = lines = 0
            for rec in digest_sequence(path, factory, args.stride):
                line = json.dumps(rec, sort_keys=True) + "\n"
                out.write(line)
                sha.update(line.encode())
                if "bill" in rec:
                    bills += 1
                    lines += len(rec["bill"]["items"])
                else:
                    frames += 1
            rows.append((path.name, frames, bills, lines))
    print("| sequence | frames | bills | dish lines |", "|---|---:|---:|---:|", sep="\n")
    for name, frames, bills, lines in rows:
        print(f"| {name} | {frames} | {bills} | {lines} |")
    print(f"\nstride {args.stride}, biller {args.biller}; sha256 {sha.hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
