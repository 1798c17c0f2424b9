"""``dishtracker eval learning``: learning on the job over a service of sequences.

Plays ``--data`` sequences in order as one service with a scripted cashier
(:mod:`edge.eval.learning`) and reports, as a table and ``--json``:

* ``exact_match``: trays billed exactly, among those whose new dishes (menu
  entries the model has no class for) had each been corrected at least
  ``--after`` times (5) before their bill, trays of known dishes included;
  ``exact_match_after_1`` the same after one correction;
* ``exact_match_known_only``: trays of known dishes only (compare with
  ``--no-learning``: learning must not cost them);
* ``unknown_flag_rate``: of the new dishes on closed bills before their first
  correction, the share whose line was flagged (unknown, or needs review);
  ``unknown_false_accept`` the share billed as another dish without a flag
  (a new dish on no line at all counts in neither: ``unknown_missed_entirely``);
* ``corrections_per_new_dish``, ``cashier_actions``, ``wrong_by_dish`` (dishes of the
  trays still wrong after ``--after`` corrections), ``windows`` (exact match
  per 5 minutes of service).

The detector runs once per sequence and model; its detections and embeddings
are cached beside the sequence (``DIR/learn-cache/``) for the next run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.config import DEFAULT_MODEL, MenuEntry, load_config
from edge.detect.contract import read_model_info
from edge.errors import InputFormatError, ModelError
from edge.eval.learning import Service, decoded, learner_for, open_journal, play, summary
from edge.eval.sequences import SequenceData, file_sha256, open_sequence, video_frames
from edge.frames import Detections
from edge.learn.bank import KnownBank, find_bank

CACHE_DIR = "learn-cache"
CACHE_FORMAT = "dishtracker-learn-cache/1"


def add_eval_learning_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dishtracker eval learning`` to ``parser``."""
    parser.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR",
                        help="simulator sequence dirs, played in this order as one service")
    parser.add_argument("--model", type=Path, default=None,
                        help=f"detector model with embeddings (default {DEFAULT_MODEL.name})")
    parser.add_argument("--config", type=Path, default=None,
                        help="site config (TOML): menu, billing, tracker, [learning]")
    parser.add_argument("--menu", choices=["config", "site2"], default="site2",
                        help="site2 (default): the config's menu plus the simulator's site2 "
                             "dishes at their prices; config: the config's menu alone")
    parser.add_argument("--no-learning", action="store_true",
                        help="the detector names every line, corrections teach nothing "
                             "(the baseline)")
    parser.add_argument("--no-bank", action="store_true",
                        help="ignore the model's known-class bank: nothing is flagged unknown")
    parser.add_argument("--after", type=int, default=5,
                        help="exact_match counts trays whose new dishes had this many "
                             "corrections (default 5)")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--threads", type=int, default=2, help="inference threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run_eval_learning(args: argparse.Namespace) -> int:
    """See the module docstring; 0 on success."""
    site = load_config(args.config)
    if args.menu == "site2":
        site = site.model_copy(update={"menu": {**site.menu, **site2_entries()}})
    seqs = [open_sequence(p) for p in args.data]
    for seq in seqs:
        if seq.trays is None or seq.video is None:
            raise InputFormatError(f"{seq.path}: needs gt/trays.json and video.mp4")
    model = args.model if args.model is not None else DEFAULT_MODEL
    if not model.is_file():
        raise InputFormatError(f"{model}: no such model file")
    info = read_model_info(model)
    if info.embedding_dim is None and not args.no_learning:
        raise InputFormatError(f"{model}: the model has no 'embeddings' output: nothing to "
                               "learn with (docs/FORMATS.md); use --no-learning")
    names = tuple(info.class_names)
    sha = file_sha256(model)
    bank = None if args.no_bank or args.no_learning else _bank(model, sha)
    new_keys = frozenset(k for k, e in site.menu.items() if k not in names and e.billable)
    with tempfile.TemporaryDirectory(prefix="eval-learning-") as tmp:
        journal = open_journal(Path(tmp) / "journal.sqlite3")
        try:
            service = Service(site, names, journal, new_keys,
                              None if args.no_learning else learner_for(site, bank, names))
            detector = _Detector(model, sha, site.detector.score_threshold, args.threads)
            try:
                for seq in seqs:
                    play(service, seq, decoded(seq, detector.frames(seq)),
                         progress=False if args.quiet else None)
            finally:
                detector.close()
        finally:
            journal.close()
    rep = summary(service, after=args.after)
    rep.update(learning=not args.no_learning, bank=bank is not None, model=str(model),
               model_sha256=sha, new_dishes=sorted(new_keys),
               data=[str(p) for p in args.data],
               service_s=round(service.clock_s, 1))
    print(format_report(rep))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rep, indent=1))
    return 0


def site2_entries() -> dict[str, MenuEntry]:
    """The simulator's ``site2`` dishes as menu entries (the model has no class for them)."""
    from edge.sim.menu import NEW_DISHES  # noqa: PLC0415  # the simulator only for evaluation

    return {d.key: MenuEntry(name=d.name, price=d.price) for d in NEW_DISHES}


def _bank(model: Path, sha: str) -> KnownBank | None:
    path = find_bank(model)
    if not path.is_file():
        return None
    try:
        return KnownBank.load(path, sha)
    except (ModelError, InputFormatError):
        return None


def format_report(rep: dict[str, Any]) -> str:
    """The report as a short table."""

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.1f} %"

    rows = [
        ("learning", "on" if rep["learning"] else "off"),
        ("bank", "yes" if rep["bank"] else "no"),
        ("service", f"{rep['service_s'] / 60:.1f} min, {rep['trays']} trays, "
                    f"{rep['bills']} bills"),
        (f"exact_match (after {rep['after_corrections']})",
         f"{pct(rep['exact_match'])} of {rep['exact_match_trays']}"),
        ("exact_match_after_1", f"{pct(rep['exact_match_after_1'])} of "
                                f"{rep['exact_match_after_1_trays']}"),
        ("exact_match_known_only", f"{pct(rep['exact_match_known_only'])} of "
                                   f"{rep['known_only_trays']}"),
        ("exact_match_all", pct(rep["exact_match_all"])),
        ("unknown_flag_rate", f"{pct(rep['unknown_flag_rate'])} of "
                              f"{rep['unknown_sightings']} sightings"),
        ("unknown_false_accept", pct(rep["unknown_false_accept"])),
        ("unknown_missed_entirely", str(rep["unknown_missed_entirely"])),
        ("corrections_per_new_dish", json.dumps(rep["corrections_per_new_dish"])),
        ("cashier_actions", str(rep["cashier_actions"])),
        ("wrong trays by dish", json.dumps(dict(list(rep["wrong_by_dish"].items())[:8]))),
        ("windows (5 min)", " ".join(pct(w["exact_match"]) for w in rep["windows"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


class _Detector:
    """Detections with embeddings per frame, cached per sequence and model."""

    def __init__(self, model: Path, sha: str, threshold: float, threads: int) -> None:
        self.model, self.sha, self.threshold, self.threads = model, sha, threshold, threads
        self._detector: Any = None

    def frames(self, seq: SequenceData) -> Iterator[Detections | None]:
        cache = seq.path / CACHE_DIR / f"{self.sha[:16]}-{self.threshold:g}.npz"
        cached = _load(cache, seq.n_frames)
        if cached is not None:
            yield from cached
            return
        if self._detector is None:
            from edge.detect import load_detector  # noqa: PLC0415  # onnxruntime when needed

            self._detector = load_detector(self.model, "onnxruntime", threads=self.threads,
                                           score_threshold=self.threshold)
        made: list[Detections] = []
        for image in video_frames(seq):
            det: Detections = self._detector.detect([image])[0]
            made.append(det)
            if len(made) == seq.n_frames:  # before the last yield: the caller stops there
                _save(cache, made)
            yield det
            if len(made) >= seq.n_frames:
                break

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()


def _save(path: Path, dets: list[Detections]) -> None:
    counts = np.array([len(d.scores) for d in dets], np.int64)
    dim = next((d.embeddings.shape[1] for d in dets if d.embeddings is not None), 0)
    def cat(parts: list[Any], shape: tuple[int, ...], dtype: Any) -> Any:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp, format=np.array(CACHE_FORMAT), counts=counts,
        boxes=cat([d.boxes for d in dets], (0, 4), np.float32),
        scores=cat([d.scores for d in dets], (0,), np.float32),
        classes=cat([d.classes for d in dets], (0,), np.int32),
        embeddings=cat([d.embeddings for d in dets if d.embeddings is not None], (0, dim),
                       np.float16))
    tmp.replace(path)


def _load(path: Path, n_frames: int) -> list[Detections | None] | None:
    try:
        with np.load(path) as z:
            if str(z["format"]) != CACHE_FORMAT or len(z["counts"]) < n_frames:
                return None
            counts, boxes, scores, classes = z["counts"], z["boxes"], z["scores"], z["classes"]
            emb: npt.NDArray[np.float32] = z["embeddings"].astype(np.float32)
    except (OSError, KeyError, ValueError):
        return None
    out: list[Detections | None] = []
    start = 0
    has_emb = len(emb) == len(scores)
    for n in counts[:n_frames]:
        end = start + int(n)
        out.append(Detections(boxes[start:end], scores[start:end], classes[start:end],
                              _unit(emb[start:end]) if has_emb else None))
        start = end
    return out


def _unit(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    out: npt.NDArray[np.float32] = (x / np.maximum(norm, 1e-6)).astype(np.float32)
    return out
