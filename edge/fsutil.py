"""Durable, private file writes: a reader sees the old file or the whole new one, never a part.

Used by everything that writes a file a later start (or another process)
reads: the site config, scene files, TensorRT engines and their sidecars,
label proposals. The daemon's state under ``storage.dir`` (the bill journal
holds bill photos) is owner-only whatever the umask of whoever starts it:
:func:`make_private_dir` and :func:`restrict_file`.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def make_private_dir(path: Path) -> None:
    """Create ``path`` and its missing parents owner-only (0700).

    Folders that exist already keep their mode: an operator may have made
    ``storage.dir`` group-readable on purpose (systemd's ``StateDirectory``
    makes it 0700 itself).
    """
    path = Path(path)
    missing = []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=PRIVATE_DIR)
            folder.chmod(PRIVATE_DIR)  # mkdir's mode is cut by the umask


def restrict_file(path: Path, *, create: bool = False) -> None:
    """Make ``path`` owner-only (0600), creating it empty first with ``create``.

    An existing file with looser bits is tightened when this user owns it
    (journals written before files were made private); a file of another
    owner, or a missing one without ``create``, is left alone.
    """
    path = Path(path)
    if create:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.getuid():
        path.chmod(stat.S_IMODE(st.st_mode) & ~0o077)


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
