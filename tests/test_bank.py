"""The known-class bank: file round trip, refusal of another model's bank, the similarity rule,
and the shipped bank recognising a known dish the shipped model sees on a rendered scene."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edge.config import DEFAULT_MODEL
from edge.errors import InputFormatError, ModelError
from edge.eval.sequences import file_sha256
from edge.learn.bank import NO_PROTOTYPES, KnownBank, find_bank

SHA = "ab" * 32


def _angle(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


@pytest.fixture
def tiny() -> KnownBank:
    """Four classes in 2-D (embedding dims 2:4): class 1 near 0 deg, class 2 at 120 deg,
    class 0 and 3 without prototypes; class 3 has no threshold either."""
    protos = [_angle(0), _angle(10), _angle(90), _angle(120)]
    return KnownBank(protos, [1, 1, 1, 2], [0.5, 0.9, 0.8, np.nan], model_sha256=SHA,
                     dims=(2, 4), k=2, meta={"quantile": 0.02, "seeds": [17100, 17101]})


def test_similarity_is_the_mean_of_the_k_best_cosines_per_class(tiny: KnownBank) -> None:
    sim = tiny.similarity(np.array(_angle(0), np.float32))
    assert sim.shape == (4,)
    assert sim[1] == pytest.approx((1.0 + math.cos(math.radians(10))) / 2, abs=1e-6)
    assert sim[2] == pytest.approx(math.cos(math.radians(120)), abs=1e-6)  # fewer than k: all
    assert sim[0] == sim[3] == NO_PROTOTYPES
    both = tiny.similarity(np.array([_angle(0), _angle(100)], np.float32))
    assert both.shape == (2, 4)
    np.testing.assert_allclose(both[0], sim, atol=1e-6)
    assert both[1, 1] == pytest.approx((math.cos(math.radians(10))
                                        + math.cos(math.radians(90))) / 2, abs=1e-6)


def test_known_compares_with_the_class_threshold(tiny: KnownBank) -> None:
    assert tiny.threshold(1) == pytest.approx(0.9)
    assert tiny.threshold(3) is None  # NaN: no threshold
    assert tiny.threshold(4) is None and tiny.threshold(-1) is None
    assert tiny.known(1, 0.95) and tiny.known(1, float(np.float32(0.9)))
    assert not tiny.known(1, 0.85)
    assert not tiny.known(3, 1.0)  # the bank cannot vouch for a class without a threshold
    query = tiny.query(np.array([[9, 9, *_angle(5)], [9, 9, *_angle(-5)]], np.float32))
    np.testing.assert_allclose(query, _angle(0), atol=1e-5)
    sim = tiny.similarity(query)
    assert tiny.known(1, float(sim[1])) and not tiny.known(2, float(sim[2]))


def test_project_takes_the_slice_and_keeps_near_zero_rows_near_zero(tiny: KnownBank) -> None:
    rows = tiny.project(np.array([[5, 5, 3, 4], [1, 1, 1e-5, 0]], np.float32))
    np.testing.assert_allclose(rows[0], [0.6, 0.8], atol=1e-5)
    assert np.linalg.norm(rows[1]) < 0.02
    assert tiny.project(np.array([0, 0, 0, 2], np.float32)).shape == (2,)
    with pytest.raises(ValueError, match="reads"):
        tiny.project(np.zeros((1, 3), np.float32))


def test_save_and_load_round_trip(tiny: KnownBank, tmp_path: Path) -> None:
    path = tmp_path / "m.bank.npz"
    tiny.save(path)
    back = KnownBank.load(path, SHA)
    assert back.dims == (2, 4) and back.k == 2 and back.model_sha256 == SHA
    np.testing.assert_array_equal(back.labels, tiny.labels)
    np.testing.assert_allclose(back.prototypes, tiny.prototypes, atol=2e-3)  # float16 on disk
    np.testing.assert_array_equal(np.isnan(back.thresholds), np.isnan(tiny.thresholds))
    assert back.threshold(2) == pytest.approx(0.8)
    assert back.meta["seeds"] == [17100, 17101] and back.meta["quantile"] == 0.02
    assert back.classes == (1, 2)
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_a_bank_of_another_model_is_refused_by_name(tiny: KnownBank, tmp_path: Path) -> None:
    path = tmp_path / "m.bank.npz"
    tiny.save(path)
    other = "cd" * 32
    with pytest.raises(ModelError, match=f"built for the model with SHA-256 {SHA}") as err:
        KnownBank.load(path, other)
    assert other in str(err.value) and "calibrate bank" in str(err.value)


def test_malformed_banks_are_refused(tiny: KnownBank, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bank.npz"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InputFormatError, match="not a readable"):
        KnownBank.load(junk, SHA)
    with pytest.raises(InputFormatError, match="not a readable"):
        KnownBank.load(tmp_path / "missing.bank.npz", SHA)
    no_meta = tmp_path / "nometa.npz"
    np.savez(no_meta, prototypes=tiny.prototypes, labels=tiny.labels, thresholds=tiny.thresholds)
    with pytest.raises(InputFormatError, match=r"needs arrays \['meta'\]"):
        KnownBank.load(no_meta, SHA)
    meta = {"format": "dishtracker-bank/1", "model_sha256": SHA, "dims": [0, 4], "k": 2}
    wrong_dim = tmp_path / "dim.npz"
    np.savez(wrong_dim, prototypes=tiny.prototypes, labels=tiny.labels,
             thresholds=tiny.thresholds, meta=np.array(json.dumps(meta)))
    with pytest.raises(InputFormatError, match=r"prototypes must be \(P, 4\)"):
        KnownBank.load(wrong_dim, SHA)
    old = tmp_path / "old.npz"
    np.savez(old, prototypes=tiny.prototypes, labels=tiny.labels, thresholds=tiny.thresholds,
             meta=np.array(json.dumps({**meta, "format": "dishtracker-bank/0"})))
    with pytest.raises(InputFormatError, match="format is 'dishtracker-bank/0'"):
        KnownBank.load(old, SHA)


def test_the_bank_sits_beside_its_model() -> None:
    assert find_bank(Path("/m/dishnet-int8.onnx")) == Path("/m/dishnet-int8.bank.npz")
    assert KnownBank.find_bank(DEFAULT_MODEL) == DEFAULT_MODEL.with_name("dishnet.bank.npz")


def test_the_shipped_bank_knows_a_dish_the_shipped_model_sees(tmp_path: Path) -> None:
    from calibration.bank import MIN_DETECTIONS, observe, tracks_of
    from edge.detect import load_detector
    from edge.sim.writer import write_sequence

    bank = KnownBank.load(find_bank(DEFAULT_MODEL), file_sha256(DEFAULT_MODEL))
    assert find_bank(DEFAULT_MODEL).stat().st_size < 300_000
    assert len(bank.classes) == 28  # every dish of the catalogue, no tray, no clutter
    seed = 17150  # base menu, not one of the bank's own scenes (17100-17131)
    assert seed not in bank.meta["seeds"]
    write_sequence(tmp_path / "seq", seed=seed, seconds=5, difficulty="standard")
    detector = load_detector(DEFAULT_MODEL, "onnxruntime", threads=2, score_threshold=0.05)
    try:
        obs = observe(tmp_path / "seq", detector, every=2, seed=seed)
    finally:
        detector.close()
    obs = obs.above(float(bank.meta["min_score"]))
    dishes = [t for t in tracks_of([obs], min_detections=MIN_DETECTIONS)
              if t.truth in bank.classes and t.named == t.truth]
    assert len(dishes) >= 2
    for t in dishes:
        sim = bank.similarity(bank.query(obs.embedding[t.rows]))
        assert bank.known(t.named, float(sim[t.named])), (t.truth, sim[t.named])
        # the same track is no other dish: every other class's bar stays out of reach
        others = [c for c in bank.classes if c != t.truth]
        assert not any(bank.known(c, float(sim[c])) for c in others)
