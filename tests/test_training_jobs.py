"""From the workspace's labels to a candidate model (issue 15 item 4).

The daemon's application with a real workspace (frames of a simulator scene,
the shipped detector proposing) and a real model registry; the job runs the
real trainer (``calibrate train``, torch on the CPU, one short epoch) and the
real evaluation in child processes.
"""

from __future__ import annotations

import asyncio
import json
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
            assert job["state"] == "training" and job["frames"] == {"train": 2, "val": 1,
                                                                    "incomplete": 0}
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
            assert job["figures"]["doubted"] == []  # one epoch: every label still counts
            assert job["options"]["noisy_labels"] == "drop"  # the defaults: both remedies
            assert "unlabelled_proposals" in log and "labels_followed" in log
            candidate = job["candidate"]
            assert candidate["state"] == "candidate" and candidate["source"] == "training"
            resp = await box.client.get("/api/models", headers=box.auth("manager"))
            ids = {m["id"] for m in (await _json(resp, 200))["models"]}
            assert candidate["id"] in ids

    asyncio.run(main())


def test_a_job_is_cancelled_and_can_be_resumed(tmp_path: Path) -> None:
    async def main() -> None:
        async with workspace(tmp_path) as box:
            await _label(box, 1)
            # a second frame half labelled: trained on, its other boxes ignore regions
            item = await lease(box, "ana", after=1)
            boxes = [{**b, "class": None, "rank": None} for b in accepted(item)]
            boxes[0]["class"] = item["boxes"][0]["candidates"][0]["class"]
            await put(box, "ana", item, boxes)
            long = {**SHORT, "epochs": 50, "epoch_images": 64}
            resp = await box.client.post("/api/label/training", json=long,
                                         headers=box.auth("manager"))
            job = (await _json(resp, 200))["job"]
            assert job["frames"] == {"train": 1, "val": 1, "incomplete": 1}
            train = json.loads((Path(box.root) / "jobs" / job["id"] / "data" / "train" /
                                "annotations.json").read_text())
            assert sum(a["ignore"] for a in train["annotations"]) == len(boxes) - 1
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


def _coco(frames: int) -> dict[str, Any]:
    return {"images": [{"id": i, "file_name": f"images/{i}.jpg", "complete": True}
                       for i in range(1, frames + 1)],
            "annotations": [], "categories": []}


def test_a_second_start_while_the_first_exports_is_refused(tmp_path: Path) -> None:
    from edge.label.training import JobRefused, TrainingJobs, TrainOptions

    async def main() -> None:
        exporting, go_on = asyncio.Event(), asyncio.Event()

        async def export() -> dict[str, Any]:
            exporting.set()
            await go_on.wait()
            return _coco(3)

        jobs = TrainingJobs(tmp_path / "jobs", lambda: tmp_path / "no-frames", export,
                            lambda: tmp_path / "model.onnx")
        jobs.open()
        first = asyncio.create_task(jobs.start(TrainOptions(), "manager"))
        await exporting.wait()
        with pytest.raises(JobRefused) as refused:
            await asyncio.wait_for(jobs.start(TrainOptions(), "manager"), 5.0)
        assert refused.value.status == 409
        go_on.set()
        with pytest.raises(OSError):  # the frames are not there: the first one fails
            await first

    asyncio.run(main())


def test_a_job_that_cannot_start_fails_instead_of_running_forever(tmp_path: Path) -> None:
    """Its frames could not be copied: the job says failed (on disk too), and the
    next start is not refused as if it ran."""
    from edge.label.training import JobRefused, TrainingJobs, TrainOptions

    async def main() -> None:
        async def export() -> dict[str, Any]:
            return _coco(3)

        root = tmp_path / "jobs"
        jobs = TrainingJobs(root, lambda: tmp_path / "no-frames", export,
                            lambda: tmp_path / "model.onnx")
        jobs.open()
        with pytest.raises(OSError):
            await jobs.start(TrainOptions(), "manager")
        job = jobs.status()["job"]
        assert job["state"] == "failed" and "could not start" in job["detail"]
        again = TrainingJobs(root, lambda: tmp_path / "no-frames", export,
                             lambda: tmp_path / "model.onnx")
        again.open()  # after a restart: failed, not interrupted
        assert again.status()["job"]["state"] == "failed"
        with pytest.raises(OSError):  # tried again, not refused (409)
            await jobs.start(TrainOptions(), "manager")
        with pytest.raises(JobRefused):
            await jobs.cancel("manager")  # nothing runs

    asyncio.run(main())
