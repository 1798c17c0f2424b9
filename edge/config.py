"""The site config: one TOML file, validated by pydantic at the boundary.

``dishtracker run`` without ``--config`` uses the built-in defaults (one
synthetic camera, the shipped model, ONNX Runtime on the CPU). Invalid config
is refused with every error's field path and reason; a running daemon keeps
its last good config (see :mod:`edge.web.app`).
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from edge.catalogue import CATALOGUE, Kind
from edge.errors import ConfigError
from edge.fsutil import write_atomic
from edge.stream_url import check_stream_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (JetPack 6)
    import tomli as tomllib

DEFAULT_MODEL = Path(__file__).parent / "models" / "dishnet.onnx"
StreamId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")]


class _Strict(BaseModel):
    # allow_inf_nan: JSON bodies may spell NaN and Infinity (json.loads reads them, and
    # 1e999 is inf); no field means them, and GET /api/config could not answer them as JSON
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class IceServer(_Strict):
    """A STUN or TURN server for WebRTC (not needed on a LAN)."""

    urls: list[str] = Field(min_length=1)
    username: str | None = None
    credential: str | None = None


_HOST_NAME = re.compile(r"\*|\.?[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})|\[?[0-9A-Fa-f:.]{2,45}\]?")


def _host_name(value: str) -> str:
    if not _HOST_NAME.fullmatch(value):
        raise ValueError(f"{value!r} is not a host name, an address, '.domain' or '*' "
                         "(no port, no scheme)")
    return value.lower().strip("[]")


HostName = Annotated[str, AfterValidator(_host_name)]
"""An entry of ``server.allowed_hosts``."""


class ServerConfig(_Strict):
    """HTTP and WebRTC."""

    host: str = "0.0.0.0"  # the cashier's browser is on another machine
    port: int = Field(8080, ge=1, le=65535)
    max_peers: int = Field(8, ge=1, le=256, description="WebRTC viewers in total")
    codec: Literal["vp8", "h264"] = Field(
        "h264", description="the video codec offered first to viewers; the others the "
                            "browser offers stay as fallback (H.264 by default: in headless "
                            "Chromium on a 2-core box it gave 1-3 fps more and 40-70 ms "
                            "less delay than VP8, docs/BENCHMARKS.md)")
    overlay: Literal["cashier", "engineer"] = Field(
        "cashier", description="what the video shows a viewer whose WebRTC offer names no "
                               "overlay: cashier (trays with their bill so far, dishes by menu "
                               "name, flagged ones marked) or engineer (track ids, class keys, "
                               "vote shares, the corner stamp)")
    ice_servers: list[IceServer] = Field(default_factory=list)
    token_file: Path | None = Field(
        None, description="file holding the bearer token that changes need (owner-only "
                          "permissions, 0600); default: storage.dir/token, generated on the "
                          "first start (docs/SECURITY.md)")
    tls_cert: Path | None = Field(None, description="PEM certificate (chain): serve HTTPS")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    offers_per_minute: float = Field(
        30.0, gt=0.0, le=6000.0, description="WebRTC offers one client address may send, "
                                             "on average (token bucket)")
    offer_burst: int = Field(10, ge=1, le=1000, description="offers one client address may "
                                                           "send at once")
    allowed_hosts: list[HostName] = Field(
        default_factory=list, max_length=64,
        description="names (and addresses) the daemon answers to in the Host header besides "
                    "localhost, this box's host name and its own addresses; '.example.org' "
                    "takes its subdomains too, '*' turns the check off (docs/SECURITY.md)")
    event_streams_per_address: int = Field(
        4, ge=1, le=32, description="GET /api/events streams one client address may hold "
                                    "open without the token")
    event_streams_per_token: int = Field(
        8, ge=1, le=32, description="GET /api/events streams that carry the token may hold "
                                    "open; these slots are kept free of streams without it")

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both for HTTPS, or neither")
        return self


class DetectorConfig(_Strict):
    """Detection stage."""

    # the schema names the shipped model relative to the package: the published schemas
    # (GET /api/config/schema, docs/openapi.json) must not depend on the install folder
    model: Path = Field(DEFAULT_MODEL, json_schema_extra={"default": "edge/models/dishnet.onnx",
                                                          "description": "ONNX model; default: "
                                                          "the shipped one"})
    backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    threads: int = Field(1, ge=1, le=64, description="inference threads (ONNX Runtime)")
    score_threshold: float = Field(0.3, gt=0.0, lt=1.0)
    max_rate_hz: float = Field(20.0, gt=0.0, le=120.0, description="per stream, at most")
    min_rate_hz: float = Field(2.0, gt=0.0, le=120.0, description="per stream, under load")
    max_wait_ms: float = Field(
        30.0, ge=0.0, le=1000.0,
        description="how long a frame waits for its own detection before it goes out with "
                    "the tracker's prediction (the detection then moves to a later frame)")
    fallback_to_cpu: bool = Field(
        True, description="backend tensorrt: when TensorRT, pycuda or a GPU is missing, log the "
                          "reason once (detector_backend_fallback) and run ONNX Runtime on the "
                          "CPU; false refuses to start instead")
    precision: Literal["auto", "fp32", "int8"] = Field(
        "fp32", description="backend onnxruntime: auto times the model and its INT8 sibling "
                            "(<model>-int8.onnx, made from this model by `calibrate quantize`) "
                            "at start and runs the faster (cached under storage.dir/precision); "
                            "fp32 or int8 force one (int8 refuses to start without the sibling). "
                            "fp32 by default: the shipped INT8 model billed the tuning set's "
                            "hard level worse (docs/BENCHMARKS.md)")

    @model_validator(mode="after")
    def _rates(self) -> DetectorConfig:
        if self.min_rate_hz > self.max_rate_hz:
            raise ValueError("min_rate_hz must not exceed max_rate_hz")
        if self.precision == "int8" and self.backend != "onnxruntime":
            raise ValueError("precision 'int8' is for backend 'onnxruntime'; TensorRT builds "
                             "INT8 from a Q/DQ model named in detector.model")
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
    enabled: bool = Field(True, description="false: off the menu for now; the dish is still "
                                            "detected and billed, but its line is flagged for "
                                            "the cashier's review, and corrections cannot add "
                                            "it")


def _default_menu() -> dict[str, MenuEntry]:
    return {item.key: MenuEntry(name=item.name, price=item.price, billable=item.kind is Kind.DISH)
            for item in CATALOGUE if item.kind is not Kind.TRAY}


class BillingConfig(_Strict):
    """How dishes on trays become bills."""

    confirm_below: float = Field(0.75, ge=0.0, le=1.0,
                                 description="a bill line whose class confidence is below this "
                                             "is flagged for the cashier to confirm")
    min_item_hits: int = Field(3, ge=1, le=1000,
                               description="detections a dish needs before it is billed")
    noise_guard: bool = Field(
        False, description="experimental: bill a dish only on evidence a false detection "
                           "cannot give (seen over 5 frames by one track, as one class if "
                           "under 10, in 30 % of them or 10 times), drop detections fixed "
                           "in the picture while a tray slides under them and places where "
                           "the detector fires with no tray under it (spots), carry a lost "
                           "tray's dishes over the gap, flag a bill whose tray was partly "
                           "hidden at the line; far better under the noise harness, but "
                           "below the default on the held-out hard level "
                           "(docs/BENCHMARKS.md)")


class CheckoutConfig(_Strict):
    """Where a stream's trays are billed: when their centre crosses the line
    in ``direction`` by more than ``hysteresis_px`` (or leave the view past it)."""

    line: tuple[tuple[float, float], tuple[float, float]] | None = Field(
        None, description="two points in source pixels; default: vertical at 62 % of the width")
    direction: tuple[float, float] = Field((1.0, 0.0), description="the way trays travel")
    hysteresis_px: float = Field(12.0, ge=0.0, le=1000.0)
    region: tuple[tuple[float, float], ...] | None = Field(
        None, description="the counter region where trays move: a polygon in source pixels "
                          "(measured by scene calibration; informational)")
    speed_px_s: float | None = Field(
        None, gt=0.0, le=100000.0,
        description="typical tray speed while moving, source pixels per second "
                    "(measured by scene calibration; informational)")

    @model_validator(mode="after")
    def _geometry(self) -> CheckoutConfig:
        if self.direction[0] == 0 and self.direction[1] == 0:
            raise ValueError("direction must not be (0, 0)")
        if self.line is not None and self.line[0] == self.line[1]:
            raise ValueError("line needs two distinct points")
        if self.region is not None and len(self.region) < 3:
            raise ValueError(f"region needs at least 3 points, got {len(self.region)}")
        return self


_CURRENCY_CODES = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD "
    "BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB "
    "EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK "
    "JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA "
    "MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK "
    "PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN "
    "SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST "
    "XAF XCD XOF XPF YER ZAR ZMW ZWL")
CURRENCIES: frozenset[str] = frozenset(_CURRENCY_CODES.split())
"""ISO 4217 codes of circulating currencies that ``till.currency`` accepts."""

# BCP 47 shape (RFC 5646 without grandfathered tags): language, script, region, variants
_LOCALE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|[0-9]{3}))?"
                     r"(-([A-Za-z0-9]{5,8}|[0-9][A-Za-z0-9]{3}))*")


def _currency(value: str) -> str:
    if value not in CURRENCIES:
        hint = " (upper-case)" if value.upper() in CURRENCIES else ""
        raise ValueError(f"{value!r} is not an ISO 4217 currency code{hint}, e.g. EUR, USD, "
                         "CHF, GBP")
    return value


def _locale(value: str) -> str:
    if len(value) > 35 or not _LOCALE.fullmatch(value):
        raise ValueError(f"{value!r} is not a BCP 47 language tag such as en-US, de-DE, "
                         "fr-CH or sr-Latn-RS")
    return value


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
    return value


class TillConfig(_Strict):
    """The till: money shown to the cashier, and the POS that takes handed-over bills."""

    currency: Annotated[str, AfterValidator(_currency)] = Field(
        "EUR", description="ISO 4217 code of the menu's prices (EUR, USD, CHF …)")
    locale: Annotated[str, AfterValidator(_locale)] = Field(
        "en-US", description="BCP 47 tag for number and date formats on the pages (en-US, "
                             "de-DE …)")
    pos_webhook_url: Annotated[str | None, AfterValidator(_http_url)] = Field(
        None, max_length=2000,
        description="http(s) URL of the POS: each handed-over bill (and each later correction "
                    "of it) is POSTed there as JSON with an Idempotency-Key header, retried "
                    "until a 2xx (docs/API.md)")


class StorageConfig(_Strict):
    """Where the daemon keeps its state (journal, token, engine cache)."""

    dir: Path = Path("var")


_TOPIC_LEVEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _topic_level(value: str) -> str:
    if not _TOPIC_LEVEL.fullmatch(value):
        raise ValueError(f"{value!r} is not one MQTT topic level: use 1-64 of A-Z a-z 0-9 "
                         "_ . - (no '/', '+', '#' or spaces)")
    return value


TopicLevel = Annotated[str, AfterValidator(_topic_level)]
"""One MQTT topic level of the fleet's topics."""

_MASKED = "**********"  # what GET /api/config shows for a SecretStr

# Not SecretStr's writeOnly schema: GET /api/config answers the field (masked), and the
# OpenAPI description (edge.web.openapi) checks answers against the same schema.
Secret = Annotated[SecretStr, WithJsonSchema({"type": "string", "format": "password"})]


class FleetConfig(_Strict):
    """Fleet events over MQTT: bills, corrections, status and health (docs/FLEET.md)."""

    enabled: bool = Field(False, description="publish to the broker (needs the mqtt extra)")
    host: str = Field("localhost", min_length=1, max_length=253)
    port: int | None = Field(None, ge=1, le=65535, description="default: 1883, 8883 with tls")
    tls: bool = False
    ca_file: Path | None = Field(None, description="tls: CA bundle; default: the system's")
    username: str | None = Field(None, min_length=1, max_length=256)
    password: Secret | None = Field(
        None, description="prefer password_file; GET /api/config shows it masked")
    password_file: Path | None = Field(None, description="file whose first line is the password")
    site: TopicLevel | None = Field(None, description="topic level; required when enabled")
    box: TopicLevel | None = Field(None, description="topic level; default: the host name")
    topic_prefix: TopicLevel = "dishtracker"
    keepalive_s: int = Field(60, ge=5, le=3600)
    health_interval_s: float = Field(30.0, ge=1.0, le=86400.0)
    retention_days: float = Field(7.0, ge=0.0, le=3650.0,
                                  description="sent outbox rows are kept this long")
    reconnect_initial_s: float = Field(1.0, gt=0.0, le=60.0)
    reconnect_max_s: float = Field(60.0, gt=0.0, le=3600.0)
    models: bool = Field(False, description="pull models: follow the retained model message "
                                            "of the site (and of group), download, verify, "
                                            "shadow, promote (docs/FLEET.md)")
    group: TopicLevel | None = Field(None, description="models: a group of sites whose "
                                                       "retained model message applies too")
    model_shadow_s: float = Field(600.0, ge=0.0, le=7 * 86400.0,
                                  description="models: shadow a pulled model this long")
    model_min_agreement: float = Field(
        0.98, ge=0.0, le=1.0,
        description="models: promote only if the shadow's bills agree with the serving "
                    "model's at least this often")
    model_min_bills: int = Field(
        10, ge=0, le=100000, description="models: promote only after this many compared bills")
    share_examples: bool = Field(
        False, description="publish the examples this box's corrections teach (embeddings, "
                           "never images) and merge those of the other boxes of the site "
                           "(docs/FLEET.md)")

    @model_validator(mode="after")
    def _consistent(self) -> FleetConfig:
        if self.enabled and self.site is None:
            raise ValueError("site is required when enabled is true (a topic level such "
                             "as 'canteen-north')")
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        if self.password is not None and self.password.get_secret_value() == _MASKED:
            raise ValueError("password is the mask GET /api/config shows; send the real "
                             "password or use password_file")
        if (self.password is not None or self.password_file is not None) and not self.username:
            raise ValueError("a password needs a username")
        if self.ca_file is not None and not self.tls:
            raise ValueError("ca_file needs tls = true")
        if self.reconnect_initial_s > self.reconnect_max_s:
            raise ValueError("reconnect_initial_s must not exceed reconnect_max_s")
        return self

    def broker_port(self) -> int:
        """``port``, or the MQTT default for the transport (1883, 8883 with TLS)."""
        return self.port if self.port is not None else (8883 if self.tls else 1883)

    def box_id(self) -> str:
        """``box``, or this machine's host name made a valid topic level."""
        if self.box is not None:
            return self.box
        name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:64]
        return name or "box"

    def read_password(self) -> str | None:
        """The broker password from ``password`` or ``password_file`` (first line).

        Raises
        ------
        ConfigError
            ``password_file`` cannot be read.
        """
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        try:
            lines = self.password_file.read_text().splitlines()
        except OSError as err:
            raise ConfigError(f"fleet.password_file: cannot read {self.password_file}: "
                              f"{err.strerror}") from err
        return lines[0] if lines else ""


class RolloutConfig(_Strict):
    """Models on the box: the registry under ``storage.dir/models``, shadow mode,
    promotion and rollback (docs/MODELS.md)."""

    max_upload_mb: float = Field(100.0, gt=0.0, le=4096.0,
                                 description="largest model POST /api/models accepts")
    shadow_busy_share: float = Field(
        0.5, gt=0.0, le=1.0,
        description="a shadowed candidate's inference thread is busy at most this share of "
                    "the time; frames over it are skipped (the serving streams keep their "
                    "frame rate)")
    shadow_streams: int = Field(
        1, ge=1, le=64,
        description="streams shadowed at once (the others are not); the shadow moves on to "
                    "the next streams every shadow_rotate_s. Each costs a second tracker and "
                    "the candidate's inference of its frames")
    shadow_rotate_s: float = Field(300.0, ge=10.0, le=86400.0)
    max_latency_ms: float = Field(
        150.0, gt=0.0, le=10000.0,
        description="a promoted model whose median batch time exceeds this for "
                    "latency_windows windows of 1 s is rolled back by itself")
    latency_windows: int = Field(3, ge=1, le=600)
    match_window_s: float = Field(
        2.0, gt=0.0, le=30.0,
        description="a shadow bill and a serving bill of one stream closed this close in "
                    "time are the same tray")


class LearningConfig(_Strict):
    """Learning on the job (docs/LEARNING.md): unknown dishes are flagged, and the
    cashier's corrections become examples that name the next trays' dishes."""

    enabled: bool = Field(
        True, description="cashier corrections teach (examples kept in the journal) and the "
                          "site's examples take part in naming dishes; needs a model with "
                          "the embeddings output")
    flag_unknown: bool = Field(
        True, description="a dish that looks like no class the model knows and no example "
                          "becomes an unknown line for the cashier; needs the model's "
                          "known-class bank (MODEL.bank.npz beside the model)")
    examples_per_class: int = Field(
        48, ge=1, le=10000,
        description="examples kept per menu entry and model; beyond it the most redundant "
                    "one goes")
    example_margin: float = Field(
        0.01, ge=0.0, le=1.0,
        description="the site's examples name a dish against the detector's class only when "
                    "their similarity beats that class's by this much")
    doubt_band: float = Field(
        0.02, ge=0.0, le=1.0,
        description="a dish this little under its class's bank threshold is billed as that "
                    "class, flagged for review with proposals, rather than as unknown")
    min_example_similarity: float = Field(
        0.8, ge=-1.0, le=1.0,
        description="examples less similar than this say nothing about a dish (measured in "
                    "the known-class bank's slice of the embedding when the model has one)")
    keep_views_days: float = Field(
        7.0, gt=0.0, le=3650.0,
        description="the dishes' views kept with each bill this long (a correction after "
                    "that teaches nothing)")
    max_questions: int = Field(
        200, ge=1, le=100000,
        description="frames most worth a label kept for the labelling workspace "
                    "(GET /api/questions)")


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
    scene: Path | None = Field(
        None, description="scene calibration file (`dishtracker calibrate scene`), relative "
                          "to the site config's folder; its line, direction, region and "
                          "speed_px_s replace this stream's checkout fields")
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
        check_stream_url(url)
        return url


def _default_streams() -> list[StreamConfig]:
    return [StreamConfig(id="cam1", url="synthetic://?seed=1&fps=20&size=640x480")]


DEFAULT_MAX_STREAMS = 8
"""Enabled streams a site may configure unless it sets ``max_streams``: every
stream costs a decode thread, a tracker and a share of the one detector, and
a few dozen starve the event loop of a small box (docs/SECURITY.md)."""


class SiteConfig(_Strict):
    """Everything a site configures."""

    max_streams: int = Field(
        DEFAULT_MAX_STREAMS, ge=1, le=64,
        description="enabled streams at most; more are refused at validation (raise it "
                    "only on a box measured to carry them)")
    server: ServerConfig = Field(default_factory=ServerConfig)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    billing: BillingConfig = Field(default_factory=BillingConfig)
    menu: dict[str, MenuEntry] = Field(default_factory=_default_menu,
                                       description="detector class name -> name and price")
    streams: list[StreamConfig] = Field(default_factory=_default_streams)
    fleet: FleetConfig = Field(default_factory=FleetConfig)
    till: TillConfig = Field(default_factory=TillConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    learning: LearningConfig = Field(default_factory=LearningConfig)

    @field_validator("menu")
    @classmethod
    def _no_reserved_key(cls, menu: dict[str, MenuEntry]) -> dict[str, MenuEntry]:
        if "unknown" in menu:
            raise ValueError("the key 'unknown' is reserved for unknown dishes' lines; "
                             "name the menu entry otherwise")
        return menu

    @model_validator(mode="after")
    def _unique_ids(self) -> SiteConfig:
        ids = [s.id for s in self.streams]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"stream ids must be unique, repeated: {dup}")
        return self

    @field_validator("streams")
    @classmethod
    def _at_most_max_streams(cls, streams: list[StreamConfig],
                             info: ValidationInfo) -> list[StreamConfig]:
        cap = info.data.get("max_streams")  # absent when max_streams itself is invalid
        enabled = sum(1 for s in streams if s.enabled)
        if cap is not None and enabled > cap:
            raise ValueError(f"{enabled} enabled streams exceed max_streams = {cap}; disable "
                             f"or remove {enabled - cap}, or raise max_streams")
        return streams


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def format_loc(loc: Sequence[int | str]) -> str:
    """A validation error's location as a dotted field path (``streams.0.url``).

    A key that is not plain (``A-Z a-z 0-9 _ -``) is written as a JSON string,
    ASCII-escaped (``menu."caf\u00e9 au lait".price``), so that a dot, a colon or
    a control character in a key cannot blur the path; the empty location is
    ``(root)``.
    """
    parts = [str(p) if isinstance(p, int) or _PLAIN_KEY.fullmatch(p) else json.dumps(p)
             for p in loc]
    return ".".join(parts) or "(root)"


def format_errors(err: ValidationError) -> list[str]:
    """One ``field.path: reason`` line per validation error (see :func:`format_loc`)."""
    return [f"{format_loc(e['loc'])}: {e['msg']}" for e in err.errors()]


def parse_config(data: dict[str, Any], *, source: str = "config",
                 base_dir: Path | None = None) -> SiteConfig:
    """Validate a config mapping and apply the streams' scene files.

    Parameters
    ----------
    base_dir : Path, optional
        Folder that relative ``scene`` paths start from (the config file's);
        default: the working directory. Scene paths come back absolute.

    Raises
    ------
    ConfigError
        With one line per error (``field.path: reason``); ``.errors`` holds them.
    """
    lines = _unpaired_surrogates(data, ())
    if not lines:
        try:
            config = SiteConfig.model_validate(data)
        except ValidationError as err:
            lines = format_errors(err)
        else:
            config, lines = _with_scenes(config, base_dir)
    refuse_on(lines, source=source)
    return config


def refuse_on(lines: list[str], *, source: str) -> None:
    """Raise one :class:`ConfigError` listing ``lines`` (``.errors``), if there are any."""
    if lines:
        exc = ConfigError(f"{source}: {len(lines)} error(s):\n  " + "\n  ".join(lines))
        exc.errors = lines  # type: ignore[attr-defined]
        raise exc


def _unpaired_surrogates(value: Any, loc: tuple[str | int, ...]) -> list[str]:
    """Error lines for strings (keys included) that are not valid Unicode.

    JSON may carry lone UTF-16 surrogates (``"\\ud800"``); such a string cannot
    be written back as UTF-8 (config file, ``GET /api/config``), so it is refused
    up front with its path.
    """
    def bad(text: str) -> bool:
        return any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)

    if isinstance(value, str):
        return [f"{format_loc(loc)}: not valid Unicode (unpaired surrogate)"] if bad(value) else []
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and bad(key):
                out.append(f"{format_loc((*loc, key))}: key is not valid Unicode "
                           "(unpaired surrogate)")
            else:
                out += _unpaired_surrogates(item, (*loc, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out += _unpaired_surrogates(item, (*loc, i))
    return out


def _with_scenes(config: SiteConfig, base_dir: Path | None) -> tuple[SiteConfig, list[str]]:
    """``config`` with each stream's scene file merged into its checkout, and the errors."""
    from edge.scene import read_scene  # noqa: PLC0415  # edge.scene imports this module

    if all(s.scene is None for s in config.streams):
        return config, []
    streams: list[StreamConfig] = []
    errors: list[str] = []
    for i, stream in enumerate(config.streams):
        if stream.scene is None:
            streams.append(stream)
            continue
        path = Path(base_dir or Path.cwd()) / stream.scene  # an absolute scene stays as it is
        try:
            scene = read_scene(path)
        except ConfigError as err:
            errors.append(f"streams.{i}.scene: {err}")
            continue
        checkout = with_scene_fields(stream.checkout, scene.checkout_fields())
        streams.append(stream.model_copy(update={"checkout": checkout,
                                                 "scene": path.absolute()}))
    return config.model_copy(update={"streams": streams}), errors


def with_scene_fields(checkout: CheckoutConfig, fields: dict[str, Any]) -> CheckoutConfig:
    """``checkout`` with a scene file's fields in place of its own (raises
    ``ValidationError`` when the result is not a valid checkout)."""
    return CheckoutConfig.model_validate({**checkout.model_dump(), **fields})


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
    return parse_config(data, source=str(path), base_dir=path.parent)


def to_toml(config: SiteConfig) -> str:
    """Serialise a config as TOML (tables in a stable order)."""
    data = json.loads(config.model_dump_json())
    if config.fleet.password is not None:  # the JSON dump masks it
        data["fleet"]["password"] = config.fleet.password.get_secret_value()
    lines: list[str] = [f"max_streams = {config.max_streams}", ""]  # before any table
    for table in ("server", "detector", "tracker", "storage", "billing", "menu", "fleet",
                  "till", "rollout", "learning"):
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
    write_atomic(path, to_toml(config).encode("utf-8"))


def json_schema() -> dict[str, Any]:
    """JSON schema of the site config (``GET /api/config/schema``)."""
    return SiteConfig.model_json_schema()


#: Fields a running daemon cannot change in place: they bind the listening socket,
#: load the model into the inference executor, or move the state directory. Every
#: other field (streams, tracker, thresholds, rates, WebRTC settings for new peers)
#: can be applied live. :func:`classify_changes` sorts a change by this list; every
#: ``fleet.*`` field needs a restart too (the publisher connects once, at start).
RESTART_FIELDS: tuple[str, ...] = (
    "server.host", "server.port", "server.token_file", "server.tls_cert", "server.tls_key",
    "detector.model", "detector.backend", "detector.threads", "detector.precision",
    "storage.dir",
)


def changed_fields(old: SiteConfig, new: SiteConfig) -> list[str]:
    """Dotted paths of the fields that differ between two configs.

    Streams are matched by id, not list position: ``streams.cam1.url`` names a
    changed field, ``streams.cam2`` a stream added or removed, and ``streams``
    alone a change of order only.
    """
    a, b = json.loads(old.model_dump_json()), json.loads(new.model_dump_json())
    out: list[str] = ["max_streams"] if old.max_streams != new.max_streams else []
    for table in ("server", "detector", "tracker", "storage", "fleet", "till"):
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
    restart = [f for f in changed if f in RESTART_FIELDS or f.startswith("fleet.")]
    return {"applied": [f for f in changed if f not in restart],
            "restart_required": restart}
