"""Which three classes a box most likely is: the detector's word plus the site's own examples.

Part of the labelling workspace (:mod:`edge.label`), also used by
``calibrate propose``. The shipped detector gives one class per box (its
score is objectness times that class's probability), so on a dish it has
never seen it names a look-alike. The workspace's accepted labels are
examples in the detector's embedding space (the model's ``embeddings``
output, unit vectors): a box's similarity to each class's nearest examples
(:func:`knn_scores`) says what the site's labellers called things that look
like it. A class's score is that similarity (clipped at 0, 0 for a class
without examples) plus :data:`DETECTOR_WEIGHT` times the detector's score
when the detector named that class; ties and the places the evidence leaves
empty go to the classes labelled most often (a canteen sells few dishes
many times). Half weight for the detector: measured on nothing yet, chosen so
that a new dish with examples (similarity about 0.9) beats the detector's
look-alike at its typical low score on unknown dishes (0.2-0.5), while the
detector decides where no example is close.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

DETECTOR_WEIGHT = 0.5
"""Weight of the detector's score against the similarity to the site's examples."""

TOP = 3
"""Candidates proposed per box (keys 1-3 on the page)."""


def knn_scores(support: FloatArray, labels: npt.NDArray[np.int64], queries: FloatArray,
               classes: Sequence[int], k: int = 3) -> FloatArray:
    """Class scores ``(Q, len(classes))``: mean cosine similarity to each class's
    ``k`` nearest labelled examples (fewer when the class has fewer), -1 for a
    class without examples.

    ``support`` ``(S, D)`` and ``queries`` ``(Q, D)`` are unit-length rows;
    ``labels`` ``(S,)`` the support's classes.
    """
    sims = queries @ support.T
    out = np.full((len(queries), len(classes)), -1.0, np.float32)
    for j, c in enumerate(classes):
        own = sims[:, labels == c]
        if own.shape[1]:
            top = -np.sort(-own, axis=1)[:, :k]
            out[:, j] = top.mean(axis=1)
    return out


@dataclass(frozen=True, slots=True)
class Support:
    """The accepted labels that have an embedding.

    Attributes
    ----------
    embeddings : np.ndarray
        ``(S, D)`` float32 unit vectors.
    names : list of str
        ``S`` class names, row for row.
    """

    embeddings: FloatArray
    names: list[str]

    @classmethod
    def empty(cls) -> Support:
        """No examples yet."""
        return cls(np.zeros((0, 0), np.float32), [])

    def counts(self) -> dict[str, int]:
        """Examples per class."""
        out: dict[str, int] = {}
        for name in self.names:
            out[name] = out.get(name, 0) + 1
        return out


def rank(detected: Sequence[tuple[str, float]], embeddings: FloatArray | None,
         support: Support, prior: Mapping[str, int], *, k: int = 3,
         top: int = TOP) -> list[list[tuple[str, float]]]:
    """The best ``top`` classes of each box, best first, with their scores.

    Parameters
    ----------
    detected
        Per box, the detector's class and score (score in ``[0, 1]``).
    embeddings
        ``(n, D)`` unit vectors of the boxes (None: the model has no
        ``embeddings`` output; the detector and ``prior`` decide).
    support
        The site's examples.
    prior
        Labels per class so far: fills the places the evidence leaves empty.
    k
        Nearest examples averaged per class.
    top
        Candidates per box.

    Returns
    -------
    list of list of (str, float)
        Per box, ``top`` (fewer only when fewer classes are known)
        ``(class, score)`` pairs.
    """
    n = len(detected)
    scores: list[dict[str, float]] = [{} for _ in range(n)]
    names = sorted(set(support.names))
    if (embeddings is not None and names and n
            and embeddings.shape[1] == support.embeddings.shape[1]):
        index = {name: i for i, name in enumerate(names)}
        labels = np.array([index[name] for name in support.names], np.int64)
        sims = knn_scores(support.embeddings, labels, np.asarray(embeddings, np.float32),
                          range(len(names)), k)
        for i in range(n):
            for j, name in enumerate(names):
                scores[i][name] = max(float(sims[i, j]), 0.0)
    for i, (name, score) in enumerate(detected):
        scores[i][name] = scores[i].get(name, 0.0) + DETECTOR_WEIGHT * float(score)
    frequent = sorted(prior, key=lambda c: (-prior[c], c))
    out = []
    for i in range(n):
        ranked = sorted(scores[i].items(), key=lambda kv: (-kv[1], -prior.get(kv[0], 0), kv[0]))
        chosen = [(c, round(s, 4)) for c, s in ranked[:top]]
        for name in frequent:
            if len(chosen) >= top:
                break
            if all(name != c for c, _ in chosen):
                chosen.append((name, 0.0))
        out.append(chosen)
    return out
