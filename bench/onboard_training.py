"""The training step of ``bench/onboard.py``: the workspace's fine-tune job over HTTP.

``POST /api/label/training`` (a manager's token) starts the job the page's
"Train a model" starts (docs/LABELLING.md): export of the labelled frames, one
held back, ``calibrate train`` in a child process of the daemon, evaluation,
the model registry. The bench follows ``GET /api/label/training`` and reads
the trainer's CPU time from ``/proc/<pid>/stat`` while it runs (user + system,
its threads and any children it waited for; the daemon's own CPU is not
counted). The last reading is at most half a second before the trainer
exits. A job left interrupted, failed or cancelled by an earlier run is
resumed from its checkpoint, and ``trainer_cpu.json`` keeps each trainer
process's CPU, so the total counts every attempt.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
ENDED = ("done", "failed", "cancelled", "interrupted")
POLL_S = 0.5


class JobFailed(RuntimeError):
    """The job could not start or did not end ``done`` (the message has the log's end)."""


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` and its waited-for children (None: gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return sum(int(v) for v in fields[11:15]) / CLOCK_TICKS


async def _job(http: aiohttp.ClientSession, base: str, auth: dict[str, str]) -> Any:
    async with http.get(f"{base}/api/label/training", headers=auth) as resp:
        return (await resp.json())["job"]


async def train(http: aiohttp.ClientSession, base: str, token: str, out: Path,
                options: dict[str, Any]) -> dict[str, Any]:
    """Start (or resume, or follow) the workspace's job until it ends.

    Parameters
    ----------
    http, base, token
        A session, the daemon's URL and a manager's token.
    out
        Where ``trainer_cpu.json`` is kept.
    options
        The body of ``POST /api/label/training`` (without ``resume``).

    Returns
    -------
    dict
        ``job`` (as ``GET /api/label/training`` shows it at the end), ``cpu_s``
        (the trainer's CPU seconds, every attempt), ``wall_s`` (this call's).

    Raises
    ------
    JobFailed
        The job was refused or did not end ``done``.
    """
    auth = {"Authorization": f"Bearer {token}"}
    cpu_file = out / "trainer_cpu.json"
    cpu: dict[str, float] = json.loads(cpu_file.read_text()) if cpu_file.is_file() else {}
    job = await _job(http, base, auth)
    if job is None or job["state"] in ("failed", "cancelled", "interrupted"):
        body = {**options, "resume": job is not None}
        async with http.post(f"{base}/api/label/training", json=body, headers=auth) as resp:
            answer = await resp.json()
            if resp.status != 200:
                raise JobFailed(f"POST /api/label/training: {resp.status} {answer}")
        job = answer["job"]
        print(f"  job {job['id']} {'resumed' if body['resume'] else 'started'}: "
              f"{job['frames']}", flush=True)
    started, shown = time.monotonic(), None
    while True:
        pid = job.get("pid")
        used = None if pid is None else process_cpu_s(int(pid))
        if used is not None and used > cpu.get(str(pid), -1.0):
            cpu[str(pid)] = used
            tmp = cpu_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(cpu))
            tmp.replace(cpu_file)  # a bench killed while writing leaves the last whole file
        now = (job["state"], job["epochs_done"])
        if now != shown:
            print(f"  job {job['id']}: {job['state']}, epoch {job['epochs_done']}/"
                  f"{job['options']['epochs']}, trainer CPU {sum(cpu.values()) / 60:.1f} min, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
            shown = now
        if job["state"] in ENDED:
            break
        await asyncio.sleep(POLL_S)
        job = await _job(http, base, auth)
    if job["state"] != "done":
        async with http.get(f"{base}/api/label/training/log", headers=auth) as resp:
            tail = (await resp.text())[-3000:]
        raise JobFailed(f"training job {job['id']} {job['state']}: {job['detail']}\n{tail}")
    return {"job": job, "cpu_s": round(sum(cpu.values()), 1),
            "wall_s": round(time.monotonic() - started, 1)}
