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
from pathlib import Path

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball "
    "! video/x-raw,width=320,height=240,framerate=20/1 "
    "! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=20 "
    "! rtph264pay name=pay0 pt=96 config-interval=1 )"
)
ELEMENTS = ("videotestsrc", "x264enc", "rtph264pay")


def main(port: str) -> int:
    """Serve the test stream on ``127.0.0.1:port`` until killed."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from rtsp_camera_server import serve  # bench/, on this interpreter

    return serve(port, {"/cam": PIPELINE}, ELEMENTS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
