"""The first pipeline stage: cameras, streams and files to :class:`edge.frames.Frame` s.

``make_source(config, metrics, loop)`` picks the class from the stream URL;
``await source.run()`` runs it; ``await source.frames.get()`` takes frames;
``await source.stop()`` ends it. See :mod:`edge.sources.base` for the thread
and state model.
"""

from edge.sources.av_input import AvInput, av_input, input_kind
from edge.sources.av_source import AvSource
from edge.sources.backoff import Backoff
from edge.sources.base import Source, SourceState
from edge.sources.credentials import mask_text, mask_url
from edge.sources.factory import SOURCES, make_source
from edge.sources.synthetic import SyntheticSource

__all__ = [
    "SOURCES",
    "AvInput",
    "AvSource",
    "Backoff",
    "Source",
    "SourceState",
    "SyntheticSource",
    "av_input",
    "input_kind",
    "make_source",
    "mask_text",
    "mask_url",
]
