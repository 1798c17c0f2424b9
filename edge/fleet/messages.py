"""What the box sends to the fleet's MQTT broker: topics and JSON payloads.

``journal (outbox) ─▶ publisher ─▶ broker``: this module only shapes
messages; :mod:`edge.fleet.publisher` sends them. The layout, the schema and
the delivery semantics are documented in ``docs/FLEET.md``::

    {prefix}/{site}/{box}/{stream}/bills         a closed bill      (QoS 1)
    {prefix}/{site}/{box}/{stream}/corrections   a cashier's fix    (QoS 1)
    {prefix}/{site}/{box}/{stream}/handovers     a bill to the POS  (QoS 1)
    {prefix}/{site}/{box}/status                 online / offline   (QoS 1, retained, will)
    {prefix}/{site}/{box}/health                 every health_interval_s (QoS 1)
    {prefix}/{site}/{box}/model                  the model pull's state (QoS 1, retained)
    {prefix}/{site}/{box}/examples/{bill_id}     a bill's examples (QoS 1, retained)

and what the box follows with ``fleet.models`` (retained, written by the fleet)::

    {prefix}/{site}/model                        the model of the site
    {prefix}/groups/{group}/model                the model of a group of sites
    {prefix}/{site}/+/examples/+                 the examples of the site's boxes
                                                 (``fleet.share_examples``)

Every payload the box sends is one JSON object with ``"schema": 1``. Nothing
here imports the MQTT client, so the daemon runs without the ``mqtt`` extra.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edge import __version__
from edge.billing.outbox import OutboxRow

SCHEMA = 1
"""``schema`` of every payload; a consumer ignores messages of a newer one it
does not know."""


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one box.

    Parameters
    ----------
    prefix, site, box : str
        One topic level each (``fleet.topic_prefix``, ``fleet.site``, the box id).
    """

    prefix: str
    site: str
    box: str

    @property
    def base(self) -> str:
        """``{prefix}/{site}/{box}``."""
        return f"{self.prefix}/{self.site}/{self.box}"

    @property
    def status(self) -> str:
        """Retained ``online``/``offline`` state (also the last will)."""
        return f"{self.base}/status"

    @property
    def health(self) -> str:
        """Periodic health report."""
        return f"{self.base}/health"

    @property
    def model(self) -> str:
        """Retained state of the model this box pulls (``fleet.models``)."""
        return f"{self.base}/model"

    @property
    def site_model(self) -> str:
        """The site's retained model message, which the box follows."""
        return f"{self.prefix}/{self.site}/model"

    def group_model(self, group: str) -> str:
        """The retained model message of the group of sites ``group``."""
        return f"{self.prefix}/groups/{group}/model"

    def examples(self, bill_id: str) -> str:
        """Retained examples of one of this box's bills (``fleet.share_examples``)."""
        return f"{self.base}/examples/{bill_id}"

    @property
    def site_examples(self) -> str:
        """What the box subscribes to for the examples of its site's boxes (its own too)."""
        return f"{self.prefix}/{self.site}/+/examples/+"

    def of(self, row: OutboxRow) -> str:
        """Topic of an outbox message: ``{base}/{stream}/bills``, ``…/corrections``
        or ``…/handovers``."""
        return f"{self.base}/{row.stream_id}/{row.kind}s"


def _dumps(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def outbox_message(row: OutboxRow, topics: Topics) -> bytes:
    """The payload of an outbox row: a header that identifies the message, and
    the row's content (``bill``; ``correction`` and ``effective``; or
    ``handover`` and ``bill``)."""
    return _dumps({"schema": SCHEMA, "type": row.kind, "message_id": row.message_id,
                   "bill_id": row.bill_id, "site": topics.site, "box": topics.box,
                   "stream_id": row.stream_id, "outbox_id": row.id,
                   "committed_at": row.created_at, **json.loads(row.payload)})


def status_message(topics: Topics, state: str, reason: str | None = None) -> bytes:
    """Retained status: ``state`` is ``online`` or ``offline`` (``reason`` says why)."""
    return _dumps({"schema": SCHEMA, "state": state, "site": topics.site, "box": topics.box,
                   "version": __version__, "at": time.time(), "reason": reason})


def health_message(topics: Topics, report: dict[str, Any]) -> bytes:
    """A health report: ``report`` (uptime, outbox, journal, streams) with the header."""
    return _dumps({"schema": SCHEMA, "site": topics.site, "box": topics.box,
                   "version": __version__, "at": time.time(), **report})


# ---- models the fleet hands out ------------------------------------------------------

MODEL_FIELDS = ("version", "sha256", "url", "size")
"""The fields of a model message (and ``schema``, optional)."""

MAX_VERSION_CHARS = 128
MAX_URL_CHARS = 2048
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class BadModelMessage(ValueError):
    """A model message that is not one: the text names the field and what is valid."""


@dataclass(frozen=True, slots=True)
class ModelOrder:
    """A retained model message: the model the fleet wants a site (or group) to serve.

    Parameters
    ----------
    version : str
        The model's version, as its ``model_version`` metadata should say.
    sha256 : str
        SHA-256 of the file, 64 lowercase hex characters: what the download must hash to.
    url : str
        ``http://`` or ``https://`` address of the file (fetched with HTTP ``Range``
        to resume).
    size : int or None
        The file's size, bytes, when the message gives it.
    """

    version: str
    sha256: str
    url: str
    size: int | None = None

    @property
    def shown_url(self) -> str:
        """``url`` without its query and credentials (signed URLs carry secrets), for logs."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}" \
               f"{parts.path}"


def parse_model_message(payload: bytes) -> ModelOrder | None:
    """The model a retained message names; None for an empty payload (cleared).

    Parameters
    ----------
    payload : bytes
        UTF-8 JSON: ``{"version": str, "sha256": hex64, "url": "http(s)://…",
        "size": int}`` (``size`` and ``"schema": 1`` optional, nothing else).

    Raises
    ------
    BadModelMessage
        Not JSON, not an object, a missing, unknown or invalid field.
    """
    if not payload:
        return None
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise BadModelMessage(f"not UTF-8 JSON: {err}") from err
    if not isinstance(data, dict):
        raise BadModelMessage(f"expected a JSON object with {', '.join(MODEL_FIELDS)}, "
                              f"got {type(data).__name__}")
    unknown = sorted(set(data) - {*MODEL_FIELDS, "schema"})
    if unknown:
        raise BadModelMessage(f"unknown field(s) {', '.join(unknown)}: a model message has "
                              f"{', '.join(MODEL_FIELDS)} (size optional) and schema")
    if data.get("schema", SCHEMA) != SCHEMA:
        raise BadModelMessage(f"schema: {data['schema']!r} is not {SCHEMA}")
    missing = [f for f in ("version", "sha256", "url") if f not in data]
    if missing:
        raise BadModelMessage(f"missing field(s) {', '.join(missing)}")
    version, sha256, url, size = (data["version"], data["sha256"], data["url"],
                                  data.get("size"))
    if not isinstance(version, str) or not 0 < len(version) <= MAX_VERSION_CHARS \
            or not version.isprintable():
        raise BadModelMessage(f"version: {version!r} is not 1-{MAX_VERSION_CHARS} "
                              "printable characters")
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise BadModelMessage(f"sha256: {sha256!r} is not 64 hex characters")
    _check_url(url)
    # bool is an int in Python; a size of true is a mistake, not 1 byte
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise BadModelMessage(f"size: {size!r} is not a positive number of bytes")
    return ModelOrder(version=version, sha256=sha256.lower(), url=url, size=size)


def _check_url(url: object) -> None:
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL_CHARS:
        raise BadModelMessage(f"url: expected an http:// or https:// address of at most "
                              f"{MAX_URL_CHARS} characters, got {str(url)[:80]!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises ValueError on a bad port
    except ValueError as err:
        raise BadModelMessage(f"url: {url[:80]!r} is not a URL: {err}") from err
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadModelMessage(f"url: {url[:80]!r} is not an http:// or https:// address "
                              "with a host")


def model_state_message(topics: Topics, state: dict[str, Any]) -> bytes:
    """Retained state of the model pull: ``state`` (``state``, ``version``,
    ``sha256``, ``detail``, ``at``, …) with the header."""
    return _dumps({"schema": SCHEMA, "site": topics.site, "box": topics.box, **state})
