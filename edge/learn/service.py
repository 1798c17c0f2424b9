"""Learning on the job in the daemon: the examples, the bank and the correction loop.

One :class:`LearningService` per daemon (:mod:`edge.daemon`). It

* loads the site's examples from the journal at start into the
  :class:`~edge.learn.examples.ExampleIndex` (they survived any restart:
  the journal wrote them with their correction);
* finds the serving model's known-class bank (:mod:`edge.learn.bank`) and
  keeps the :class:`~edge.learn.openset.Learner` on the serving model
  (:meth:`use_model`, called at start and before every swap);
* listens to stored corrections: the corrected bill's examples are read back
  from the journal and the index updated, so the **next tray** is named with
  them (:attr:`last_effect_s` measures correction-to-effect);
* forgets line views older than ``learning.keep_views_days``, hourly;
* keeps the questions (:mod:`edge.learn.questions`): bills with unknown or
  doubtful lines, answered by the cashier's corrections.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog

from edge.billing.journal import Journal
from edge.billing.model import Bill
from edge.billing.teach import StoredExample
from edge.config import LearningConfig
from edge.detect.engine_store import file_sha256
from edge.errors import InputFormatError, JournalError, ModelError
from edge.learn.bank import KnownBank, find_bank
from edge.learn.examples import Example, ExampleIndex
from edge.learn.openset import Learner
from edge.learn.questions import QuestionQueue, attach
from edge.metrics import Metrics

log = structlog.get_logger()

T = TypeVar("T")
PRUNE_EVERY_S = 3600.0


class JournalAccess(Protocol):
    """What the service needs of :class:`edge.billing.service.BillingService`."""

    def add_correction_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener(bill view)`` after each stored correction."""

    def run_journal(self, op: Callable[[Journal], T]) -> Awaitable[T]:
        """Run ``op(journal)`` in the journal's thread."""


def to_example(stored: StoredExample) -> Example:
    """The index's form of a journal row."""
    return Example(stored.uid, stored.key, stored.model_id, stored.embedding, stored.origin)


class LearningService:
    """See the module docstring.

    Parameters
    ----------
    config : LearningConfig
        ``[learning]``.
    journal : JournalAccess or None
        The bill service (None: nothing is learnt; the bank still flags unknowns).
    search : sequence of Path
        Extra folders where a model's bank may lie (``storage.dir/models``).
    """

    def __init__(self, config: LearningConfig, journal: JournalAccess | None = None,
                 search: Sequence[Path] = (), metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.journal = journal
        self.search = tuple(search)
        self.index = ExampleIndex(config.examples_per_class)
        self.learner = Learner(config, self.index)
        # the frames most worth a label, for the labelling workspace (GET /api/questions)
        self.questions = QuestionQueue(config.max_questions)
        self.last_effect_s: float | None = None  # correction stored -> index updated
        self.examples_loaded = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._banks: dict[str, KnownBank | None] = {}

    async def start(self) -> None:
        """Load the examples and listen to corrections (the model comes with
        :meth:`use_model`)."""
        if self.journal is None:
            return
        attach(self.journal, self.questions)  # a correction at the till answers questions
        stored = await self.journal.run_journal(lambda j: j.active_examples())
        self.index.update(add=[to_example(s) for s in stored])
        self.examples_loaded = len(stored)
        log.info("examples_loaded", examples=len(stored), classes=len(self.index.counts()))
        self.journal.add_correction_listener(self._corrected)
        self._spawn(self._prune_loop())

    async def use_model(self, path: Path, model_id: str, class_names: Sequence[str],
                        embedding_dim: int | None, *, fallback: Path | None = None) -> None:
        """Name dishes for the model at ``path`` (registry id ``model_id``) from now on.

        Its bank is ``<stem>.bank.npz`` beside it, or beside ``fallback`` (the
        config's model file, whose registry copy lacks the sidecar) or in a
        search folder, whichever names the model's SHA-256."""
        bank = None
        if embedding_dim is not None:
            bank = await asyncio.to_thread(self._bank_for, Path(path), fallback)
        self.learner.use_model(model_id, bank, tuple(class_names))
        self._count()
        if embedding_dim is None:
            return  # the model_without_embeddings line says it already
        if bank is None and self.config.flag_unknown:
            log.info("model_without_bank", model=model_id, path=str(path),
                     hint="unknown dishes are not flagged: make MODEL.bank.npz with "
                          "`dishtracker calibrate bank --model MODEL`")
        log.info("learning_ready", model=model_id, bank=bank is not None,
                 examples=self.index.in_use(model_id))

    def bill_closed(self, bill: Bill) -> None:
        """A bill was submitted: one with unknown or doubtful lines becomes a question."""
        self.questions.offer(bill)

    async def merge_remote(self, examples: Sequence[StoredExample]) -> int:
        """Take examples another box of the site shared (:mod:`edge.fleet.examples`):
        stored in the journal (idempotent by uid; a removal propagates), then in
        the index, so the next tray is named with them. The last state of a uid
        given twice wins. Returns the journal rows added or changed.

        Raises
        ------
        JournalError
            The journal write failed: nothing stored, the index unchanged.
        """
        if self.journal is None:
            return 0
        latest = list({ex.uid: ex for ex in examples}.values())
        changed = await self.journal.run_journal(lambda j: j.add_remote_examples(latest))
        if self.index.update(add=[to_example(ex) for ex in latest if not ex.removed],
                             remove=[ex.uid for ex in latest if ex.removed]):
            log.info("examples_merged", origins=sorted({ex.origin for ex in latest}),
                     keys=sorted({ex.key for ex in latest if not ex.removed}),
                     taken_back=sum(ex.removed for ex in latest), rows_changed=changed)
            self._count()
        return changed

    def _count(self) -> None:
        if self.metrics is not None:
            self.metrics.learning_examples.set(
                sum(self.index.in_use(self.learner.model_id).values()))

    def retune(self, config: LearningConfig) -> None:
        """Use new ``[learning]`` settings from the next line on."""
        self.config = config
        self.learner.config = config
        self.index.set_per_class(config.examples_per_class)

    def status(self) -> dict[str, Any]:
        """For ``/api/learning`` and the metrics."""
        model = self.learner.model_id
        return {"enabled": self.config.enabled, "flag_unknown": self.config.flag_unknown,
                "model": model, "bank": self.learner.bank is not None,
                "examples": self.index.counts(model), "in_use": self.index.in_use(model),
                "examples_all_models": len(self.index), "last_effect_s": self.last_effect_s}

    async def close(self) -> None:
        """Stop the tasks it started."""
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- internals -------------------------------------------------------------

    def _corrected(self, view: dict[str, Any]) -> None:
        bill_id = str(view.get("bill_id"))
        self._spawn(self._reload_bill(bill_id, time.monotonic()))

    async def _reload_bill(self, bill_id: str, since: float) -> None:
        assert self.journal is not None
        try:
            rows = await self.journal.run_journal(lambda j: j.examples_of_bill(bill_id))
        except JournalError as err:
            log.error("examples_read_failed", bill_id=bill_id, error=str(err))
            return
        changed = self.index.update(add=[to_example(r) for r in rows if not r.removed],
                                    remove=[r.uid for r in rows if r.removed])
        if changed:
            self.last_effect_s = time.monotonic() - since
            self._count()
            if self.metrics is not None:
                self.metrics.learning_effect_seconds.observe(self.last_effect_s)
            active = sorted({r.key for r in rows if not r.removed})
            log.info("examples_updated", bill_id=bill_id, keys=active,
                     taken_back=sum(r.removed for r in rows),
                     effect_ms=round(self.last_effect_s * 1e3, 1))

    async def _prune_loop(self) -> None:
        assert self.journal is not None
        while True:
            before = time.time() - self.config.keep_views_days * 86400.0
            try:
                prune = functools.partial(Journal.prune_views, before=before)
                n = await self.journal.run_journal(prune)
                if n:
                    log.info("line_views_pruned", rows=n, days=self.config.keep_views_days)
            except JournalError as err:
                log.warning("line_views_prune_failed", error=str(err))
            await asyncio.sleep(PRUNE_EVERY_S)

    def _bank_for(self, path: Path, fallback: Path | None) -> KnownBank | None:
        try:
            sha = file_sha256(path)
        except OSError as err:
            log.warning("bank_model_unreadable", path=str(path), error=err.strerror)
            return None
        if sha in self._banks:
            return self._banks[sha]
        places = [find_bank(path), *([find_bank(fallback)] if fallback is not None else []),
                  *(folder / f"{sha}.bank.npz" for folder in self.search)]
        bank = None
        for place in places:
            if not place.is_file():
                continue
            try:
                bank = KnownBank.load(place, sha)
                log.info("bank_loaded", path=str(place), classes=len(bank.classes))
                break
            except (ModelError, InputFormatError) as err:
                log.info("bank_not_for_model", path=str(place), reason=str(err))
        self._banks[sha] = bank
        return bank

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

