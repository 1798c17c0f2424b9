"""Who changed the site config, when, and to what: an append-only change history.

Beside the control plane (:mod:`edge.web.app`): every config change that the
daemon applied (``PUT /api/config``, a menu edit) appends one JSON line to
``storage.dir/config-changes.jsonl`` (mode 0600, written with ``O_APPEND``
and fsync'd before the answer): the time, the name of the token that made it
(:func:`edge.web.roles.actor_name`), the fields applied and those waiting
for a restart, the SHA-256 of the config in force after it (as TOML, the
form the config file is saved in) and that config with secrets masked. Lines
are never rewritten, so the history is what an auditor reads beside the
bill journal's corrections (each of which names its actor too).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edge.config import SiteConfig, to_toml

HISTORY_FILE = "config-changes.jsonl"
"""Name of the history under ``storage.dir``."""


def history_path(config: SiteConfig) -> Path:
    """Where the history of the daemon running ``config`` is."""
    return config.storage.dir / HISTORY_FILE


def record_change(path: Path, *, actor: str | None, applied: Sequence[str],
                  restart_required: Sequence[str], config: SiteConfig,
                  masked: dict[str, Any]) -> dict[str, Any]:
    """Append one change to the history at ``path`` (created 0600) and fsync it.

    Returns the record. Raises ``OSError`` when the file cannot be written.
    """
    record = {
        "at": round(time.time(), 3),
        "actor": actor,
        "applied": list(applied),
        "restart_required": list(restart_required),
        "sha256": hashlib.sha256(to_toml(config).encode("utf-8")).hexdigest(),
        "config": masked,
    }
    line = (json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n").encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return record


def read_history(path: Path) -> list[dict[str, Any]]:
    """Every change recorded at ``path``, oldest first (none when it is absent)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
