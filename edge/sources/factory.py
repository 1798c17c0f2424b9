"""Choose the source class for a stream from its URL.

The pipeline calls :func:`make_source` once per enabled stream; the result's
``run()`` is the first stage. Classes are picked from an explicit table
(no subclass discovery), the way aiortc picks codecs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from edge.config import StreamConfig
from edge.errors import ConfigError
from edge.metrics import Metrics
from edge.sources.av_input import input_kind
from edge.sources.av_source import AvSource
from edge.sources.base import Source
from edge.sources.synthetic import SyntheticSource

SourceFactory = Callable[[StreamConfig, Metrics, asyncio.AbstractEventLoop], Source]

SOURCES: dict[str, SourceFactory] = {
    "synthetic": SyntheticSource,
    "rtsp": AvSource,
    "http": AvSource,
    "udp": AvSource,
    "v4l2": AvSource,
    "file": AvSource,
}


def make_source(config: StreamConfig, metrics: Metrics,
                loop: asyncio.AbstractEventLoop) -> Source:
    """Create the source of one stream (nothing starts until ``run()``).

    Parameters
    ----------
    config : StreamConfig
        The stream; ``url`` selects the class: ``synthetic://`` ->
        :class:`SyntheticSource`; ``rtsp(s)://``, ``http(s)://``,
        ``udp://``/``rtp://``, ``/dev/videoN``, a path or ``file://`` ->
        :class:`AvSource`.
    metrics : Metrics
        Counters and gauges the source updates.
    loop : asyncio.AbstractEventLoop
        The loop on which the source's ``frames`` are read.

    Raises
    ------
    ConfigError
        If the URL's scheme or (for ``synthetic://``) its query is invalid.
    """
    try:
        kind = input_kind(config.url)
    except ValueError as err:
        raise ConfigError(f"streams[{config.id}].{err}") from None
    return SOURCES[kind](config, metrics, loop)
