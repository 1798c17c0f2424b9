"""Pre-rendered H.264 clips served as RTSP cameras, for ``bench/pipeline.py --source rtsp``.

Run with the *system* Python, which has PyGObject (the project's venv does not)::

    /usr/bin/python3 bench/rtsp_camera_server.py PORT CLIP.mp4 [CLIP.mp4 …]

It serves ``rtsp://127.0.0.1:PORT/cam1``, ``/cam2``, … : each an MP4 clip
(H.264, from ``bench/rtsp_clips.py``) sent as it is, in real time, without
decoding or encoding anything (``filesrc ! qtdemux ! rtph264pay``): a camera
costs the box what a network camera costs it, the packets. Prints ``ready``
once it listens, and ``playing camN UNIX_MS`` when a clip starts to play
(the time its first frame goes out: the clips' frame stamps count
milliseconds from there). Debian packages: ``python3-gi
gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base
gstreamer1.0-plugins-good``.

Exit status 3 with a message on stderr: a GStreamer part is missing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ELEMENTS = ("filesrc", "qtdemux", "rtph264pay")


def launch(clip: Path) -> str:
    """The media pipeline of one clip."""
    return (f'( filesrc location="{clip}" ! qtdemux name=demux demux.video_0 '
            "! queue ! rtph264pay name=pay0 pt=96 config-interval=1 )")


def serve(port: str, mounts: dict[str, str], elements: tuple[str, ...], *,
          announce_play: bool = False) -> int:
    """Serve each ``mounts`` path (``/cam1`` …) with its launch line on
    ``127.0.0.1:port`` until killed; ``ready`` once it listens, and with
    ``announce_play`` ``playing NAME UNIX_MS`` as each media starts. Returns 3
    when a GStreamer part (PyGObject, gst-rtsp-server, one of ``elements``) is
    missing, 2 when the port cannot be had. ``tests/sources_rtsp_server.py``
    serves its test picture with it too."""
    try:
        import gi  # noqa: PLC0415  # system Python only: a clear exit 3 without it

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer  # noqa: PLC0415
    except (ImportError, ValueError) as err:
        print(f"missing PyGObject or gst-rtsp-server introspection data: {err}", file=sys.stderr)
        return 3
    Gst.init(None)
    missing = [e for e in elements if Gst.ElementFactory.find(e) is None]
    if missing:
        print(f"missing GStreamer elements: {missing}", file=sys.stderr)
        return 3
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    for path, line in mounts.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(line)
        factory.set_shared(True)
        if announce_play:
            def configured(_factory: object, media: object, name: str = path[1:]) -> None:
                def state(_media: object, new: int) -> None:
                    if new == Gst.State.PLAYING:
                        print(f"playing {name} {int(time.time() * 1000)}", flush=True)

                media.connect("new-state", state)  # type: ignore[attr-defined]

            factory.connect("media-configure", configured)
        server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 2
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


def main(argv: list[str]) -> int:
    """Serve ``argv[1:]`` on ``127.0.0.1:argv[0]`` until killed."""
    if len(argv) < 2:
        print("usage: rtsp_camera_server.py PORT CLIP.mp4 [CLIP.mp4 ...]", file=sys.stderr)
        return 2
    clips = [Path(c).resolve() for c in argv[1:]]
    absent = [str(c) for c in clips if not c.is_file()]
    if absent:
        print(f"no such clip: {absent}", file=sys.stderr)
        return 2
    return serve(argv[0], {f"/cam{n}": launch(c) for n, c in enumerate(clips, start=1)},
                 ELEMENTS, announce_play=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
