"""From the workspace's labels to a candidate model (issue 15 item 4).

The daemon's application with a real workspace (frames of a simulator scene,
the shipped detector proposing) and a real model registry; the job runs the
real trainer (``calibrate train``, torch on the CPU, one short epoch) and the
real evaluation in child processes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from test_label_api import Box, _json, accepted, lease, put, workspace

pytestmark = pytest.mark.slow

SHORT = {"epochs": 1, "epoch_images": 4, "time_budget_s": 300, "val_every": 3}


async def _label(box: Box, frames: int) -> None:
    item = await lease(box, "ana")
    for _ in range(frames):
        await put(box, "ana", item, accepted(item), complete=True)
        item = await lease(box, "ana", after=item["frame"])


async def _job(box: Box) -> dict[str, Any]:
    resp = await box.client.get("/api/label/training", headers=box.auth("ana"))
    job: dict[str, Any] = (await _json(resp, 200))["job"]
    return job


def test_a_job_trains_on_complete_frames_measures_both_models_and_registers_a_candidate(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with workspace(tmp_path, registry=True) as box:
            assert await _job(box) is None
            resp = await box.client.post("/api/label/training", json=SHORT,
                                         headers=box.auth("manager"))
            refused = await _json(resp, 422)  # nothing labelled yet
            assert "labelled completely" in refused["error"]
            await _label(box, 3)
            resp = await box.client.post("/api/label/training", json=SHORT,
                                         headers=box.auth("ana"))
            assert resp.status == 403  # a labeller follows jobs, a manager starts them
            resp = await box.client.post("/api/label/training", json={"epochs": 0},
                                         headers=box.auth("manager"))
            assert (await _json(resp, 422))["errors"][0].startswith("epochs")
            resp = await box.client.post("/api/label/training", json=SHORT,
                                         headers=box.auth("manager"))
            job = (await _json(resp, 200))["job"]
            assert job["state"] == "training" and job["frames"] == {"train": 2, "val": 1}
            again = await box.client.post("/api/label/training", json=SHORT,
                                          headers=box.auth("manager"))
            assert again.status == 409
            deadline = time.monotonic() + 420
            while (job := await _job(box))["state"] in ("training", "evaluating"):
                assert time.monotonic() < deadline, job
                await asyncio.sleep(1.0)
            log = await (await box.client.get("/api/label/training/log",
                                              headers=box.auth("ana"))).text()
            assert job["state"] == "done", (job, log[-2000:])
            assert job["progress"] == 1.0
            for name in ("new", "serving"):
                assert job["figures"][name]["images"] == 1
                assert 0.0 <= job["figures"][name]["map50"] <= 1.0
            candidate = job["candidate"]
            assert candidate["state"] == "candidate" and candidate["source"] == "training"
            resp = await box.client.get("/api/models", headers=box.auth("manager"))
            ids = {m["id"] for m in (await _json(resp, 200))["models"]}
            assert candidate["id"] in ids

    asyncio.run(main())


def test_a_job_is_cancelled_and_can_be_resumed(tmp_path: Path) -> None:
    async def main() -> None:
        async with workspace(tmp_path) as box:
            await _label(box, 2)
            long = {**SHORT, "epochs": 50, "epoch_images": 64}
            resp = await box.client.post("/api/label/training", json=long,
                                         headers=box.auth("manager"))
            job = (await _json(resp, 200))["job"]
            pid = job["pid"]
            await asyncio.sleep(2.0)
            resp = await box.client.post("/api/label/training/cancel",
                                         headers=box.auth("manager"))
            assert (await _json(resp, 200))["job"]["state"] == "cancelled"
            for _ in range(100):  # the trainer's process group got SIGTERM
                try:
                    Path(f"/proc/{pid}/stat").read_text()
                except OSError:
                    break
                state = Path(f"/proc/{pid}/stat").read_text().split()[2]
                if state == "Z":
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the trainer still runs")
            resp = await box.client.post("/api/label/training/cancel",
                                         headers=box.auth("manager"))
            assert resp.status == 409
            resp = await box.client.post("/api/label/training", json={**long, "resume": True},
                                         headers=box.auth("manager"))
            assert (await _json(resp, 200))["job"]["state"] == "training"
            resp = await box.client.post("/api/label/training/cancel",
                                         headers=box.auth("manager"))
            assert resp.status == 200

    asyncio.run(main())
