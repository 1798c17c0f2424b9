"""How FFmpeg (through PyAV) is asked to open a stream's URL.

The factory (:func:`edge.sources.make_source`) turns a stream's config into
an :class:`AvInput`: the kind of input, the string ``av.open`` gets, the
demuxer to force and the FFmpeg options. :class:`edge.sources.av_source.AvSource`
opens it in its decode thread. Pure: nothing here touches the network.

Live inputs are tuned for latency: ``fflags=nobuffer`` (do not keep the
packets read while probing), a small ``probesize``/``analyzeduration``, the
decoder's ``low_delay`` flag, and a socket timeout so that a camera that stops
answering unblocks the read. Files get none of these: ``nobuffer`` discards
the probed packets, so a file would lose its first frames (10 of 40 in a
20 fps test clip, PyAV 18.1 / FFmpeg 8.1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edge.config import StreamConfig

# 128 KiB / 0.5 s: enough to find H.264 parameters in an RTSP SDP or an
# MPEG-TS PAT/PMT; FFmpeg's defaults (5 MB / 5 s) delay the first frame by seconds.
_LOW_LATENCY = {"fflags": "nobuffer", "probesize": "131072", "analyzeduration": "500000"}


@dataclass(frozen=True, slots=True)
class AvInput:
    """What ``av.open`` is called with for one stream.

    Parameters
    ----------
    kind : str
        ``rtsp``, ``http``, ``udp``, ``v4l2`` or ``file``.
    target : str
        The URL or path given to ``av.open`` (``file://`` removed).
    format : str or None
        Demuxer to force (``v4l2``), or None to probe.
    options : dict of str to str
        FFmpeg options for the demuxer and the decoder; the stream's
        ``options`` from the config override the built-in ones.
    live : bool
        True for cameras and network streams (drop oldest, reconnect);
        False for files (no drops, ``loop``/``ended`` at the end).
    open_timeout_s : float
        Seconds ``av.open`` may take (connect, handshake, probe).
    read_timeout_s : float
        Seconds one packet read may block before it is abandoned.
    """

    kind: str
    target: str
    format: str | None
    options: dict[str, str] = field(default_factory=dict)
    live: bool = True
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0


def input_kind(url: str) -> str:
    """Classify a stream URL: ``synthetic``, ``rtsp``, ``http``, ``udp``, ``v4l2`` or ``file``."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    kinds = {"synthetic": "synthetic", "rtsp": "rtsp", "rtsps": "rtsp", "http": "http",
             "https": "http", "udp": "udp", "rtp": "udp", "file": "file"}
    if scheme:
        if scheme not in kinds:
            raise ValueError(f"url: unsupported scheme {scheme!r} in {url!r}; "
                             f"valid: {sorted(kinds)}, a path or /dev/videoN")
        return kinds[scheme]
    if url.startswith("/dev/video"):
        return "v4l2"
    return "file"


def file_path(url: str) -> Path:
    """The local path of a ``file://`` URL or a plain path."""
    if url.startswith("file://"):
        return Path(unquote(urlsplit(url).path))
    return Path(url)


def av_input(config: StreamConfig) -> AvInput:
    """Build the :class:`AvInput` for a stream that PyAV reads (not ``synthetic://``).

    Parameters
    ----------
    config : StreamConfig
        The stream; ``transport``, ``stall_timeout_s`` and ``options`` are used.

    Raises
    ------
    ValueError
        For ``synthetic://`` or an unknown scheme.
    """
    kind = input_kind(config.url)
    timeout_us = str(int(config.stall_timeout_s * 1_000_000))
    options: dict[str, str]
    target, fmt, live = config.url, None, True
    if kind == "rtsp":
        options = {**_LOW_LATENCY, "rtsp_transport": config.transport, "timeout": timeout_us,
                   "allowed_media_types": "video"}
    elif kind == "http":
        # ``timeout`` is the socket I/O timeout in µs for FFmpeg's http protocol.
        options = {**_LOW_LATENCY, "timeout": timeout_us}
    elif kind == "udp":
        # A burst larger than the socket buffer must cost packets, not the stream.
        options = {**_LOW_LATENCY, "timeout": timeout_us, "overrun_nonfatal": "1"}
    elif kind == "v4l2":
        # The driver reports the format; probing raw frames against a byte limit is moot.
        options, fmt = {"fflags": "nobuffer"}, "v4l2"
    elif kind == "file":
        options, target, live = {}, str(file_path(config.url)), False
    else:
        raise ValueError(f"url: {config.url!r} is a {kind} source, not one PyAV reads")
    options.update(config.options)
    # Connect + RTSP handshake + probe take longer than one packet read: give
    # the open at least 3 s even when the stall timeout is shorter.
    open_timeout = max(config.stall_timeout_s, 3.0)
    return AvInput(kind, target, fmt, options, live, open_timeout, config.stall_timeout_s)
