"""The site's examples: dishes a cashier named, as the detector saw them.

A correction of a bill line (a dish changed, an unknown dish picked, a
flagged line confirmed) turns that line's views (:mod:`edge.track.views`)
into labelled **examples** of the menu entry the cashier chose. They live
durably in the journal (:mod:`edge.billing.journal`, table ``examples``,
written in the correction's own transaction, so they survive ``kill -9``);
an undo of the correction marks them removed.

:class:`ExampleIndex` is their in-memory form, the one the open-set decision
(:mod:`edge.learn.openset`) reads on every tray: per model (an embedding
belongs to the model that made it) a matrix of unit vectors and their menu
keys. It is **copy-on-write**: a change builds a new snapshot and swaps one
reference, so the trackers read it from any thread without a lock.

Capped per menu entry and model (``learning.examples_per_class``): a class
over the cap keeps a spread of its looks (the newest, then farthest-point
sampling); the others leave the index, the journal keeps them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.learn.bank import unit_rows

FloatArray = npt.NDArray[np.float32]

K_NEAREST = 3
"""A class's similarity to a query: the mean of its ``K_NEAREST`` most similar
examples; while it has fewer, the missing ones count as the ``floor`` of
:meth:`ExampleIndex.similarity` (a class known from one example is less
certain than one known from many: one wrong correction, however close, does
not outvote the many examples or the bank behind the right dish)."""


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled look at a dish.

    Attributes
    ----------
    uid : str
        Stable id, unique across boxes (``{box}:{journal row}``): merging the
        same example twice (the fleet) changes nothing.
    key : str
        The menu entry it shows.
    model_id : str
        The model whose embedding it is (registry id).
    embedding : np.ndarray
        ``(D,)`` float32 unit vector.
    origin : str
        ``"local"``, or the box that shared it.
    """

    uid: str
    key: str
    model_id: str
    embedding: FloatArray
    origin: str = "local"


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The index for one model, immutable (but for the cache of its slices)."""

    embeddings: FloatArray  # (S, D)
    keys: tuple[str, ...]  # (S,)
    uids: tuple[str, ...]
    by_key: Mapping[str, npt.NDArray[np.intp]]
    slices: dict[tuple[int, int], FloatArray] = field(default_factory=dict)

    def sliced(self, dims: tuple[int, int]) -> FloatArray:
        """The embeddings' slice ``dims``, rows made unit (made once)."""
        out = self.slices.get(dims)
        if out is None:
            out = unit_rows(self.embeddings[:, dims[0]:dims[1]])
            self.slices[dims] = out
        return out


_EMPTY = _Snapshot(np.zeros((0, 0), np.float32), (), (), {})


class ExampleIndex:
    """Examples by model, capped per class (see the module docstring).

    Parameters
    ----------
    per_class : int
        Examples kept per menu key and model.
    """

    def __init__(self, per_class: int = 48) -> None:
        self.per_class = per_class
        self._examples: dict[str, Example] = {}
        self._snapshots: dict[str, _Snapshot] = {}
        self.version = 0

    def __len__(self) -> int:
        return len(self._examples)

    def update(self, add: Iterable[Example] = (), remove: Iterable[str] = ()) -> bool:
        """Add examples and remove others by uid (unknown uids are ignored);
        True if anything changed. Rebuilds the snapshots of the models touched."""
        touched: set[str] = set()
        for uid in remove:
            gone = self._examples.pop(uid, None)
            if gone is not None:
                touched.add(gone.model_id)
        for ex in add:
            if ex.uid not in self._examples:
                self._examples[ex.uid] = ex
                touched.add(ex.model_id)
        for model_id in touched:
            self._snapshots[model_id] = self._build(model_id)
        if touched:
            self.version += 1
        return bool(touched)

    def set_per_class(self, per_class: int) -> None:
        """Keep ``per_class`` examples per class from now on (the snapshots are rebuilt)."""
        if per_class != self.per_class:
            self.per_class = per_class
            for model_id in list(self._snapshots):
                self._snapshots[model_id] = self._build(model_id)
            self.version += 1

    def counts(self, model_id: str | None = None) -> dict[str, int]:
        """Examples held per menu key (all models, or one), beyond the cap too."""
        out: dict[str, int] = {}
        for ex in self._examples.values():
            if model_id is None or ex.model_id == model_id:
                out[ex.key] = out.get(ex.key, 0) + 1
        return out

    def in_use(self, model_id: str) -> dict[str, int]:
        """Examples per menu key that take part in decisions for ``model_id``."""
        snap = self._snapshots.get(model_id, _EMPTY)
        return {key: len(rows) for key, rows in snap.by_key.items()}

    def similarity(self, model_id: str, query: FloatArray, floor: float = 0.0,
                   dims: tuple[int, int] | None = None) -> dict[str, float]:
        """Per menu key with examples for ``model_id``: the mean cosine similarity
        of its :data:`K_NEAREST` examples most similar to ``query`` (a unit
        vector), a missing example counting as ``floor``. ``dims``: compare
        only that slice of the embeddings (each side made unit again), the
        space of a known-class bank."""
        snap = self._snapshots.get(model_id, _EMPTY)
        if not snap.keys or snap.embeddings.shape[1] != query.shape[0]:
            return {}
        if dims is not None:
            sims = snap.sliced(dims) @ unit_rows(query[dims[0]:dims[1]])
        else:
            sims = snap.embeddings @ query
        out = {}
        for key, rows in snap.by_key.items():
            own = sims[rows]
            if len(own) > K_NEAREST:
                own = np.partition(own, len(own) - K_NEAREST)[-K_NEAREST:]
            out[key] = (float(own.sum()) + floor * (K_NEAREST - len(own))) / K_NEAREST
        return out

    def _build(self, model_id: str) -> _Snapshot:
        groups: dict[str, list[Example]] = {}
        for ex in self._examples.values():
            if ex.model_id == model_id:
                groups.setdefault(ex.key, []).append(ex)
        kept: list[Example] = []
        for members in groups.values():
            kept += _diverse(members, self.per_class)
        if not kept:
            return _EMPTY
        keys = tuple(ex.key for ex in kept)
        by_key: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            by_key.setdefault(key, []).append(i)
        return _Snapshot(np.stack([ex.embedding for ex in kept]).astype(np.float32), keys,
                         tuple(ex.uid for ex in kept),
                         {k: np.asarray(v, np.intp) for k, v in by_key.items()})


def _diverse(members: list[Example], cap: int) -> list[Example]:
    """At most ``cap`` of one class's examples, spread over its looks: the newest
    first, then each time the one least similar to those chosen (farthest-point
    sampling: ``cap`` passes of one matrix-vector product)."""
    if len(members) <= cap:
        return members
    emb = np.stack([m.embedding for m in members]).astype(np.float32)
    chosen = [len(members) - 1]
    nearest = emb @ emb[chosen[0]]  # each member's similarity to its nearest chosen one
    nearest[chosen[0]] = np.inf
    while len(chosen) < cap:
        pick = int(np.argmin(nearest))
        chosen.append(pick)
        nearest = np.maximum(nearest, emb @ emb[pick])
        nearest[pick] = np.inf
    return [members[i] for i in sorted(chosen)]
