"""Durable file writes: a reader sees the old file or the whole new one, never a part.

Used by everything that writes a file a later start (or another process)
reads: the site config, scene files, TensorRT engines and their sidecars,
label proposals.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, data: bytes | memoryview, *, mode: int | None = None,
                 suffix: str = "") -> None:
    """Write ``data`` to ``path`` through a unique temp file, fsync, rename, fsync the folder.

    Parameters
    ----------
    path : Path
        The file to (re)place; its folder is created if missing.
    data : bytes or memoryview
        The whole new content.
    mode : int, optional
        Permission bits of the new file; default: ``mkstemp``'s owner-only 0600.
    suffix : str
        Suffix of the temp file (``.tmp`` lets a sweeper recognise leftovers of
        a writer that died).

    Notes
    -----
    Concurrent writers of one path each use their own temp file; the last
    rename wins.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
