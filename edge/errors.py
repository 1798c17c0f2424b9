"""Exceptions raised at the project's boundaries (config, input files, models)."""

from __future__ import annotations


class DishTrackerError(Exception):
    """Base class of every error the project raises on purpose."""


class ConfigError(DishTrackerError):
    """A configuration value is invalid; the message names the field and why."""


class InputFormatError(DishTrackerError):
    """An input file (ground truth, dataset, video) is malformed."""


class ModelError(DishTrackerError):
    """A detector model does not meet the contract or cannot be loaded."""


class HeldOutSeedError(DishTrackerError):
    """A reserved evaluation seed (:data:`edge.seeds.HELD_OUT`) was asked for training or tuning."""


class MissingExtraError(DishTrackerError):
    """An optional dependency is missing; the message names the extra to install."""


class JournalError(DishTrackerError):
    """The bill journal cannot be opened or used (not a journal, newer schema,
    storage not writable); the message names the file and what to do."""


class CorrectionError(DishTrackerError):
    """A bill correction does not fit the bill or the menu; ``errors`` holds one
    ``field: reason`` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = list(errors)
