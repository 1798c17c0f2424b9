"""The JSON bodies of the HTTP side: request decoding, errors and answers.

Beside the control plane and the bills API (``… ─▶ events (HTTP/SSE)``): the
request bodies are validated by the models of :mod:`edge.config`,
:mod:`edge.billing.corrections` and :mod:`edge.web.signalling`; the answers are
described here as pydantic models, so that :mod:`edge.web.openapi` can
publish them and the API fuzz test can check what the server really sends
against them. Handlers that build an answer by hand build it through these
models where that costs nothing (health, readiness, menu, config changes);
bills come from the journal as dicts and are only described.

Every error is ``{"error": "…"}``; a body that does not validate (422) adds
``"errors": ["field.path: reason", …]``, one line per problem, the path
dotted from the body's root (``streams.0.url``, ``line``, ``(root)`` for the
body as a whole).
"""

from __future__ import annotations

import json
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field


class _Answer(BaseModel):
    """An answer body; keys the server may add later do not break clients."""

    model_config = ConfigDict(extra="allow")


class ErrorBody(_Answer):
    """Any error: what went wrong, for a person."""

    error: str = Field(description="what went wrong and, where it helps, what would be valid")


class ValidationErrorBody(ErrorBody):
    """A body or query that does not validate (422)."""

    errors: list[str] = Field(description="one 'field.path: reason' line per problem; "
                                          "'(root)' is the body as a whole")


class ConflictBody(ErrorBody):
    """A valid request that the state of its target refuses (409)."""

    errors: list[str] = Field(default_factory=list,
                              description="'field: reason' lines, as for a 422")


class Health(_Answer):
    """``GET /healthz``."""

    status: Literal["ok", "stalled"]
    heartbeat_age_s: float | None = Field(None, description="seconds; only when stalled")


class Readiness(_Answer):
    """``GET /readyz``."""

    ready: bool
    reasons: list[str] = Field(description="what is missing while not ready")


class StreamStatus(_Answer):
    """One entry of ``GET /api/streams`` (camera passwords masked in ``url``)."""

    id: str
    enabled: bool
    state: str = Field(description="running, connecting, stalled, stopped, disabled, …")
    url: str | None = None
    fps: float | None = None
    detect_rate_hz: float | None = None
    last_frame_age_s: float | None = Field(None, description="seconds since the last frame")
    peers: int | None = Field(None, description="WebRTC viewers of this stream")
    last_error: str | None = None


class FleetState(_Answer):
    """``GET /api/fleet``: the MQTT publisher's state (``{"enabled": false}`` when off)."""

    enabled: bool
    state: str | None = Field(None, description="connecting, connected, disconnected, …")
    broker: str | None = Field(None, description="host:port")
    tls: bool | None = None
    client_id: str | None = None
    topics: str | None = Field(None, description="the topic prefix of this box")
    since: float | None = Field(None, description="Unix seconds of the last state change")
    last_error: str | None = None
    outbox_depth: int | None = Field(None, description="bills and events not yet sent")
    oldest_unsent_age_s: float | None = Field(None, description="seconds")


class ConfigApplied(_Answer):
    """``PUT /api/config`` taken: which fields changed, and what needs a restart."""

    applied: list[str] = Field(description="field paths in force now")
    restart_required: list[str] = Field(description="field paths that take effect at the "
                                                    "next start")
    saved_to: str | None = Field(description="the config file rewritten, or null")
    note: str | None = None


class MenuItem(_Answer):
    """One entry of the menu in force."""

    key: str = Field(description="detector class name")
    name: str
    price: float
    billable: bool
    enabled: bool = Field(True, description="false: disabled on the menu (still billed, "
                                            "flagged for review; corrections cannot add it)")


class Menu(_Answer):
    """``GET /api/menu``: sorted by name."""

    currency: str = Field("EUR", description="ISO 4217 code of the prices (till.currency)")
    locale: str = Field("en-US", description="BCP 47 tag for number formats (till.locale)")
    items: list[MenuItem]


class Proposal(_Answer):
    """A menu entry an unknown or doubtful line may be."""

    key: str
    name: str
    price: float
    score: float = Field(description="the open-set decision's evidence for it, 0-1")


class BillItem(_Answer):
    """A line of a bill as the tracker saw it."""

    class_id: int | None = Field(description="detector class id; -1: an unknown item, or a "
                                             "menu entry named by the site's examples")
    key: str = Field(description="menu key; 'unknown' for an unknown item")
    name: str
    price: float
    confidence: float | None
    track_id: int | None
    needs_review: bool
    unknown: bool = Field(False, description="looks like no dish the box knows: price 0 "
                                             "until the cashier picks it")
    proposals: list[Proposal] = Field(default_factory=list,
                                      description="up to three dishes it may be, best first")
    source: str = Field("detector", description="what named it: detector, examples or unknown")


class EffectiveLine(BillItem):
    """A line of the bill after the corrections."""

    line: int = Field(description="the line's number, kept for good")
    status: Literal["detected", "confirmed", "changed", "added"]
    quantity: int = Field(1, description="how many of the dish (quantity corrections)")
    line_total: float = Field(description="price * quantity, to cents")


class Effective(_Answer):
    """The bill after its corrections, replayed in order."""

    items: list[EffectiveLine]
    removed: list[EffectiveLine]
    total: float = Field(description="sum of the line totals; 0 for a void bill")
    voided: bool = False
    void_reason: str | None = None
    needs_review: bool
    corrected: bool
    undone: list[int] = Field(default_factory=list,
                              description="ids of the corrections taken back by undo")
    line_count: int = Field(description="lines numbered so far: the next added line's number")
    review: list[str] = Field(description="the bill's own review reasons, as detected; they "
                                          "count in needs_review until the first correction")


class StoredCorrection(_Answer):
    """A correction as the journal keeps it (with the menu's name and price)."""

    id: int
    created_at: float = Field(description="Unix seconds")
    action: Literal["confirm", "change", "remove", "add", "quantity", "void", "undo"]
    line: int | None = None
    class_key: str | None = None
    name: str | None = None
    price: float | None = None
    quantity: int | None = None
    reason: str | None = Field(None, description="why the bill is void")
    undoes: int | None = Field(None, description="undo: the id of the correction taken back")
    actor: str | None = Field(None, description="who made it (the token's name); null: "
                                                "unknown")
    after_handover: bool | None = Field(None, description="made after the bill was handed "
                                                          "over to the POS")
    note: str | None = None


class BillView(_Answer):
    """A journaled bill with its corrections (docs/API.md, "A bill as the API returns it")."""

    seq: int = Field(description="commit order; the cursor of GET /api/bills and the SSE id")
    bill_id: str
    stream_id: str
    tray_id: int
    opened_at: float = Field(description="Unix seconds")
    closed_at: float = Field(description="Unix seconds")
    frame_seq: int
    items: list[BillItem]
    total: float
    needs_review: bool
    reason: Literal["crossed", "left_view", "stream_changed"]
    tray_box: list[float] = Field(min_length=4, max_length=4,
                                  description="x1, y1, x2, y2 in source pixels")
    line_boxes: list[list[float] | None] = Field(
        default_factory=list, description="per line (in items order), the dish's box x1, y1, "
                                          "x2, y2 at closing; null: not in view then")
    review: list[str] = Field(description="why the whole bill needs review beyond its lines "
                                          "(e.g. hidden_at_line); usually empty")
    review_text: list[str] = Field(description="what the cashier is told for each reason "
                                               "of review, in its order")
    has_snapshot: bool
    created_at: float = Field(description="Unix seconds of the commit")
    handed_over_at: float | None = Field(None, description="Unix seconds of the hand-over to "
                                                           "the POS; null: not handed over")
    handed_over_by: str | None = Field(None, description="who handed it over (the token's "
                                                         "name); null: unknown or not yet")
    corrections: list[StoredCorrection]
    effective: Effective


class JournalStatus(_Answer):
    """The journal's health as the page shows it."""

    fault: str | None
    pending: int


class BillPage(_Answer):
    """``GET /api/bills``: newest first."""

    bills: list[BillView]
    next_before: int | None = Field(description="cursor of the next page, null at the end")
    last_seq: int = Field(description="the newest bill of the whole journal")
    journal: JournalStatus


def error(status: int, message: str, *, headers: dict[str, str] | None = None,
          **extra: Any) -> web.Response:
    """The JSON error answer ``{"error": message, **extra}``."""
    return web.json_response({"error": message, **extra}, status=status, headers=headers)


def invalid(lines: list[str], what: str = "the request") -> web.Response:
    """The 422 answer for ``lines`` (``field.path: reason`` each)."""
    return web.json_response(
        ValidationErrorBody(error=f"{what} is invalid: {len(lines)} problem(s)",
                            errors=lines).model_dump(), status=422)


def decode_json(raw: bytes) -> Any | web.Response:
    """The JSON document in ``raw``, or the 400 (422) answer to send.

    Anything ``json.loads`` refuses is the client's fault: bad UTF-8, bad
    syntax, nesting deeper than the interpreter's recursion limit, and
    integers of more than 4300 digits (Python 3.11's int conversion limit,
    a ``ValueError``): 400. A key given twice in one object is refused with
    422 instead of the last one silently winning (RFC 8259 leaves it open; a
    proxy or a client library may read the first).
    """
    try:
        return json.loads(raw, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as err:
        return invalid([f"{err.key}: given more than once in one object; give it once"],
                       "the request body")
    except (ValueError, RecursionError) as err:  # JSONDecodeError, UnicodeDecodeError too
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        return error(400, f"request body is not valid JSON: {reason}")


class _DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKeyError(key)
        out[key] = value
    return out


class QuestionLine(_Answer):
    """A line of a closed bill the box asks about (:mod:`edge.learn.questions`)."""

    line: int = Field(description="the line's number on its bill")
    box: list[float] | None = Field(description="x1, y1, x2, y2 of the dish in the frame, "
                                                "source pixels; null: not in view then")
    reason: Literal["unknown", "disagree", "low_margin"] = Field(
        description="unknown: like no dish the box knows; disagree: the site's examples named "
                    "it against the detector; low_margin: its best two dishes lie close")
    key: str = Field(description="what the line was billed as ('unknown' for an unknown dish)")
    proposals: list[Proposal] = Field(description="up to three dishes it may be, best first")


class Question(_Answer):
    """``GET /api/questions``: a closed frame worth a label (its JPEG:
    ``GET /api/questions/{question_id}/frame``)."""

    id: str = Field(description="stable per bill (16 hex digits)")
    stream_id: str
    bill_id: str
    closed_at: float = Field(description="Unix seconds the bill closed (the frame's time)")
    frame_seq: int = Field(description="the source frame number")
    width: int = Field(description="the frame's width, pixels")
    height: int = Field(description="the frame's height, pixels")
    reason: Literal["unknown", "disagree", "low_margin"] = Field(
        description="the reason of its most worth line")
    lines: list[QuestionLine]
