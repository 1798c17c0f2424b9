"""Writes a simulated sequence to disk: H.264 video plus ground truth.

``DIR/video.mp4``, ``DIR/gt/gt.txt`` (MOTChallenge), ``DIR/gt/trays.json``
(trays and expected bills) and ``DIR/seqinfo.ini``; formats in
``docs/FORMATS.md``. Used by ``dishtracker sim``, the dataset export and the
benchmarks. Every file is written under a temporary name and renamed when
complete, so an interrupted run never leaves a truncated file that looks whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from edge.groundtruth import (
    BillLine,
    BoxRecord,
    TrayRecord,
    write_mot,
    write_seqinfo,
    write_trays,
)
from edge.sim.menu import ITEMS, Kind
from edge.sim.scene import Scene


@dataclass(frozen=True, slots=True)
class SequenceSummary:
    """What :func:`write_sequence` wrote."""

    out: Path
    frames: int
    trays: int
    objects: int


def tray_records(scene: Scene, truth: list[BoxRecord], n_frames: int) -> list[TrayRecord]:
    """Expected bills of every tray seen in the first ``n_frames`` frames.

    A tray's ``checkout_frame`` is the first frame (1-based) its centre is past
    the checkout line, ``None`` if it never gets there within the sequence.
    """
    seen: dict[int, list[int]] = {}
    for r in truth:
        seen.setdefault(r.track_id, []).append(r.frame)
    # under a hand: less than half visible while wholly inside the picture
    occluded: set[int] = {
        r.track_id for r in truth
        if r.visibility < 0.5 and r.x > 0.5 and r.x + r.w < scene.width - 0.5
        and r.y > 0.5 and r.y + r.h < scene.height - 0.5
    }
    out = []
    for plan in scene.plans:
        if plan.tray_id not in seen:
            continue
        frames = seen[plan.tray_id]
        cross = np.nonzero(plan.xs >= scene.checkout_x)[0]
        checkout = int(plan.start + cross[0] + 1) if len(cross) else None
        if checkout is not None and checkout > n_frames:
            checkout = None
        items = tuple(
            BillLine(it.object_id, it.class_id, ITEMS[it.class_id].key, ITEMS[it.class_id].name,
                     ITEMS[it.class_id].price)
            for it in plan.items
            if ITEMS[it.class_id].kind is Kind.DISH
        )
        tags = set(plan.tags)
        if not any(it.object_id in occluded for it in plan.items):
            tags.discard("occluded")
        else:
            tags.add("occluded")
        out.append(
            TrayRecord(
                tray_id=plan.tray_id, first_frame=min(frames), last_frame=max(frames),
                checkout_frame=checkout, items=items,
                clutter_ids=tuple(it.object_id for it in plan.items
                                  if ITEMS[it.class_id].kind is Kind.CLUTTER),
                total=round(sum(i.price for i in items), 2), tags=tuple(sorted(tags)),
            )
        )
    return out


def write_sequence(
    out: Path, *, seed: int, seconds: float, fps: float = 20.0,
    size: tuple[int, int] = (640, 480), difficulty: str = "standard", balanced: bool = False,
    progress: Callable[[int], None] | None = None, menu: str = "base", angle_deg: float = 0.0,
) -> SequenceSummary:
    """Render ``seconds`` of the scene of ``seed`` into directory ``out``.

    Parameters
    ----------
    progress : callable, optional
        Called with the number of frames done, every frame.
    menu : str
        Menu variant (:data:`edge.sim.menu.MENUS`); recorded in the metadata
        unless it is ``base``.
    angle_deg : float
        Camera roll (see :class:`~edge.sim.scene.Scene`); the checkout line and
        direction in ``trays.json`` and ``seqinfo.ini`` turn with it.
    """
    if seconds <= 0:
        raise ValueError(f"seconds must be > 0, got {seconds}")
    scene = Scene(seed, fps=fps, size=size, difficulty=difficulty, balanced=balanced,
                  menu=menu, angle_deg=angle_deg)
    n = round(seconds * fps)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gt").mkdir(exist_ok=True)
    video_tmp = out / "video.mp4.tmp"
    truth: list[BoxRecord] = []
    with av.open(str(video_tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=round(fps))
        stream.width, stream.height = scene.width, scene.height
        stream.pix_fmt = "yuv420p"
        # one encoder thread: x264's output depends on its thread count, and a
        # sequence must be byte-identical on every machine for a given seed
        stream.codec_context.thread_count = 1
        stream.options = {"crf": str(scene.level.crf), "preset": "veryfast", "g": str(2 * int(fps))}
        for f, img, gt in scene.frames(n):
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = f
            for packet in stream.encode(frame):
                container.mux(packet)
            truth.extend(gt)
            if progress is not None:
                progress(f + 1)
        for packet in stream.encode():
            container.mux(packet)
    video_tmp.replace(out / "video.mp4")
    write_mot(out / "gt" / "gt.txt", truth)
    trays = tray_records(scene, truth, n)
    meta = {
        "seed": seed, "fps": fps, "width": scene.width, "height": scene.height,
        "frames": n, "difficulty": scene.level.name, "balanced": balanced,
        "direction": list(scene.direction),
        "checkout_line": [list(scene.to_picture(scene.checkout_x, 0.0)),
                          list(scene.to_picture(scene.checkout_x, float(scene.height)))],
    }
    if scene.angle_deg % 360.0:
        meta["angle_deg"] = scene.angle_deg
    if menu != "base":
        meta["menu"] = menu
    write_trays(out / "gt" / "trays.json", trays, meta)
    params = {
        "seed": seed, "balanced": balanced, "checkoutLineX": f"{scene.checkout_x:.1f}",
        "direction": "1,0", **scene.level.as_params(),
    }
    if menu != "base":
        params["menu"] = menu
    if scene.angle_deg % 360.0:
        del params["checkoutLineX"]  # the line is not vertical any more: trays.json has it
        params["direction"] = "{:.6f},{:.6f}".format(*scene.direction)
        params["angleDeg"] = f"{scene.angle_deg:g}"
    write_seqinfo(out / "seqinfo.ini", name=out.name, fps=fps, length=n, width=scene.width,
                  height=scene.height, params=params)
    return SequenceSummary(out, n, len(trays), len({r.track_id for r in truth}))

