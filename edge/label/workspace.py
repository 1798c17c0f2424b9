"""The labelling workspace as the daemon serves it: the store and the detector off the loop.

Between the HTTP routes (:mod:`edge.web.label_routes`) and the parts of
:mod:`edge.label`: every SQLite call runs in the store's one thread (the
store's connection lives there), every detector run in the proposer's
(:class:`edge.label.proposer.Proposer`). A frame leased without proposals
gets them before it is shown; the next frames' are computed meanwhile, so a
labeller rarely waits.

What a labeller sees of a frame (:meth:`Workspace.view`) is ranked when it
is read: each box's three candidates (:func:`edge.label.ranking.rank`) come
from the detector's class and the nearest of every label accepted so far,
so a label accepted on one frame re-ranks the proposals of all the others
at once. The examples are cached and rebuilt after each write.

The daemon's questions (:mod:`edge.learn.questions`) join the queue through
:meth:`Workspace.import_questions`: a question's frame (``origin``
``"question"``) has the boxes it asked about among the detector's, and their
proposals count in the ranking (:mod:`edge.label.asked`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edge.label import progress
from edge.label.asked import import_question, with_asked
from edge.label.coco import categories, coco_document
from edge.label.proposer import Proposer
from edge.label.ranking import Support, rank
from edge.label.store import LEASE_S, LabelStore, Lease, Revision, Step
from edge.learn.questions import Question

T = TypeVar("T")

CLASS_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")
"""What a class name may be (a menu key: ``docs/FORMATS.md``)."""
PREFETCH = 2
"""Frames whose proposals are computed ahead of the labellers."""
EDGE_SLACK_PX = 1.0
"""How far past the image's edge a drawn box may reach (rounding in the browser)."""


class Workspace:
    """The labelling workspace on ``root`` (``storage.dir/labels``).

    Parameters
    ----------
    root
        The workspace folder.
    model
        The detector model to propose with (read each time: the config's).
    extra_classes
        Class names to offer besides the model's and those labelled already
        (the site menu's keys).
    lease_s
        Life of a lease without activity, seconds.
    """

    def __init__(self, root: Path, model: Callable[[], Path], *,
                 extra_classes: Callable[[], Iterable[str]] = tuple,
                 lease_s: float = LEASE_S) -> None:
        self.root = root
        self.lease_s = lease_s
        self.extra_classes = extra_classes
        self.proposer = Proposer(model)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="label-store")
        self._store: LabelStore | None = None
        self._support: Support | None = None
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """Open the store (in its thread).

        Raises
        ------
        JournalError
            As :class:`edge.label.store.LabelStore`.
        """
        self._store = await self._run(LabelStore, self.root, lease_s=self.lease_s)

    async def close(self) -> None:
        """Stop prefetching, close the store and the detector."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._store is not None:
            await self._run(self._store.close)
            self._store = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.proposer.close)
        self._executor.shutdown(wait=True)

    @property
    def store(self) -> LabelStore:
        """The store (to be used through :meth:`_run` only)."""
        if self._store is None:
            raise RuntimeError("the labelling workspace is not open")
        return self._store

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    # the labeller's actions

    async def take(self, actor: str, *, step: Step = "next",
                   after: int | None = None) -> dict[str, Any] | None:
        """Lease ``actor`` the next (or previous) item and show it; None when none is left."""
        lease = await self._run(self.store.take, actor, step=step, after=after)
        if lease is None:
            return None
        self._prefetch()
        return await self.view(lease.frame_id, lease.pass_, actor)

    async def view(self, frame_id: int, pass_: int, actor: str) -> dict[str, Any]:
        """The item as the page shows it, ranked now; renews ``actor``'s lease on it.

        Raises
        ------
        KeyError
            No such frame or pass.
        """
        frame = await self._run(self.store.frame, frame_id)
        if frame is None or pass_ not in range(1, frame.passes + 1):
            raise KeyError(frame_id)
        await self._proposed(frame_id)
        lease = await self._run(self.store.lease_of, frame_id, pass_)
        if lease is not None and lease.actor == actor:
            lease = await self._run(self.store.renew, frame_id, pass_, actor)
        revision = await self._run(self.store.revision, frame_id, pass_)
        return await self._show(revision, lease, actor)

    async def write(self, frame_id: int, pass_: int, actor: str, version: int,
                    boxes: Sequence[dict[str, Any]], *, complete: bool) -> dict[str, Any]:
        """Write a labeller's new revision and show the item again.

        Raises
        ------
        KeyError
            No such frame or pass.
        ValueError
            The boxes do not fit the frame, or ``complete`` with a box not
            labelled; ``args[0]`` is the list of ``field: reason`` lines.
        StaleWrite, LeaseTaken
            As :meth:`edge.label.store.LabelStore.write`; nothing written.
        """
        frame = await self._run(self.store.frame, frame_id)
        if frame is None or pass_ not in range(1, frame.passes + 1):
            raise KeyError(frame_id)
        props = await self._run(self.store.proposals, frame_id)
        problems = _problems(boxes, frame.width, frame.height, complete=complete,
                             proposals=0 if props is None else len(props.boxes))
        if problems:
            raise ValueError(problems)
        clean = [{"box": [round(min(max(float(v), 0.0), float(lim)), 1) for v, lim in
                          zip(b["box"], (frame.width, frame.height) * 2, strict=True)],
                  "class": b.get("class"), "proposal": b.get("proposal"),
                  "rank": b.get("rank")} for b in boxes]
        revision = await self._run(self.store.write, frame_id, pass_, actor, version, clean,
                                   complete=complete)
        self._support = None
        lease = await self._run(self.store.lease_of, frame_id, pass_)
        return await self._show(revision, lease, actor)

    async def import_questions(self, questions: Sequence[Question]) -> list[tuple[int, bool]]:
        """Take the daemon's questions into the queue, in their order: per question
        ``(frame id, added)``; one imported before is not added again.

        Raises
        ------
        JournalError, OSError
            The store or the frames folder cannot be written; the questions
            before the failing one are imported.
        """

        def store_all() -> list[tuple[int, bool]]:
            return [import_question(self.store, q) for q in questions]

        out = await self._run(store_all)
        if any(added for _, added in out):
            self._prefetch()
        return out

    async def image(self, frame_id: int) -> Path | None:
        """The frame's image file, or None."""
        frame = await self._run(self.store.frame, frame_id)
        return None if frame is None else self.store.frames_dir / frame.file

    async def status(self) -> dict[str, Any]:
        """Figures of :func:`edge.label.progress.summary`, plus ``class_names``: every
        class a labeller may choose."""

        def read() -> dict[str, Any]:
            store = self.store
            return progress.summary(store.frames(), store.latest(), store.leases(),
                                    len(store.missing_proposals()))

        out = await self._run(read)
        out["class_names"] = await self.class_names()
        return out

    async def class_names(self) -> list[str]:
        """The model's classes, then the others offered or used, in name order."""
        used = await self._run(lambda: [b["class"] for r in self.store.latest()
                                        for b in r.boxes if b.get("class")])
        return categories(await self.proposer.class_names(), [*self.extra_classes(), *used])

    async def export(self) -> dict[str, Any]:
        """The COCO document (:func:`edge.label.coco.coco_document`)."""
        base = await self.proposer.class_names()
        return await self._run(coco_document, self.store, base)

    # proposals and ranking

    async def _proposed(self, frame_id: int) -> None:
        """Make sure the frame has its proposals (computing them at most once)."""
        if await self._run(self.store.proposals, frame_id) is not None:
            return
        pending = self._pending.get(frame_id)
        if pending is None:
            pending = asyncio.ensure_future(self._propose(frame_id))
            self._pending[frame_id] = pending
            pending.add_done_callback(lambda _: self._pending.pop(frame_id, None))
        await asyncio.shield(pending)

    async def _propose(self, frame_id: int) -> None:
        path = await self.image(frame_id)
        if path is None:
            return
        proposals = await self.proposer.propose(frame_id, path)
        asked = await self._run(self.store.question, frame_id)
        if asked is not None:
            frame = await self._run(self.store.frame, frame_id)
            assert frame is not None
            proposals = with_asked(proposals, asked["lines"], (frame.width, frame.height))
        await self._run(self.store.put_proposals, proposals)

    def _prefetch(self) -> None:
        if self._tasks:
            return

        async def ahead() -> None:
            for frame_id in await self._run(self.store.missing_proposals, PREFETCH):
                await self._proposed(frame_id)

        task = asyncio.create_task(ahead(), name="label-prefetch")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _examples(self) -> Support:
        if self._support is None:
            self._support = await self._run(_support_of, self.store)
        return self._support

    async def _show(self, revision: Revision, lease: Lease | None,
                    actor: str) -> dict[str, Any]:
        frame = await self._run(self.store.frame, revision.frame_id)
        assert frame is not None
        props = await self._run(self.store.proposals, revision.frame_id)
        question = await self._run(self.store.question, revision.frame_id)
        support = await self._examples()
        detected: list[tuple[str, float]] = []
        asked: list[dict[str, Any] | None] = []
        rows = []
        dim = None if props is None or props.embeddings is None else props.embeddings.shape[1]
        for b in revision.boxes:
            p = b.get("proposal")
            own = props.boxes[p] if props is not None and p is not None else None
            detected.append((own["class"], own["score"]) if own else ("", 0.0))
            asked.append(own.get("asked") if own else None)
            rows.append(props.embeddings[p] if own and props and props.embeddings is not None
                        else np.zeros(dim or 0, np.float32))
        embeddings = np.stack(rows) if rows and dim else None
        ranked = rank(detected, embeddings, support, support.counts(),
                      asked=[{c["class"]: c["score"] for c in a["proposals"]} if a else {}
                             for a in asked])
        boxes = []
        for b, (name, score), cands, a in zip(revision.boxes, detected, ranked, asked,
                                              strict=True):
            boxes.append({**b, "detector": {"class": name, "score": score} if name else None,
                          "candidates": [{"class": c, "score": s} for c, s in cands if c],
                          "asked": a})
        return {
            "frame": frame.id, "pass": revision.pass_, "version": revision.version,
            "width": frame.width, "height": frame.height, "complete": revision.complete,
            "source": frame.source, "source_frame": frame.source_frame,
            "written_by": revision.actor, "proposals_ready": props is not None,
            "lease": None if lease is None else {"actor": lease.actor,
                                                 "expires_at": round(lease.expires_at, 1)},
            "mine": lease is not None and lease.actor == actor,
            "boxes": boxes,
            "origin": "selection" if question is None else "question",
            "question": None if question is None else {
                k: question[k] for k in ("id", "bill_id", "stream_id", "closed_at")},
        }


def _support_of(store: LabelStore) -> Support:
    """Every accepted label that came from a proposal, with the proposal's embedding."""
    names: list[str] = []
    rows = []
    cache: dict[int, Any] = {}
    for r in store.latest():
        for b in r.boxes:
            p = b.get("proposal")
            if not b.get("class") or p is None:
                continue
            if r.frame_id not in cache:
                cache[r.frame_id] = store.proposals(r.frame_id)
            props = cache[r.frame_id]
            if (props is None or props.embeddings is None or p >= len(props.boxes)
                    or not props.embeddings[p].any()):  # an asked box the detector missed
                continue
            names.append(b["class"])
            rows.append(props.embeddings[p])
    if not rows:
        return Support.empty()
    return Support(np.stack(rows).astype(np.float32), names)


def _problems(boxes: Sequence[dict[str, Any]], width: int, height: int, *,
              complete: bool, proposals: int) -> list[str]:
    """``boxes.N.field: reason`` lines for boxes that do not fit a ``width`` x ``height``
    frame or name a proposal the frame lacks, and for ``complete`` with a box not
    labelled."""
    out = []
    for n, b in enumerate(boxes):
        p = b.get("proposal")
        if p is not None and not 0 <= int(p) < proposals:
            out.append(f"boxes.{n}.proposal: the frame has {proposals} proposals "
                       f"(0-{proposals - 1}), not {p}")
        x1, y1, x2, y2 = (float(v) for v in b["box"])
        if not (-EDGE_SLACK_PX <= x1 < x2 <= width + EDGE_SLACK_PX
                and -EDGE_SLACK_PX <= y1 < y2 <= height + EDGE_SLACK_PX):
            out.append(f"boxes.{n}.box: [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is not x1 < x2, "
                       f"y1 < y2 inside the {width}x{height} frame")
        name = b.get("class")
        if name is not None and not CLASS_NAME.match(str(name)):
            out.append(f"boxes.{n}.class: {name!r} is not a class name (1-80 of A-Z a-z "
                       "0-9 _ . -)")
        if complete and name is None:
            out.append(f"boxes.{n}.class: not labelled; a complete frame has every box "
                       "labelled (label it or delete the box)")
    return out
