"""The TensorRT engine cache on disk: keys, hits and misses, damage, atomic and concurrent writes.

All GPU-free: the store handles bytes; what TensorRT makes of them is
``test_tensorrt.py``'s business.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edge.detect.engine_builder import ensure_engine
from edge.detect.engine_store import EngineKey, EngineStore, file_sha256, write_atomic

SHA = "ab" * 32


def _key(**change: object) -> EngineKey:
    parts: dict[str, object] = {"onnx_sha256": SHA, "tensorrt_version": "10.3.0",
                                "gpu_name": "Orin", "compute_capability": "8.7",
                                "precision": "fp16", "max_batch": 3}
    return EngineKey(**(parts | change))  # type: ignore[arg-type]


def test_same_parts_give_the_same_key() -> None:
    assert _key().digest == _key().digest
    assert len(_key().digest) == 64


@pytest.mark.parametrize("change", [
    {"onnx_sha256": "cd" * 32}, {"tensorrt_version": "10.3.1"}, {"tensorrt_version": "11.0.0"},
    {"gpu_name": "NVIDIA H200"}, {"compute_capability": "9.0"}, {"precision": "int8"},
    {"precision": "fp32"}, {"max_batch": 4},
])
def test_any_changed_part_changes_the_key(change: dict[str, object]) -> None:
    assert _key(**change).digest != _key().digest


def test_key_hashes_the_onnx_bytes(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx bytes")
    first = EngineKey.for_model(model, tensorrt_version="10.3.0", gpu_name="Orin",
                                compute_capability="8.7", precision="fp16", max_batch=1)
    assert first.onnx_sha256 == file_sha256(model)
    model.write_bytes(b"onnx bytez")  # same name and size, other bytes
    second = dataclasses.replace(first, onnx_sha256=file_sha256(model))
    assert second.digest != first.digest


@pytest.mark.parametrize(("change", "message"), [
    ({"onnx_sha256": "xyz"}, "64 lowercase hex"), ({"precision": "int4"}, "precision must be"),
    ({"max_batch": 0}, "max_batch must be"), ({"max_batch": True}, "max_batch must be"),
    ({"gpu_name": ""}, "gpu_name must not be empty"),
])
def test_invalid_key_parts_are_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _key(**change)


def test_miss_then_hit_with_a_sidecar_of_the_key(tmp_path: Path) -> None:
    store = EngineStore(tmp_path / "engines")
    key = _key()
    assert store.lookup(key) is None
    path = store.save(key, b"plan bytes", model=Path("m.onnx"), build_seconds=12.34)
    assert store.lookup(key) == path == tmp_path / "engines" / f"{key.digest}.engine"
    assert path.read_bytes() == b"plan bytes"
    sidecar = store.read_sidecar(key)
    assert sidecar["parts"] == key.parts()
    assert sidecar["engine_bytes"] == 10
    assert sidecar["model"] == "m.onnx"
    assert sidecar["build_seconds"] == 12.34
    assert store.lookup(_key(max_batch=4)) is None
    assert [e["key"] for e in store.entries()] == [key.digest]


def _damage_sidecar_garbage(store: EngineStore, key: EngineKey) -> None:
    store.sidecar_path(key).write_text("{not json")


def _damage_sidecar_other_key(store: EngineStore, key: EngineKey) -> None:
    other = json.loads(store.sidecar_path(key).read_text())
    other["parts"]["precision"] = "int8"
    store.sidecar_path(key).write_text(json.dumps(other))


def _damage_engine_truncated(store: EngineStore, key: EngineKey) -> None:
    path = store.engine_path(key)
    path.write_bytes(path.read_bytes()[:5])


def _damage_engine_flipped(store: EngineStore, key: EngineKey) -> None:
    path = store.engine_path(key)
    path.write_bytes(b"X" + path.read_bytes()[1:])


def _damage_no_sidecar(store: EngineStore, key: EngineKey) -> None:
    store.sidecar_path(key).unlink()


def _damage_no_engine(store: EngineStore, key: EngineKey) -> None:
    store.engine_path(key).unlink()


@pytest.mark.parametrize(("damage", "reason"), [
    (_damage_sidecar_garbage, "sidecar unreadable"),
    (_damage_sidecar_other_key, "another key"),
    (_damage_engine_truncated, "bytes, sidecar says"),
    (_damage_engine_flipped, "sha256 differs"),
    (_damage_no_sidecar, "engine without sidecar"),
    (_damage_no_engine, "sidecar without engine"),
])
def test_damaged_entry_is_removed_logged_and_missed(tmp_path: Path, damage: object,
                                                    reason: str) -> None:
    store = EngineStore(tmp_path)
    key = _key()
    store.save(key, b"plan bytes")
    damage(store, key)  # type: ignore[operator]
    with capture_logs() as logs:
        assert store.lookup(key) is None
    assert [(e["event"], reason in e["reason"]) for e in logs] == [
        ("engine_cache_invalid", True)]
    assert not store.engine_path(key).exists() and not store.sidecar_path(key).exists()
    assert store.lookup(key) is None  # and the next look is a quiet miss


def test_failed_replace_keeps_the_old_file_and_leaves_no_temp_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.engine"
    write_atomic(target, b"old")

    def broken_replace(self: Path, target: Path) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "replace", broken_replace)
    with pytest.raises(OSError, match="No space"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.engine"]


def test_concurrent_writers_of_one_path_each_use_their_own_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "x.engine"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    errors: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            write_atomic(target, data)
        except BaseException as err:  # collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_bytes() in payloads  # one whole payload, never a mix
    assert [p.name for p in tmp_path.iterdir()] == ["x.engine"]


def test_the_key_lock_makes_concurrent_loaders_build_once(tmp_path: Path) -> None:
    store = EngineStore(tmp_path)
    key = _key()
    builds: list[bytes] = []
    results: list[object] = []

    def build(timing: bytes) -> tuple[bytes, bytes]:
        builds.append(timing)
        time.sleep(0.2)  # a slow build: the other loader must wait for it, not start another
        return b"plan", b"timing"

    def load() -> None:
        results.append(ensure_engine(store, key, Path("m.onnx"), build))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1
    assert sorted(r.built for r in results) == [False, False, True]  # type: ignore[attr-defined]
    assert store.lookup(key) is not None


def test_ensure_engine_reuses_and_persists_the_timing_cache(tmp_path: Path) -> None:
    store = EngineStore(tmp_path)
    seen: list[bytes] = []

    def build(timing: bytes) -> tuple[bytes, bytes]:
        seen.append(timing)
        return b"plan", timing + b"t"

    first = ensure_engine(store, _key(), Path("m.onnx"), build)
    again = ensure_engine(store, _key(), Path("m.onnx"), build)
    other = ensure_engine(store, _key(precision="fp32"), Path("m.onnx"), build)
    forced = ensure_engine(store, _key(), Path("m.onnx"), build, force=True)
    assert (first.built, again.built, other.built, forced.built) == (True, False, True, True)
    assert seen == [b"", b"t", b"tt"]  # one timing cache for the GPU, grown by every build
    cache = store.timing_cache_path("10.3.0", "Orin", "8.7")
    assert cache.read_bytes() == b"ttt"


def test_timing_cache_is_per_gpu_and_tensorrt_version(tmp_path: Path) -> None:
    store = EngineStore(tmp_path)
    orin = store.timing_cache_path("10.3.0", "Orin", "8.7")
    assert orin.name == "timing-orin-sm8.7-trt10.3.0.cache"
    assert store.timing_cache_path("10.3.0", "NVIDIA H200", "9.0").name == \
        "timing-nvidia-h200-sm9.0-trt10.3.0.cache"
    assert store.timing_cache_path("11.0.0", "Orin", "8.7") != orin
    assert store.read_timing_cache(orin) == b""


def test_temp_files_of_dead_writers_are_swept_fresh_ones_kept(tmp_path: Path) -> None:
    store = EngineStore(tmp_path)
    key = _key()
    old = tmp_path / f".{key.digest}.engine.abc.tmp"
    fresh = tmp_path / f".{key.digest}.engine.def.tmp"
    old.write_bytes(b"half")
    fresh.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert store.lookup(key) is None
    assert not old.exists() and fresh.exists()


def test_empty_engine_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty engine"):
        EngineStore(tmp_path).save(_key(), b"")
