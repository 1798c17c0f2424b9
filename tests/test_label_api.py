"""The labelling workspace over HTTP on the daemon's own application.

``edge.daemon._web_app`` with real tokens (a manager's, two labellers', a
cashier's), a real workspace under ``storage.dir`` holding frames of a
simulator scene imported from a ``calibrate select``-style folder, and the
shipped detector proposing. Covers: a stale write is refused with 409 and
nothing is lost; a labeller may label but not change the config; proposals
re-rank after an accepted label; the COCO export round-trips through the
trainer's own dataset loader; the CLI imports and exports.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer
from test_http_api import MemoryDaemon
from test_webrtc_support import TOKEN, write_token_file

from edge.billing.service import BillingService
from edge.cli import main as cli
from edge.config import SiteConfig, StorageConfig
from edge.daemon import _web_app
from edge.label.importer import import_folder
from edge.label.store import LABELS_SUBDIR, LabelStore
from edge.metrics import Metrics
from edge.pipeline import Pipeline
from edge.rollout.store import MODELS_SUBDIR, ModelStore
from edge.sim.scene import Scene
from edge.web.access import load_keyring
from edge.web.tokens import TOKENS_FILE, TokenStore
from edge.web.webrtc import WebRtcHub

SEED = 1002  # a training seed: a tray with five dishes slides in from frame 56 (easy level)
FRAMES = (60, 68, 76, 84, 92, 100)


def write_selection(folder: Path, numbers: tuple[int, ...] = FRAMES) -> Path:
    """A ``calibrate select`` output folder: ``frame_NNNNNN.jpg`` and ``selection.json``."""
    folder.mkdir(parents=True)
    wanted = set(numbers)
    for number, image, _ in Scene(SEED, difficulty="easy").frames(max(numbers) + 1):
        if number in wanted:
            cv2.imwrite(str(folder / f"frame_{number:06d}.jpg"), image)
    doc = {"frames": sorted(numbers), "order": list(numbers), "source": f"sim seed {SEED}",
           "images": [f"frame_{n:06d}.jpg" for n in sorted(numbers)]}
    (folder / "selection.json").write_text(json.dumps(doc))
    return folder


@dataclass
class Box:
    """A running workspace: a client per token, and the store's folder."""

    client: TestClient[Any, Any]
    tokens: dict[str, str]
    root: Path
    url: str

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


@asynccontextmanager
async def workspace(tmp_path: Path, *, double_every: int = 0,
                    numbers: tuple[int, ...] = FRAMES,
                    registry: bool = False) -> AsyncIterator[Box]:
    """The daemon's application with the workspace holding ``numbers`` frames."""
    storage = tmp_path / "var"
    storage.mkdir(mode=0o700)
    write_token_file(storage / "token")
    store = TokenStore(storage / TOKENS_FILE)
    tokens = {"manager": TOKEN, "ana": store.create("ana", "labeller"),
              "ben": store.create("ben", "labeller"), "till": store.create("till", "cashier")}
    config = SiteConfig(storage=StorageConfig(dir=storage))
    root = storage / LABELS_SUBDIR
    labels = LabelStore(root)
    import_folder(labels, write_selection(tmp_path / "selected", numbers),
                  double_every=double_every)
    labels.close()
    metrics = Metrics()
    service = BillingService(storage / "journal.sqlite3", metrics)
    await service.open()
    rollout = None
    if registry:  # a model registry (a real controller of a pipeline that never starts)
        models = ModelStore(storage / MODELS_SUBDIR)
        models.open()
        models.adopt(config.detector.model)
        rollout = Pipeline(config, metrics, store=models).rollout
    app = _web_app(MemoryDaemon(config), WebRtcHub({}, config.server, metrics),  # type: ignore[arg-type]
                   service, None, load_keyring(config.server, config.storage)[1], rollout)
    try:
        async with TestClient(TestServer(app, host="127.0.0.1", port=0)) as client:
            yield Box(client, tokens, root, str(client.make_url("/")))
    finally:
        await service.close()


async def _json(resp: Any, status: int) -> Any:
    body = await resp.json()
    assert resp.status == status, body
    return body


async def lease(box: Box, who: str, **body: Any) -> dict[str, Any]:
    resp = await box.client.post("/api/label/lease", json=body, headers=box.auth(who))
    item: dict[str, Any] = (await _json(resp, 200))["item"]
    return item


async def put(box: Box, who: str, item: dict[str, Any], boxes: list[dict[str, Any]], *,
              complete: bool = False, status: int = 200) -> dict[str, Any]:
    body = {"pass": item["pass"], "version": item["version"], "boxes": boxes,
            "complete": complete}
    resp = await box.client.put(f"/api/label/frames/{item['frame']}", json=body,
                                headers=box.auth(who))
    answer: dict[str, Any] = await _json(resp, status)
    return answer


def accepted(item: dict[str, Any]) -> list[dict[str, Any]]:
    """Every box of ``item`` labelled with its first candidate (one key each)."""
    return [{"box": b["box"], "class": b["candidates"][0]["class"], "proposal": b["proposal"],
             "rank": 1} for b in item["boxes"]]


def test_a_stale_write_is_refused_with_409_and_nothing_is_lost(tmp_path: Path) -> None:
    async def main() -> None:
        async with workspace(tmp_path) as box:
            item = await lease(box, "ana")
            assert item["frame"] == 1 and item["version"] == 0 and item["mine"]
            assert item["boxes"], "the detector proposes boxes on a tray with five dishes"
            first = await put(box, "ana", item, accepted(item)[:1])
            assert first["version"] == 1
            # a second tab of ana's still shows version 0 and deletes everything
            refused = await put(box, "ana", item, [], complete=True, status=409)
            assert refused["errors"] == ["version: 0 is not the newest (1)"]
            assert refused["current"]["version"] == 1
            assert refused["current"]["boxes"][0]["class"] == first["boxes"][0]["class"]
            resp = await box.client.get("/api/label/frames/1", headers=box.auth("ana"))
            now = await _json(resp, 200)
            assert now["version"] == 1 and len(now["boxes"]) == len(first["boxes"])
            # ben may not write ana's frame while she holds it
            taken = await put(box, "ben", now, [], status=409)
            assert "ana" in taken["error"]

    asyncio.run(main())


def test_a_labeller_labels_but_cannot_change_the_config_or_the_menu(tmp_path: Path) -> None:
    async def main() -> None:
        async with workspace(tmp_path) as box:
            for method, path, body in (("PUT", "/api/config", {}),
                                       ("POST", "/api/menu", {"key": "x", "name": "X",
                                                              "price": 1.0})):
                resp = await box.client.request(method, path, json=body, headers=box.auth("ana"))
                refused = await _json(resp, 403)
                assert "labeller" in refused["error"], path
            resp = await box.client.get("/api/whoami", headers=box.auth("ana"))
            assert (await _json(resp, 200))["may"] == ["label"]
            assert (await lease(box, "ana"))["frame"] == 1
            resp = await box.client.get("/api/label/status", headers=box.auth("till"))
            assert resp.status == 403  # a cashier's token is not a labeller's
            resp = await box.client.get("/api/label/status", headers=box.auth("manager"))
            assert (await _json(resp, 200))["frames"] == len(FRAMES)

    asyncio.run(main())


def test_an_accepted_label_reranks_the_other_frames_and_counts_per_class(
        tmp_path: Path) -> None:
    async def main() -> None:
        async with workspace(tmp_path) as box:
            item = await lease(box, "ana")
            target = item["boxes"][0]
            detector_class = target["detector"]["class"]
            # the labeller says this dish is a new one the model never saw
            labelled = [{"box": b["box"], "class": "linzer_torte" if i == 0 else
                         b["candidates"][0]["class"], "proposal": b["proposal"],
                         "rank": None if i == 0 else 1} for i, b in enumerate(item["boxes"])]
            await put(box, "ana", item, labelled, complete=True)
            nxt = await lease(box, "ana", after=item["frame"])
            assert nxt["frame"] == 2
            # the same dish on the next frame (the tray slid on): the new class is
            # proposed, from the embedding of the one accepted example
            same = [b for b in nxt["boxes"] if b["detector"]["class"] == detector_class]
            assert len(same) == 1
            names = [c["class"] for c in same[0]["candidates"]]
            assert names[0] == "linzer_torte", (names, detector_class)
            resp = await box.client.get("/api/label/status", headers=box.auth("ana"))
            status = await _json(resp, 200)
            counts = {c["name"]: c for c in status["classes"]}
            assert counts["linzer_torte"]["labelled"] == 1
            assert counts["linzer_torte"]["needed"] == 4
            assert "linzer_torte" in status["class_names"]
            assert status["complete"] == 1

    asyncio.run(main())


def test_the_coco_export_round_trips_through_the_trainers_dataset_loader(
        tmp_path: Path) -> None:
    from calibration.data import DetectionDataset, read_split

    async def main() -> list[dict[str, Any]]:
        async with workspace(tmp_path) as box:
            written = []
            item = await lease(box, "ana")
            boxes = accepted(item)
            boxes[0]["class"] = "linzer_torte"
            boxes.append({"box": [5.0, 5.0, 40.0, 30.0], "class": "napkin", "proposal": None,
                          "rank": None})  # drawn by hand
            written.append(await put(box, "ana", item, boxes, complete=True))
            item = await lease(box, "ana", after=item["frame"])
            written.append(await put(box, "ana", item, accepted(item)[:2]))  # not complete
            resp = await box.client.get("/api/label/export", headers=box.auth("ana"))
            doc = await _json(resp, 200)
            assert [im["complete"] for im in doc["images"]] == [True, False]
            return written

    written = asyncio.run(main())
    out = tmp_path / "dataset"
    assert cli(["label", "export", "--out", str(out), "--config", str(_config(tmp_path))]) == 0
    split = read_split(out / "train")
    assert split.class_names[:29] == list(_model_classes()[:29])
    assert split.class_names[-1] == "linzer_torte"
    assert len(split.frames) == 2
    for frame, view in zip(split.frames, written, strict=True):
        mine = [b for b in view["boxes"] if b["class"]]
        assert [split.class_names[c] for c in frame.classes] == [b["class"] for b in mine]
        np.testing.assert_allclose(frame.boxes, [b["box"] for b in mine], atol=0.05)
        assert frame.size == (640, 480) and frame.path.is_file()
    data = DetectionDataset(split.frames, len(split.class_names), (320, 240), train=False)
    sample = data[0]
    assert sample["image"].shape == (3, 240, 320)
    truth = data.ground_truth(0)
    assert len(truth.boxes) == len(written[0]["boxes"])
    doc = json.loads((out / "train" / "annotations.json").read_text())
    assert [im["complete"] for im in doc["images"]] == [True, False]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(f'[storage]\ndir = "{tmp_path / "var"}"\n')
    return path


def _model_classes() -> tuple[str, ...]:
    from edge.config import DEFAULT_MODEL
    from edge.detect.onnxrt import OnnxRuntimeDetector

    return OnnxRuntimeDetector(DEFAULT_MODEL).info.class_names


def test_the_cli_imports_a_selection_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    folder = write_selection(tmp_path / "sel", (60, 64, 68))
    config = _config(tmp_path)
    assert cli(["label", "import", str(folder), "--config", str(config),
                "--double-every", "2"]) == 0
    assert "imported 3 new frames of 3" in capsys.readouterr().out
    assert cli(["label", "import", str(folder), "--config", str(config)]) == 0
    assert "imported 0 new frames of 3" in capsys.readouterr().out
    store = LabelStore(tmp_path / "var" / LABELS_SUBDIR)
    frames = store.frames()
    store.close()
    assert [f.source_frame for f in frames] == [60, 64, 68]
    assert [f.passes for f in frames] == [1, 2, 1]
    assert cli(["label", "import", str(tmp_path / "nowhere"), "--config", str(config)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_unlabelled_boxes_of_an_incomplete_frame_are_exported_as_ignore_regions(
        tmp_path: Path) -> None:
    """Issue 15 item 3: an object nobody labelled yet is neither an object nor
    background to the trainer; its region gets no objectness loss."""
    from calibration.data import read_split
    from calibration.targets import encode_targets

    async def main() -> dict[str, Any]:
        async with workspace(tmp_path) as box:
            item = await lease(box, "ana")
            boxes = [{**b, "class": None, "rank": None} for b in accepted(item)]
            boxes[0]["class"] = item["boxes"][0]["candidates"][0]["class"]  # one labelled
            boxes.append({"box": [5.0, 5.0, 40.0, 30.0], "class": None, "proposal": None,
                          "rank": None})  # drawn by hand, no class yet
            await put(box, "ana", item, boxes)  # not complete
            return item

    item = asyncio.run(main())
    out = tmp_path / "dataset"
    assert cli(["label", "export", "--out", str(out), "--config", str(_config(tmp_path))]) == 0
    split = read_split(out / "train")
    (frame,) = split.frames
    names = split.class_names
    assert frame.ignore.tolist() == [False] + [True] * len(item["boxes"])
    said = [b["detector"]["class"] for b in item["boxes"][1:]]
    assert [names[c] for c in frame.classes[1:-1]] == said  # what the detector proposed
    assert names[frame.classes[-1]] != "tray"  # a drawn box without a class: a dish
    tray = names.index("tray")
    targets = encode_targets(frame.boxes * 0.5, frame.classes, frame.ignore, len(names),
                             (320, 240), head="factorized")
    for b, c, skip in zip(frame.boxes * 0.5 / 8, frame.classes, frame.ignore, strict=True):
        if skip:
            channel = 0 if c == tray else 1
            x1, y1 = (int(v) for v in b[:2])
            assert targets.heatmap_weight[channel, y1 + 1, x1 + 1] == 0.0
