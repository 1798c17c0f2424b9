"""Logging: JSON lines off a TTY, stdlib records routed through structlog."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from edge.observability import LIBRARY_LOGGERS, configure_logging

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z$")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    lib_levels = {n: logging.getLogger(n).level for n in LIBRARY_LOGGERS}
    yield
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)
    for n, lvl in lib_levels.items():
        logging.getLogger(n).setLevel(lvl)
    structlog.reset_defaults()


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_structlog_events_are_json_lines_when_not_a_tty() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    log = structlog.get_logger("edge.pipeline").bind(stream="cam1", stage="detect")
    log.info("detector_loaded", backend="onnxruntime", seconds=0.42)
    log.debug("frame_decoded")  # below the level
    (line,) = _lines(out)
    assert line["event"] == "detector_loaded"
    assert line["level"] == "info"
    assert line["logger"] == "edge.pipeline"
    assert (line["stream"], line["stage"], line["seconds"]) == ("cam1", "detect", 0.42)
    assert ISO_UTC.match(line["timestamp"]), line["timestamp"]


def test_stdlib_loggers_go_through_structlog_at_warning() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    logging.getLogger("aiortc.rtcpeerconnection").info("ICE checks %s", "chatty")
    logging.getLogger("aiohttp.server").warning("client sent %d bad bytes", 3)
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    logging.getLogger("edge.sources").info("plain stdlib logger of ours")
    lines = _lines(out)
    assert [(x["logger"], x["level"], x["event"]) for x in lines] == [
        ("aiohttp.server", "warning", "client sent 3 bad bytes"),
        ("asyncio", "error", "Task exception was never retrieved"),
        ("edge.sources", "info", "plain stdlib logger of ours"),
    ]
    assert all(ISO_UTC.match(x["timestamp"]) for x in lines)


def test_exceptions_become_structured_tracebacks() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    try:
        raise ValueError("bad frame size")
    except ValueError:
        structlog.get_logger("edge.web").exception("http_handler_failed", path="/x")
        logging.getLogger("aiohttp.web").exception("Error handling request")
    ours, theirs = _lines(out)
    for line in (ours, theirs):
        assert line["exception"][0]["exc_type"] == "ValueError"
        assert line["exception"][0]["exc_value"] == "bad frame size"
    assert ours["path"] == "/x"


def test_calling_twice_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging("debug", stream=second, library_level="info")
    log = structlog.get_logger("edge.track")
    log.debug("track_started", track=3)
    logging.getLogger("aiortc").info("now visible")
    assert first.getvalue() == ""
    assert [x["event"] for x in _lines(second)] == ["track_started", "now visible"]
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "dishtracker"]
    assert len(ours) == 1


def test_console_renderer_when_asked() -> None:
    out = io.StringIO()
    configure_logging(json=False, stream=out)
    structlog.get_logger("edge").warning("source_reconnecting", stream="cam2")
    text = out.getvalue()
    assert "source_reconnecting" in text
    assert "stream=cam2" in text
    assert "\x1b[" not in text  # no colours into a file
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="log level 'loud' is unknown"):
        configure_logging("loud", stream=io.StringIO())
