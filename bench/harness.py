"""The real daemon under a long or heavy load: what bench/soak.py and bench/load.py share.

Starts ``dishtracker run`` as a child process (with its own access token,
journal folder and synthetic cameras), connects aiortc viewers with the
token, and reads what a leak or an overload shows: resident memory, open file
descriptors and threads from ``/proc``, the event loop's task count and the
frame counters from ``/metrics``, and how busy the rest of the machine is
(other people's processes on a shared box), so that every figure comes with
the contention it was measured under. Process, viewer and ``/metrics``
helpers come from bench/pipeline.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # `python bench/soak.py` from a checkout
    sys.path.insert(0, str(BENCH))

import pipeline as pl  # noqa: E402  # bench/pipeline.py: Child, viewers, /metrics, /proc

__all__ = ["Contention", "Daemon", "describe_contention", "machine_line", "measure_contention",
           "metric", "pl", "proc_status", "start_daemon", "thread_cpu", "thread_ticks",
           "write_site"]

SITE = """\
[server]
host = "127.0.0.1"
port = {port}
codec = "{codec}"
max_peers = {max_peers}
offers_per_minute = {offers_per_minute}
offer_burst = {offer_burst}
token_file = "{token_file}"

[detector]
threads = {threads}

[storage]
dir = "{storage}"
"""

STREAM = """
[[streams]]
id = "cam{n}"
url = "synthetic://?seed={seed}&fps={fps:g}&size={size}"
"""


@dataclass
class Daemon:
    """A running ``dishtracker run`` child and how to reach it."""

    child: pl.Child
    base: str
    token: str
    site: Path
    streams: list[str]

    @property
    def pid(self) -> int:
        """Process id of the daemon."""
        return self.child.pid

    def session(self, **kwargs: Any) -> aiohttp.ClientSession:
        """An HTTP session that sends the access token with every request."""
        return aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"},
                                     **kwargs)


def write_site(tmp: Path, *, streams: int, fps: float, size: str, codec: str = "vp8",
               max_peers: int = 8, offers_per_minute: float = 30.0, offer_burst: int = 10,
               threads: int = 1, first_seed: int = 3) -> tuple[Path, str, int, list[str]]:
    """Write ``site.toml`` and an owner-only token file into ``tmp``.

    Streams are ``cam1`` … ``camN``, synthetic cameras of seeds ``first_seed``,
    ``first_seed + 1``, … (seed 3 bills its first tray after about 4 s, the
    others soon after).

    Returns
    -------
    tuple
        ``(site.toml, token, port, stream ids)``.
    """
    token = secrets.token_urlsafe(32)
    token_file = tmp / "token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    port = pl.free_port()
    ids = [f"cam{i + 1}" for i in range(streams)]
    text = SITE.format(port=port, codec=codec, max_peers=max_peers,
                       offers_per_minute=offers_per_minute, offer_burst=offer_burst,
                       token_file=token_file, threads=threads, storage=tmp / "var")
    text += "".join(STREAM.format(n=i + 1, seed=i + first_seed, fps=fps, size=size)
                    for i in range(streams))
    site = tmp / "site.toml"
    site.write_text(text)
    return site, token, port, ids


async def start_daemon(tmp: Path, *, start_timeout: float = 180.0,
                       **site_options: Any) -> Daemon:
    """Start the daemon on a fresh site config (see :func:`write_site`) and wait
    for ``/readyz``; raises :class:`pipeline.BenchError` if it does not get there."""
    site, token, port, ids = write_site(tmp, **site_options)
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    exe = shutil.which("dishtracker", path=str(Path(sys.executable).parent))
    cmd = ([exe] if exe else [sys.executable, "-m", "edge.cli"]) + [
        "run", "--config", str(site), "--log-level", "info"]
    child = pl.Child("daemon", cmd, tmp / "daemon.log", env)
    daemon = Daemon(child, f"http://127.0.0.1:{port}", token, site, ids)
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            await pl._wait_ready(http, daemon.base, child, start_timeout)
    except BaseException:
        child.stop()
        raise
    return daemon


# ---------------------------------------------------------------- /proc


def proc_status(pid: int) -> dict[str, int]:
    """``rss`` (bytes), ``fds`` and ``threads`` of one process, from ``/proc``."""
    out = {"rss": 0, "fds": 0, "threads": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                out["rss"] = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    with contextlib.suppress(OSError):
        out["fds"] = sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
    return out


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    """``{thread id: (thread name, utime + stime ticks)}`` of one process's threads."""
    out: dict[int, tuple[str, int]] = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                text = (task / "stat").read_text()
            except OSError:
                continue
            fields = text[text.rindex(")") + 2:].split()
            out[int(task.name)] = (text[text.index("(") + 1:text.rindex(")")],
                                   int(fields[11]) + int(fields[12]))
    return out


def thread_cpu(pid: int, before: dict[int, tuple[str, int]], seconds: float) -> dict[str, float]:
    """CPU % (one core = 100 %) of ``pid``'s main thread (``"event loop"``) and of
    all its other threads together (``"other threads"``) since ``before``
    (:func:`thread_ticks`). Python before 3.14 gives its threads no OS names,
    so the others cannot be told apart here: encoders, inference, decoding
    and the journal all show as the process's name."""
    out = {"event loop": 0.0, "other threads": 0.0}
    for tid, (name, ticks) in thread_ticks(pid).items():
        used = (ticks - before.get(tid, (name, 0))[1]) / pl.CLOCK_TICKS
        out["event loop" if tid == pid else "other threads"] += 100 * used / max(1e-6, seconds)
    return out


def _all_cpu_ticks() -> dict[int, tuple[str, int]]:
    """``{pid: (command name, utime + stime ticks)}`` of every process."""
    out: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1:text.rindex(")")]
        fields = text[text.rindex(")") + 2:].split()
        out[int(entry.name)] = (name, int(fields[11]) + int(fields[12]))
    return out


class Contention:
    """CPU used by processes other than ours over a window (a shared machine).

    Call :meth:`start`, then :meth:`stop` with the pids that are the benchmark's
    own (the daemon, the bench, its helpers; their descendants count as ours).
    """

    def __init__(self) -> None:
        self.t0 = 0.0
        self.ticks0: dict[int, tuple[str, int]] = {}
        self.busy0 = (0.0, 0.0)
        self.load0 = (0.0, 0.0, 0.0)

    def start(self) -> None:
        """Remember every process's CPU time and the machine's busy time now."""
        self.t0 = time.monotonic()
        self.ticks0 = _all_cpu_ticks()
        self.busy0 = pl.machine_busy()
        self.load0 = os.getloadavg()

    def stop(self, ours: Iterable[int]) -> dict[str, Any]:
        """Figures since :meth:`start`.

        Returns
        -------
        dict
            ``machine_busy_pct`` (all cores, 100 % = the whole machine),
            ``ours_cpu_pct`` (one core = 100 %: the processes in ``ours`` and
            their descendants), ``others_cpu_pct`` (the machine's busy time
            less ours, so processes that came and went count too),
            ``top_others`` (up to 5 ``[name, % of one core]`` among the other
            processes still alive at the end), ``load_start`` and ``load_end``
            (1-minute load averages), ``seconds``.
        """
        span = max(1e-6, time.monotonic() - self.t0)
        ticks1 = _all_cpu_ticks()
        busy1 = pl.machine_busy()
        mine: set[int] = set()
        for pid in ours:
            mine.add(pid)
            mine.update(pl.descendants(pid))
        ours_s = 0.0
        per: dict[str, float] = {}
        for pid, (name, t1) in ticks1.items():
            used = (t1 - self.ticks0.get(pid, (name, 0))[1]) / pl.CLOCK_TICKS  # 0: started since
            if pid in mine:
                ours_s += used
            elif used > 0:
                per[name] = per.get(name, 0.0) + used
        busy = (busy1[0] - self.busy0[0]) / max(1.0, busy1[1] - self.busy0[1])
        machine_pct = 100 * busy * (os.cpu_count() or 1)  # of one core
        ours_pct = 100 * ours_s / span
        top = sorted(per.items(), key=lambda kv: -kv[1])[:5]
        return {
            "seconds": round(span, 1),
            "machine_busy_pct": round(100 * busy, 1),
            "ours_cpu_pct": round(ours_pct, 1),
            "others_cpu_pct": round(max(0.0, machine_pct - ours_pct), 1),
            "top_others": [[n, round(100 * u / span, 1)] for n, u in top],
            "load_start": [round(v, 2) for v in self.load0],
            "load_end": [round(v, 2) for v in os.getloadavg()],
        }


async def measure_contention(seconds: float) -> dict[str, Any]:
    """Contention before the benchmark starts anything: the machine as others leave it."""
    c = Contention()
    c.start()
    await asyncio.sleep(seconds)
    return c.stop([os.getpid()])


def describe_contention(c: dict[str, Any]) -> str:
    """One line for the report."""
    top = ", ".join(f"{n} {p:.0f} %" for n, p in c["top_others"]) or "none"
    return (f"machine {c['machine_busy_pct']:.0f} % busy over {c['seconds']:.0f} s; other "
            f"people's processes {c['others_cpu_pct']:.0f} % of one core (the busiest still "
            f"running: {top}); load average {c['load_start'][0]:.2f} -> "
            f"{c['load_end'][0]:.2f}")


def metric(samples: pl.Samples, name: str, **labels: str) -> float:
    """One sample of a ``/metrics`` scrape (0 when absent)."""
    return pl._get(samples, name, **labels)


def machine_line() -> str:
    """``CPU model, N cores, Python x.y`` of this machine."""
    m = pl.machine()
    return f"{m['cpu']} ({', '.join(m['cpu_flags']) or 'no flags of note'}), " \
           f"{m['cores']} cores, Python {m['python']}, PyAV {m['av']}, " \
           f"aiortc {m['aiortc']}"


def run_report(name: str, report: Coroutine[Any, Any, dict[str, Any]],
               json_out: Path | None) -> int:
    """Run a bench's coroutine, stop every child it started, write its JSON report.

    Returns the exit status: 0, 1 for a :class:`pipeline.BenchError`, 130 on Ctrl-C.
    """
    try:
        result = asyncio.run(report)
    except pl.BenchError as err:
        print(f"\nbench/{name}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\nbench/{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        for child in list(pl.Child.running):
            child.stop()
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=1, default=str) + "\n")
        print(f"wrote {json_out}")
    return 0
