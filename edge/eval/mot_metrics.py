"""Multi-object tracking metrics: CLEAR MOT, identity (IDF1) and HOTA, on numpy 1 or 2.

Sits in the evaluation, after ``track``: :mod:`edge.eval.tracking` feeds one
:class:`MotAccumulator` per category (dishes, trays, or the one generic class
of a MOTChallenge sequence) with each frame's ground-truth ids, track ids and
their IoU matrix, and reads back :class:`MotCounts`.

The project computes these itself because neither reference runs on the
stack it ships: motmetrics 1.4 fails on numpy 2 (``np.asfarray``), and
PyPI's ``trackeval`` needs numpy >= 2.3.2 while JetPack 6 carries 1.26.
``tests/test_mot_metrics.py`` holds the three to the same numbers on the
MOTChallenge TUD-Campus and TUD-Stadtmitte sequences (``tests/data/mot``).

* **CLEAR MOT** (Bernardin & Stiefelhagen 2008), as motmetrics counts it: a
  ground-truth object keeps last frame's track if their IoU still reaches
  the threshold; the rest are paired by Hungarian assignment on ``1 - IoU``
  among pairs at IoU >= threshold. A pairing that differs from the object's
  previous track is an ID switch. ``MOTA = 1 - (misses + FP + switches) /
  objects``.
* **Identity** (Ristani et al. 2016): one global one-to-one assignment of
  ground-truth ids to track ids maximising the frames in which the pair
  overlaps at IoU >= threshold (IDTP); ``IDF1 = 2 IDTP / (2 IDTP + IDFP +
  IDFN)``.
* **HOTA** (Luiten et al. 2021), as TrackEval computes it: for each
  localisation threshold alpha in 0.05, 0.10 .. 0.95, per frame a Hungarian
  assignment maximising IoU times the pair's global alignment score, pairs
  at IoU >= alpha count; ``DetA = TP / (TP + FN + FP)``, ``AssA`` the mean
  over true positives of their pair's association IoU, ``LocA`` their mean
  IoU, ``HOTA = sqrt(DetA AssA)``; each reported as the mean over alpha.

Counts pool over sequences by addition (:meth:`MotCounts.__add__`): HOTA
keeps, per alpha, TP/FN/FP and the TP-weighted sums of AssA and LocA, which
is how TrackEval combines sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

MATCH_IOU = 0.5
"""IoU at which a track may pair with ground truth (CLEAR MOT, identity, ignore regions)."""

ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.arange(0.05, 0.99, 0.05))
"""HOTA's localisation thresholds (TrackEval's: 19 values, 0.05 to 0.95)."""

_EPS = float(np.finfo(float).eps)
_NO_MATCH = 1e6  # Hungarian cost of a forbidden pair: above any sum of allowed costs

FloatArray = npt.NDArray[np.float64]


def _zeros() -> tuple[float, ...]:
    return (0.0,) * len(ALPHAS)


@dataclass(frozen=True, slots=True)
class MotCounts:
    """Counts of one tracker on one category, pooled over frames and sequences with ``+``.

    Attributes
    ----------
    objects : int
        Ground-truth boxes scored (ignored ones excluded).
    misses, false_positives, switches : int
        CLEAR MOT counts.
    idtp, idfp, idfn : int
        Identity counts of the global id assignment.
    ignored_tracks : int
        Track boxes dropped because they lay on ignored ground truth.
    hota_tp, hota_fn, hota_fp : tuple of float
        HOTA detection counts, one per alpha of :data:`ALPHAS`.
    hota_ass, hota_loc : tuple of float
        Per alpha, AssA and LocA times TP (their TP-weighted sums).
    """

    objects: int = 0
    misses: int = 0
    false_positives: int = 0
    switches: int = 0
    idtp: int = 0
    idfp: int = 0
    idfn: int = 0
    ignored_tracks: int = 0
    hota_tp: tuple[float, ...] = _zeros()
    hota_fn: tuple[float, ...] = _zeros()
    hota_fp: tuple[float, ...] = _zeros()
    hota_ass: tuple[float, ...] = _zeros()
    hota_loc: tuple[float, ...] = _zeros()

    def __add__(self, other: MotCounts) -> MotCounts:
        """Pool two counts (frames or sequences)."""
        values: dict[str, Any] = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            values[f.name] = (tuple(x + y for x, y in zip(a, b, strict=True))
                              if isinstance(a, tuple) else a + b)
        return MotCounts(**values)

    def hota(self) -> dict[str, float | None]:
        """``hota``, ``deta``, ``assa``, ``loca`` (means over alpha), None without data."""
        tp, fn, fp = (np.asarray(v) for v in (self.hota_tp, self.hota_fn, self.hota_fp))
        if not (tp + fn + fp).any():
            return dict.fromkeys(("hota", "deta", "assa", "loca"))
        det_a = tp / np.maximum(1.0, tp + fn + fp)
        ass_a = np.asarray(self.hota_ass) / np.maximum(1.0, tp)
        loc_a = np.where(tp > 0, np.asarray(self.hota_loc) / np.maximum(1.0, tp), 1.0)
        return {"hota": float(np.sqrt(det_a * ass_a).mean()), "deta": float(det_a.mean()),
                "assa": float(ass_a.mean()), "loca": float(loc_a.mean())}

    def summary(self) -> dict[str, Any]:
        """``mota``, ``idf1``, ``hota`` (and DetA, AssA, LocA), ``id_switches``, counts."""
        errors = self.misses + self.false_positives + self.switches
        id_den = 2 * self.idtp + self.idfp + self.idfn
        return {
            "mota": 1.0 - errors / self.objects if self.objects else None,
            "idf1": 2 * self.idtp / id_den if id_den else None,
            **self.hota(),
            "id_switches": self.switches,
            "counts": {f.name: getattr(self, f.name) for f in fields(self)
                       if not f.name.startswith("hota_")},
        }


def ignored_tracks_mask(iou: FloatArray, ignored: npt.NDArray[np.bool_],
                        threshold: float = MATCH_IOU) -> npt.NDArray[np.bool_]:
    """Which tracks lie on ignored ground truth (MOTChallenge's distractor preprocessing).

    Parameters
    ----------
    iou : ndarray, shape (n_gt, n_tracks)
        IoU of every ground-truth box with every track box.
    ignored : ndarray of bool, shape (n_gt,)
        Ground truth that is neither a hit nor a miss.
    threshold : float
        IoU a pair needs.

    Returns
    -------
    ndarray of bool, shape (n_tracks,)
        True for a track that the Hungarian assignment over *all* ground truth
        (IoU >= threshold, maximising IoU) pairs with an ignored box.
    """
    drop = np.zeros(iou.shape[1], bool)
    if not ignored.any() or not iou.size:
        return drop
    rows, cols = linear_sum_assignment(np.where(iou >= threshold, -iou, 1.0))
    for r, c in zip(rows, cols, strict=True):
        if iou[r, c] >= threshold and ignored[r]:
            drop[c] = True
    return drop


def _assign(cost: FloatArray, allowed: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Most pairs among ``allowed``, of least total ``cost`` among those."""
    if not allowed.any():
        return []
    rows, cols = linear_sum_assignment(np.where(allowed, cost, _NO_MATCH))
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if allowed[r, c]]


@dataclass(frozen=True, slots=True)
class _Frame:
    gt: npt.NDArray[np.intp]  # dense ground-truth indices
    tracks: npt.NDArray[np.intp]  # dense track indices
    iou: FloatArray  # (n_gt, n_tracks)


class MotAccumulator:
    """Collects one tracker's frames on one category, then computes :class:`MotCounts`.

    Parameters
    ----------
    threshold : float
        IoU a track needs to pair with ground truth (CLEAR MOT, identity and
        the ignore regions; HOTA sweeps its own thresholds).
    """

    def __init__(self, threshold: float = MATCH_IOU) -> None:
        self.threshold = threshold
        self._frames: list[_Frame] = []
        self._gt_index: dict[int, int] = {}
        self._track_index: dict[int, int] = {}
        self._last_match: dict[int, int] = {}  # ground-truth id -> track id (CLEAR MOT)
        self._clear = [0, 0, 0, 0]  # objects, misses, false positives, switches
        self._ignored_tracks = 0

    def update(self, gt_ids: Sequence[int], track_ids: Sequence[int], iou: FloatArray,
               ignored: npt.NDArray[np.bool_] | None = None) -> None:
        """Add one frame.

        Parameters
        ----------
        gt_ids, track_ids : sequence of int
            Ids of the frame's ground-truth objects and tracks (unique per frame).
        iou : ndarray, shape (len(gt_ids), len(track_ids))
            Their IoU.
        ignored : ndarray of bool, shape (len(gt_ids),), optional
            Ground truth to ignore: it is removed, and so is every track that
            :func:`ignored_tracks_mask` pairs with it, before scoring.
        """
        iou = np.asarray(iou, np.float64).reshape(len(gt_ids), len(track_ids))
        g = np.asarray(gt_ids, np.int64)
        t = np.asarray(track_ids, np.int64)
        if ignored is not None and ignored.any():
            keep_t = ~ignored_tracks_mask(iou, ignored, self.threshold)
            self._ignored_tracks += int((~keep_t).sum())
            iou, g, t = iou[~ignored][:, keep_t], g[~ignored], t[keep_t]
        self._clear_mot(g, t, iou)
        self._frames.append(_Frame(
            np.array([self._gt_index.setdefault(int(i), len(self._gt_index)) for i in g],
                     np.intp),
            np.array([self._track_index.setdefault(int(i), len(self._track_index)) for i in t],
                     np.intp),
            iou))

    def _clear_mot(self, g: npt.NDArray[np.int64], t: npt.NDArray[np.int64],
                   iou: FloatArray) -> None:
        allowed = iou >= self.threshold
        free_g = np.ones(len(g), bool)
        free_t = np.ones(len(t), bool)
        column = {int(k): j for j, k in enumerate(t)}
        for i, gid in enumerate(g):
            j = column.get(self._last_match.get(int(gid), -1), -1)
            if j >= 0 and free_t[j] and allowed[i, j]:
                free_g[i] = free_t[j] = False
        rows, cols = np.flatnonzero(free_g), np.flatnonzero(free_t)
        for r, c in _assign(1.0 - iou[np.ix_(rows, cols)], allowed[np.ix_(rows, cols)]):
            i, j = rows[r], cols[c]
            free_g[i] = free_t[j] = False
            gid, tid = int(g[i]), int(t[j])
            if self._last_match.get(gid, tid) != tid:
                self._clear[3] += 1
            self._last_match[gid] = tid
        self._clear[0] += len(g)
        self._clear[1] += int(free_g.sum())
        self._clear[2] += int(free_t.sum())

    def counts(self) -> MotCounts:
        """Every metric's counts over the frames added so far."""
        n_g, n_t = len(self._gt_index), len(self._track_index)
        gt_count = np.zeros(n_g)
        tr_count = np.zeros(n_t)
        overlap = np.zeros((n_g, n_t))  # frames a pair is at IoU >= threshold (identity)
        potential = np.zeros((n_g, n_t))  # HOTA's soft co-occurrence
        for f in self._frames:
            np.add.at(gt_count, f.gt, 1)
            np.add.at(tr_count, f.tracks, 1)
            if f.iou.size:
                overlap[np.ix_(f.gt, f.tracks)] += f.iou >= self.threshold
                potential[np.ix_(f.gt, f.tracks)] += _soft_iou(f.iou)
        idtp = 0
        if overlap.any():
            rows, cols = linear_sum_assignment(-overlap)
            idtp = int(overlap[rows, cols].sum())
        objects, misses, fps, switches = self._clear
        hota = _hota(self._frames, potential, gt_count, tr_count)
        return MotCounts(objects, misses, fps, switches, idtp, int(tr_count.sum()) - idtp,
                         int(gt_count.sum()) - idtp, self._ignored_tracks, *hota)


def _soft_iou(sim: FloatArray) -> FloatArray:
    """TrackEval's per-frame "similarity IoU": a pair's share of both rows' and columns' sums."""
    denom = sim.sum(0)[np.newaxis, :] + sim.sum(1)[:, np.newaxis] - sim
    out = np.zeros_like(sim)
    mask = denom > _EPS
    out[mask] = sim[mask] / denom[mask]
    return out


def _hota(frames: Sequence[_Frame], potential: FloatArray, gt_count: FloatArray,
          tr_count: FloatArray) -> tuple[tuple[float, ...], ...]:
    """Per alpha: TP, FN, FP, AssA x TP, LocA x TP (TrackEval's ``HOTA.eval_sequence``)."""
    n = len(ALPHAS)
    tp, fn, fp, loc = (np.zeros(n) for _ in range(4))
    alignment = potential / np.maximum(_EPS, gt_count[:, None] + tr_count[None, :] - potential)
    alphas = np.asarray(ALPHAS)
    keys: list[npt.NDArray[np.int64]] = []  # alpha, ground truth, track of every match
    n_t_all = len(tr_count)
    for f in frames:
        n_g, n_t = f.iou.shape
        if not (n_g and n_t):
            fn += n_g
            fp += n_t
            continue
        rows, cols = linear_sum_assignment(-alignment[np.ix_(f.gt, f.tracks)] * f.iou)
        sim = f.iou[rows, cols]
        hit = sim[None, :] >= alphas[:, None] - _EPS  # (alpha, pair)
        k = hit.sum(1)
        tp += k
        fn += n_g - k
        fp += n_t - k
        loc += (hit * sim[None, :]).sum(1)
        a, pair = np.nonzero(hit)
        keys.append((a * len(gt_count) + f.gt[rows[pair]]) * n_t_all + f.tracks[cols[pair]])
    ass = np.zeros(n)
    if keys:
        key, matches = np.unique(np.concatenate(keys), return_counts=True)
        a, rest = np.divmod(key, len(gt_count) * n_t_all)
        g, t = np.divmod(rest, n_t_all)
        np.add.at(ass, a, matches * matches / np.maximum(1.0, gt_count[g] + tr_count[t]
                                                        - matches))
    return tuple(tuple(float(v) for v in arr) for arr in (tp, fn, fp, ass, loc))
