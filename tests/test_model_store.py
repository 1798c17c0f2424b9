"""The model registry (edge.rollout.store) on real files: contract checks, states and
their history, the config's model at start, and an index that survives kills,
truncations and vanished files.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
from detect_models import CONTRACT_METADATA, square_finder
from onnx import TensorProto, helper

from edge.rollout import RolloutError
from edge.rollout.store import INDEX_FILE, MODELS_SUBDIR, ModelStore

DISHNET = Path(__file__).resolve().parents[1] / "edge" / "models" / "dishnet.onnx"


def model(folder: Path, version: str, **metadata: str) -> Path:
    """A tiny contract model whose ``model_version`` (and so sha256) is ``version``."""
    folder.mkdir(parents=True, exist_ok=True)
    return square_finder(folder / f"{version}.onnx",
                         {**CONTRACT_METADATA, "model_version": version, **metadata})


def no_contract_model(path: Path) -> Path:
    """A valid ONNX graph without the detector contract's metadata."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "plain", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def opened(root: Path) -> ModelStore:
    store = ModelStore(root)
    store.open()
    return store


def listing(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_a_model_is_kept_once_by_its_sha256_in_a_private_folder(tmp_path: Path) -> None:
    root = tmp_path / "var" / MODELS_SUBDIR
    store = opened(root)
    src = model(tmp_path / "src", "v1")
    entry, added = store.add_file(src, source="upload", actor="ana")
    assert added
    assert entry.path == root / f"{entry.sha256}.onnx"
    assert entry.path.read_bytes() == src.read_bytes()
    assert entry.id == entry.sha256[:12]
    assert (entry.state, entry.source, entry.version, entry.name) == (
        "candidate", "upload", "v1", "v1")
    assert entry.classes == ("square", "plate", "bowl")
    assert entry.input_size == (320, 256)
    assert entry.size_bytes == src.stat().st_size
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE(entry.path.stat().st_mode) == 0o600
    assert src.exists()  # copied, not moved
    before = listing(root)
    again, added = store.add_file(src, source="fleet")
    assert (again, added) == (entry, False)
    assert listing(root) == before
    assert store.history()[0] | {"at": 0} == {
        "at": 0, "model": entry.id, "version": "v1", "from": None, "to": "candidate",
        "actor": "ana", "reason": "added (upload)"}
    as_json = entry.to_json()
    assert json.loads(json.dumps(as_json)) == as_json
    assert as_json["file"] == f"{entry.sha256}.onnx"
    assert "path" not in as_json
    assert opened(root).entries() == [entry]


def test_the_metadata_names_the_model_and_keeps_its_provenance(tmp_path: Path) -> None:
    store = opened(tmp_path / "models")
    entry, _ = store.add_file(DISHNET, source="config")
    assert (entry.name, entry.version) == ("dishnet", "dishnet-1.1")
    assert entry.classes[:2] == ("tray", "coffee")
    assert entry.input_size == (320, 240)
    assert "class_names" not in entry.provenance
    assert entry.provenance["architecture"].startswith("dishnet-")
    assert all(len(v) <= 500 for v in entry.provenance.values())
    named, _ = store.add_file(model(tmp_path / "src", "v2", name="Canteen net",
                                    training="x" * 2000),
                              source="upload", name="ignored.onnx")
    assert named.name == "Canteen net"
    assert named.provenance == {"training": "x" * 500}
    upload = store.incoming_path()
    shutil.copyfile(model(tmp_path / "src", "v3"), upload)
    plain, _ = store.add_file(upload, source="upload", move=True)
    assert plain.name == "model"  # a temp file's name says nothing


def _truncated(path: Path) -> Path:
    data = DISHNET.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(("make", "says"), [
    (no_contract_model, "metadata key 'class_names' is missing"),
    (_truncated, "not a readable ONNX file"),
    (lambda p: (p.write_bytes(b"\x00garbage" * 100), p)[1], "not a readable ONNX file"),
])
def test_a_file_that_breaks_the_contract_is_refused_and_nothing_kept(
        tmp_path: Path, make: object, says: str) -> None:
    root = tmp_path / "models"
    store = opened(root)
    store.add_file(model(tmp_path / "src", "v1"), source="upload")
    before = listing(root)
    upload = store.incoming_path()
    make(upload)  # type: ignore[operator]
    with pytest.raises(RolloutError) as info:
        store.add_file(upload, source="upload", name="new.onnx", move=True)
    assert info.value.status == 422
    assert says in str(info.value)
    assert "new.onnx" in str(info.value)
    assert str(root) not in str(info.value)  # the temp file's path is nobody's business
    assert listing(root) == before
    assert len(store.entries()) == 1


def test_a_full_disk_is_said_and_leaves_nothing_half_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "models"
    store = opened(root)
    before = listing(root)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("edge.rollout.store.write_atomic", full)
    with pytest.raises(RolloutError) as info:
        store.add_file(model(tmp_path / "src", "v1"), source="upload")
    assert info.value.status == 507
    assert "full" in str(info.value)
    assert listing(root) == before
    assert store.entries() == []
    monkeypatch.setattr("edge.rollout.store.shutil.copyfile", full)
    with pytest.raises(RolloutError):
        store.add_file(model(tmp_path / "src", "v2"), source="upload")
    assert listing(root) == before


def test_one_serving_one_shadow_and_a_history_of_every_change(tmp_path: Path) -> None:
    store = opened(tmp_path / "models")
    a, b, c = (store.add_file(model(tmp_path / "src", v), source="upload")[0]
               for v in ("a", "b", "c"))
    assert store.rollback_target() is None
    store.set_state(a.id, "serving", actor="ana", reason="first")
    store.set_state(b.id[:6], "shadow", actor="ana")
    assert (store.serving(), store.shadowed()) == (store.get(a.id), store.get(b.id))
    store.set_state(c.sha256, "shadow", actor="ana")
    assert store.get(b.id).state == "candidate"
    assert store.set_state(c.id, "serving", actor="bo").state == "serving"
    assert store.get(a.id).state == "retired"
    assert store.shadowed() is None
    assert [(e.version, e.state) for e in store.entries()] == [
        ("c", "serving"), ("b", "candidate"), ("a", "retired")]
    assert store.rollback_target() == store.get(a.id)
    latest = store.history(3)
    assert [(e["version"], e["from"], e["to"], e["actor"]) for e in latest] == [
        ("c", "shadow", "serving", "bo"), ("a", "serving", "retired", "bo"),
        ("c", "candidate", "shadow", "ana")]
    assert latest[1]["reason"] == f"replaced by {c.id}"
    store.set_state(a.id, "serving", reason="rollback")
    assert store.rollback_target() == store.get(c.id)  # back and forth
    store.set_state(a.id, "retired", reason="failed to load")  # the controller's call
    assert store.serving() is None
    assert store.rollback_target() == store.get(c.id)  # the one before the last to serve
    assert opened(tmp_path / "models").history() == store.history()


def test_an_unknown_or_short_reference_is_a_404(tmp_path: Path) -> None:
    store = opened(tmp_path / "models")
    entry, _ = store.add_file(model(tmp_path / "src", "v1"), source="upload")
    assert store.get(entry.id.upper()) == store.get(entry.sha256[:6]) == entry
    unknown = "ffffff" if not entry.id.startswith("ffffff") else "000000"
    for ref, says in (("abc", "at least 6"), ("zzzzzzzz", "at least 6"),
                      (unknown, "no model")):
        with pytest.raises(RolloutError) as info:
            store.get(ref)
        assert info.value.status == 404
        assert says in str(info.value)


def test_the_config_model_serves_until_a_promotion_which_survives_restarts(
        tmp_path: Path) -> None:
    root = tmp_path / "models"
    config_a = model(tmp_path / "src", "a")
    serving = opened(root).adopt(config_a)
    assert (serving.version, serving.source, serving.state) == ("a", "config", "serving")
    store = opened(root)
    assert store.adopt(config_a) == serving  # a restart changes nothing
    b, _ = store.add_file(model(tmp_path / "src", "b"), source="upload")
    store.set_state(b.id, "serving", actor="ana")
    assert opened(root).adopt(config_a).version == "b"  # the promotion survives
    config_c = model(tmp_path / "src", "c")
    assert opened(root).adopt(config_c).version == "c"  # the operator's change wins
    store = opened(root)
    assert store.history(1)[0]["reason"] == "detector.model changed in the site config"
    assert store.get(b.id).state == "retired"
    store.set_state(b.id, "serving")
    b.path.unlink()
    store = opened(root)
    c = store.adopt(config_c)
    assert c.version == "c"  # b's file is gone: open() dropped it
    assert store.history(1)[0]["reason"] == "no model serves"
    store.set_state(c.id, "retired")
    store = opened(root)
    assert store.adopt(config_c) == store.get(c.id)  # nothing served: the config's model
    assert store.history(1)[0]["reason"] == "no model serves"


def test_missing_or_altered_files_are_dropped_and_leftovers_cleared(tmp_path: Path) -> None:
    root = tmp_path / "models"
    store = opened(root)
    keep, gone, altered = (store.add_file(model(tmp_path / "src", v), source="upload")[0]
                           for v in ("keep", "gone", "altered"))
    gone.path.unlink()
    altered.path.chmod(0o600)
    altered.path.write_bytes(altered.path.read_bytes() + b"x")
    leftover = store.incoming_path()
    leftover.write_bytes(b"half an upload")
    (root / f".{INDEX_FILE}.abcd.tmp").write_bytes(b"{")
    reopened = opened(root)
    assert reopened.entries() == [keep]
    assert not (root / "incoming").exists()
    assert not list(root.glob(".*.tmp"))
    assert [e.id for e in opened(root).entries()] == [keep.id]  # the index was rewritten


def test_a_corrupt_index_is_set_aside_and_rebuilt_from_the_files(tmp_path: Path) -> None:
    root = tmp_path / "models"
    store = opened(root)
    a, _ = store.add_file(model(tmp_path / "src", "a"), source="upload")
    b, _ = store.add_file(model(tmp_path / "src", "b"), source="upload")
    store.set_state(a.id, "serving")
    (root / INDEX_FILE).write_text('{"format": 1, "models": [')
    rebuilt = opened(root)
    assert {(e.id, e.state, e.source) for e in rebuilt.entries()} == {
        (a.id, "candidate", "recovered"), (b.id, "candidate", "recovered")}
    assert len(list(root.glob(f"{INDEX_FILE}.corrupt-*"))) == 1
    assert rebuilt.adopt(a.path).id == a.id  # the start after makes the config's serve


_CHURN = """
import sys
from pathlib import Path
from edge.rollout.store import ModelStore
store = ModelStore(Path(sys.argv[1]))
store.open()
ids = [e.id for e in store.entries()]
print("ready", flush=True)
n = 0
while True:
    store.set_state(ids[n % len(ids)], "serving", actor="churn", reason=str(n))
    n += 1
"""


def test_the_index_survives_kill_9_in_the_middle_of_writes(tmp_path: Path) -> None:
    root = tmp_path / "models"
    store = opened(root)
    ids = {store.add_file(model(tmp_path / "src", v), source="upload")[0].id for v in "abc"}
    for delay in (0.05, 0.13, 0.21):
        proc = subprocess.Popen([sys.executable, "-c", _CHURN, str(root)],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            if proc.stdout is not None:
                proc.stdout.close()
        json.loads((root / INDEX_FILE).read_text())  # whole, never a part
        reopened = opened(root)
        assert {e.id for e in reopened.entries()} == ids
        assert sum(e.state == "serving" for e in reopened.entries()) == 1
        assert not list(root.glob(".*.tmp"))
