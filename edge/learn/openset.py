"""The open-set decision: what a dish on a tray is, or that it is none the box knows.

Billing (:mod:`edge.billing.biller`) asks :meth:`Learner.name` for each dish
line. Three kinds of evidence meet there, all in the detector's embedding
space (a track's *appearance*: the mean direction of its embeddings,
:meth:`edge.track.views.ViewSet.appearance`):

* the **detector's class** (the track's lifetime vote) and its **known-class
  bank** (:mod:`edge.learn.bank`): how close the appearance is to the
  prototypes of that class, against a threshold calibrated per class on
  known classes only;
* the **site's examples** (:mod:`edge.learn.examples`): the looks of dishes
  the cashiers named, by menu entry (entries the model has no class for
  included).

The rule, in order:

1. An example class other than the detector's wins when its similarity
   reaches ``learning.min_example_similarity`` and beats the detector class's
   evidence (the better of its bank similarity and its own examples) by
   ``learning.example_margin``: the line is that entry, ``source
   "examples"``. Its similarity is the mean of its three nearest examples,
   a missing one counting as ``min_example_similarity``
   (:data:`edge.learn.examples.K_NEAREST`), so one wrong correction, however
   close, does not outvote a dish that many examples (or the bank) support.
2. Otherwise the detector's class stands when it is *known* for this
   appearance: the bank says so, or the class's own examples reach
   ``min_example_similarity``.
3. Otherwise, when the bank's similarity lies less than
   ``learning.doubt_band`` under the class's threshold, the detector's class
   is billed **flagged for review** with proposals (a known dish seen at an
   odd angle is confirmed with one tap, not picked from scratch).
4. Otherwise the dish is an **unknown item** (``learning.flag_unknown`` and a
   bank): never billed silently as the look-alike; its line carries the
   three best proposals and the bill needs the cashier.

Without embeddings (or with learning off) the detector's class stands, as
before this module existed; without a bank nothing is flagged unknown, and
examples still name dishes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge.billing.menu import Menu
from edge.billing.model import UNKNOWN_KEY, UNKNOWN_NAME, BillItem, Proposal
from edge.config import LearningConfig
from edge.frames import DishEvidence
from edge.learn.bank import KnownBank
from edge.learn.examples import ExampleIndex

FloatArray = npt.NDArray[np.float32]

PROPOSALS = 3
"""Proposals on an unknown or doubtful line (keys 1-3 on the cashier's page)."""
SCORE_FLOOR = 0.5
"""Similarity shown as score 0 on a proposal (1 is identical): scores are
``(similarity - SCORE_FLOOR) / (1 - SCORE_FLOOR)``, clipped."""
SURE_MARGIN = 0.05
"""Similarity margin over the runner-up at which a line named by examples is
fully confident (``confidence`` 1); a smaller margin scales it down."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Why a line is what it is (for tests, questions and the learning bench)."""

    key: str
    source: str  # "detector", "doubtful" (the detector's, flagged), "examples", "unknown"
    similarity: float  # of the chosen key (the detector class's when it stands)
    runner_up: float  # the best other key's


class Learner:
    """Names dishes with the detector, its bank and the site's examples.

    Parameters
    ----------
    config : LearningConfig
        ``[learning]`` settings.
    index : ExampleIndex
        The site's examples (shared with the correction path, which updates it).
    bank : KnownBank or None
        The serving model's known-class bank (None: unknown dishes are not flagged).
    model_id : str
        The serving model's registry id (its examples are the ones used).
    """

    def __init__(self, config: LearningConfig, index: ExampleIndex,
                 bank: KnownBank | None = None, model_id: str = "") -> None:
        self.config = config
        self.index = index
        self.bank = bank
        self.model_id = model_id
        self._model_names: tuple[str, ...] = ()
        self._maps: dict[tuple[str, ...], npt.NDArray[np.intp]] = {}

    def use_model(self, model_id: str, bank: KnownBank | None,
                  class_names: Sequence[str] = ()) -> None:
        """Name dishes for another model from the next line on. ``class_names``:
        the model's own classes, the bank's ids (default: the menu's class ids
        are the model's)."""
        self.model_id, self.bank = model_id, bank
        self._model_names, self._maps = tuple(class_names), {}

    def name(self, dish: DishEvidence, menu: Menu) -> BillItem | None:
        """The bill line of ``dish`` (None: not billable, as ``Menu.item``)."""
        q = dish.appearance
        if q is None or not self.config.enabled:
            return menu.item(dish.class_id, dish.share, dish.track_id)
        decision, scores = self.decide(dish.class_id, q, menu)
        if decision is None:
            return menu.item(dish.class_id, dish.share, dish.track_id)
        if decision.source in ("detector", "doubtful"):
            item = menu.item(dish.class_id, dish.share, dish.track_id)
            if item is not None and decision.source == "doubtful":  # just under its threshold
                item = dataclasses.replace(item, needs_review=True)
            if item is not None and item.needs_review:  # doubtful: offer choices
                proposals = _proposals(scores, menu)
                if proposals:
                    item = dataclasses.replace(item, proposals=proposals)
            return item
        proposals = _proposals(scores, menu)
        if decision.source == "unknown":
            return BillItem(class_id=-1, key=UNKNOWN_KEY, name=UNKNOWN_NAME, price=0.0,
                            confidence=0.0, track_id=dish.track_id, needs_review=True,
                            unknown=True, proposals=proposals, source="unknown")
        entry = menu.entries[decision.key]
        confidence = float(np.clip((decision.similarity - decision.runner_up) / SURE_MARGIN,
                                   0.0, 1.0))
        doubtful = confidence < menu.confirm_below or not entry.enabled
        return BillItem(class_id=_class_id(menu, decision.key), key=decision.key,
                        name=entry.name, price=entry.price, confidence=confidence,
                        track_id=dish.track_id, needs_review=doubtful,
                        proposals=proposals if doubtful else (), source="examples")

    def decide(self, class_id: int, appearance: FloatArray, menu: Menu
               ) -> tuple[Decision | None, dict[str, float]]:
        """The decision for a track of detector class ``class_id`` and this
        appearance, with the similarity of every billable menu key that has
        evidence. None: the detector's class is not a dish and no example
        names it (not billable, as before).

        With a bank, every similarity (examples and prototypes) is measured in
        the bank's slice of the embedding, so they compare."""
        cfg = self.config
        dims = self.bank.dims if self.bank is not None else None
        examples = self.index.similarity(self.model_id, appearance,
                                         floor=cfg.min_example_similarity, dims=dims)
        names = menu.class_names
        bank_sims = self._bank_similarity(appearance, names)
        det_key = names[class_id] if 0 <= class_id < len(names) else None
        scores: dict[str, float] = {}
        for key, s in examples.items():
            if _offered(menu, key):
                scores[key] = s
        if bank_sims is not None:
            for c, s in enumerate(bank_sims):
                if c < len(names) and s > -1.0 and _offered(menu, names[c]):
                    scores[names[c]] = max(scores.get(names[c], -1.0), float(s))
        det_bank = (float(bank_sims[class_id]) if bank_sims is not None and det_key is not None
                    else -1.0)
        det_examples = examples.get(det_key, -1.0) if det_key is not None else -1.0
        threshold = (self._threshold(class_id, names)
                     if self.bank is not None and det_key is not None else None)
        bank_knows = threshold is not None and det_bank >= threshold
        # what the detector's class has for it: the bank when it vouches, its own examples
        det_own = max(det_bank if bank_knows or self.bank is None else -1.0, det_examples)
        rivals = {k: s for k, s in examples.items() if k != det_key and _offered(menu, k)}
        if rivals:
            best_key = max(rivals, key=lambda k: rivals[k])
            best = rivals[best_key]
            if best >= max(cfg.min_example_similarity, det_own + cfg.example_margin):
                runner = max([det_own, *(s for k, s in rivals.items() if k != best_key)])
                return Decision(best_key, "examples", best, runner), scores
        if det_key is None or not menu.billable(class_id):
            return None, scores
        known = (det_examples >= cfg.min_example_similarity or bank_knows
                 or self.bank is None or not cfg.flag_unknown or threshold is None)
        runner = max((s for k, s in scores.items() if k != det_key), default=-1.0)
        if known:
            return Decision(det_key, "detector", max(det_bank, det_examples), runner), scores
        if threshold is not None and det_bank >= threshold - cfg.doubt_band:
            return Decision(det_key, "doubtful", det_bank, runner), scores
        return Decision(UNKNOWN_KEY, "unknown", det_bank, runner), scores

    def _bank_similarity(self, appearance: FloatArray, names: tuple[str, ...]
                         ) -> FloatArray | None:
        """The bank's similarity per class of ``names`` (the worker's class space,
        which may hold more classes than the model, in another order); -1 for
        a class the bank does not know."""
        if self.bank is None:
            return None
        sims: FloatArray = self.bank.similarity(self.bank.project(appearance))
        if not self._model_names or names[:len(self._model_names)] == self._model_names:
            out = np.full(len(names), -1.0, np.float32)
            n = min(len(names), len(sims))
            out[:n] = sims[:n]
            return out
        mapping = self._maps.get(names)
        if mapping is None:
            own = {n: i for i, n in enumerate(self._model_names)}
            mapping = np.array([own.get(n, -1) for n in names], np.intp)
            self._maps[names] = mapping
        mapped: FloatArray = np.where(mapping >= 0, sims[np.clip(mapping, 0, None)],
                                      -1.0).astype(np.float32)
        return mapped


    def _threshold(self, class_id: int, names: tuple[str, ...]) -> float | None:
        """The bank's threshold of worker class ``class_id`` (None: none)."""
        assert self.bank is not None
        model_id = class_id
        if self._model_names and names[:len(self._model_names)] != self._model_names:
            model_id = int(self._maps[names][class_id])
            if model_id < 0:
                return None
        return self.bank.threshold(model_id)


def _offered(menu: Menu, key: str) -> bool:
    entry = menu.entries.get(key)
    return entry is not None and entry.billable and entry.enabled


def _class_id(menu: Menu, key: str) -> int:
    try:
        return menu.class_names.index(key)
    except ValueError:
        return -1


def _proposals(scores: dict[str, float], menu: Menu,
               count: int = PROPOSALS) -> tuple[Proposal, ...]:
    best: Sequence[tuple[str, float]] = sorted(scores.items(), key=lambda ks: -ks[1])[:count]
    return tuple(Proposal(key, menu.entries[key].name, menu.entries[key].price,
                          float(np.clip((s - SCORE_FLOOR) / (1.0 - SCORE_FLOOR), 0.0, 1.0)))
                 for key, s in best)
