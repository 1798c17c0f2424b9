"""Config hardening: a refused config changes nothing, readiness counts every enabled
stream, a site has a maximum number of streams, and tiny synthetic streams do not crash.

The pipeline runs in this process with the shipped model and synthetic cameras;
the control plane is the real aiohttp application on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from aiohttp.test_utils import TestClient, TestServer

from edge.config import (
    DEFAULT_MAX_STREAMS,
    DEFAULT_MODEL,
    SiteConfig,
    changed_fields,
    load_config,
    parse_config,
    to_toml,
    write_config_atomic,
)
from edge.errors import ConfigError
from edge.pipeline import Pipeline
from edge.sim.difficulty import get_level
from edge.sim.scene import Scene
from edge.sim.timeline import speed_profile
from edge.web.app import make_app

TOKEN = "t" * 43
AUTH = {"Authorization": f"Bearer {TOKEN}"}
needs_model = pytest.mark.skipif(not DEFAULT_MODEL.exists(), reason="shipped model missing")


def _site(tmp_path: Path, *urls: str) -> SiteConfig:
    return parse_config({
        "server": {"host": "127.0.0.1", "port": 1},
        "storage": {"dir": str(tmp_path / "var")},
        "streams": [{"id": f"cam{i + 1}", "url": url} for i, url in enumerate(urls)],
    })


async def _frames_advance(pipeline: Pipeline, sid: str, timeout: float = 20.0) -> None:
    runner = pipeline.runners[sid]
    start = runner.frames_done
    deadline = asyncio.get_running_loop().time() + timeout
    while runner.frames_done < start + 3:
        assert asyncio.get_running_loop().time() < deadline, f"{sid} does not advance"
        await asyncio.sleep(0.05)


async def _ready(client: TestClient, timeout: float = 20.0) -> dict[str, object]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        resp = await client.get("/readyz")
        body: dict[str, object] = await resp.json()
        if resp.status == 200:
            return body
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.1)


@needs_model
def test_refused_put_config_leaves_the_old_config_running(tmp_path: Path) -> None:
    """The probe's case: a stream URL with fps=1000 is refused with 422, and the
    stream it would have replaced keeps running, GET /api/config answers the old
    config, the config file is untouched and /readyz stays ready."""
    site_file = tmp_path / "site.toml"
    config = _site(tmp_path, "synthetic://?seed=3&fps=20&size=320x240")
    write_config_atomic(site_file, config)
    saved = site_file.read_text()

    async def main() -> None:
        pipeline = Pipeline(config)
        await pipeline.start()
        app = make_app(pipeline, config_path=site_file, token=TOKEN)
        try:
            async with TestClient(TestServer(app, host="127.0.0.1", port=0),
                                  headers=AUTH) as client:
                await _ready(client)
                runner = pipeline.runners["cam1"]
                old = await (await client.get("/api/config")).json()
                bad = json.loads(json.dumps(old))
                bad["streams"][0]["url"] = "synthetic://?seed=3&fps=1000&size=320x240"
                bad["streams"].append({"id": "cam2", "url": "synthetic://?seed=4"})
                bad["detector"]["score_threshold"] = 0.5  # would apply live: must not
                resp = await client.put("/api/config", json=bad)
                body = await resp.json()
                assert resp.status == 422, body
                assert any(e.startswith("streams.0.url: fps must be in [1, 120]")
                           for e in body["errors"]), body
                assert await (await client.get("/api/config")).json() == old
                assert pipeline.config == config
                assert pipeline.worker.config.score_threshold == config.detector.score_threshold
                assert pipeline.runners == {"cam1": runner}  # the same runner, not restarted
                await _frames_advance(pipeline, "cam1")
                assert (await _ready(client, 1.0))["ready"] is True
                assert site_file.read_text() == saved

                missing = json.loads(json.dumps(old))
                missing["detector"]["model"] = str(tmp_path / "no-such-model.onnx")
                resp = await client.put("/api/config", json=missing)
                body = await resp.json()
                assert resp.status == 422, body
                assert any(e.startswith("detector.model:") and "no such model file" in e
                           for e in body["errors"]), body
                assert site_file.read_text() == saved

                good = json.loads(json.dumps(old))
                good["streams"].append({"id": "cam2", "url": "synthetic://?seed=4&size=320x240"})
                resp = await client.put("/api/config", json=good)
                assert resp.status == 200, await resp.json()
                assert pipeline.runners["cam1"] is runner  # unchanged streams keep running
                await _frames_advance(pipeline, "cam2")
        finally:
            await pipeline.stop()

    asyncio.run(main())


@needs_model
def test_readiness_is_false_while_an_enabled_stream_is_down(tmp_path: Path) -> None:
    config = _site(tmp_path, "synthetic://?seed=3&fps=20&size=320x240",
                   "synthetic://?seed=4&fps=20&size=320x240")

    async def main() -> None:
        pipeline = Pipeline(config)
        await pipeline.start()
        try:
            await _frames_advance(pipeline, "cam1")
            await _frames_advance(pipeline, "cam2")
            assert pipeline.readiness() == (True, [])
            await pipeline.runners.pop("cam2").stop()  # a configured stream that runs no more
            ready, reasons = pipeline.readiness()
            assert not ready and reasons == ["stream cam2 is not running"]
            states = {s["id"]: s["state"] for s in pipeline.stream_status()}
            assert states == {"cam1": "running", "cam2": "stopped"}
        finally:
            await pipeline.stop()

    asyncio.run(main())


def test_more_enabled_streams_than_max_streams_are_refused_with_the_number() -> None:
    def streams(n: int, enabled: int | None = None) -> list[dict[str, object]]:
        return [{"id": f"cam{i}", "url": f"synthetic://?seed={i}",
                 "enabled": enabled is None or i < enabled} for i in range(n)]

    n = DEFAULT_MAX_STREAMS + 1
    with pytest.raises(ConfigError) as err:
        parse_config({"streams": streams(n)})
    assert err.value.errors == [  # type: ignore[attr-defined]
        f"streams: Value error, {n} enabled streams exceed max_streams = "
        f"{DEFAULT_MAX_STREAMS}; disable or remove 1, or raise max_streams"]
    assert len(parse_config({"streams": streams(n + 5, enabled=n - 1)}).streams) == n + 5
    with pytest.raises(ConfigError, match="100 enabled streams exceed max_streams = 64"):
        parse_config({"max_streams": 64, "streams": streams(100)})
    with pytest.raises(ConfigError, match="max_streams: Input should be less than or equal"):
        parse_config({"max_streams": 1000, "streams": streams(1)})

    raised = parse_config({"max_streams": n, "streams": streams(n)})
    assert raised.max_streams == n
    assert changed_fields(SiteConfig(), raised.model_copy(update={"streams":
                                                                   SiteConfig().streams}))\
        == ["max_streams"]


def test_max_streams_survives_the_config_file(tmp_path: Path) -> None:
    config = parse_config({"max_streams": 12})
    path = tmp_path / "site.toml"
    write_config_atomic(path, config)
    assert to_toml(config).startswith("max_streams = 12\n")
    assert load_config(path) == config


def test_low_fps_speed_profile_has_no_uninitialised_frames() -> None:
    """Below ~3 fps a stop-and-go segment rounded to 0 frames and left its
    command as whatever ``np.empty`` returned: NaN poses, then
    ``ValueError('cannot convert float NaN to integer')`` in the renderer. The
    freed NaN buffer makes ``np.empty`` hand back NaN, as memory of a busy
    process (many streams) does."""
    level = get_level("standard")
    for fps in (1.0, 1.5, 2.0, 3.0):
        n = int(120 * fps)
        for seed in range(5):
            garbage = np.full(n, np.nan)
            del garbage
            out = speed_profile(np.random.default_rng(seed), level, n, fps, 260.0, False)
            assert np.isfinite(out).all(), (fps, seed)
            assert (out >= 0).all()


def test_tiny_one_fps_scene_renders_two_minutes() -> None:
    for seed in (1, 2):
        scene = Scene(seed, fps=1.0, size=(160, 120), keep_history=False)
        for frame in range(120):
            image, boxes = scene.render(frame)
            assert image.shape == (120, 160, 3)
            assert all(np.isfinite([b.x, b.y, b.w, b.h]).all() for b in boxes)
