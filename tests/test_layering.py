"""The import direction of the package: data flows left to right, the simulator stays aside.

Reads every module's imports with :mod:`ast` (top-level and function-local
alike) and checks the layering rules of the design: tracking knows
nothing of billing, the web or the simulator; only the simulator's own
callers (tools, evaluation, benches, tests, the CLI and the synthetic camera
source) import it; ``edge`` never imports ``calibration``; a tracking module
stays under 400 lines.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EDGE = REPO / "edge"
TRACK = EDGE / "track"
TRACK_MAX_LINES = 400

SIM_ALLOWED = (
    "edge/sim/", "edge/eval/", "calibration/", "bench/", "tests/",
    "edge/cli.py", "edge/sources/synthetic.py",
)
"""Where ``edge.sim`` may be imported: the simulator and its callers outside the daemon."""

TRACK_FORBIDDEN = ("edge.billing", "edge.web", "edge.sim")


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line, dotted module)`` for every import in ``path``, function-local ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            # The project imports absolutely; a relative import would slip past the rules.
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            base = node.module or ""
            yield node.lineno, base
            # ``from edge import sim`` imports the module edge.sim.
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _sources(*roots: Path) -> list[Path]:
    return sorted(p for root in roots for p in root.rglob("*.py"))


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _offences(paths: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return sorted({f"{p.relative_to(REPO)}:{line} imports {mod}"
                   for p in paths for line, mod in _imports(p) if _within(mod, forbidden)})


def test_the_walk_sees_function_local_and_from_imports() -> None:
    modules = {mod for _, mod in _imports(EDGE / "cli.py")}
    assert "edge.sim.writer" in modules  # imported inside the ``sim`` subcommand
    assert _within("edge.sim.menu", ("edge.sim",))
    assert not _within("edge.simulate", ("edge.sim",))


def test_tracking_imports_no_billing_web_or_simulator() -> None:
    assert _offences(_sources(TRACK), TRACK_FORBIDDEN) == []


def test_only_the_simulators_callers_import_it() -> None:
    roots = [REPO / d for d in ("edge", "calibration", "bench", "tests")]
    outside = [p for p in _sources(*roots)
               if not p.relative_to(REPO).as_posix().startswith(SIM_ALLOWED)]
    assert outside, "no production module found: the walk is broken"
    assert _offences(outside, ("edge.sim",)) == []


def test_the_daemon_never_imports_calibration() -> None:
    assert _offences(_sources(EDGE), ("calibration",)) == []


def test_tracking_modules_stay_under_400_lines() -> None:
    long = {str(p.relative_to(REPO)): n for p in _sources(TRACK)
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > TRACK_MAX_LINES}
    assert long == {}


def test_no_script_folder_shadows_a_standard_module() -> None:
    """``python bench/x.py`` puts ``bench/`` first on ``sys.path``: a
    ``bench/select.py`` there replaced the standard ``select`` in every bench
    (multiprocessing, subprocess and asyncio import it)."""
    folders = [REPO / d for d in ("bench", "scripts", "tests")]  # run as scripts, or on sys.path
    clash = sorted(str(p.relative_to(REPO)) for d in folders if d.is_dir()
                   for p in d.glob("*.py") if p.stem in sys.stdlib_module_names)
    assert clash == []
