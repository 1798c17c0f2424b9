"""Examples shared across the fleet (``fleet.share_examples``, issue 14 item 6).

The message and its strict check, the journal's shared marks, the idempotent
merge into another box's journal and index, boxes on a real mosquitto
(in-process publishers: a broker outage, a box that joins later), and the
issue's done-when on two real daemons: the second bills a dish it learned only
from the first one's examples.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from bills_support import MENU, make_bill, with_views
from mqtt_broker import Broker, Recorder
from test_daemon import _cli, _free_port, _Lines
from test_fleet_models import DAEMON_SITE as MODELS_SITE  # skips without the mqtt extra
from test_fleet_models import _Daemon, needs_broker
from test_hardening_config import needs_model
from test_webrtc_support import AUTH, write_token_file

from edge.billing.corrections import parse_correction
from edge.billing.journal import Journal
from edge.billing.service import BillingService
from edge.billing.teach import StoredExample
from edge.config import DEFAULT_MODEL, FleetConfig, LearningConfig, SiteConfig
from edge.fleet import create_fleet
from edge.fleet.example_messages import (
    MAX_DIM,
    MAX_EXAMPLES,
    MAX_KEY_CHARS,
    MAX_MESSAGE_BYTES,
    BadExamplesMessage,
    examples_message,
    parse_examples,
)
from edge.fleet.examples import ExampleShare
from edge.fleet.messages import Topics
from edge.learn.service import LearningService
from edge.metrics import Metrics

A = Topics("dishtracker", "test", "boxA")
B = Topics("dishtracker", "test", "boxB")
BILL = "cam1-1-1"


def _correct(journal: Journal, bill_id: str, body: dict[str, object]) -> None:
    assert journal.add_correction(bill_id, parse_correction(body), MENU) is not None


def _taught(path: Path, bill_id: str = BILL, seed: int = 0) -> Journal:
    """Box A's journal with one bill whose line 2 the cashier changed to green salad."""
    journal = Journal(path)
    journal.commit(with_views(make_bill(bill_id), seed=seed))
    _correct(journal, bill_id, {"action": "change", "line": 2, "class_key": "green_salad"})
    return journal


def _message(journal: Journal, topics: Topics = A) -> tuple[str, bytes]:
    """The topic and payload of the first bill the journal has to share, marked
    shared as the publisher does once the broker has it."""
    [(bill_id, examples)] = journal.examples_to_share(10)
    journal.mark_examples_shared(examples)
    return topics.examples(bill_id), examples_message(topics, bill_id, examples)


# ---- the message ------------------------------------------------------------------------


def test_a_bills_examples_make_one_message_without_images(tmp_path: Path) -> None:
    with _taught(tmp_path / "a.sqlite3") as journal:
        [(_, stored)] = journal.examples_to_share(10)
        assert all(ex.crop_jpeg for ex in stored)  # the journal has the crops …
        topic, payload = _message(journal)
    assert topic == f"dishtracker/test/boxA/examples/{BILL}"
    data = json.loads(payload)
    assert set(data) == {"schema", "type", "site", "box", "bill_id", "at", "examples"}
    assert [set(e) for e in data["examples"]] == [
        {"uid", "key", "model_id", "embedding", "removed"}] * 3  # … the message never
    assert b"crop" not in payload and b"\xff\xd8" not in payload
    assert len(payload) < 2000  # three views of D = 128: 256 bytes of float16 each
    got = parse_examples(payload, site="test", box="boxA", bill_id=BILL)
    assert [ex.uid for ex in got] == [f"boxA:{BILL}/2/{k}/green_salad" for k in range(3)]
    for ex, mine in zip(got, stored, strict=True):
        assert (ex.key, ex.model_id, ex.origin, ex.removed, ex.crop_jpeg) == (
            "green_salad", "m1", "boxA", False, None)
        assert ex.embedding.dtype == np.float32 and ex.embedding.shape == (128,)
        assert float(ex.embedding @ mine.embedding) > 0.9999


def _edit(payload: bytes, change: Callable[[dict[str, Any]], object]) -> bytes:
    data = json.loads(payload)
    change(data)
    return json.dumps(data).encode()


def _b64(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, "<f2").tobytes()).decode()


def _ex0(field: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["examples"][0].__setitem__(field, value)


BAD: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    ("unknown header", lambda d: d.__setitem__("crop", "…"), "unknown crop"),
    ("missing header", lambda d: d.pop("at"), "missing at"),
    ("schema", lambda d: d.__setitem__("schema", 2), "schema/type"),
    ("site", lambda d: d.__setitem__("site", "other"), "site: 'other' is not the topic's"),
    ("box", lambda d: d.__setitem__("box", "boxC"), "box: 'boxC' is not the topic's"),
    ("bill", lambda d: d.__setitem__("bill_id", "cam1-1-2"), "bill_id"),
    ("at", lambda d: d.__setitem__("at", "now"), "at: 'now'"),
    ("too many", lambda d: d.__setitem__("examples", d["examples"] * 200),
     f"at most {MAX_EXAMPLES}"),
    ("unknown field", _ex0("crop", "…"), "examples[0]: unknown crop"),
    ("missing field", lambda d: d["examples"][0].pop("removed"), "examples[0]: missing removed"),
    ("uid of another box", _ex0("uid", f"boxC:{BILL}/2/0/green_salad"), "examples[0].uid"),
    ("uid of another bill", _ex0("uid", "boxA:cam1-1-2/2/0/green_salad"), "examples[0].uid"),
    ("twice", lambda d: d["examples"].__setitem__(1, d["examples"][0]), "twice"),
    ("key too long", _ex0("key", "k" * (MAX_KEY_CHARS + 1)), "examples[0].key"),
    ("key not text", _ex0("key", 3), "examples[0].key"),
    ("model id", _ex0("model_id", "a/b"), "examples[0].model_id"),
    ("removed", _ex0("removed", 1), "examples[0].removed: '1' is not true or false"),
    ("not base64", _ex0("embedding", "***"), "not base64"),
    ("odd bytes", _ex0("embedding", base64.b64encode(b"abc").decode()), "3 bytes"),
    ("too long", _ex0("embedding", _b64(np.ones(MAX_DIM + 1))), "float16"),
    ("nan", _ex0("embedding", _b64(np.r_[np.full(127, 0.1), np.nan])), "not finite"),
    ("inf", _ex0("embedding", _b64(np.r_[np.full(127, 0.1), np.inf])), "not finite"),
    ("zero", _ex0("embedding", _b64(np.zeros(128))), "zero"),
    ("shapes", _ex0("embedding", _b64(np.ones(64))),
     "examples[1].embedding: 128 values, but model m1's others have 64"),
]


@pytest.mark.parametrize(("change", "names"), [(c, n) for _, c, n in BAD],
                         ids=[i for i, _, _ in BAD])
def test_a_bad_examples_message_is_refused_naming_the_field(
        tmp_path: Path, change: Callable[[dict[str, Any]], object], names: str) -> None:
    with _taught(tmp_path / "a.sqlite3") as journal:
        _, payload = _message(journal)
    with pytest.raises(BadExamplesMessage, match=re.escape(names)):
        parse_examples(_edit(payload, change), site="test", box="boxA", bill_id=BILL)


def test_a_message_that_is_no_json_or_too_large_is_refused_unread() -> None:
    with pytest.raises(BadExamplesMessage, match="not UTF-8 JSON"):
        parse_examples(b"\xff{", site="test", box="boxA", bill_id=BILL)
    with pytest.raises(BadExamplesMessage, match=f"an examples message is at most "
                                                 f"{MAX_MESSAGE_BYTES}"):
        parse_examples(b" " * (MAX_MESSAGE_BYTES + 1), site="test", box="boxA", bill_id=BILL)
    with pytest.raises(BadExamplesMessage, match="expected a JSON object"):
        parse_examples(b"[]", site="test", box="boxA", bill_id=BILL)


# ---- the journal's shared marks ------------------------------------------------------------


def _pending(journal: Journal) -> list[tuple[str, list[tuple[str, bool]]]]:
    return [(b, [(ex.uid, ex.removed) for ex in exs]) for b, exs in journal.examples_to_share(10)]


def test_the_journal_shares_each_state_once_and_an_undo_again(tmp_path: Path) -> None:
    with _taught(tmp_path / "a.sqlite3") as journal:
        uids = [f"{BILL}/2/{k}/green_salad" for k in range(3)]
        assert _pending(journal) == [(BILL, [(u, False) for u in uids])]
        assert journal.unshared_example_bills() == 1
        [(_, sent)] = journal.examples_to_share(10)
        assert journal.mark_examples_shared(sent) == 3
        assert _pending(journal) == [] and journal.unshared_example_bills() == 0
        _correct(journal, BILL, {"action": "undo"})  # taken back: to be said
        assert _pending(journal) == [(BILL, [(u, True) for u in uids])]
        [(_, read)] = journal.examples_to_share(10)
        _correct(journal, BILL, {"action": "change", "line": 2, "class_key": "green_salad"})
        assert _pending(journal) == []  # taught again before the undo went out: nothing new
        assert journal.mark_examples_shared(read) == 3  # … but the undo did go out meanwhile
        assert _pending(journal) == [(BILL, [(u, False) for u in uids])]  # so: again
        # taught and taken back before it was ever shared: never sent
        journal.commit(with_views(make_bill("cam1-1-2"), seed=2))
        _correct(journal, "cam1-1-2", {"action": "change", "line": 1, "class_key": "tea"})
        _correct(journal, "cam1-1-2", {"action": "undo"})
        assert [b for b, _ in journal.examples_to_share(10)] == [BILL]
        # examples other boxes shared are never sent on
        journal.add_remote_examples([StoredExample(
            "boxC:cam9-1-1/0/0/tea", "tea", "m1", np.ones(128, np.float32), "boxC", False)])
        assert [b for b, _ in journal.examples_to_share(10)] == [BILL]
        assert journal.example_dims() == {"m1": 128}


# ---- the merge -------------------------------------------------------------------------------


@asynccontextmanager
async def _box(path: Path) -> AsyncIterator[tuple[BillingService, LearningService]]:
    billing = BillingService(path, Metrics())
    await billing.open()
    learning = LearningService(LearningConfig(), billing)
    await learning.start()
    try:
        yield billing, learning
    finally:
        await learning.close()
        await billing.close()


async def _until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_the_same_message_twice_merges_one_example_and_a_removal_propagates(
        tmp_path: Path) -> None:
    journal_a = _taught(tmp_path / "a.sqlite3")

    async def main() -> None:
        async with _box(tmp_path / "b.sqlite3") as (billing, learning):
            share = ExampleShare(B, billing, learning.merge_remote, Metrics())
            merging = asyncio.create_task(share.run())
            topic, payload = _message(journal_a)
            share.offer(topic, payload)
            share.offer(topic, payload)  # the same message twice: one example each
            await _until(lambda: share.status()["examples_merged"] == 3)
            assert learning.index.counts() == {"green_salad": 3}
            stored = await billing.run_journal(lambda j: j.active_examples())
            assert sorted(ex.uid for ex in stored) == [
                f"boxA:{BILL}/2/{k}/green_salad" for k in range(3)]
            assert {ex.origin for ex in stored} == {"boxA"}
            assert all(ex.crop_jpeg is None for ex in stored)
            # the journal's merge is idempotent on its own too
            again = parse_examples(payload, site="test", box="boxA", bill_id=BILL)
            assert await learning.merge_remote(again) == 0
            assert len(learning.index) == 3

            share.offer(topic.replace("/boxA/", "/boxB/"), payload)  # its own: ignored
            assert share.status()["own"] == 1

            _correct(journal_a, BILL, {"action": "undo"})
            topic, payload = _message(journal_a)
            share.offer(topic, payload)
            await _until(lambda: len(learning.index) == 0)
            gone = await billing.run_journal(lambda j: j.active_examples())
            assert gone == [] and share.status()["rows_changed"] == 6

            # bad messages are counted and said, never raised
            share.offer(topic, b"{not json")
            bad_dims = _edit(payload, lambda d: [e.__setitem__("embedding", _b64(np.ones(64)))
                                                 for e in d["examples"]])
            share.offer(topic, bad_dims)  # the box knows model m1's embeddings: 128 values
            status = share.status()
            assert status["invalid"] == 2 and "m1's embeddings have 128 values on this box" \
                in status["last_invalid"]
            assert not merging.done()
            merging.cancel()

    try:
        asyncio.run(main())
    finally:
        journal_a.close()


# ---- boxes on a real broker ------------------------------------------------------------------


def _fleet(port: int, box: str) -> FleetConfig:
    return FleetConfig(enabled=True, host="127.0.0.1", port=port, site="test", box=box,
                       share_examples=True, reconnect_initial_s=0.1, reconnect_max_s=0.4,
                       health_interval_s=60.0)


@asynccontextmanager
async def _fleet_box(path: Path, port: int, box: str
                     ) -> AsyncIterator[tuple[BillingService, LearningService, Any]]:
    metrics = Metrics()
    billing = BillingService(path, metrics, outbox=True)
    await billing.open()
    learning = LearningService(LearningConfig(), billing)
    await learning.start()
    fleet = create_fleet(_fleet(port, box), billing, metrics, learning=learning)
    fleet.start()
    try:
        yield billing, learning, fleet
    finally:
        await fleet.close()
        await learning.close()
        await billing.close()


def _uids(learning: LearningService) -> set[str]:
    """The uids in the index (what names dishes; it has no public list of them)."""
    return set(learning.index._examples)


@needs_broker
def test_boxes_share_examples_through_an_outage_and_with_a_box_that_joins_later(
        tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker", persistence=True)  # retained copies survive it
    broker.start()

    async def correct(billing: BillingService, bill_id: str, body: dict[str, object]) -> None:
        assert await billing.correct(bill_id, parse_correction(body), MENU) is not None

    async def main() -> None:
        want = {f"boxA:{BILL}/2/{k}/green_salad" for k in range(3)}
        tea = {f"boxA:cam1-1-2/0/{k}/tea" for k in range(3)}
        with Recorder(broker.port, "dishtracker/test") as mqtt:
            async with _fleet_box(tmp_path / "b.sqlite3", broker.port, "boxB") as (_, lb, fb):
                async with _fleet_box(tmp_path / "a.sqlite3", broker.port,
                                      "boxA") as (ba, la, fa):
                    for bill_id, seed in ((BILL, 0), ("cam1-1-2", 1)):
                        ba.submit(with_views(make_bill(bill_id), seed=seed))
                    await _until(lambda: ba.pending == 0)
                    await correct(ba, BILL, {"action": "change", "line": 2,
                                             "class_key": "green_salad"})
                    await _until(lambda: _uids(lb) == want)
                    assert lb.index.counts() == {"green_salad": 3}
                    assert _uids(la) == {u.split(":", 1)[1] for u in want}  # A: its own, once
                    assert fa.status()["examples"]["own"] >= 1  # its retained copy came back

                    broker.stop()  # an outage: an undo and a new lesson wait in A's journal
                    await _until(lambda: fa.status()["state"] != "connected")
                    await correct(ba, BILL, {"action": "undo"})
                    await correct(ba, "cam1-1-2", {"action": "change", "line": 0,
                                                   "class_key": "tea"})
                    assert await ba.run_journal(lambda j: j.unshared_example_bills()) == 2
                # A stops while the broker is away, and starts again once it is back
                broker.start()
                mqtt.wait_subscribed()
                async with _fleet_box(tmp_path / "a.sqlite3", broker.port, "boxA") as (_, _, fa):
                    await _until(lambda: _uids(lb) == tea)
                    assert lb.index.counts() == {"tea": 3}
                    await _until(lambda: fa.status()["examples"]["unshared_bills"] == 0)
                    assert fb.status()["examples"]["invalid"] == 0

            # a box that joins later gets the site's examples from the retained copies
            async with _fleet_box(tmp_path / "c.sqlite3", broker.port, "boxC") as (_, lc, fc):
                await _until(lambda: _uids(lc) == tea)
                assert fc.status()["examples"]["received"] == 2  # one message per bill
            messages = mqtt.on(f"/examples/{BILL}")
            assert messages and all(set(m.payload) == {
                "schema", "type", "site", "box", "bill_id", "at", "examples"} for m in messages)
            assert [e["removed"] for e in messages[-1].payload["examples"]] == [True] * 3
        # B restarted: its journal kept them, the index loads them at start
        async with _box(tmp_path / "b.sqlite3") as (_, lb2):
            assert _uids(lb2) == tea

    try:
        asyncio.run(main())
    finally:
        broker.stop()


# ---- two real daemons (the done-when) -------------------------------------------------

MODELS_PULL = ("models = true\nmodel_shadow_s = 3.0\nmodel_min_bills = 0\n"
               "model_min_agreement = 0.0\n")
assert MODELS_PULL in MODELS_SITE and "seed={seed}" in MODELS_SITE
DAEMON_SITE = MODELS_SITE.replace(MODELS_PULL, "share_examples = true\n").replace(
    "[detector]\n", '[detector]\nmodel = "{model}"\n')
"""test_fleet_models' daemon, sharing examples instead of pulling models, on a
copy of the model."""

NEW_DISH = "mystery_dish"
TAUGHT = ("tomato_soup", "coffee")
"""Dishes of seed 3 that come back on later trays (tomato soup on the trays
closing at about 4, 10, 17 and 41 s, coffee at 4, 23, 27 and 41 s)."""


def _menu_toml() -> str:
    """The default menu and the new dish (a ``[menu]`` table replaces the default)."""
    menu = {**SiteConfig().menu}
    lines = []
    for key, entry in menu.items():
        lines += [f"\n[menu.{json.dumps(key)}]", f"name = {json.dumps(entry.name)}",
                  f"price = {entry.price}", f"billable = {str(entry.billable).lower()}"]
    lines += [f"\n[menu.{NEW_DISH}]", 'name = "Mystery dish"', "price = 3.3"]
    return "\n".join(lines) + "\n"


def _start(tmp_path: Path, box: str, mqtt: int, model: Path) -> _Daemon:
    folder = tmp_path / box
    folder.mkdir()
    port = _free_port()
    site = folder / "site.toml"
    site.write_text(DAEMON_SITE.format(port=port, mqtt=mqtt, box=box, model=model, seed=3,
                                       storage=folder / "var",
                                       token_file=write_token_file(folder / "token"))
                    + _menu_toml())
    proc = _cli("run", "--config", str(site), merge_stderr=True)
    return _Daemon(box, f"http://127.0.0.1:{port}", folder / "var", proc, _Lines(proc.stdout))


async def _bills(daemon: _Daemon, http: aiohttp.ClientSession) -> list[dict[str, Any]]:
    assert daemon.proc.poll() is None, "".join(daemon.out.lines)[-3000:]
    return list((await daemon.get(http, "/api/bills?limit=100"))["bills"])


async def _first_line_of(daemon: _Daemon, http: aiohttp.ClientSession, keys: tuple[str, ...],
                         timeout: float = 60.0) -> tuple[dict[str, Any], dict[str, Any]]:
    """The daemon's oldest bill with a line of one of ``keys``, and that line."""
    deadline = time.monotonic() + timeout
    while True:
        bills = await _bills(daemon, http)
        for bill in reversed(bills):
            lines = [ln for ln in bill["effective"]["items"] if ln["key"] in keys]
            if lines:
                return bill, lines[0]
        assert time.monotonic() < deadline, bills
        await asyncio.sleep(0.3)


@pytest.mark.slow
@needs_broker
@needs_model
def test_a_second_daemon_bills_a_dish_it_learned_only_from_the_first_daemons_examples(
        tmp_path: Path) -> None:
    """Two daemons on one mosquitto, the same synthetic camera (seed 3, whose
    dishes come back on later trays). A's cashier corrects a tomato soup (or a
    coffee) of A's first bill to a menu entry the model has no class for; B,
    never corrected, receives A's examples and names that dish so on its next
    tray. The model is a copy without its known-class bank (``*.bank.npz``),
    should one lie beside the shipped model: with a bank, the detector's class
    has its prototypes' similarity as evidence, which the new dish's examples
    must beat by ``learning.example_margin`` (edge/learn/openset.py), a
    question of the bank, not of sharing; without one, the class's evidence
    is its own examples, and B has none."""
    model = tmp_path / "model" / DEFAULT_MODEL.name
    model.parent.mkdir()
    shutil.copy(DEFAULT_MODEL, model)
    broker = Broker(tmp_path / "broker")
    broker.start()
    daemons = [_start(tmp_path, box, broker.port, model) for box in ("boxA", "boxB")]
    a, b = daemons

    async def main() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            for daemon in daemons:
                await asyncio.to_thread(daemon.out.wait_for, "open http://127.0.0.1:", 120)
            bill, line = await _first_line_of(a, http, TAUGHT)
            async with http.post(f"{a.base}/api/bills/{bill['bill_id']}/corrections",
                                 headers=AUTH, json={"action": "change", "line": line["line"],
                                                     "class_key": NEW_DISH}) as resp:
                assert resp.status == 200, await resp.text()
            deadline = time.monotonic() + 20
            while True:  # B merges A's examples
                fleet = await b.get(http, "/api/fleet")
                if fleet["examples"]["examples_merged"]:
                    break
                assert time.monotonic() < deadline, (fleet, await a.get(http, "/api/fleet"))
                await asyncio.sleep(0.2)
            learned_at = time.time()
            learning = await b.get(http, "/api/learning")  # B: in use for the serving model
            assert learning["in_use"].get(NEW_DISH, 0) >= 1 and not learning["bank"], learning
            deadline = time.monotonic() + 45
            while True:  # B's next bill of that look names the new dish
                later = [bl for bl in await _bills(b, http) if bl["created_at"] > learned_at]
                named = [bl for bl in later if any(ln["key"] == NEW_DISH
                                                   for ln in bl["items"])]
                if named:
                    break
                assert time.monotonic() < deadline, (line["key"], [
                    [ln["key"] for ln in bl["items"]] for bl in later])
                await asyncio.sleep(0.3)
            assert {ln["source"] for bl in named for ln in bl["items"]
                    if ln["key"] == NEW_DISH} == {"examples"}
            assert all(not bl["corrections"] for bl in await _bills(b, http))  # B: no lesson
            assert (await a.get(http, "/api/fleet"))["examples"]["examples_merged"] == 0

    try:
        asyncio.run(main())
    finally:
        for daemon in daemons:
            daemon.stop()
        broker.stop()
    for daemon in daemons:
        assert daemon.proc.returncode == 0, "".join(daemon.out.lines)[-3000:]
