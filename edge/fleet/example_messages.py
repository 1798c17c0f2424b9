"""The examples message: what one box's corrections taught, for the boxes of its site.

``journal (examples) ─▶ fleet ─▶ broker ─▶ fleet of another box ─▶ its journal +
index`` (:mod:`edge.fleet.examples` sends and merges; this module only shapes and
checks the payload). One message per bill, **retained** on
``{prefix}/{site}/{box}/examples/{bill_id}``: it holds every example the bill
taught as it is now (in force or taken back), so the broker's copy is the bill's
state, a newer one replaces it, and a box that connects later gets it too::

    {"schema": 1, "type": "examples", "site": "canteen-north", "box": "edge-01",
     "bill_id": "cam1-1714557600123-8", "at": 1714557712.0,
     "examples": [{"uid": "edge-01:cam1-1714557600123-8/1/0/donut", "key": "donut",
                   "model_id": "c2c800961503", "embedding": "<base64 float16>",
                   "removed": false}, …]}

An example is the detector's embedding of one view, little-endian float16 in
base64 (256 bytes for D = 128), its menu key, the model that made it (registry
id: the first 12 hex characters of the file's SHA-256, the same on every box),
and whether the cashier's undo took it back. **Never an image**: the crop stays
in the box's journal.

A received message is checked strictly (:func:`parse_examples`): its size, every
field, the shapes (one embedding size per model), finite values. A message that
fails is refused whole, with the field and what is valid.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edge.billing.teach import StoredExample
from edge.fleet.messages import SCHEMA, Topics

MAX_MESSAGE_BYTES = 512 * 1024
"""A larger examples message is refused unread (one bill with 32 lines of four
views and D = 128 is about 60 KiB)."""
MAX_EXAMPLES = 256
"""Examples in one message (a bill's lines times their views, at most four each)."""
MAX_DIM = 2048
"""Largest embedding size accepted."""
MAX_KEY_CHARS = 128
"""Longest menu key accepted (a key of the site's menu longer than this is not shared)."""
MAX_UID_CHARS = 512
_MODEL_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_BILL_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_HEADER = ("schema", "type", "site", "box", "bill_id", "at", "examples")
_FIELDS = ("uid", "key", "model_id", "embedding", "removed")


class BadExamplesMessage(ValueError):
    """An examples message that is not one: the text names the field and what is valid."""


def can_share(example: StoredExample) -> bool:
    """Whether a local example fits the message (its key and model id do)."""
    return 0 < len(example.key) <= MAX_KEY_CHARS and example.key.isprintable() \
        and _MODEL_ID.fullmatch(example.model_id) is not None


def shared_uid(box: str, uid: str) -> str:
    """An example's id across the fleet: the box's id before the journal's uid."""
    return f"{box}:{uid}"


def examples_message(topics: Topics, bill_id: str, examples: Sequence[StoredExample]) -> bytes:
    """The payload of one bill's examples, as :func:`parse_examples` reads it.

    Parameters
    ----------
    topics : Topics
        The sending box's (its ``site`` and ``box`` go into the header and the uids).
    bill_id : str
        The bill that taught them.
    examples : sequence of StoredExample
        The bill's local examples, each with its ``(D,)`` embedding; at most
        :data:`MAX_EXAMPLES`.
    """
    return json.dumps({
        "schema": SCHEMA, "type": "examples", "site": topics.site, "box": topics.box,
        "bill_id": bill_id, "at": time.time(),
        "examples": [{"uid": shared_uid(topics.box, ex.uid), "key": ex.key,
                      "model_id": ex.model_id, "embedding": _encode(ex.embedding),
                      "removed": ex.removed} for ex in examples]},
        separators=(",", ":")).encode()


def examples_topic(topic: str, topics: Topics) -> tuple[str, str] | None:
    """``(box, bill_id)`` of a topic under :attr:`Topics.site_examples`; None otherwise."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != topics.prefix or parts[1] != topics.site \
            or parts[3] != "examples":
        return None
    return parts[2], parts[4]


def parse_examples(payload: bytes, *, site: str, box: str,
                   bill_id: str) -> list[StoredExample]:
    """The examples of a message received on ``{prefix}/{site}/{box}/examples/{bill_id}``.

    Parameters
    ----------
    payload : bytes
        UTF-8 JSON as :func:`examples_message` writes it (nothing else).
    site, box, bill_id : str
        The topic's levels: the header must say the same, and every uid must
        start with ``{box}:{bill_id}/``.

    Returns
    -------
    list of StoredExample
        Each with ``origin`` the sending box and its embedding as a ``(D,)``
        float32 unit vector; no crop.

    Raises
    ------
    BadExamplesMessage
        Too large, not JSON, a missing, unknown or invalid field, embedding sizes
        that differ within one model, a value that is not finite.
    """
    if len(payload) > MAX_MESSAGE_BYTES:
        raise BadExamplesMessage(f"{len(payload)} bytes: an examples message is at most "
                                 f"{MAX_MESSAGE_BYTES}")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise BadExamplesMessage(f"not UTF-8 JSON: {err}") from err
    if not isinstance(data, dict):
        raise BadExamplesMessage(f"expected a JSON object, got {type(data).__name__}")
    _exact_fields(data, _HEADER, "the message")
    if data["schema"] != SCHEMA or data["type"] != "examples":
        raise BadExamplesMessage(f"schema/type: {data['schema']!r}/{data['type']!r} is not "
                                 f"{SCHEMA}/'examples'")
    for name, want in (("site", site), ("box", box), ("bill_id", bill_id)):
        if data[name] != want:
            raise BadExamplesMessage(f"{name}: {str(data[name])[:80]!r} is not the topic's "
                                     f"{want!r}")
    if not _BILL_ID.fullmatch(bill_id):
        raise BadExamplesMessage(f"bill_id: {bill_id[:80]!r} is not 1-128 of "
                                 "A-Z a-z 0-9 _ . -")
    if not _number(data["at"]):
        raise BadExamplesMessage(f"at: {str(data['at'])[:40]!r} is not Unix seconds")
    items = data["examples"]
    if not isinstance(items, list) or len(items) > MAX_EXAMPLES:
        raise BadExamplesMessage(f"examples: expected a list of at most {MAX_EXAMPLES}")
    out: list[StoredExample] = []
    dims: dict[str, int] = {}
    seen: set[str] = set()
    for i, item in enumerate(items):
        ex = _example(item, f"examples[{i}]", f"{box}:{bill_id}/", box)
        if ex.uid in seen:
            raise BadExamplesMessage(f"examples[{i}].uid: {ex.uid!r} twice")
        seen.add(ex.uid)
        d = dims.setdefault(ex.model_id, ex.embedding.shape[0])
        if d != ex.embedding.shape[0]:
            raise BadExamplesMessage(f"examples[{i}].embedding: {ex.embedding.shape[0]} values, "
                                     f"but model {ex.model_id}'s others have {d}")
        out.append(ex)
    return out


def _example(item: object, where: str, prefix: str, box: str) -> StoredExample:
    if not isinstance(item, dict):
        raise BadExamplesMessage(f"{where}: expected an object with {', '.join(_FIELDS)}")
    _exact_fields(item, _FIELDS, where)
    uid, key, model_id, removed = item["uid"], item["key"], item["model_id"], item["removed"]
    if not isinstance(uid, str) or not uid.startswith(prefix) \
            or not len(prefix) < len(uid) <= MAX_UID_CHARS or not uid.isprintable():
        raise BadExamplesMessage(f"{where}.uid: {str(uid)[:80]!r} is not "
                                 f"'{prefix}…' of at most {MAX_UID_CHARS} printable characters")
    if not isinstance(key, str) or not 0 < len(key) <= MAX_KEY_CHARS or not key.isprintable():
        raise BadExamplesMessage(f"{where}.key: {str(key)[:80]!r} is not 1-{MAX_KEY_CHARS} "
                                 "printable characters")
    if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id):
        raise BadExamplesMessage(f"{where}.model_id: {str(model_id)[:80]!r} is not 1-64 of "
                                 "A-Z a-z 0-9 _ . -")
    if not isinstance(removed, bool):
        raise BadExamplesMessage(f"{where}.removed: {str(removed)[:20]!r} is not true or false")
    return StoredExample(uid, key, model_id, _decode(item["embedding"], f"{where}.embedding"),
                         origin=box, removed=removed)


def _exact_fields(data: dict[str, Any], fields: Sequence[str], where: str) -> None:
    missing = [f for f in fields if f not in data]
    unknown = sorted(str(k)[:40] for k in set(data) - set(fields))
    if missing or unknown:
        raise BadExamplesMessage(
            f"{where}: " + "; ".join(
                ([f"missing {', '.join(missing)}"] if missing else [])
                + ([f"unknown {', '.join(unknown)}"] if unknown else []))
            + f" (it has {', '.join(fields)})")


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _encode(embedding: np.ndarray[Any, Any]) -> str:
    return base64.b64encode(np.asarray(embedding, "<f2").tobytes()).decode("ascii")


def _decode(text: object, where: str) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A ``(D,)`` float32 unit vector from base64 float16."""
    if not isinstance(text, str) or len(text) > 4 * (MAX_DIM * 2 + 2) // 3 + 4:
        raise BadExamplesMessage(f"{where}: expected base64 of at most {MAX_DIM} float16 values")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadExamplesMessage(f"{where}: not base64 ({err})") from err
    if not raw or len(raw) % 2 or len(raw) // 2 > MAX_DIM:
        raise BadExamplesMessage(f"{where}: {len(raw)} bytes is not 1-{MAX_DIM} float16 values")
    v = np.frombuffer(raw, "<f2").astype(np.float32)
    if not np.isfinite(v).all():
        raise BadExamplesMessage(f"{where}: holds values that are not finite")
    norm = float(np.linalg.norm(v))
    if norm < 1e-3:
        raise BadExamplesMessage(f"{where}: is (nearly) zero; an embedding is a unit vector")
    unit: np.ndarray[Any, np.dtype[np.float32]] = v / norm
    return unit
