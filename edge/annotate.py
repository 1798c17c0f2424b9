"""The engineer's overlay: tracks with their ids, class keys and vote shares, and a header.

track -> :class:`~edge.frames.TrackedFrame` -> **annotate** -> WebRTC track
(:mod:`edge.web.webrtc`). Runs per stream only while a viewer watches who
asked for it (``"overlay": "engineer"`` in the WebRTC offer, or
``server.overlay``); the cashier's overlay is :mod:`edge.overlay`.

:func:`annotate` is a pure function: it returns a new BGR image and never
touches the frame's own pixels. It draws with OpenCV primitives only (about
1 ms at 640x480 with 20 tracks on one core) and leaves the corner stamp of
:mod:`edge.stamp` exactly as it was, so a client can still read the
frame id and capture time from the annotated picture.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from edge.frames import Track, TrackedFrame
from edge.labels import display_text
from edge.palette import class_colour, text_colour, tray_colour
from edge.stamp import stamp_geometry
from edge.track.tray_tracker import TRAY_KEY

__all__ = ["annotate", "class_colour", "is_tray", "tray_colour"]  # colours: edge.palette

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LABEL_SCALE = 0.42
_HEADER_SCALE = 0.45
_PAD = 3
_DASH_PX = 6
# 3 px solid for detected, 2 px dashed for predicted: 1 px lines lose their
# colour to the encoder's 4:2:0 chroma subsampling and read as grey.
_SOLID_PX = 3
_DASHED_PX = 2
_HEADER_BG = (32, 32, 32)


def _dashed_rectangle(img: npt.NDArray[np.uint8], box: tuple[int, int, int, int],
                      colour: tuple[int, int, int]) -> None:
    """Draw a dashed rectangle (inclusive pixel corners) with one ``cv2.polylines`` call."""
    x1, y1, x2, y2 = box
    step, dash = 2 * _DASH_PX, _DASH_PX - 1
    segments = [((x, y), (min(x + dash, x2), y)) for y in (y1, y2)
                for x in range(x1, x2 + 1, step)]
    segments += [((x, y), (x, min(y + dash, y2))) for x in (x1, x2)
                 for y in range(y1, y2 + 1, step)]
    cv2.polylines(img, list(np.array(segments, dtype=np.int32)), isClosed=False,
                  color=colour, thickness=_DASHED_PX)


def is_tray(track: Track) -> bool:
    """Whether ``track`` is a tray (dishes and trays are numbered apart: a dish may
    carry its tray's number as its own id)."""
    return track.class_name == TRAY_KEY and track.tray_id == track.track_id


def _label_text(track: Track, class_names: Sequence[str],
                bills: dict[int, tuple[int, float]] | None = None) -> str:
    if is_tray(track):
        text = f"TRAY {track.track_id}"
        if bills and track.track_id in bills:
            n, total = bills[track.track_id]
            text += f"  {n} item{'s' if n != 1 else ''}  {total:.2f}"
        return text
    name = (class_names[track.class_id] if 0 <= track.class_id < len(class_names)
            else track.class_name)
    name = display_text(name).replace("_", " ")
    text = f"#{track.track_id} {name} {round(100 * track.confidence)}%"
    if track.tray_id is not None:
        text += f" T{track.tray_id}"
    return text


def _draw_track(img: npt.NDArray[np.uint8], track: Track, class_names: Sequence[str],
                keep_out: tuple[int, int],
                bills: dict[int, tuple[int, float]] | None = None) -> None:
    height, width = img.shape[:2]
    x1, y1, x2, y2 = (round(v) for v in track.box)
    x1, x2 = max(0, min(x1, width - 1)), max(0, min(x2 - 1, width - 1))
    y1, y2 = max(0, min(y1, height - 1)), max(0, min(y2 - 1, height - 1))
    tray = is_tray(track)
    colour = tray_colour(track.track_id) if tray else class_colour(track.class_id)
    if track.detected or tray:
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, _SOLID_PX, cv2.LINE_8)
    else:
        _dashed_rectangle(img, (x1, y1, x2, y2), colour)

    text = _label_text(track, class_names, bills)
    (tw, th), base = cv2.getTextSize(text, _FONT, _LABEL_SCALE, 1)
    lh = th + base + 2 * _PAD
    lx = max(0, min(x1, width - tw - 2 * _PAD))
    ly = y1 - lh if y1 - lh >= 0 else y1  # above the box, else inside it
    stamp_w, stamp_h = keep_out
    if lx < stamp_w and ly < stamp_h:
        ly = stamp_h  # never over the stamp: push the label below it
    ly = min(ly, height - lh)
    lx2, ly2 = lx + tw + 2 * _PAD, ly + lh - 1
    if track.detected:
        cv2.rectangle(img, (lx, ly), (lx2, ly2), colour, cv2.FILLED)
        fg = text_colour(colour)
    else:  # predicted: dark label with a class-coloured edge, reads as less certain
        cv2.rectangle(img, (lx, ly), (lx2, ly2), _HEADER_BG, cv2.FILLED)
        cv2.rectangle(img, (lx, ly), (lx2, ly2), colour, 1)
        fg = (230, 230, 230)
    cv2.putText(img, text, (lx + _PAD, ly + _PAD + th), _FONT, _LABEL_SCALE, fg, 1, cv2.LINE_AA)
    if track.tray_id is not None and not tray:  # which tray the dish is billed to
        cv2.rectangle(img, (lx, ly2 + 1), (lx2, min(ly2 + 4, height - 1)),
                      tray_colour(track.tray_id), cv2.FILLED)


def _draw_header(img: npt.NDArray[np.uint8], text: str, x0: int) -> None:
    """Dark bar with ``text`` at the top edge, starting at column ``x0``."""
    (tw, th), base = cv2.getTextSize(text, _FONT, _HEADER_SCALE, 1)
    x1 = min(img.shape[1], x0 + tw + 4 * _PAD)
    y1 = min(img.shape[0], th + base + 4 * _PAD)
    roi = img[0:y1, x0:x1]
    # Blend on the small region only: a full-frame addWeighted costs ~1 ms.
    cv2.addWeighted(roi, 0.35, np.full_like(roi, _HEADER_BG), 0.65, 0.0, dst=roi)
    cv2.putText(img, text, (x0 + 2 * _PAD, 2 * _PAD + th), _FONT, _HEADER_SCALE,
                (255, 255, 255), 1, cv2.LINE_AA)


def annotate(tf: TrackedFrame, *, fps: float, latency_ms: float | None,
             class_names: Sequence[str]) -> npt.NDArray[np.uint8]:
    """Draw ``tf``'s tracks and a status header onto a copy of its image.

    Detected tracks get a solid 3 px box and a filled label; predicted tracks
    (no detection this frame) a dashed 2 px box and a dark label. Labels
    read ``#<track id> <dish name> <vote confidence>%``; the box colour is
    fixed per class (:func:`class_colour`). The header, right of the stamp,
    shows stream id, fps and latency.

    Parameters
    ----------
    tf : TrackedFrame
        The frame and its tracks; boxes in source image pixels.
    fps : float
        Frames per second the viewer receives, for the header.
    latency_ms : float or None
        Capture-to-annotation latency in milliseconds, for the header; None
        leaves it out.
    class_names : sequence of str
        Display name per class id; a track whose id is out of range shows its
        own ``class_name``.

    Returns
    -------
    np.ndarray
        New ``(height, width, 3)`` uint8 BGR image. ``tf.frame.image`` is not
        modified. The stamp corner (``stamp_geometry``) keeps its exact pixels.
    """
    src = tf.frame.image
    out: npt.NDArray[np.uint8] = src.copy()
    height, width = out.shape[:2]
    try:
        geo = stamp_geometry(width, height)
        keep_out = (geo["width_px"], geo["height_px"])
    except ValueError:  # too small to carry a stamp: nothing to protect
        keep_out = (0, 0)
    if tf.checkout_line is not None:
        (ax, ay), (bx, by) = tf.checkout_line
        cv2.line(out, (round(ax), round(ay)), (round(bx), round(by)), (0, 215, 255), 2,
                 cv2.LINE_AA)
    bills = {tid: (n, total) for tid, n, total in tf.bills}
    # trays first, so the dishes' labels are drawn over the tray's edge
    for track in sorted(tf.tracks, key=lambda t: not is_tray(t)):
        _draw_track(out, track, class_names, keep_out, bills)
    parts = [display_text(tf.frame.stream_id), f"{fps:.1f} fps"]
    if latency_ms is not None:
        parts.append(f"{latency_ms:.0f} ms")
    _draw_header(out, "  ".join(parts), keep_out[0] + 4 if keep_out[0] else 0)
    sw, sh = keep_out
    if sw:
        # Boxes may cross the corner; restoring it keeps the stamp readable.
        out[:sh, :sw] = src[:sh, :sw]
    return out
