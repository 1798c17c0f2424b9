"""The site config: one TOML file, validated by pydantic at the boundary.

``dishtracker run`` without ``--config`` uses the built-in defaults (one
synthetic camera, the shipped model, ONNX Runtime on the CPU). Invalid config
is refused with every error's field path and reason; a running daemon keeps
its last good config (see :mod:`edge.web.app`).
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.errors import ConfigError
from edge.sim.menu import MENU, Kind

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

DEFAULT_MODEL = Path(__file__).parent / "models" / "dishnet.onnx"
StreamId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IceServer(_Strict):
    """A STUN or TURN server for WebRTC (not needed on a LAN)."""

    urls: list[str] = Field(min_length=1)
    username: str | None = None
    credential: str | None = None


class ServerConfig(_Strict):
    """HTTP and WebRTC."""

    host: str = "0.0.0.0"  # the cashier's browser is on another machine
    port: int = Field(8080, ge=1, le=65535)
    max_peers: int = Field(8, ge=1, le=256, description="WebRTC viewers in total")
    codec: Literal["vp8", "h264"] = "vp8"
    ice_servers: list[IceServer] = Field(default_factory=list)


class DetectorConfig(_Strict):
    """Detection stage."""

    model: Path = DEFAULT_MODEL
    backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    threads: int = Field(1, ge=1, le=64, description="inference threads (ONNX Runtime)")
    score_threshold: float = Field(0.3, gt=0.0, lt=1.0)
    max_rate_hz: float = Field(20.0, gt=0.0, le=120.0, description="per stream, at most")
    min_rate_hz: float = Field(2.0, gt=0.0, le=120.0, description="per stream, under load")
    max_wait_ms: float = Field(
        30.0, ge=0.0, le=1000.0,
        description="how long a frame waits for its own detection before it goes out with "
                    "the tracker's prediction (the detection then moves to a later frame)")

    @model_validator(mode="after")
    def _rates(self) -> DetectorConfig:
        if self.min_rate_hz > self.max_rate_hz:
            raise ValueError("min_rate_hz must not exceed max_rate_hz")
        return self


class TrackerConfig(_Strict):
    """Norfair tracking per stream."""

    iou_threshold: float = Field(0.2, gt=0.0, lt=1.0, description="min IoU to match")
    hit_counter_max: int = Field(15, ge=1, le=1000, description="frames a track survives unseen")
    initialization_delay: int = Field(2, ge=0, le=100)
    optical_flow: bool = Field(True, description="move a tray by optical flow over its region "
                                                 "in frames where neither it nor its dishes "
                                                 "were detected")


class MenuEntry(_Strict):
    """One class of the detector as the till sees it."""

    name: str = Field(min_length=1, max_length=80)
    price: float = Field(ge=0.0, le=100000.0)
    billable: bool = Field(True, description="false for clutter (cutlery, phones ...)")


def _default_menu() -> dict[str, MenuEntry]:
    return {item.key: MenuEntry(name=item.name, price=item.price, billable=item.kind is Kind.DISH)
            for item in MENU if item.kind is not Kind.TRAY}


class BillingConfig(_Strict):
    """How dishes on trays become bills."""

    confirm_below: float = Field(0.75, ge=0.0, le=1.0,
                                 description="a bill line whose class confidence is below this "
                                             "is flagged for the cashier to confirm")
    min_item_hits: int = Field(3, ge=1, le=1000,
                               description="detections a dish needs before it is billed")


class CheckoutConfig(_Strict):
    """Where a stream's trays are billed: when their centre crosses the line
    in ``direction`` by more than ``hysteresis_px`` (or leave the view past it)."""

    line: tuple[tuple[float, float], tuple[float, float]] | None = Field(
        None, description="two points in source pixels; default: vertical at 62 % of the width")
    direction: tuple[float, float] = Field((1.0, 0.0), description="the way trays travel")
    hysteresis_px: float = Field(12.0, ge=0.0, le=1000.0)

    @model_validator(mode="after")
    def _geometry(self) -> CheckoutConfig:
        if self.direction[0] == 0 and self.direction[1] == 0:
            raise ValueError("direction must not be (0, 0)")
        if self.line is not None and self.line[0] == self.line[1]:
            raise ValueError("line needs two distinct points")
        return self


class StorageConfig(_Strict):
    """Where the daemon keeps its state (journal, token, engine cache)."""

    dir: Path = Path("var")


class StreamConfig(_Strict):
    """One camera."""

    id: StreamId
    url: str = Field(min_length=1, description="rtsp://, http(s)://, udp://, file path, "
                     "/dev/videoN or synthetic://?seed=…")
    enabled: bool = True
    transport: Literal["tcp", "udp"] = "tcp"
    loop: bool = Field(True, description="files only: start again at the end")
    stall_timeout_s: float = Field(5.0, gt=0.0, le=300.0)
    checkout: CheckoutConfig = Field(default_factory=CheckoutConfig)
    reconnect_initial_s: float = Field(0.5, gt=0.0, le=60.0)
    reconnect_max_s: float = Field(10.0, gt=0.0, le=600.0)
    options: dict[str, str] = Field(default_factory=dict, description="extra FFmpeg options")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        known = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "rtp://", "file://",
                 "synthetic://", "/", "./", "../")
        if not url.startswith(known) and "://" in url:
            raise ValueError(f"unsupported URL scheme in {url!r}")
        return url


def _default_streams() -> list[StreamConfig]:
    return [StreamConfig(id="cam1", url="synthetic://?seed=1&fps=20&size=640x480")]


class SiteConfig(_Strict):
    """Everything a site configures."""

    server: ServerConfig = Field(default_factory=ServerConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    billing: BillingConfig = Field(default_factory=BillingConfig)
    menu: dict[str, MenuEntry] = Field(default_factory=_default_menu,
                                       description="detector class name -> name and price")
    streams: list[StreamConfig] = Field(default_factory=_default_streams)

    @model_validator(mode="after")
    def _unique_ids(self) -> SiteConfig:
        ids = [s.id for s in self.streams]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"stream ids must be unique, repeated: {dup}")
        return self


def format_errors(err: ValidationError) -> list[str]:
    """One ``field.path: reason`` line per validation error."""
    out = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(root)"
        out.append(f"{path}: {e['msg']}")
    return out


def parse_config(data: dict[str, Any], *, source: str = "config") -> SiteConfig:
    """Validate a config mapping.

    Raises
    ------
    ConfigError
        With one line per error (``field.path: reason``); ``.errors`` holds them.
    """
    try:
        return SiteConfig.model_validate(data)
    except ValidationError as err:
        lines = format_errors(err)
        exc = ConfigError(f"{source}: {len(lines)} error(s):\n  " + "\n  ".join(lines))
        exc.errors = lines  # type: ignore[attr-defined]
        raise exc from None


def load_config(path: Path | None) -> SiteConfig:
    """Read and validate a TOML site config; ``None`` gives the built-in defaults."""
    if path is None:
        return SiteConfig()
    try:
        data = tomllib.loads(path.read_text())
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return parse_config(data, source=str(path))


def to_toml(config: SiteConfig) -> str:
    """Serialise a config as TOML (tables in a stable order)."""
    data = json.loads(config.model_dump_json())
    lines: list[str] = []
    for table in ("server", "detector", "tracker", "storage", "billing", "menu"):
        lines.append(f"[{table}]")
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data[table].items()
                  if v is not None]
        lines.append("")
    for stream in data["streams"]:
        lines.append("[[streams]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in stream.items() if v is not None]
        lines.append("")
    return "\n".join(lines)


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_string(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_string(k)} = {_toml_value(x)}" for k, x in v.items()
                                if x is not None) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_string(s: str) -> str:
    # Not json.dumps: JSON writes astral characters as surrogate pairs (\ud83d\ude00) and
    # leaves DEL raw; TOML forbids both in basic strings.
    out = ['"']
    for ch in s:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(_TOML_ESCAPES.get(ch, f"\\u{code:04X}"))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_TOML_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def write_config_atomic(path: Path, config: SiteConfig) -> None:
    """Write ``config`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    text = to_toml(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
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


def json_schema() -> dict[str, Any]:
    """JSON schema of the site config (``GET /api/config/schema``)."""
    return SiteConfig.model_json_schema()


#: Fields a running daemon cannot change in place: they bind the listening socket,
#: load the model into the inference executor, or move the state directory. Every
#: other field (streams, tracker, thresholds, rates, WebRTC settings for new peers)
#: can be applied live. :func:`classify_changes` sorts a change by this list.
RESTART_FIELDS: tuple[str, ...] = (
    "server.host", "server.port",
    "detector.model", "detector.backend", "detector.threads",
    "storage.dir",
)


def changed_fields(old: SiteConfig, new: SiteConfig) -> list[str]:
    """Dotted paths of the fields that differ between two configs.

    Streams are matched by id, not list position: ``streams.cam1.url`` names a
    changed field, ``streams.cam2`` a stream added or removed, and ``streams``
    alone a change of order only.
    """
    a, b = json.loads(old.model_dump_json()), json.loads(new.model_dump_json())
    out: list[str] = []
    for table in ("server", "detector", "tracker", "storage"):
        out += [f"{table}.{k}" for k in a[table] if a[table][k] != b[table][k]]
    sa = {s["id"]: s for s in a["streams"]}
    sb = {s["id"]: s for s in b["streams"]}
    for sid in sorted(sa.keys() | sb.keys()):
        if sid not in sa or sid not in sb:
            out.append(f"streams.{sid}")
        else:
            out += [f"streams.{sid}.{k}" for k in sa[sid] if sa[sid][k] != sb[sid][k]]
    same_ids = sa.keys() == sb.keys()
    if same_ids and list(sa) != list(sb):
        out.append("streams")
    return out


def classify_changes(old: SiteConfig, new: SiteConfig) -> dict[str, list[str]]:
    """Split :func:`changed_fields` into what applies live and what needs a restart.

    Returns
    -------
    dict
        ``{"applied": [...], "restart_required": [...]}``: the shape
        ``DaemonControl.apply_config`` returns (see :mod:`edge.web.app`).
    """
    changed = changed_fields(old, new)
    restart = [f for f in changed if f in RESTART_FIELDS]
    return {"applied": [f for f in changed if f not in RESTART_FIELDS],
            "restart_required": restart}
