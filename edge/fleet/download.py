"""A model file fetched over HTTP that resumes where it stopped, and is checked before use.

``model message ─▶ download (this module) ─▶ verify ─▶ model store``: the
fleet's model pull (:mod:`edge.fleet.models`) fetches the file a model
message names into a partial file named by the SHA-256 the message gives,
``<folder>/<sha256>.part``. A canteen's uplink drops; a 100 MB model must not
start from zero each time, so every attempt asks for the bytes after those
already on disk (HTTP ``Range: bytes=N-``), and a restart of the daemon finds
the partial file by its name and goes on. A server that ignores ``Range``
(``200`` instead of ``206``) sends the whole file again, which overwrites the
partial one.

Nothing here decides what is good: :func:`sha256_of` hashes what is on disk
once the download is complete, and the caller compares it with the message.
:class:`DownloadRefused` is for what no retry can mend (a size that disagrees
with the message, a file over the limit); :class:`DownloadFailed` for what a
retry may (the network, the server, ``5xx``, ``404`` of a file not uploaded
yet).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import BinaryIO

import aiohttp

CHUNK = 256 * 1024
"""Bytes written per hop to the writer thread."""

CONNECT_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 60.0
"""A server silent this long mid-file counts as a dropped connection (resume)."""

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

Progress = Callable[[int, "int | None"], None]
"""Called with ``(bytes on disk, total bytes or None)`` as a download goes on."""


class DownloadFailed(Exception):
    """An attempt that did not finish; a later attempt resumes it."""


class DownloadRefused(Exception):
    """A download that no retry of the same message can mend; the partial file is removed."""


def partial_path(folder: Path, sha256: str) -> Path:
    """``<folder>/<sha256>.part``: where the download of the file ``sha256`` goes."""
    return folder / f"{sha256}.part"


async def fetch(session: aiohttp.ClientSession, url: str, dest: Path, *,
                size: int | None, max_bytes: int, progress: Progress | None = None) -> int:
    """Fetch ``url`` into ``dest``, resuming after the bytes ``dest`` holds already.

    Parameters
    ----------
    session : aiohttp.ClientSession
        The HTTP client.
    url : str
        ``http(s)://`` address of the file.
    dest : Path
        The partial file (created if missing, its folder must exist).
    size : int or None
        The size the model message gives, bytes; a server that says another
        one is refused.
    max_bytes : int
        The largest file accepted, bytes.
    progress : callable, optional
        Told ``(bytes on disk, total or None)`` after each chunk.

    Returns
    -------
    int
        The file's size, bytes, once complete (flushed and fsynced).

    Raises
    ------
    DownloadFailed
        The attempt ended early (network, timeout, HTTP error); the bytes so
        far stay for the next attempt.
    DownloadRefused
        The file is larger than ``max_bytes`` or than ``size``, or the server's
        size disagrees with ``size``; ``dest`` is removed.
    """
    limit = min(size, max_bytes) if size is not None else max_bytes
    done = await asyncio.to_thread(_held, dest, limit)
    if size is not None and done == size:
        return done  # complete before a restart; the caller verifies it
    headers = {"Range": f"bytes={done}-"} if done else {}
    try:
        async with session.get(url, headers=headers) as resp:
            if resp.status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE:
                _remove(dest)  # the partial file is past the server's end
                raise DownloadFailed(f"the server has fewer than the {done} bytes on disk "
                                     "(416); starting again from 0")
            if resp.status not in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
                raise DownloadFailed(f"HTTP {resp.status} {resp.reason or ''}".strip())
            start, total = _span(resp, done)
            if total is not None and size is not None and total != size:
                _refuse(dest, f"the server's file is {total} bytes, the message says {size}")
            if total is not None and total > max_bytes:
                _refuse(dest, f"the file is {total} bytes, over the limit of {max_bytes}")
            return await _write(resp, dest, (start, total, limit), progress)
    except (aiohttp.ClientError, asyncio.TimeoutError) as err:
        raise DownloadFailed(_reason(err)) from err
    except OSError as err:  # the disk (full, read-only): a later attempt may find room
        raise DownloadFailed(f"cannot write {dest.name}: {err.strerror or err}") from err


def _span(resp: aiohttp.ClientResponse, done: int) -> tuple[int, int | None]:
    """``(first byte of the body, total size or None)`` of a 200 or 206 answer."""
    if resp.status == HTTPStatus.OK:  # the whole file, whatever was asked
        return 0, resp.content_length
    match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if match is None or int(match[1]) != done:
        raise DownloadFailed(f"206 with Content-Range {resp.headers.get('Content-Range')!r}, "
                             f"expected bytes {done}-…")
    return done, None if match[3] == "*" else int(match[3])


async def _write(resp: aiohttp.ClientResponse, dest: Path,
                 span: tuple[int, int | None, int], progress: Progress | None) -> int:
    """Write the body at ``start`` of ``span = (start, total or None, limit)``."""
    start, total, limit = span
    loop = asyncio.get_running_loop()
    # writes go to a thread: a slow eMMC under writeback pressure would stall the loop
    fh = await loop.run_in_executor(None, _open_at, dest, start)
    written = start
    try:
        async for chunk in resp.content.iter_chunked(CHUNK):
            written += len(chunk)
            if written > limit:
                fh.close()
                _refuse(dest, f"the server sent more than the {limit} bytes expected")
            await loop.run_in_executor(None, fh.write, chunk)
            if progress is not None:
                progress(written, total)
        await loop.run_in_executor(None, _sync, fh)
    finally:
        fh.close()
    if total is not None and written != total:
        raise DownloadFailed(f"the connection ended at {written} of {total} bytes")
    return written


def _held(dest: Path, limit: int) -> int:
    """Bytes the partial file holds already (0 without one); one over ``limit`` is refused."""
    done = dest.stat().st_size if dest.exists() else 0
    if done > limit:
        _refuse(dest, f"the partial file holds {done} bytes, more than the {limit} expected")
    return done


def _open_at(dest: Path, start: int) -> BinaryIO:
    fh = dest.open("r+b" if dest.exists() else "wb")
    fh.truncate(start)
    fh.seek(start)
    return fh


def _sync(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def _remove(dest: Path) -> None:
    dest.unlink(missing_ok=True)


def _refuse(dest: Path, reason: str) -> None:
    _remove(dest)
    raise DownloadRefused(reason)


def sha256_of(path: Path) -> str:
    """SHA-256 of the file at ``path``, lowercase hex (blocking: run it in a thread)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _reason(err: BaseException) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return f"no data for {READ_TIMEOUT_S:g} s (or no connection in {CONNECT_TIMEOUT_S:g} s)"
    return str(err) or type(err).__name__


def client_timeout() -> aiohttp.ClientTimeout:
    """The download's timeouts: no total (a large file on a slow line takes its
    time), a bound on connecting and on silence mid-file."""
    return aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT_S,
                                 sock_read=READ_TIMEOUT_S)
