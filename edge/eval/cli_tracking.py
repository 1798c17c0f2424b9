"""``dishtracker eval tracking``: the full system and the baselines on simulator sequences,
or the project's generic tracker and baselines on plain MOTChallenge sequences.

Glue between :mod:`edge.eval.sequences` (sequences, detections and their
cache), :mod:`edge.detect` (the model, only when no cached or given
detections exist) and :mod:`edge.eval.tracking` (running and scoring). Prints
a table (full system first, then each baseline) with a legend of its columns
and writes the JSON report; ``--tracks-out`` writes the first system's tracks.

Detections given without a class column (``det.txt`` class -1, or 7 columns)
make a *generic* run (:mod:`edge.eval.generic`): one object class, no trays,
no bills; the systems are the project's generic tracker and the generic
counterparts of the tracking baselines.

Without ``--detections`` the detector runs once per sequence and its output is
cached in ``DIR/det/det.txt`` (``--det-cache`` puts it elsewhere), keyed by
the model's SHA-256, so evaluating the trackers again costs only tracking.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config import DEFAULT_MODEL, SiteConfig, load_config
from edge.errors import InputFormatError
from edge.eval.baselines import BASELINES, baseline_names
from edge.eval.generic import BASELINE_OF, TRACKERS, biller_factory, format_mot_table
from edge.eval.generic import CLASS_NAMES as GENERIC_NAMES
from edge.eval.sequences import (
    CACHE_SCORE_THRESHOLD,
    DetectionCache,
    SequenceData,
    class_names_beside,
    file_sha256,
    has_classes,
    open_sequence,
    read_detections,
)
from edge.eval.tracking import (
    SystemResult,
    SystemSpec,
    evaluate_sequence,
    format_table,
    format_wrong,
    report,
    system_specs,
)
from edge.frames import Detections
from edge.groundtruth import write_mot
from edge.sim.menu import CLASS_NAMES


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _baselines(text: str) -> list[str]:
    try:
        return baseline_names(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def add_eval_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``dishtracker eval tracking`` to ``parser``."""
    parser.add_argument("--data", type=Path, nargs="+", required=True, metavar="DIR",
                        help="sequence dir(s): a simulator sequence (gt/gt.txt, "
                             "gt/trays.json, seqinfo.ini, video.mp4) or a plain MOTChallenge "
                             "one (seqinfo.ini, gt/gt.txt)")
    parser.add_argument("--detections", type=Path, nargs="+", default=None, metavar="DET_TXT",
                        help="MOTChallenge det.txt, one per --data dir (no detector run); "
                             "without a class column (-1 or 7 columns): one generic object "
                             "class, trackers only, no bills")
    parser.add_argument("--tracks-out", type=Path, nargs="+", default=None, metavar="FILE",
                        help="write the tracks of the first system (the full system, or the "
                             "generic tracker) in MOTChallenge format, one file per --data dir")
    parser.add_argument("--model", type=Path, default=None,
                        help=f"detector model (ONNX; default {DEFAULT_MODEL.name})")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--baselines", type=_baselines, default=list(BASELINES),
                        help=f"comma-separated subset of {','.join(BASELINES)}, or none")
    parser.add_argument("--config", type=Path, default=None,
                        help="site config (TOML): menu, billing, tracker and score threshold")
    parser.add_argument("--det-cache", type=Path, default=None, metavar="DIR",
                        help="cache detector output under DIR/<sequence name>/ "
                             "(default: each sequence's det/ folder)")
    parser.add_argument("--no-cache", action="store_true",
                        help="run the detector even if cached detections exist")
    parser.add_argument("--threads", type=_positive_int, default=1, help="inference threads")
    parser.add_argument("--backend", default="onnxruntime", help="detector backend")
    parser.add_argument("--blank-frames", action="store_true",
                        help="give the trackers black frames instead of decoding the video "
                             "(when detections come from a file)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars (otherwise on stderr, on a terminal)")


def _cache_for(args: argparse.Namespace, seq: SequenceData) -> DetectionCache:
    return DetectionCache(args.det_cache / seq.path.name if args.det_cache is not None
                          else seq.path / "det")


class _LazyDetector:
    """Loads the model on first use (a fully cached run never imports ONNX Runtime)."""

    def __init__(self, model: Path, backend: str, threads: int) -> None:
        self.model, self.backend, self.threads = model, backend, threads
        self._detector: Any = None

    def __call__(self, image: Any) -> Detections:
        if self._detector is None:
            from edge.detect import load_detector  # noqa: PLC0415  # onnxruntime only if needed

            self._detector = load_detector(self.model, self.backend, threads=self.threads,
                                           score_threshold=CACHE_SCORE_THRESHOLD)
        result: Detections = self._detector.detect([image])[0]
        return result

    def close(self) -> None:
        if self._detector is not None:
            self._detector.close()


def _model_class_names(model: Path) -> tuple[str, ...]:
    from edge.detect.contract import read_model_info  # noqa: PLC0415  # onnx loads only if needed

    return tuple(read_model_info(model).class_names)


@dataclass(frozen=True, slots=True)
class _Run:
    """What every sequence of one invocation shares."""

    specs: list[SystemSpec]
    site: SiteConfig
    names: tuple[str, ...]
    model: Path
    sha: str
    detector: _LazyDetector


def _class_names(args: argparse.Namespace, model: Path) -> tuple[str, ...]:
    """Class names of the detections: their det.json, else the model's, else the menu's."""
    if args.detections is not None:
        names = (class_names_beside(args.detections[0])
                 or (_model_class_names(model) if args.model is not None else CLASS_NAMES))
    else:
        names = _model_class_names(model)
    if "tray" not in names:
        raise InputFormatError(f"class names have no 'tray' class: {list(names)}")
    return names


GENERIC_SYSTEM = "edge.track.norfair_tracker.NorfairTracker"


def run_eval_tracking(args: argparse.Namespace) -> int:
    """Evaluate the full system and the baselines on ``args.data``.

    Returns
    -------
    int
        0 on success.

    Raises
    ------
    DishTrackerError
        A sequence, a detections file, the model or the config cannot be read
        (``dishtracker`` exits with 2 and the reason).
    """
    site: SiteConfig = load_config(args.config)
    seqs = [open_sequence(p) for p in args.data]
    for option in ("detections", "tracks_out"):
        given = getattr(args, option)
        if given is not None and len(given) != len(seqs):
            raise InputFormatError(f"--{option.replace('_', '-')} names {len(given)} file(s) "
                                   f"for {len(seqs)} --data dir(s); give one per dir")
    if _generic(args.detections):
        return _run_generic(args, site, seqs)
    model = args.model if args.model is not None else DEFAULT_MODEL
    if (args.detections is None or args.model is not None) and not model.is_file():
        raise InputFormatError(f"{model}: no such model file")
    names = _class_names(args, model)
    specs, note = system_specs(site, args.baselines)
    if not specs:
        raise InputFormatError("nothing to evaluate: edge.billing.biller is missing and "
                               "--baselines is none")

    per_seq: list[tuple[SequenceData, dict[str, SystemResult]]] = []
    source: dict[str, Any] = {"score_threshold": site.detector.score_threshold}
    if args.detections is not None:
        source["detections"] = [str(p) for p in args.detections]
        dets = [read_detections(d, seq, len(names))
                for seq, d in zip(seqs, args.detections, strict=True)]
        for seq, det in zip(seqs, dets, strict=True):
            results, _ = evaluate_sequence(seq, specs, site, names, detections=det,
                                           decode=not args.blank_frames,
                                           progress=False if args.quiet else None,
                                           keep_tracks=args.tracks_out is not None)
            per_seq.append((seq, results))
    else:
        sha = file_sha256(model)
        source.update(model=str(model), model_sha256=sha)
        for seq in seqs:
            if seq.video is None and (args.no_cache or _cache_for(args, seq).load(
                    seq, sha, CACHE_SCORE_THRESHOLD) is None):
                raise InputFormatError(f"{seq.path}: no video.mp4 to run the detector on and "
                                       f"no cached detections; give --detections")
        run = _Run(specs, site, names, model, sha,
                   _LazyDetector(model, args.backend, args.threads))
        try:
            per_seq += [(seq, _evaluate_with_model(args, seq, run)) for seq in seqs]
        finally:
            run.detector.close()

    rep = report(per_seq, specs, note)
    rep["data"] = [str(p) for p in args.data]
    rep["source"] = source
    print(format_table(rep))
    if rep["system"] is not None and (wrong := format_wrong(rep)):
        print(wrong)
    _write_outputs(args, rep, per_seq, specs[0].name)
    return 0


def _generic(detections: list[Path] | None) -> bool:
    """True when every detections file lacks a class column (none: False; mixed: an error)."""
    if detections is None:
        return False
    with_classes = [has_classes(d) for d in detections]
    if any(with_classes) and not all(with_classes):
        raise InputFormatError("--detections mixes files with and without a class column; "
                               "give all of one kind")
    return not any(with_classes)


def generic_specs(site: SiteConfig, baselines: list[str]) -> list[SystemSpec]:
    """The generic run's systems: the project's generic tracker as ``system``, then the
    generic counterpart of each named baseline that tracks (``per_frame`` has none)."""
    names = [("system", "tracker")] + [(BASELINE_OF[b], BASELINE_OF[b]) for b in baselines
                                       if b in BASELINE_OF]
    specs = []
    for name, key in names:
        make = TRACKERS[key]
        low = getattr(make(site), "min_score", None)
        specs.append(SystemSpec(name, biller_factory(make),
                                low if low is not None else site.detector.score_threshold))
    return specs


def _run_generic(args: argparse.Namespace, site: SiteConfig,
                 seqs: list[SequenceData]) -> int:
    """Plain MOTChallenge sequences: trackers scored on one object class, no bills."""
    specs = generic_specs(site, args.baselines)
    per_seq: list[tuple[SequenceData, dict[str, SystemResult]]] = []
    for seq, det_txt in zip(seqs, args.detections, strict=True):
        det = read_detections(det_txt, seq, len(GENERIC_NAMES), generic=True)
        results, _ = evaluate_sequence(seq, specs, site, GENERIC_NAMES, detections=det,
                                       decode=False, progress=False if args.quiet else None,
                                       generic=True, keep_tracks=args.tracks_out is not None)
        per_seq.append((seq, results))
    rep = report(per_seq, specs)
    rep.update(mode="generic", system=GENERIC_SYSTEM, data=[str(p) for p in args.data],
               source={"score_threshold": site.detector.score_threshold,
                       "detections": [str(p) for p in args.detections]})
    print(format_mot_table({"system": rep, **rep["baselines"]}))
    _write_outputs(args, rep, per_seq, "system")
    return 0


def _write_outputs(args: argparse.Namespace, rep: dict[str, Any],
                   per_seq: list[tuple[SequenceData, dict[str, SystemResult]]],
                   first: str) -> None:
    """The JSON report and the ``--tracks-out`` files (the tracks of system ``first``)."""
    if args.tracks_out is not None:
        for (_, results), path in zip(per_seq, args.tracks_out, strict=True):
            write_mot(path, results[first].tracks)
            print(f"tracks of {first} written to {path}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(rep, indent=1))
        tmp.replace(args.json)
        print(f"report written to {args.json}")


def _evaluate_with_model(args: argparse.Namespace, seq: SequenceData,
                         run: _Run) -> dict[str, SystemResult]:
    """One sequence with cached detections, or with the detector (then cached)."""
    cache = _cache_for(args, seq)
    cached = None if args.no_cache else cache.load(seq, run.sha, CACHE_SCORE_THRESHOLD)
    progress = False if args.quiet else None
    keep = args.tracks_out is not None
    if cached is not None:
        results, _ = evaluate_sequence(seq, run.specs, run.site, cached[1],
                                       detections=cached[0], decode=not args.blank_frames,
                                       progress=progress, keep_tracks=keep)
        return results
    results, used = evaluate_sequence(seq, run.specs, run.site, run.names, detect=run.detector,
                                      progress=progress, keep_tracks=keep)
    cache.directory.mkdir(parents=True, exist_ok=True)
    cache.save(used, model=run.model, model_sha256=run.sha,
               score_threshold=CACHE_SCORE_THRESHOLD, class_names=run.names,
               frames=seq.n_frames)
    return results
