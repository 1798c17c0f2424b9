"""Cashier corrections of a closed bill, and the effective bill they produce.

A correction is stored beside the bill in the journal (:mod:`edge.billing.journal`),
never over it: the bill stays what the tracker saw, the corrections say what
the cashier changed, and :func:`effective` replays them in order. The HTTP
body of ``POST /api/bills/{id}/corrections`` (:mod:`edge.web.bills`) is
validated here with pydantic (field paths in errors), then checked against
the bill and the site menu by :func:`resolve`.

Lines are numbered once and for good: the bill's items are lines ``0 … n-1``
in their order, each added line takes the next number, and a removed line
keeps its number (it is listed under ``removed``).

A bill may also need review as a whole (``Bill.review``, e.g. part of the
tray was hidden when it crossed the line). No correction names such a
reason: the cashier answers it by looking at the tray and correcting the bill
as needed, so any correction of the bill, a ``confirm`` of one line
included, counts as the bill having been reviewed. The reasons stay on the
effective bill (what the tracker saw is never erased); only its
``needs_review`` stops counting them.

A till's corrections beyond the lines: ``quantity`` (a line is N of the same
dish), ``void`` (the whole bill, with a reason; a void bill takes nothing but
``undo``), and ``undo``, itself a row that names the correction it takes
back (``undoes``): nothing is deleted, the replay skips the undone one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from edge.billing.model import round_money
from edge.config import MenuEntry, format_loc
from edge.errors import CorrectionError

MAX_LINES = 200
"""Most lines a bill may reach through ``add`` corrections."""

MAX_QUANTITY = 99
"""Largest quantity of one line."""

ClassKey = Annotated[str, Field(min_length=1, max_length=80)]
LineIndex = Annotated[int, Field(ge=0, lt=MAX_LINES)]
Note = Annotated[str | None, Field(max_length=200)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Confirm(_Body):
    """The line is right as detected (clears its ``needs_review``)."""

    action: Literal["confirm"]
    line: LineIndex
    note: Note = None


class Change(_Body):
    """The line is another dish of the menu (name and price from the menu)."""

    action: Literal["change"]
    line: LineIndex
    class_key: ClassKey
    note: Note = None


class Remove(_Body):
    """The line is not on the tray (or not to be paid)."""

    action: Literal["remove"]
    line: LineIndex
    note: Note = None


class Add(_Body):
    """A dish the camera missed."""

    action: Literal["add"]
    class_key: ClassKey
    note: Note = None


class Quantity(_Body):
    """The line is ``quantity`` of the same dish (line total = price * quantity)."""

    action: Literal["quantity"]
    line: LineIndex
    quantity: int = Field(ge=1, le=MAX_QUANTITY)
    note: Note = None


class Void(_Body):
    """The whole bill is void (nothing to pay); only ``undo`` follows it."""

    action: Literal["void"]
    reason: str = Field(min_length=1, max_length=200)


class Undo(_Body):
    """Undo the bill's most recent correction in force (the journal names it in
    ``undoes``); repeated undos walk back."""

    action: Literal["undo"]
    note: Note = None


AnyCorrection = Confirm | Change | Remove | Add | Quantity | Void | Undo
Correction = Annotated[AnyCorrection, Field(discriminator="action")]
_ADAPTER: TypeAdapter[AnyCorrection] = TypeAdapter(Correction)
ACTIONS = ("confirm", "change", "remove", "add", "quantity", "void", "undo")


class CorrectionConflict(CorrectionError):
    """The correction is valid but the bill's state refuses it (a voided bill,
    nothing to undo): HTTP 409."""


def parse_correction(data: Any) -> AnyCorrection:
    """Validate a correction body (a decoded JSON object).

    Raises
    ------
    CorrectionError
        One ``field: reason`` line per problem, e.g. ``class_key: Field required``.
    """
    if not isinstance(data, dict):
        raise CorrectionError([f"(root): expected a JSON object, got {type(data).__name__}"])
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            loc = list(e["loc"])
            if loc and loc[0] in ACTIONS:  # pydantic prefixes the union member's tag
                loc = loc[1:]
            if e["type"] == "union_tag_not_found":
                lines.append(f"action: Field required (one of {', '.join(ACTIONS)})")
                continue
            if e["type"] == "union_tag_invalid":
                got = e.get("ctx", {}).get("tag")
                lines.append(f"action: must be one of {', '.join(ACTIONS)}, got {got!r}")
                continue
            lines.append(f"{format_loc(loc)}: {e['msg']}")
        raise CorrectionError(lines) from None


def resolve(correction: AnyCorrection, items: Sequence[Mapping[str, Any]],
            earlier: Sequence[Mapping[str, Any]],
            menu: Mapping[str, MenuEntry]) -> dict[str, Any]:
    """Check a correction against a bill and the menu; the body to store.

    Parameters
    ----------
    correction
        From :func:`parse_correction`.
    items
        The bill's items as stored (``BillItem.to_json()`` dicts).
    earlier
        The bill's earlier corrections as stored, oldest first, each with
        its ``id``.
    menu
        The site menu in force (class key -> entry).

    Returns
    -------
    dict
        The correction as stored: its fields, plus ``name`` and ``price``
        copied from the menu for ``change`` and ``add`` (a later price change
        does not alter a closed bill), and ``undoes`` (the id of the
        correction it takes back) for ``undo``.

    Raises
    ------
    CorrectionConflict
        Nothing left to undo, or the bill is void and the correction is not
        an ``undo``.
    CorrectionError
        Unknown or removed line, class not on the menu, not billable or
        disabled.
    """
    state = effective(items, earlier)
    if correction.action == "undo":
        target = _last_in_force(earlier)
        if target is None:
            raise CorrectionConflict(["action: nothing to undo: the bill has no correction "
                                      "in force"])
        return {**correction.model_dump(exclude_none=True), "undoes": target["id"],
                "undoes_action": target.get("action")}
    if state["voided"]:
        raise CorrectionConflict([f"action: the bill is void ({state['void_reason']}); "
                                  "undo the void before correcting it"])
    errors = _line_errors(correction, state)
    key = getattr(correction, "class_key", None)
    entry = menu.get(key) if key is not None else None
    if key is not None and entry is None:
        known_keys = sorted(k for k, e in menu.items() if e.billable and e.enabled)
        errors.append(f"class_key: {key!r} is not on the menu; billable keys: "
                      f"{', '.join(known_keys[:40])}{' …' if len(known_keys) > 40 else ''}")
    elif entry is not None and not entry.billable:
        errors.append(f"class_key: {key!r} ({entry.name}) is not billable")
    elif entry is not None and not entry.enabled:
        errors.append(f"class_key: {key!r} ({entry.name}) is disabled on the menu")
    if correction.action == "add" and state["line_count"] >= MAX_LINES:
        errors.append(f"action: a bill has at most {MAX_LINES} lines")
    if errors:
        raise CorrectionError(errors)
    body = correction.model_dump(exclude_none=True)
    if entry is not None:
        body.update(name=entry.name, price=entry.price)
    return body


def _line_errors(correction: AnyCorrection, state: Mapping[str, Any]) -> list[str]:
    """What is wrong with the line a correction names (none named: nothing)."""
    line = getattr(correction, "line", None)
    if line is None:
        return []
    known = state["line_count"]
    if line >= known:
        valid = f"0 to {known - 1}" if known else "none (the bill is empty; use add)"
        return [f"line: no line {line} on this bill; lines are {valid}"]
    if line in {r["line"] for r in state["removed"]}:
        return [f"line: line {line} was removed"]
    current = next(ln for ln in state["items"] if ln["line"] == line)
    if correction.action in ("confirm", "quantity") and current.get("unknown"):
        return [f"line: line {line} is an unknown dish: pick the dish (change) or remove it"]
    return []


def _last_in_force(corrections: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The newest correction that is not an undo and not undone, or None."""
    undone = {c.get("undoes") for c in corrections if c.get("action") == "undo"}
    in_force = [c for c in corrections if c.get("action") != "undo" and c.get("id") not in undone]
    return in_force[-1] if in_force else None


def effective(items: Sequence[Mapping[str, Any]],
              corrections: Sequence[Mapping[str, Any]], *,
              review: Sequence[str] = ()) -> dict[str, Any]:
    """The bill after its corrections, replayed oldest first.

    An ``undo`` takes its target (``undoes``, a correction id) out of the
    replay; the undo rows and their targets stay in the journal.

    Parameters
    ----------
    items
        The bill's items as stored (``BillItem.to_json()`` dicts).
    corrections
        Stored corrections (see :func:`resolve`), oldest first, each with
        its ``id`` (an ``undo`` names its target by it).
    review
        The bill's own review reasons (``Bill.review``); they count for
        ``needs_review`` until the first correction of the bill, whatever it
        is (the cashier has looked at the tray then).

    Returns
    -------
    dict
        ``items``: the lines still on the bill, each an item dict plus
        ``line`` (its number), ``status`` (``detected``, ``confirmed``,
        ``changed`` or ``added``; a changed line keeps the detected one under
        ``detected``; added and changed lines have ``class_id`` and
        ``confidence`` null), ``quantity`` (1 unless set) and ``line_total``
        (price * quantity, to cents). ``removed``: removed lines, same shape.
        ``total``: sum of the line totals, to cents; 0 for a void bill.
        ``voided``, ``void_reason``: the bill is void, and why (null when
        not). ``needs_review``: any line still unconfirmed below the
        confidence threshold, or a ``review`` reason on a bill not corrected
        yet; never for a void bill. ``corrected``: whether the bill has any
        correction (an undone one or an undo included). ``undone``: ids of
        the corrections taken back. ``line_count``: lines numbered so far
        (the next added line's number). ``review``: the bill's reasons, as
        given (still open while ``corrected`` is false).
    """
    lines: list[dict[str, Any]] = [{**item, "line": i, "status": "detected", "quantity": 1}
                                   for i, item in enumerate(items)]
    removed: set[int] = set()
    undone = sorted({c["undoes"] for c in corrections
                     if c.get("action") == "undo" and isinstance(c.get("undoes"), int)})
    void_reason: str | None = None
    for c in corrections:
        action = c.get("action")
        if action == "undo" or (c.get("id") is not None and c.get("id") in undone):
            continue
        if action == "void":
            void_reason = str(c.get("reason", ""))
            continue
        if action == "add":
            lines.append({"class_id": None, "key": c["class_key"], "name": c["name"],
                          "price": c["price"], "confidence": None, "track_id": None,
                          "needs_review": False, "unknown": False, "proposals": [],
                          "source": "cashier", "line": len(lines), "status": "added",
                          "quantity": 1})
            continue
        i = c.get("line")
        if not isinstance(i, int) or not 0 <= i < len(lines) or i in removed:
            continue  # cannot happen for bodies that went through resolve()
        if action == "remove":
            removed.add(i)
        elif action == "quantity":
            lines[i]["quantity"] = int(c["quantity"])
        elif action == "confirm":
            lines[i]["needs_review"] = False
            if lines[i]["status"] == "detected":
                lines[i]["status"] = "confirmed"
        elif action == "change":
            old = lines[i]
            detected = old.get("detected") or {k: old[k] for k in ("key", "name", "price")}
            lines[i] = {**old, "class_id": None, "key": c["class_key"], "name": c["name"],
                        "price": c["price"], "confidence": None, "needs_review": False,
                        "unknown": False, "source": "cashier",
                        "status": "added" if old["status"] == "added" else "changed"}
            if old["status"] != "added":
                lines[i]["detected"] = detected
    for ln in lines:
        ln["line_total"] = round_money(float(ln["price"]) * ln["quantity"])
    kept = [ln for ln in lines if ln["line"] not in removed]
    voided = void_reason is not None
    return {
        "items": kept,
        "removed": [ln for ln in lines if ln["line"] in removed],
        "total": 0.0 if voided else round_money(sum(ln["line_total"] for ln in kept)),
        "voided": voided,
        "void_reason": void_reason,
        "needs_review": not voided and (any(ln["needs_review"] for ln in kept) or (
            bool(review) and not corrections)),
        "corrected": bool(corrections),
        "undone": undone,
        "line_count": len(lines),
        "review": list(review),
    }
