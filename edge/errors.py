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
    """A reserved evaluation seed (90000-99999) was asked for training or validation."""


class MissingExtraError(DishTrackerError):
    """An optional dependency is missing; the message names the extra to install."""
