"""Logging setup of the daemon: structlog for our events, stdlib loggers routed through it.

Every stage logs through ``structlog.get_logger(__name__)`` with snake_case
event names and ``stream``, ``stage`` or ``peer`` bound as context; nothing
logs per frame (frame counts go to :mod:`edge.metrics`). Under systemd stdout
is not a TTY, so each event is one JSON object per line, which the journal
stores and ``journalctl -u dishtracker -o cat | jq`` reads back; on a
terminal the same events render for humans.

Library loggers (aiohttp, aiortc, aioice, asyncio, PyAV's ``libav``) go
through the same :class:`structlog.stdlib.ProcessorFormatter`, so their
records come out in the same format, at WARNING unless asked otherwise
(aiortc and aioice log every ICE check at INFO).

Every line passes :func:`mask_credentials` last, whoever wrote it: a camera
password in a stream URL (user info, query, path parameters, NVR path
styles; :mod:`edge.sources.credentials`) never reaches the journal, not even
inside an error text that FFmpeg or a library built from the URL, or in a
traceback's locals.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from edge.sources.credentials import mask_text

LIBRARY_LOGGERS = ("aiohttp", "aiortc", "aioice", "asyncio", "libav")
"""Third-party loggers held at ``library_level``."""

_HANDLER_NAME = "dishtracker"  # marks our root handler so a second call replaces it


def configure_logging(level: str = "info", *, json: bool | None = None,
                      stream: TextIO | None = None, library_level: str = "warning") -> None:
    """Set up structlog and the stdlib root logger; safe to call again.

    Parameters
    ----------
    level
        Level of the daemon's own loggers: ``debug``, ``info``, ``warning``,
        ``error`` or ``critical``.
    json
        One JSON object per line when true, coloured console lines when
        false; ``None`` picks JSON unless ``stream`` is a TTY.
    stream
        Where lines go; ``sys.stdout`` by default (systemd's journal).
    library_level
        Level of the loggers in :data:`LIBRARY_LOGGERS`.

    Raises
    ------
    ValueError
        For an unknown level name.
    """
    out = stream if stream is not None else sys.stdout
    root_level = _level(level)
    lib_level = _level(library_level)
    use_json = not _isatty(out) if json is None else json

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    final: list[Processor]
    if use_json:
        final = [structlog.processors.dict_tracebacks, mask_credentials,
                 structlog.processors.JSONRenderer()]
    else:
        final = [structlog.processors.format_exc_info, mask_credentials,
                 structlog.dev.ConsoleRenderer(colors=_isatty(out))]

    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.PositionalArgumentsFormatter(),
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a second configure_logging() (tests, `dishtracker run` after
        # `check-config`) must reach loggers created at import time.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )
    handler = logging.StreamHandler(out)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(root_level)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(lib_level)


def mask_credentials(logger: WrappedLogger, method: str, event: EventDict) -> EventDict:
    """structlog processor: :func:`edge.sources.credentials.mask_text` on every
    string of the event, nested ones (tracebacks, lists of URLs) included."""
    return {key: _masked(value, 0) for key, value in event.items()}


_MAX_DEPTH = 12  # a traceback dict is about six levels deep


def _masked(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {k: _masked(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_masked(v, depth + 1) for v in value]
    return value


def _level(name: str) -> int:
    value = logging.getLevelName(name.upper())
    if not isinstance(value, int):
        raise ValueError(f"log level {name!r} is unknown; use debug, info, warning, error "
                         "or critical")
    return value


def _isatty(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty()) if callable(isatty) else False
