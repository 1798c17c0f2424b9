"""bench/probe.py: its probes report every issue 18 item held against the daemon's application.

The daemon's application of ``tests/api_server.py`` (a real socket at
127.0.0.1, a real journal and WebRTC hub, :class:`test_http_api.MemoryDaemon`
for the pipeline) stands in for a started daemon: the bench itself starts
``dishtracker run``, which takes a minute; here every probe runs in seconds.
Two probes are left out: the offer flood (that application lets one address
send 1 000 offers at once, which the fuzz tests need) and the refused config
(``fps=1000`` is refused when the real pipeline builds the source, which
MemoryDaemon does not).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from api_server import ApiServer
from test_webrtc_support import TOKEN

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import probe  # bench/probe.py


def test_every_probe_holds_against_the_daemons_application(tmp_path: Path) -> None:
    items = {item for item, _, _ in probe.PROBES} - {"offer flood", "1 config"}
    with ApiServer(tmp_path) as server:
        target = probe.Target(server.url, TOKEN, log=None)
        results = asyncio.run(probe.run_probes(target, min_window_s=0.0, only=items))
    assert {r.item for r in results} == items
    assert [r for r in results if not r.held] == []


def test_the_table_names_each_verdict_and_the_viewers_fps() -> None:
    rows = probe.table([probe.Result("4 Host", "Host: attacker.example", True, "421", 19.96),
                        probe.Result("2 events", "40 streams", False, "32 opened", None)])
    assert rows[2] == "| 4 Host | Host: attacker.example | held | 20.0 | 421 |"
    assert rows[3] == "| 2 events | 40 streams | NOT HELD | — | 32 opened |"
