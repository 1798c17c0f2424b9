"""Every problem of a site config at once: the daemon's start check, and ``check-config``'s.

Before anything starts (``dishtracker run``, :func:`edge.daemon.serve`) and
in ``dishtracker check-config``: the same function, so the two cannot
disagree. It collects, in order of the layers, each problem as one
``field.path: reason`` line (:func:`edge.config.format_loc`):

1. the file: readable, UTF-8, TOML syntax (``line L, column C: …``);
2. the schema: every pydantic error, stream URLs parsed per scheme
   (:mod:`edge.stream_url`), duplicate stream ids;
3. what the daemon would meet at start: the model file and the rules backends
   load models by (:func:`edge.detect.contract.read_model_info`, no inference
   session: reading the metadata takes 3 ms for the shipped model), the INT8
   sibling that ``precision = "int8"`` needs, each stream's file or device and
   ``synthetic://`` query (the synthetic source's own parser), scene files,
   ``storage.dir`` (writable, or creatable: nothing is created here), the token
   file when it exists (never generated here) and the store of named tokens
   (``storage.dir/tokens.json``), the TLS pair, the fleet's MQTT client,
   password file and CA bundle.

When the schema refuses part of the config, the sections that validate on their
own (``detector``, ``server``, ``storage``, each stream, ``fleet``) still get
their checks of step 3: a bad camera URL does not hide a missing model.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import Any, TypeVar

import onnx
from pydantic import BaseModel, ValidationError

from edge.billing.service import JOURNAL_FILE
from edge.config import (
    DetectorConfig,
    FleetConfig,
    ServerConfig,
    SiteConfig,
    StorageConfig,
    StreamConfig,
    format_errors,
    load_config,
    refuse_on,
    with_scene_fields,
)
from edge.detect.contract import read_model_info
from edge.detect.engine_store import file_sha256
from edge.detect.precision import FLOAT_MODEL_SHA256, usable_int8
from edge.errors import ConfigError, ModelError
from edge.scene import read_scene
from edge.sources.av_input import file_path, input_kind
from edge.sources.synthetic import synthetic_spec
from edge.web.access import TokenFileError, load_token, token_path
from edge.web.tls import server_ssl_context
from edge.web.tokens import TOKENS_FILE, TokenStore

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

_Section = TypeVar("_Section", bound=BaseModel)
_TOML_AT = re.compile(r"(?P<what>.*) \(at line (?P<line>\d+), column (?P<col>\d+)\)", re.DOTALL)


def check_site(path: Path) -> list[str]:
    """Every problem of the site config file ``path``, one ``field.path: reason`` each.

    Returns
    -------
    list of str
        Empty when the daemon would start with this file. Lines without a
        field path come from the file itself (``cannot read: …``,
        ``line 3, column 7: not valid TOML: …``).
    """
    try:
        raw = path.read_bytes()
    except OSError as err:
        return [f"cannot read: {err.strerror}"]
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - raw.rfind(b"\n", 0, err.start)
        return [f"line {line}, column {column}: not UTF-8 text (TOML files are UTF-8)"]
    except tomllib.TOMLDecodeError as err:
        at = _TOML_AT.fullmatch(str(err))
        if at is None:
            return [f"not valid TOML: {err}"]
        return [f"line {at['line']}, column {at['col']}: not valid TOML: {at['what']}"]
    return check_mapping(data, base_dir=path.parent)


def check_mapping(data: dict[str, Any], *, base_dir: Path | None = None) -> list[str]:
    """Every problem of a config mapping: schema errors, then what :func:`check_config`
    finds in the config, or in the sections that validate when the whole does not.

    Parameters
    ----------
    base_dir : Path, optional
        Folder that relative ``scene`` paths start from (the config file's);
        default: the working directory.
    """
    try:
        config = SiteConfig.model_validate(data)
    except ValidationError as err:
        return format_errors(err) + _check_parts(data, base_dir)
    return check_config(config, base_dir=base_dir)


def check_config(config: SiteConfig, *, base_dir: Path | None = None) -> list[str]:
    """What the daemon would refuse or fail on at start with a schema-valid ``config``.

    Reads files and folders, creates nothing. Relative stream file paths
    start from the working directory (where the daemon opens them), relative
    ``scene`` paths from ``base_dir`` (default: the working directory).
    """
    lines = _detector(config.detector)
    lines += _server(config.server, config.storage)
    lines += _storage(config.storage)
    for i, stream in enumerate(config.streams):
        lines += _stream(i, stream, base_dir)
    return lines + _fleet(config.fleet)


def load_checked(path: Path | None) -> SiteConfig:
    """:func:`edge.config.load_config` after :func:`check_site` found nothing.

    Raises
    ------
    ConfigError
        Listing every problem (``.errors``), one ``field.path: reason`` a line.
    """
    if path is not None:
        refuse_on(check_site(path), source=str(path))
    return load_config(path)


def _check_parts(data: dict[str, Any], base_dir: Path | None) -> list[str]:
    """The checks of the sections of an invalid config that validate on their own."""
    detector = _valid(DetectorConfig, data.get("detector", {}))
    server = _valid(ServerConfig, data.get("server", {}))
    storage = _valid(StorageConfig, data.get("storage", {}))
    fleet = _valid(FleetConfig, data.get("fleet", {}))
    lines = _detector(detector) if detector is not None else []
    if server is not None and storage is not None:
        lines += _server(server, storage)
    if storage is not None:
        lines += _storage(storage)
    streams = data.get("streams")
    if isinstance(streams, list):
        for i, item in enumerate(streams):
            stream = _valid(StreamConfig, item)
            if stream is not None:
                lines += _stream(i, stream, base_dir)
    return lines + (_fleet(fleet) if fleet is not None else [])


def _valid(model: type[_Section], raw: object) -> _Section | None:
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None  # already reported by the whole config's validation


def _detector(detector: DetectorConfig) -> list[str]:
    try:
        read_model_info(detector.model)
    except ModelError as err:
        return [f"detector.model: {err}"]
    if detector.precision != "int8":
        return []
    int8, why_not = usable_int8(detector.model, file_sha256(detector.model))
    if int8 is not None or _is_int8(detector.model):
        return []
    return [f"detector.precision: 'int8' needs an INT8 model made from {detector.model}: "
            f"{why_not}; make one with `dishtracker calibrate quantize`, or set 'auto' or "
            "'fp32'"]


def _is_int8(model: Path) -> bool:
    """True when ``model`` is itself an INT8 model made by ``calibrate quantize``."""
    proto = onnx.load(model, load_external_data=False)
    return any(p.key == FLOAT_MODEL_SHA256 for p in proto.metadata_props)


def _server(server: ServerConfig, storage: StorageConfig) -> list[str]:
    lines: list[str] = []
    path = token_path(server, storage)
    if server.token_file is not None or os.path.lexists(path):  # never generate it here
        try:
            load_token(server, storage)
        except TokenFileError as err:
            lines.append(f"server.token_file: {str(err).removeprefix('server.token_file: ')}")
    try:
        if storage.dir.is_dir():  # else _storage says why the daemon cannot use it
            TokenStore(storage.dir / TOKENS_FILE).entries()  # absent: no named tokens
    except TokenFileError as err:
        lines.append(f"storage.dir: {err}")
    try:
        server_ssl_context(server)
    except ConfigError as err:
        lines.append(str(err))  # names its field already
    return lines


def _storage(storage: StorageConfig) -> list[str]:
    folder = storage.dir
    if folder.is_dir():
        journal = folder / JOURNAL_FILE
        if not os.access(folder, os.W_OK | os.X_OK):
            return [f"storage.dir: the folder {folder} is not writable by the daemon's user; "
                    "fix its permissions or set storage.dir"]
        if journal.exists() and not os.access(journal, os.R_OK | os.W_OK):
            return [f"storage.dir: the journal {journal} is not readable and writable by "
                    "the daemon's user; fix its permissions"]
        return []
    parent = folder.absolute()
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    why = ("exists and is not a folder" if parent == folder.absolute()
           else f"{parent} is not a folder" if not parent.is_dir()
           else f"{parent} is not writable" if not os.access(parent, os.W_OK | os.X_OK)
           else "")
    if not why:
        return []
    return [f"storage.dir: cannot create the journal folder {folder}: {why}; set "
            "storage.dir to a folder the daemon can write"]


def _stream(i: int, stream: StreamConfig, base_dir: Path | None) -> list[str]:
    lines: list[str] = []
    kind = input_kind(stream.url)
    if kind == "synthetic":
        try:
            synthetic_spec(stream.url)
        except ConfigError as err:
            lines.append(f"streams.{i}.{err}")  # the parser's message starts with "url: "
    elif stream.enabled and kind in ("file", "v4l2"):
        path = file_path(stream.url)
        if not path.exists():
            what = "file" if kind == "file" else "device (camera unplugged?)"
            lines.append(f"streams.{i}.url: {path}: no such {what}")
        elif kind == "file" and not path.is_file():
            lines.append(f"streams.{i}.url: {path}: not a file")
    if stream.scene is not None:
        lines += _scene(i, stream, Path(base_dir or Path.cwd()) / stream.scene)
    return lines


def _scene(i: int, stream: StreamConfig, path: Path) -> list[str]:
    """The problems of a stream's scene file, and of its fields merged into the checkout
    (as :func:`edge.config.parse_config` merges them)."""
    try:
        scene = read_scene(path)
        with_scene_fields(stream.checkout, scene.checkout_fields())
    except ConfigError as err:
        return [f"streams.{i}.scene: {err}"]
    except ValidationError as err:
        return [f"streams.{i}.scene: {path}: checkout.{line}" for line in format_errors(err)]
    return []


def _fleet(fleet: FleetConfig) -> list[str]:
    if not fleet.enabled:
        return []
    lines: list[str] = []
    if importlib.util.find_spec("aiomqtt") is None:
        lines.append("fleet.enabled: true, but the MQTT client (aiomqtt) is not installed: "
                     "pip install 'dishtracker-edge[mqtt]', or set fleet.enabled = false")
    try:
        fleet.read_password()
    except ConfigError as err:
        lines.append(str(err))  # names its field already
    if fleet.ca_file is not None and not fleet.ca_file.is_file():
        lines.append(f"fleet.ca_file: {fleet.ca_file} is not a file")
    return lines
