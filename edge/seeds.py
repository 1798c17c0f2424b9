"""Simulator seed ranges: which seeds may be trained, tuned or validated on, and which are held out.

Beside the pipeline, like :mod:`edge.catalogue`: the daemon never reads a
seed range, but the dataset exporter, the trainer, calibration and every
bench do, and they must agree. A seed names one synthetic scene
(:mod:`edge.sim`), so a range is a data set.

* ``HELD_OUT`` (90000-99999) is reserved for evaluation: never train,
  validate or tune on it (:func:`refuse_held_out`).
* ``PROJECT_HELD_OUT`` (90000-96999) holds the project's held-out sets: each
  is run once per decision, and the docs say how often it has been run.
* ``INDEPENDENT`` (97000-99999) is never rendered by the project's own
  benches or tests: it is kept for independent checks.

A set that informed a choice (a tuning or a validation set) lies outside
``HELD_OUT`` and is not called held out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from edge.errors import HeldOutSeedError

HELD_OUT = range(90000, 100000)
"""Reserved for held-out evaluation: never used for training, validation or tuning."""
PROJECT_HELD_OUT = range(90000, 97000)
"""The project's held-out sets: run once per decision."""
INDEPENDENT = range(97000, 100000)
"""Never rendered by the project's benches or tests: kept for independent checks."""

DETECTOR_TEST = range(90000, 90005)
"""Held out: the detector's test split (``edge/models/MODEL_CARD.md``)."""
DETECTOR_TEST_LARGE = range(90100, 90120)
"""Held out: the detector's larger test split."""
FEWLABEL_TEST = range(90200, 90210)
"""Held out: the few-label fine-tuning bench's test split (``bench/fewlabel.py``)."""

Bases = Mapping[str, int]
"""First seed of each difficulty level (``easy``, ``standard``, ``hard``); its seeds follow it."""

BILLING_HELD_OUT: Bases = {"easy": 91000, "standard": 92000, "hard": 93000}
"""Held-out scenes of the billing and scene benches (camera along the counter)."""
ROTATED_HELD_OUT: Bases = {"easy": 94000, "standard": 95000, "hard": 96000}
"""Held-out scenes of the scene bench with the camera turned (``dishtracker sim --angle``)."""
BILLING_TUNING: Bases = {"easy": 11000, "standard": 12000, "hard": 13000}
"""The billing bench's tuning set (``--dev``): the tracker is developed on it."""
BILLING_VALIDATION: Bases = {"easy": 21000, "standard": 22000, "hard": 23000}
"""The billing bench's validation set (``--validation``).

Run to confirm a tracker change before a held-out run; it also informed the
choice of the shipped model (dishnet-1.1), so it is a validation set, not a
held-out one.
"""
SCENE_TUNING: Bases = {"easy": 15000, "standard": 15100, "hard": 15200}
"""The scene bench's tuning set (``--dev``), camera along the counter."""
ROTATED_TUNING: Bases = {"easy": 16000, "standard": 16100, "hard": 16200}
"""The scene bench's tuning set (``--dev``), camera turned."""

LEARNING_BANK = range(17100, 17200)
"""Base-menu scenes that build a model's known-class bank (``dishtracker calibrate bank``):
the prototypes and per-class thresholds of the open-set decision (:mod:`edge.learn.bank`)."""
LEARNING_TUNING: Bases = {"standard": 17000}
"""``site2`` scenes (``--menu site2``) the learning loop is developed and tuned on
(``dishtracker eval learning``): 17000-17099."""
LEARNING_HELD_OUT: Bases = {"standard": 90500}
"""Held out: ``site2`` scenes of the learning bench (90500-90599), run once per decision."""

ONBOARD_RECORDING = range(18000, 19000)
"""``site2`` standard scenes that are a new site's recorded service in the onboarding bench
(``bench/onboard.py``): frames are selected from them, labelled and trained on."""
ONBOARD_TUNING = range(19000, 19100)
"""``site2`` standard scenes the onboarding bench is developed and tuned on: the
evaluation of the trained model unless ``--held-out``."""
ONBOARD_HELD_OUT = range(90600, 90700)
"""Held out: ``site2`` standard scenes of the onboarding bench's final figures
(``bench/onboard.py --held-out``), run once per decision."""

LEVEL_SPAN = 1000
"""Seeds per level and set: a level's seeds are ``base .. base + LEVEL_SPAN - 1``."""


def held_out(seeds: Iterable[int]) -> list[int]:
    """The seeds of ``seeds`` that lie in :data:`HELD_OUT`, in their order."""
    return [s for s in seeds if s in HELD_OUT]


def refuse_held_out(seeds: Iterable[int], purpose: str) -> None:
    """Raise if any seed is reserved for held-out evaluation.

    Parameters
    ----------
    seeds : iterable of int
        Simulator seeds about to be used for ``purpose``.
    purpose : str
        What they would be used for (``"training"``, ``"calibration"`` ...),
        named in the message.

    Raises
    ------
    HeldOutSeedError
        If a seed lies in :data:`HELD_OUT` (the first five are named).
    """
    bad = held_out(seeds)
    if bad:
        raise HeldOutSeedError(
            f"seeds {bad[:5]} are reserved for held-out evaluation "
            f"({HELD_OUT.start}-{HELD_OUT.stop - 1}) and cannot be used for {purpose}")


def level_seeds(bases: Bases, level: str, count: int) -> range:
    """The first ``count`` seeds of ``level`` in a set.

    Raises
    ------
    ValueError
        If ``level`` is not in ``bases``, or ``count`` is not in
        ``1..LEVEL_SPAN`` (the seeds would run into the next level's), or a
        held-out set would reach :data:`INDEPENDENT`.
    """
    if level not in bases:
        raise ValueError(f"level {level!r} is unknown; valid: {sorted(bases)}")
    if not 1 <= count <= LEVEL_SPAN:
        raise ValueError(f"count must be in 1..{LEVEL_SPAN}, got {count}")
    seeds = range(bases[level], bases[level] + count)
    if seeds.start in HELD_OUT and seeds[-1] not in PROJECT_HELD_OUT:
        raise ValueError(f"seeds {seeds.start}-{seeds[-1]} reach {INDEPENDENT.start}+, which the "
                         "project never renders")
    return seeds
