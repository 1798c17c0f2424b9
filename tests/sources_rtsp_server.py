"""A real RTSP server for the source tests: GStreamer's gst-rtsp-server.

Run with the *system* Python, which has PyGObject (the project's venv does
not)::

    /usr/bin/python3 tests/sources_rtsp_server.py PORT

It serves ``rtsp://127.0.0.1:PORT/cam``: a live 320x240, 20 fps H.264 test
picture (``videotestsrc pattern=ball``, x264 ``zerolatency``, a key frame
every second), over RTP/UDP and RTP/TCP (interleaved), and prints ``ready``
once it listens. Debian packages::

    apt-get install -y --no-install-recommends python3-gi gir1.2-gst-rtsp-server-1.0 \\
        gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly

Exit status 3 with a message on stderr: a GStreamer part is missing.
"""

from __future__ import annotations

import sys

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball "
    "! video/x-raw,width=320,height=240,framerate=20/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=20 "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
ELEMENTS = ("videotestsrc", "x264enc", "rtph264pay")


def main(port: str) -> int:
    """Serve the test stream on ``127.0.0.1:port`` until killed."""
    try:
        import gi  # system Python only

        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as err:
        print(f"missing PyGObject or gst-rtsp-server introspection data: {err}", file=sys.stderr)
        return 3
    Gst.init(None)
    missing = [e for e in ELEMENTS if Gst.ElementFactory.find(e) is None]
    if missing:
        print(f"missing GStreamer elements: {missing}", file=sys.stderr)
        return 3
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", file=sys.stderr)
        return 2
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
