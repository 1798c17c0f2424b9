"""A stream nobody watches costs nothing: two real aiortc peers in one process.

When the last viewer leaves, the hub keeps the stream's track and encoder for
the idle grace (a reloaded page reuses them) but takes, annotates and encodes
no frame until the next viewer arrives. The camera of
:class:`~test_webrtc_support.CameraView` renders only while subscribed, and
the hub's metrics count every annotated frame.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from test_webrtc import connect, count_encodes, running_server, until

IDLE_S = 0.6
"""How long the test watches an idle stream: 12 frame intervals at 20 fps."""


@pytest.mark.parametrize("shared_encoder", [True, False], ids=["shared", "per-viewer"])
def test_nothing_is_taken_annotated_or_encoded_after_the_last_viewer_leaves(
        shared_encoder: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = count_encodes(monkeypatch)

    async def main() -> None:
        async with running_server(idle_grace_s=30.0, shared_encoder=shared_encoder) as server, \
                aiohttp.ClientSession() as session:
            view = server.views["cam1"]
            first = await connect(session, server.url)
            await first.read(5)
            track = server.hub.shared_track("cam1")
            encoders = server.hub.shared_encoders("cam1")
            assert view.slots  # watched: the stream is taken

            await first.pc.close()
            await until(lambda: server.peers() == 0)
            await until(lambda: not view.slots, timeout=2.0)  # let go of at once
            annotated, encodes = server.annotated(), counts["encode"]
            await asyncio.sleep(IDLE_S)
            assert server.annotated() == annotated, "annotated while nobody watched"
            assert counts["encode"] == encodes, "encoded while nobody watched"
            assert not view.slots
            # kept for the next viewer, for the idle grace
            assert server.hub.shared_track("cam1") is track
            assert server.hub.shared_encoders("cam1") is encoders

            second = await connect(session, server.url)
            await second.read(5)  # resumed: fresh frames, readable stamps
            assert server.hub.shared_track("cam1") is track
            assert server.hub.shared_encoders("cam1") is encoders
            assert server.annotated() > annotated
            assert view.subscribe_calls == 2  # one subscription per watched period
            assert min(second.ids) > max(first.ids)  # no frame held over from before
            await second.pc.close()

    asyncio.run(main())


def test_a_stream_restarted_while_idle_is_watched_from_its_new_view() -> None:
    """The idle track of a stream whose pipeline restarted (a new view under the
    same id) is torn down when the next viewer comes, not resumed on the old view."""

    async def main() -> None:
        async with running_server(idle_grace_s=30.0) as server, \
                aiohttp.ClientSession() as session:
            old_view = server.views["cam1"]
            first = await connect(session, server.url)
            await first.read(3)
            old_track = server.hub.shared_track("cam1")
            old_encoders = server.hub.shared_encoders("cam1")
            await first.pc.close()
            await until(lambda: server.peers() == 0)

            new_view = type(old_view)("cam1", seed=3)
            server.views["cam1"] = new_view
            try:
                second = await connect(session, server.url)
                await second.read(3)
                assert new_view.subscribe_calls == 1
                assert old_view.subscribe_calls == 1 and not old_view.slots
                assert old_track is not None and old_track.readyState == "ended"
                assert old_encoders is not None and not old_encoders.encoders
                assert server.hub.shared_track("cam1") is not old_track
                await second.pc.close()
            finally:
                old_view.close()

    asyncio.run(main())
