"""Query strings of the HTTP side, validated by a pydantic model.

Beside the bills API and the report (``… ─▶ events (HTTP/SSE)``): a query
parameter given twice is refused rather than one of its values kept
silently, and every problem answers 422 with its field
(:func:`edge.web.payloads.invalid`).
"""

from __future__ import annotations

from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from edge.config import format_errors, format_loc
from edge.web.payloads import invalid

Q = TypeVar("Q", bound=BaseModel)


def parse_query(request: web.Request, model: type[Q]) -> Q | web.Response:
    """``request``'s query as ``model``, or the 422 answer to send."""
    repeated = sorted({k for k in request.query if len(request.query.getall(k)) > 1})
    if repeated:  # dict() would keep one of them silently
        return invalid([f"{format_loc([k])}: given more than once; give it once"
                        for k in repeated], "the query")
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as err:
        return invalid(format_errors(err), "the query")
