"""The end-of-day report over HTTP: ``GET /api/report`` (JSON) and ``/api/report.csv``.

``journal ─▶ report (HTTP)``: the bills closed in one day (the box's local
time zone unless ``tz`` names another) are read through
:class:`edge.billing.service.BillingService` and summed by
:mod:`edge.billing.daybook`. Both routes need the token (a cashier's or a
manager's): a day's takings are not for anyone on the LAN. Added by
:func:`edge.web.bills.add_bill_routes`; the columns of the CSV are
documented in ``docs/API.md``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from edge.billing.daybook import summarise
from edge.billing.service import BillingService
from edge.config import StreamId, TillConfig
from edge.errors import JournalError
from edge.web.access import protect_reads
from edge.web.openapi import Reply, operation
from edge.web.payloads import ErrorBody, ValidationErrorBody, error
from edge.web.queries import parse_query
from edge.web.roles import allow

CSV_COLUMNS = ("day", "stream", "row", "key", "name", "count", "revenue", "currency", "bills",
               "handed_over", "voided", "corrections", "needed_review", "reviewed")
"""Columns of ``GET /api/report.csv``, in order."""

_FORMULA = re.compile(r"[=+\-@\t\r]")


class ReportQuery(BaseModel):
    """Query of ``GET /api/report`` and ``/api/report.csv``."""

    model_config = ConfigDict(extra="forbid")

    day: date | None = Field(None, description="YYYY-MM-DD; default: today in tz")
    stream: StreamId | None = Field(None, description="one stream; default: all")
    tz: str | None = Field(None, max_length=64,
                           description="IANA time zone of the day (Europe/Berlin); default: "
                                       "the box's own")

    @field_validator("tz")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a time zone of the IANA database, e.g. "
                             "Europe/Berlin, America/New_York, UTC") from None
        return value


class DishRow(BaseModel):
    """One dish of a report."""

    key: str
    name: str = Field(description="as on its latest line of the day")
    count: int = Field(description="quantity on the bills that are not void")
    revenue: float


class Summary(BaseModel):
    """The sums of one stream (or all) over the day (docs/API.md, "End-of-day report")."""

    bills: int
    handed_over: int
    voided: int
    revenue: float = Field(description="effective totals of the bills not void")
    corrections: int
    needed_review: int
    reviewed: int
    count: int = Field(description="dishes on the bills not void")
    dishes: list[DishRow]


class StreamSummary(Summary):
    """One stream's sums."""

    stream_id: str


class Report(BaseModel):
    """``GET /api/report``."""

    day: str
    tz: str = Field(description="the time zone of the day ('local': the box's own)")
    since: float = Field(description="Unix seconds of the day's start")
    until: float = Field(description="Unix seconds of the next day's start")
    stream: str | None
    currency: str
    streams: list[StreamSummary]
    total: Summary


class ReportApi:
    """Route handlers of the report, bound to one billing service.

    Parameters
    ----------
    service
        The running billing service.
    till
        Returns the ``till`` config in force (the currency).
    """

    def __init__(self, service: BillingService, till: Callable[[], TillConfig]) -> None:
        self.service = service
        self.till = till

    @operation("The end-of-day report", "report", {
        200: Reply("the day's sums per stream and in all", Report),
        422: Reply("an unknown or invalid query parameter", ValidationErrorBody),
        503: Reply("the journal is unavailable", ErrorBody)}, query=ReportQuery)
    async def report(self, request: web.Request) -> web.Response:
        """The day's bills summed per stream and per dish; ``?day&stream&tz``."""
        built = await self._build(request)
        if isinstance(built, web.Response):
            return built
        return web.json_response(built)

    @operation("The end-of-day report as CSV", "report", {
        200: Reply("one row per dish per stream, then a summary row per stream and for all",
                   media_type="text/csv", schema={"type": "string"}),
        422: Reply("an unknown or invalid query parameter", ValidationErrorBody),
        503: Reply("the journal is unavailable", ErrorBody)}, query=ReportQuery)
    async def report_csv(self, request: web.Request) -> web.Response:
        """:meth:`report` as CSV (columns :data:`CSV_COLUMNS`), as an attachment."""
        built = await self._build(request)
        if isinstance(built, web.Response):
            return built
        return web.Response(
            body=to_csv(built).encode("utf-8"), content_type="text/csv", charset="utf-8",
            headers={"Content-Disposition":
                     f'attachment; filename="report-{built["day"]}.csv"',
                     "Cache-Control": "no-store"})

    async def _build(self, request: web.Request) -> dict[str, Any] | web.Response:
        q = parse_query(request, ReportQuery)
        if isinstance(q, web.Response):
            return q
        zone = ZoneInfo(q.tz) if q.tz is not None else None
        day = q.day or datetime.now(zone).date()
        since, until = day_bounds(day, zone)
        try:
            bills = await self.service.between(since, until, q.stream)
        except JournalError as err:
            return error(503, f"the bill journal is unavailable: {err}")
        streams, total = summarise(bills)
        return {"day": day.isoformat(), "tz": q.tz or "local", "since": since, "until": until,
                "stream": q.stream, "currency": self.till().currency,
                "streams": [{"stream_id": sid, **s.to_json()} for sid, s in streams.items()],
                "total": total.to_json()}


def day_bounds(day: date, zone: ZoneInfo | None) -> tuple[float, float]:
    """Unix seconds of ``day``'s start and the next day's start in ``zone``
    (None: the box's local time zone); a DST day is 23 or 25 hours long."""
    def start(d: date) -> float:
        midnight = datetime(d.year, d.month, d.day, tzinfo=zone)
        return (midnight if zone is not None else midnight.astimezone()).timestamp()

    return start(day), start(day + timedelta(days=1))


def to_csv(report: dict[str, Any]) -> str:
    """The report as CSV: a header row of :data:`CSV_COLUMNS`; per stream, one
    ``dish`` row per dish and one ``summary`` row; then the same for all
    streams (``stream`` = ``all``). Money in plain ``.``-decimal with two
    places; a text cell that a spreadsheet would run as a formula is
    prefixed with ``'``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    parts = [(s["stream_id"], s) for s in report["streams"]] + [("all", report["total"])]
    for stream, part in parts:
        for dish in part["dishes"]:
            writer.writerow(_row(report, stream, "dish", key=_cell(dish["key"]),
                                 name=_cell(dish["name"]), count=dish["count"],
                                 revenue=dish["revenue"]))
        writer.writerow(_row(report, stream, "summary", **{
            k: part[k] for k in ("count", "revenue", "bills", "handed_over", "voided",
                                 "corrections", "needed_review", "reviewed")}))
    return out.getvalue()


def _row(report: dict[str, Any], stream: str, kind: str, **values: Any) -> list[str]:
    values["revenue"] = f"{float(values['revenue']):.2f}"
    cells = {"day": report["day"], "stream": stream, "row": kind,
             "currency": report["currency"], **values}
    return [str(cells.get(c, "")) for c in CSV_COLUMNS]


def _cell(text: str) -> str:
    return f"'{text}" if _FORMULA.match(text) else text


REPORT_KEY = web.AppKey("report", ReportApi)


def add_report_routes(app: web.Application, service: BillingService,
                      till: Callable[[], TillConfig]) -> ReportApi:
    """Add ``GET /api/report`` and ``GET /api/report.csv`` to ``app`` (token
    needed; cashier or manager)."""
    api = ReportApi(service, till)
    app[REPORT_KEY] = api
    app.router.add_get("/api/report", api.report)
    app.router.add_get("/api/report.csv", api.report_csv)
    protect_reads(app, "/api/report", "/api/report.csv")
    for path in ("/api/report", "/api/report.csv"):
        allow(app, "GET", path, "cashier", "manager")
    return api

