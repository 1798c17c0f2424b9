"""From the workspace's labels to a candidate model: one fine-tune job at a time.

``workspace (saved frames) ─▶ dataset (train + held-back val) ─▶ calibrate train
(a child process) ─▶ eval detector (new and serving model, held-back frames) ─▶
model registry (candidate) ─▶ shadow / promote (docs/MODELS.md)``

A job lives in ``storage.dir/labels/jobs/<job id>/``: ``job.json`` (its state,
written atomically at every step), ``data/{train,val}`` (the workspace's
saved frames as COCO; every ``val_every``-th complete one held back), ``run/`` (the
trainer's checkpoints, ``history.jsonl`` and ``model.onnx``), ``train.log`` and
``eval-*.json``. The trainer runs as ``python -m edge.cli calibrate train``
from the serving model (new classes get new rows; the known ones are kept),
with ``replay`` (a COCO split of the known classes) mixed in when given:
without it a fine-tune on a few frames forgets the dishes the model knew
(docs/SITE_SETUP.md, step 5). Progress is read from ``history.jsonl`` (one
line per epoch), so a job keeps being followed after a daemon restart while
its process lives; one whose process is gone is ``interrupted`` and starts
again from its last checkpoint when asked to (``resume``).

Every saved frame is trained on; on a frame that is not complete, the boxes
nobody labelled yet are ignore regions (:mod:`edge.label.coco`), and so are
the serving model's other boxes there that no label covers (``unlabelled``
``proposals``, the default); an object nobody boxed and the model does not
see stays background, which is why only complete frames are held back to
measure a model. With ``noisy_labels`` ``drop`` (the default) the trainer
sets aside the labels it keeps contradicting (:mod:`calibration.noisy`); they
are in the finished job's ``figures.doubted``, for a person to look at again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import structlog

from edge.fsutil import make_private_dir, write_atomic

log = structlog.get_logger()

JOBS_SUBDIR = "jobs"
JobState = Literal["exporting", "training", "evaluating", "done", "failed", "cancelled",
                   "interrupted"]
RUNNING: tuple[JobState, ...] = ("exporting", "training", "evaluating")
CANCEL_GRACE_S = 10.0
"""How long a cancelled trainer may take to stop before it is killed."""
MIN_FRAMES = 2
"""Saved frames a job needs: one to train on and a complete one to hold back, at least."""


class JobRefused(Exception):
    """A job that cannot start (409: one runs; 422: not enough labels)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class TrainOptions:
    """What a job is asked for (``POST /api/label/training``)."""

    epochs: int = 6
    epoch_images: int = 320
    time_budget_s: float = 1800.0
    threads: int = 1
    val_every: int = 5
    replay: str | None = None
    noisy_labels: str = "drop"  # calibrate train --noisy-labels (calibration/noisy.py)
    unlabelled: str = "proposals"  # calibrate train --unlabelled


@dataclass
class Job:
    """One job's state, as ``job.json`` holds it and the API shows it."""

    id: str
    state: JobState
    actor: str | None
    options: dict[str, Any]
    started_at: float
    base_model: str
    frames: dict[str, int] = field(default_factory=dict)
    epochs_done: int = 0
    pid: int | None = None
    ended_at: float | None = None
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    candidate: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["progress"] = round(min(1.0, self.epochs_done / max(1, self.options["epochs"])), 3)
        return out


ExportFn = Callable[[], Any]  # an awaitable returning the workspace's COCO document
Register = Callable[[Path, str, str | None], dict[str, Any]]  # (model, name, actor) -> entry


class TrainingJobs:
    """Starts, follows and cancels the workspace's fine-tune jobs.

    Parameters
    ----------
    root : Path
        ``storage.dir/labels/jobs``.
    frames_dir : Path
        The workspace's frame images (:attr:`edge.label.store.LabelStore.frames_dir`).
    export : callable
        ``async () -> COCO document`` of the workspace (:meth:`Workspace.export`).
    serving_model : callable
        ``() -> Path`` of the model that serves now: the job fine-tunes it, and
        its figures on the held-back frames are shown beside the new model's.
    register : callable, optional
        Puts the finished model into the model registry as a candidate
        (:meth:`edge.rollout.store.ModelStore.add_file`); without it the job
        ends with the model file and the command to use it.
    """

    def __init__(self, root: Path, frames_dir: Callable[[], Path], export: ExportFn,
                 serving_model: Callable[[], Path], register: Register | None = None) -> None:
        self.root = root
        self.frames_dir = frames_dir
        self.export = export
        self.serving_model = serving_model
        self.register = register
        self.job: Job | None = None
        self._task: asyncio.Task[None] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._starting = False  # a start awaits the export: a second one must not pass

    # -- state ---------------------------------------------------------------

    def open(self) -> None:
        """Read the newest job; one left running by a process that is gone is
        ``interrupted`` (one whose process still runs is followed again by
        :meth:`follow`)."""
        make_private_dir(self.root)
        jobs = sorted(p for p in self.root.iterdir() if (p / "job.json").is_file())
        if not jobs:
            return
        try:
            data = json.loads((jobs[-1] / "job.json").read_text())
            self.job = Job(**data)
        except (OSError, ValueError, TypeError) as err:
            log.warning("training_job_unreadable", path=str(jobs[-1]), error=str(err))
            return
        if self.job.state in RUNNING and not _alive(self.job.pid):
            self._set("interrupted", detail="the daemon stopped while it ran; start it again "
                                            "with resume to go on from its last checkpoint")

    def status(self) -> dict[str, Any]:
        """The newest job (``{"job": null}`` before the first)."""
        return {"job": None if self.job is None else self.job.to_json()}

    def _dir(self) -> Path:
        assert self.job is not None
        return self.root / self.job.id

    def _set(self, state: JobState | None = None, **changes: Any) -> None:
        assert self.job is not None
        if state is not None:
            self.job.state = state
            if state not in RUNNING:
                self.job.ended_at = time.time()
        for key, value in changes.items():
            setattr(self.job, key, value)
        write_atomic(self._dir() / "job.json",
                     json.dumps(asdict(self.job), indent=1).encode())

    # -- start, follow, cancel -----------------------------------------------

    async def start(self, options: TrainOptions, actor: str | None, *,
                    resume: bool = False) -> dict[str, Any]:
        """Start a job (or, with ``resume``, the interrupted newest one again).

        Raises
        ------
        JobRefused
            409 while a job runs, or ``resume`` without an interrupted job;
            422 with fewer than :data:`MIN_FRAMES` saved frames or none
            complete, or a ``replay`` that is not a COCO split.
        """
        if self._starting or (self.job is not None and self.job.state in RUNNING):
            what = "a job is starting" if self._starting or self.job is None else (
                f"job {self.job.id} is {self.job.state}")
            raise JobRefused(f"{what}: wait for it or cancel it")
        self._starting = True
        try:
            return await self._start(options, actor, resume=resume)
        finally:
            self._starting = False

    async def _start(self, options: TrainOptions, actor: str | None, *,
                     resume: bool) -> dict[str, Any]:
        if resume:
            if self.job is None or self.job.state not in ("interrupted", "failed", "cancelled"):
                raise JobRefused("nothing to resume: the newest job did not stop half-way")
            self._set("training", detail="resumed")
        else:
            if options.replay is not None and not (
                    Path(options.replay) / "annotations.json").is_file():
                raise JobRefused(f"replay: {options.replay} is not a COCO split (no "
                                 "annotations.json there)", 422)
            doc = await self.export()
            complete = [i for i in doc["images"] if i.get("complete")]
            if not complete or len(doc["images"]) < MIN_FRAMES:
                raise JobRefused(f"{len(doc['images'])} frame(s) saved, {len(complete)} of them "
                                 f"labelled completely; a job needs {MIN_FRAMES} saved frames "
                                 "at least, one of them complete (held back to measure the "
                                 "new model)", 422)
            job_id = time.strftime("%Y%m%d-%H%M%S")
            self.job = Job(job_id, "exporting", actor, asdict(options), time.time(),
                           str(self.serving_model()))
            make_private_dir(self._dir())
            self._set()
        try:
            if not resume:
                frames = await asyncio.to_thread(_write_split, doc, self.frames_dir(),
                                                 self._dir() / "data", options.val_every)
                self._set("training", frames=frames)
            await self._spawn()
        except Exception as err:
            # left "exporting" or "training" without a trainer, it would refuse every
            # later start (409) and, after a restart, offer a resume of nothing
            self._set("failed", detail=f"could not start: {type(err).__name__}: {err}",
                      pid=None)
            log.error("training_failed", job=self.job.id, error=repr(err))
            raise
        self._task = asyncio.create_task(self._follow(), name="training-job")
        log.info("training_started", job=self.job.id, actor=actor, resume=resume,
                 frames=self.job.frames)
        return self.job.to_json()

    def follow(self) -> None:
        """After :meth:`open`: keep following a job whose process still runs."""
        if self.job is not None and self.job.state == "training" and _alive(self.job.pid):
            self._task = asyncio.create_task(self._follow(), name="training-job")

    async def cancel(self, actor: str | None) -> dict[str, Any]:
        """Stop the running job (SIGTERM to its process group)."""
        if self.job is None or self.job.state not in RUNNING:
            raise JobRefused("no job runs")
        pid = self.job.pid
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            await self._reap(pid)  # a resume must not find the trainer still writing
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set("cancelled", detail=f"cancelled by {actor or 'someone'}", pid=None)
        log.info("training_cancelled", job=self.job.id, actor=actor)
        return self.job.to_json()

    async def _reap(self, pid: int, grace_s: float = CANCEL_GRACE_S) -> None:
        """Wait for the trainer to end after SIGTERM; SIGKILL its group after ``grace_s``."""
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.returncode is not None:
                return
            if self._proc is None and not _alive(pid):
                return
            await asyncio.sleep(0.1)
        log.warning("training_kill", pid=pid, after_s=grace_s)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    async def close(self) -> None:
        """Stop following (the trainer itself goes on; :meth:`open` finds it again)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _spawn(self) -> None:
        assert self.job is not None
        folder = self._dir()
        opts = self.job.options
        cmd = [sys.executable, "-m", "edge.cli", "calibrate", "train",
               "--init", self.job.base_model, "--data", str(folder / "data"),
               "--out", str(folder / "run"), "--head", "factorized", "--freeze-blocks", "3",
               "--epochs", str(opts["epochs"]), "--half-cycle-epochs", "1",
               "--epoch-images", str(opts["epoch_images"]), "--backbone-lr-scale", "0.3",
               "--threads", str(opts["threads"]), "--workers", "0",
               "--time-budget-s", str(opts["time_budget_s"]),
               "--noisy-labels", str(opts.get("noisy_labels", "trust")),
               "--unlabelled", str(opts.get("unlabelled", "background")),
               "--model-version", f"site-{self.job.id}"]
        if opts.get("replay"):
            cmd += ["--replay", str(opts["replay"]), "--replay-share", "0.5"]
        log_file = (folder / "train.log").open("ab")
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True)
        finally:
            log_file.close()
        self._set(pid=self._proc.pid)

    async def _follow(self) -> None:
        assert self.job is not None
        history = self._dir() / "run" / "history.jsonl"
        try:
            while True:
                done = _lines(history)
                if done != self.job.epochs_done:  # job.json is fsynced: only on news
                    self._set(epochs_done=done)
                code = await self._exit_code()
                if code is not None:
                    break
                await asyncio.sleep(1.0)
            self._set(epochs_done=_lines(history), pid=None)
            model = self._dir() / "run" / "model.onnx"
            if code != 0 or not model.is_file():
                self._set("failed", detail=f"the trainer exited with {code}; see "
                                           f"{self._dir() / 'train.log'}")
                log.error("training_failed", job=self.job.id, exit_code=code)
                return
            self._set("evaluating")
            figures = {"new": await self._evaluate(model, "new"),
                       "serving": await self._evaluate(Path(self.job.base_model), "serving"),
                       "doubted": await asyncio.to_thread(_doubted, self._dir())}
            candidate = None
            if self.register is not None:
                candidate = await asyncio.to_thread(self.register, model,
                                                    f"site-{self.job.id}", self.job.actor)
            self._set("done", figures=figures, candidate=candidate,
                      detail="in the model registry as a candidate: shadow it, then promote it"
                      if candidate is not None else f"model written to {model}")
            log.info("training_done", job=self.job.id, figures=figures,
                     candidate=None if candidate is None else candidate.get("id"))
        except asyncio.CancelledError:
            raise
        except Exception as err:  # the job fails, the daemon goes on
            self._set("failed", detail=f"{type(err).__name__}: {err}", pid=None)
            log.error("training_failed", job=self.job.id, error=repr(err))

    async def _exit_code(self) -> int | None:
        if self._proc is not None:
            return self._proc.returncode
        # followed again after a restart: not our child, so no exit status; once it is
        # gone, the model it exported last is the job's outcome
        assert self.job is not None
        if _alive(self.job.pid):
            return None
        return 0 if (self._dir() / "run" / "model.onnx").is_file() else -1

    async def _evaluate(self, model: Path, name: str) -> dict[str, Any]:
        out = self._dir() / f"eval-{name}.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "edge.cli", "eval", "detector", "--model", str(model),
            "--data", str(self._dir() / "data"), "--split", "val", "--json", str(out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await proc.communicate()
        except asyncio.CancelledError:  # the job was cancelled while it measured
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            return {"error": err.decode(errors="replace")[-500:]}
        report = json.loads(out.read_text())
        return {"map50": report.get("map50"), "map50_dishes": report.get("map50_dishes"),
                "images": report.get("n_images"),
                "per_class": {k: v["ap50"] for k, v in (report.get("per_class") or {}).items()
                              if v.get("n_gt")}}


def _write_split(doc: dict[str, Any], frames_dir: Path, out: Path,
                 val_every: int) -> dict[str, int]:
    """``doc``'s frames as ``out/train`` and ``out/val``: every ``val_every``-th
    complete frame held back (at least one; only complete frames measure a
    model), every other saved frame trained on (an incomplete one with its
    unlabelled boxes as ignore regions, :mod:`edge.label.coco`)."""
    complete = [i for i in doc["images"] if i.get("complete")]
    val_ids = {img["id"] for n, img in enumerate(complete) if n % val_every == val_every - 1}
    if not val_ids:
        val_ids = {complete[-1]["id"]}
    counts = {}
    for split, held in (("train", False), ("val", True)):
        images = [img for img in doc["images"] if (img["id"] in val_ids) == held]
        ids = {img["id"] for img in images}
        folder = out / split
        make_private_dir(folder / "images")
        for img in images:
            shutil.copyfile(frames_dir / Path(img["file_name"]).name, folder / img["file_name"])
        part = {**doc, "images": images,
                "annotations": [a for a in doc["annotations"] if a["image_id"] in ids]}
        write_atomic(folder / "annotations.json", json.dumps(part).encode())
        counts[split] = len(images)
    counts["incomplete"] = len(doc["images"]) - len(complete)
    return counts


DOUBTED_SHOWN = 100
"""At most this many doubted labels in a job's figures (the most contradicted first)."""


def _doubted(folder: Path) -> list[dict[str, Any]]:
    """The labels the trainer doubted (``run/label_trust.json``, ``--noisy-labels drop``),
    by workspace frame: ``[{"frame", "box", "label", "model_says", "p_label"}, …]``."""
    try:
        report = json.loads((folder / "run" / "label_trust.json").read_text())
        images = json.loads((folder / "data" / "train" / "annotations.json").read_text())
        frame_of = {Path(im["file_name"]).name: im["id"] for im in images["images"]}
        return [{"frame": frame_of.get(Path(d["path"]).name), "box": d["box"],
                 "label": d["label_name"], "model_says": d["model_says"],
                 "p_label": d["p_label"]} for d in report.get("doubted", [])[:DOUBTED_SHOWN]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("training_doubts_unreadable", folder=str(folder), error=repr(err))
        return []  # the job's model is fine; only the list of doubts is lost


def _lines(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except OSError:
        return 0


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
