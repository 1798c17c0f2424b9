"""The known-class bank: where each class a model knows lies in its embedding space.

A detector names every dish it finds as one of its classes, a dish it has
never seen included (a donut becomes a yogurt, confidently). What it saw is
still in its embedding (``Detections.embeddings``, ``docs/FORMATS.md``), and
a new dish looks different there from every real yogurt. The bank holds, per
model, a few **prototypes** of each known class (unit vectors of one slice of
the embedding, spread over the class's views) and a per-class **threshold**
calibrated on known classes only (``dishtracker calibrate bank``).

The rule: a track's appearance is the normalised mean of its detections'
projected embeddings (:meth:`KnownBank.query`); its similarity to a class is
the mean of its ``k`` highest cosine similarities to that class's prototypes
(:meth:`KnownBank.similarity`); the class the detector named is *known* for
the track when that similarity reaches the class's threshold
(:meth:`KnownBank.known`). Thresholds differ per class because classes
differ in spread (a coffee seen in many mugs and lights varies more than a
pizza slice).

Where it sits: a sidecar of the model file (``<model stem>.bank.npz``,
:func:`find_bank`), read beside the detector and used by the open-set
decision of the tracking stage; built by :mod:`calibration.bank`.
"""

from __future__ import annotations

import json
import math
import zipfile
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.errors import InputFormatError, ModelError
from edge.fsutil import write_atomic

FloatArray = npt.NDArray[np.float32]

FORMAT = "dishtracker-bank/1"
"""``format`` of the bank's metadata; another value is refused."""
BANK_SUFFIX = ".bank.npz"
EPS = 1e-6
"""Added to a squared norm before dividing, as the model does (``calibration.model.embed_cells``):
a slice that is nearly zero stays nearly zero instead of becoming a direction."""
NO_PROTOTYPES = -1.0
"""Similarity of a class without prototypes (cosines are >= -1, so it never wins)."""


def find_bank(model_path: Path) -> Path:
    """The bank of a model: ``<model stem>.bank.npz`` beside the model file."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + BANK_SUFFIX)


def unit_rows(x: FloatArray) -> FloatArray:
    """Rows of ``x`` made unit, a nearly zero row staying nearly zero (:data:`EPS`)."""
    norm = np.sqrt(np.sum(x * x, axis=-1, keepdims=True) + EPS)
    out: FloatArray = (x / norm).astype(np.float32)
    return out


class KnownBank:
    """Prototypes and per-class thresholds of one model's known classes.

    Parameters
    ----------
    prototypes : np.ndarray
        ``(P, Dp)`` prototypes in the projected space (rows are made unit).
    labels : np.ndarray
        ``(P,)`` int model class id of each prototype, in ``0 .. C-1``.
    thresholds : np.ndarray
        ``(C,)`` per model class: the least similarity of a known track of
        that class; NaN where the class has no threshold.
    model_sha256 : str
        Hex SHA-256 of the model file whose embeddings the bank describes.
    dims : tuple of int
        ``(start, stop)``: the slice of the model's embedding that is used.
    k : int
        Similarity to a class = mean of the ``k`` highest prototype cosines.
    meta : dict, optional
        Provenance (quantile, seeds, created, ...), stored with the bank.

    Raises
    ------
    ValueError
        If shapes, label range, ``dims`` or ``k`` do not fit together.
    """

    def __init__(self, prototypes: npt.ArrayLike, labels: npt.ArrayLike,
                 thresholds: npt.ArrayLike, *, model_sha256: str, dims: tuple[int, int],
                 k: int = 3, meta: dict[str, Any] | None = None) -> None:
        protos = np.asarray(prototypes, dtype=np.float32)
        labs = np.asarray(labels)
        thr = np.asarray(thresholds, dtype=np.float32)
        start, stop = (int(v) for v in dims)
        problems = []
        if thr.ndim != 1 or len(thr) == 0:
            problems.append(f"thresholds must be (C,) with C >= 1, got {thr.shape}")
        if protos.ndim != 2 or protos.shape[1] != stop - start:
            problems.append(f"prototypes must be (P, {stop - start}) for dims "
                            f"[{start}, {stop}], got {protos.shape}")
        if labs.shape != protos.shape[:1] or not np.issubdtype(labs.dtype, np.integer):
            problems.append(f"labels must be ({protos.shape[0]},) integers, got {labs.shape} "
                            f"{labs.dtype}")
        elif len(labs) and thr.ndim == 1 and (labs.min() < 0 or labs.max() >= len(thr)):
            problems.append(f"labels must lie in 0..{len(thr) - 1} (one threshold per class), "
                            f"got {labs.min()}..{labs.max()}")
        if not 0 <= start < stop:
            problems.append(f"dims must be [start, stop] with 0 <= start < stop, got {dims}")
        if k < 1:
            problems.append(f"k must be >= 1, got {k}")
        if problems:
            raise ValueError("; ".join(problems))
        self.model_sha256 = model_sha256
        self.dims = (start, stop)
        self.k = int(k)
        self.meta = dict(meta or {})
        self.thresholds = thr
        order = np.argsort(labs, kind="stable")
        self.prototypes = unit_rows(protos[order])
        self.labels = labs[order].astype(np.int32)
        n_classes = len(thr)
        counts = np.bincount(self.labels, minlength=n_classes)
        width = max(int(counts.max(initial=0)), 1)
        # class c's prototypes sit at positions _index[c, :counts[c]]; the rest
        # point at one padding slot (index P) that holds -inf
        self._index = np.full((n_classes, width), len(self.labels), dtype=np.intp)
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
        for c in np.flatnonzero(counts):
            self._index[c, :counts[c]] = np.arange(first[c], first[c] + counts[c])
        self._take = min(self.k, width)
        self._divisor = np.maximum(np.minimum(counts, self.k), 1).astype(np.float32)
        self._empty = counts == 0

    find_bank = staticmethod(find_bank)

    @property
    def num_classes(self) -> int:
        """C: the model's class count (length of ``thresholds``)."""
        return len(self.thresholds)

    @property
    def classes(self) -> tuple[int, ...]:
        """Class ids that have prototypes, ascending."""
        return tuple(int(c) for c in np.flatnonzero(~self._empty))

    def project(self, embeddings: npt.ArrayLike) -> FloatArray:
        """The bank's slice of model embeddings, each row made unit.

        Parameters
        ----------
        embeddings : np.ndarray
            ``(N, D)`` or ``(D,)`` model embeddings, ``D >= dims[1]``.

        Returns
        -------
        np.ndarray
            ``(N, Dp)`` or ``(Dp,)`` float32; a row whose slice is nearly zero
            stays nearly zero.
        """
        x = np.asarray(embeddings, dtype=np.float32)
        if x.shape[-1] < self.dims[1]:
            raise ValueError(f"embeddings have {x.shape[-1]} dims; the bank reads "
                             f"[{self.dims[0]}, {self.dims[1]})")
        return unit_rows(x[..., self.dims[0]:self.dims[1]])

    def query(self, embeddings: npt.ArrayLike) -> FloatArray:
        """A track's appearance: the unit mean of its detections' projected embeddings.

        Parameters
        ----------
        embeddings : np.ndarray
            ``(N, D)`` model embeddings of one track's detections (N >= 1).

        Returns
        -------
        np.ndarray
            ``(Dp,)`` float32, ready for :meth:`similarity`.
        """
        rows = self.project(np.atleast_2d(np.asarray(embeddings, dtype=np.float32)))
        return unit_rows(rows.mean(axis=0))

    def similarity(self, query_projected: npt.ArrayLike) -> FloatArray:
        """Similarity of a projected query to every class.

        Parameters
        ----------
        query_projected : np.ndarray
            ``(Dp,)`` unit query (:meth:`query`), or ``(N, Dp)`` queries.

        Returns
        -------
        np.ndarray
            ``(C,)`` (or ``(N, C)``) float32: per class the mean of the ``k``
            highest cosine similarities to its prototypes (of all of them
            when it has fewer); :data:`NO_PROTOTYPES` for a class without.
        """
        q = np.asarray(query_projected, dtype=np.float32)
        cos = q @ self.prototypes.T  # (..., P)
        padded = np.concatenate([cos, np.full((*cos.shape[:-1], 1), -np.inf, np.float32)],
                                axis=-1)
        grouped = padded[..., self._index]  # (..., C, width)
        width = grouped.shape[-1]
        top = np.partition(grouped, width - self._take, axis=-1)[..., width - self._take:]
        total = np.where(np.isfinite(top), top, 0.0).sum(axis=-1)
        return np.where(self._empty, NO_PROTOTYPES, total / self._divisor).astype(np.float32)

    def threshold(self, class_id: int) -> float | None:
        """The class's threshold, or None if it has none (or is not a model class)."""
        if not 0 <= class_id < self.num_classes:
            return None
        value = float(self.thresholds[class_id])
        return None if math.isnan(value) else value

    def known(self, class_id: int, similarity: float) -> bool:
        """Whether a track named ``class_id`` with this similarity to it is that known class.

        False for a class without a threshold: the bank cannot vouch for it.
        """
        thr = self.threshold(class_id)
        return thr is not None and similarity >= thr

    # ---- file --------------------------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write the bank as ``.npz`` (float16 prototypes), atomically (temp file + rename)."""
        meta = {**self.meta, "format": FORMAT, "model_sha256": self.model_sha256,
                "dims": list(self.dims), "k": self.k}
        buf = BytesIO()
        np.savez_compressed(
            buf, prototypes=self.prototypes.astype(np.float16), labels=self.labels,
            thresholds=self.thresholds.astype(np.float32), meta=np.array(json.dumps(meta)))
        write_atomic(Path(path), buf.getbuffer(), mode=0o644, suffix=".tmp")

    @classmethod
    def load(cls, path: Path, model_sha256: str) -> KnownBank:
        """Read a bank and check it belongs to the model.

        Parameters
        ----------
        path : Path
            The ``.npz`` (:meth:`save`, usually :func:`find_bank` of the model).
        model_sha256 : str
            Hex SHA-256 of the model file in use.

        Raises
        ------
        InputFormatError
            The file is missing, not a bank or malformed (the message says what).
        ModelError
            The bank was built for another model (its embeddings would not compare).
        """
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise InputFormatError(f"{path}: not a readable known-class bank ({err})") from err
        missing = sorted({"prototypes", "labels", "thresholds", "meta"} - set(arrays))
        if missing:
            raise InputFormatError(f"{path}: a known-class bank needs arrays {missing}")
        try:
            meta = json.loads(str(arrays["meta"]))
        except json.JSONDecodeError as err:
            raise InputFormatError(f"{path}: meta is not JSON ({err})") from err
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else meta
            raise InputFormatError(f"{path}: meta format is {found!r}; expected {FORMAT!r}")
        if meta.get("model_sha256") != model_sha256:
            raise ModelError(
                f"{path}: the bank was built for the model with SHA-256 "
                f"{meta.get('model_sha256')}, not this one ({model_sha256}); rebuild it with "
                "`dishtracker calibrate bank --model MODEL`")
        dims, k = meta.get("dims"), meta.get("k")
        if (not isinstance(dims, list) or len(dims) != 2
                or not all(isinstance(v, int) for v in dims) or not isinstance(k, int)):
            raise InputFormatError(f"{path}: meta needs dims [start, stop] and k as integers, "
                                   f"got dims={dims!r} k={k!r}")
        try:
            return cls(arrays["prototypes"], arrays["labels"], arrays["thresholds"],
                       model_sha256=model_sha256, dims=(dims[0], dims[1]), k=k, meta=meta)
        except ValueError as err:
            raise InputFormatError(f"{path}: {err}") from err
