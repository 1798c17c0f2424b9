"""Which three classes a box most likely is: the detector's word plus the site's own examples.

Part of the labelling workspace (:mod:`edge.label`), also used by
``calibrate propose``. The shipped detector gives one class per box (its
score is objectness times that class's probability), so on a dish it has
never seen it names a look-alike. The workspace's accepted labels are
examples in the detector's embedding space (the model's ``embeddings``
output, unit vectors): a box's similarity to each class's nearest examples
(:func:`knn_scores`) says what the site's labellers called things that look
like it. Embeddings of different dishes are far from orthogonal: on the
tests' scene (simulator seed 1002, the shipped model) two different dishes
have a similarity of 0.6-0.7 and the same dish on another frame 0.83-0.99.
So only the part above :data:`SIMILARITY_FLOOR` counts, stretched to
``[0, 1]``: a class's score is that (0 for a class without examples) plus
:data:`DETECTOR_WEIGHT` times the detector's score when the detector named
that class. A new dish with one close example (about 0.95 after the
stretch) then beats the detector's look-alike at its typical score on an
unknown dish (0.2-0.7), and a class with one example does not take over
every box that is merely a dish too. Ties, and the places the evidence
leaves empty, go to the classes labelled most often (a canteen sells few
dishes many times).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

DETECTOR_WEIGHT = 1.0
"""Weight of the detector's score against the similarity to the site's examples."""

SIMILARITY_FLOOR = 0.65
"""Similarity below which an example says nothing (see the module's text)."""

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
         top: int = TOP,
         asked: Sequence[Mapping[str, float]] = ()) -> list[list[tuple[str, float]]]:
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
    asked
        Per box (empty, or one mapping per box), more evidence ``{class:
        score}`` added as the detector's is: the proposals of a question the
        daemon asked about the box (:mod:`edge.label.asked`).

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
                stretched = (float(sims[i, j]) - SIMILARITY_FLOOR) / (1.0 - SIMILARITY_FLOOR)
                scores[i][name] = max(stretched, 0.0)
    for i, (name, score) in enumerate(detected):
        scores[i][name] = scores[i].get(name, 0.0) + DETECTOR_WEIGHT * float(score)
    for i, evidence in enumerate(asked):
        for name, score in evidence.items():
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
