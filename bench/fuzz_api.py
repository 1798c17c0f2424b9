"""API fuzzing: schemathesis against the daemon's HTTP application on a live socket.

    python bench/fuzz_api.py [--max-examples 200] [--seed 1] [--timeout 10] [--json OUT]

Starts the daemon's application (``tests/api_server.py``: control plane,
WebRTC with a synthetic camera, bills API on a real journal) on 127.0.0.1,
loads its description from ``GET /api/openapi.json`` and, for every
operation, sends ``--max-examples`` schema-conforming requests and as many
schema-violating ones (schemathesis' positive and negative modes), all with
the access token; operations with a path parameter run a second time with a
bill or stream that exists, so the requests get past the 404. ``GET
/api/events`` is left out: an event stream never ends, so there is no
response to check (``tests/test_bills_api.py`` covers it).

Each response is checked for:

* ``server_error``: a 5xx;
* ``timeout``: no answer within ``--timeout`` seconds;
* ``error_shape``: a 4xx that is not JSON with an ``error``, or a 422 without
  ``errors`` lines of the form ``field.path: reason``;
* ``accepted_invalid``: a 2xx to a request whose JSON body violates the
  description (a query value negated by type may read the same on the wire);
* ``nonconformance``: status, content type or body not as the description
  says (schemathesis' own checks).

Prints the cases per operation and the problems found (with a curl command
to reproduce each), and exits 1 if there was any. ``tests/test_api_fuzz.py``
runs it with a few examples per operation.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from edge.observability import configure_logging
from edge.web.access import SAFE_METHODS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from api_server import (  # the tests' server harness
    BILL_IDS,
    MODEL_ID,
    QUESTION_ID,
    STREAM_ID,
    ApiServer,
)

SKIPPED = {("GET", "/api/events")}
"""Operations left out (an event stream never ends)."""

_SEGMENT = r'(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*")'
ERROR_LINE = re.compile(rf"^(?:\(root\)|{_SEGMENT}(?:\.{_SEGMENT})*): \S")
"""A 422 line: a dotted field path (``edge.config.format_loc``) or ``(root)``, a
colon, the reason."""

KNOWN = {"bill_id": BILL_IDS[0], "id": STREAM_ID, "path": "app.js", "key": "burger",
         "model_id": MODEL_ID, "frame_id": "1", "question_id": QUESTION_ID}
"""Path parameters that exist on the server."""

MAX_PROBLEMS_KEPT = 40


@dataclass
class Problem:
    """One response that failed a check."""

    kind: str
    operation: str
    status: int | None
    detail: str
    curl: str


@dataclass
class Report:
    """What a run found."""

    cases: int = 0
    by_operation: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    problems: Counter[str] = field(default_factory=Counter)
    examples: list[Problem] = field(default_factory=list)
    unsatisfiable: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, problem: Problem) -> None:
        """Count ``problem`` and keep the first few of each operation and kind."""
        self.problems[problem.kind] += 1
        same = sum(1 for p in self.examples
                   if (p.kind, p.operation) == (problem.kind, problem.operation))
        if same < 3 and len(self.examples) < MAX_PROBLEMS_KEPT:
            self.examples.append(problem)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"cases": self.cases, "seconds": round(self.seconds, 1),
                "server_errors": self.problems["server_error"],
                "timeouts": self.problems["timeout"],
                "problems": dict(self.problems),
                "by_operation": dict(sorted(self.by_operation.items())),
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "unsatisfiable": self.unsatisfiable,
                "examples": [asdict(p) for p in self.examples]}


def _text(response: Any, limit: int) -> str:
    return bytes(response.content[:limit]).decode("utf-8", "replace")


def _error_shape(status: int, response: Any) -> str | None:
    """Why an error answer does not have the documented shape, or None."""
    if status < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"{status} body is not JSON: {_text(response, 200)!r}"
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return f"{status} body has no 'error' string: {str(body)[:200]}"
    if status == 422:
        lines = body.get("errors")
        if not isinstance(lines, list) or not lines:
            return f"422 without 'errors' lines: {str(body)[:200]}"
        bad = [line for line in lines if not isinstance(line, str) or not ERROR_LINE.match(line)]
        if bad:
            return f"422 lines without a field path: {bad[:3]}"
    return None


def _negated(case: Any) -> set[str]:
    """Where ``case`` breaks the description in a way the server must see: its body (the
    token header is set by this harness; see below for query and path)."""
    meta = case.meta
    if meta is None:
        return set()
    where = {str(loc.value) for loc, info in meta.components.items()
             if info.mode is GenerationMode.NEGATIVE}
    where.discard("header")
    # a query or path value negated by type (the integer 160 made the string "160") can be
    # the same on the wire; only a JSON body says unambiguously what was sent
    return where & {"body"}


def fuzz_operation(operation: Any, mode: GenerationMode, report: Report, *, base_url: str,
                   session: requests.Session, headers: dict[str, str], max_examples: int,
                   seed: int, timeout_s: float, path_parameters: dict[str, str] | None) -> None:
    """Send ``max_examples`` generated requests to one operation and check the answers."""
    label = f"{operation.method.upper()} {operation.path}"
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @settings(max_examples=max_examples, deadline=None, database=None, derandomize=False,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck),
              report_multiple_bugs=False)
    @given(case=strategy)
    def run(case: Any) -> None:
        report.cases += 1
        report.by_operation[label] += 1
        try:
            curl = case.as_curl_command(headers=headers)
        except Exception as err:  # a case schemathesis cannot even print
            curl = f"(no curl: {err})"
        try:
            response = case.call(base_url=base_url, session=session, headers=headers,
                                 timeout=timeout_s)
        except requests.Timeout:
            report.add(Problem("timeout", label, None, f"no answer in {timeout_s} s", curl))
            return
        except requests.RequestException as err:
            report.add(Problem("connection", label, None, repr(err), curl))
            return
        status = response.status_code
        report.by_status[status] += 1
        if status >= 500:
            report.add(Problem("server_error", label, status, _text(response, 300), curl))
        shape = _error_shape(status, response)
        if shape is not None:
            report.add(Problem("error_shape", label, status, shape, curl))
        if _negated(case) and 200 <= status < 300:
            report.add(Problem("accepted_invalid", label, status, _text(response, 200), curl))
        try:
            case.validate_response(response, checks=[status_code_conformance,
                                                     content_type_conformance,
                                                     response_schema_conformance])
        except FailureGroup as err:
            report.add(Problem("nonconformance", label, status, str(err)[:600], curl))

    try:
        hypothesis_seed(seed)(run)()
    except Unsatisfiable:  # e.g. a string path parameter: there is no invalid one to send
        report.unsatisfiable.append(f"{label} ({mode.value})")


def fuzz(base_url: str, token: str, *, max_examples: int, seed: int,
         timeout_s: float) -> Report:
    """Fuzz every operation of the server at ``base_url``; the report."""
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json", timeout=timeout_s)
    report = Report()
    start = time.monotonic()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            if (operation.method.upper(), operation.path) in SKIPPED:
                continue
            names = re.findall(r"\{(\w+)\}", operation.path)
            variants: list[dict[str, str] | None] = [None]
            if names:
                variants.append({n: KNOWN[n] for n in names})
            for path_parameters in variants:
                for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                    if mode is GenerationMode.NEGATIVE and operation.method.upper() in \
                            SAFE_METHODS and not operation.query and not names:
                        continue  # nothing to make invalid
                    fuzz_operation(operation, mode, report, base_url=base_url, session=session,
                                   headers=headers, max_examples=max_examples, seed=seed,
                                   timeout_s=timeout_s, path_parameters=path_parameters)
    report.seconds = time.monotonic() - start
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the fuzzer against a fresh server; 0 when nothing was found."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-examples", type=int, default=200,
                        help="generated requests per operation and mode (default 200)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds a response may take (default 10)")
    parser.add_argument("--json", type=Path, help="write the report here too")
    args = parser.parse_args(argv)
    configure_logging("error", json=True, stream=sys.stderr)  # a 5xx logs its traceback
    with tempfile.TemporaryDirectory(prefix="fuzz-api-") as folder, \
            ApiServer(Path(folder)) as server:
        report = fuzz(server.url, server.token, max_examples=args.max_examples, seed=args.seed,
                      timeout_s=args.timeout)
    summary = report.to_json()
    print(f"schemathesis {schemathesis.__version__}: {report.cases} cases in "
          f"{report.seconds:.0f} s over {len(report.by_operation)} operations, "
          f"{summary['server_errors']} server errors, {summary['timeouts']} timeouts, "
          f"problems: {dict(report.problems) or 'none'}")
    for label, count in sorted(report.by_operation.items()):
        print(f"  {count:6d}  {label}")
    if report.unsatisfiable:
        print("  no case to generate: " + ", ".join(report.unsatisfiable))
    print("  statuses: " + ", ".join(f"{k}: {v}" for k, v in summary["by_status"].items()))
    for p in report.examples:
        print(f"\n[{p.kind}] {p.operation} -> {p.status}: {p.detail}\n  {p.curl}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
