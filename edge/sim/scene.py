"""The synthetic checkout camera: renders frames and their exact ground truth.

Sits at the very start of the pipeline, in place of a real camera: a
top-down counter where trays slide from left to right past a checkout line,
carrying dishes and clutter, with hands reaching in, motion blur, lighting
drift and sensor noise. Deterministic from a seed; trays are planned lazily,
so the scene runs for as long as it is asked (live source) and any prefix of
it is identical to a shorter run (written sequences).

Each tray and its items are drawn once into one premultiplied BGRA canvas
(with drop shadows); a frame warps that canvas to the tray's pose, blurs it
along the motion, and composites it over the counter. Ground-truth boxes come
from the items' outlines moved by the same pose, visibility from the hand
mask and the picture's border.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from edge.groundtruth import BoxRecord
from edge.sim import sprites
from edge.sim.difficulty import Difficulty, get_level
from edge.sim.menu import ITEMS, TRAY_ID, menu_items
from edge.sim.timeline import TRAY_SIZE, HandPlan, TrayPlan, plan_tray

SHUTTER = 0.6  # exposure as a fraction of the frame interval (sets blur per speed)
MIN_BOX_PX = 3.0  # boxes narrower than this after clipping are not reported


@dataclass(slots=True)
class _Canvas:
    """A tray's premultiplied BGRA drawing and the outlines of what is on it."""

    image: npt.NDArray[np.uint8]  # (h, w, 4) uint8, premultiplied colour
    centre: tuple[float, float]  # tray centre in canvas pixels
    hulls: list[npt.NDArray[np.float64]]  # per object (tray first, then items): (k, 2) tray coords


def _premultiply(bgra: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    out: npt.NDArray[np.uint8] = bgra.copy()
    a = bgra[..., 3:4].astype(np.uint16)
    out[..., :3] = (bgra[..., :3].astype(np.uint16) * a // 255).astype(np.uint8)
    return out


def _hull(alpha: npt.NDArray[np.uint8], offset: tuple[float, float]) -> npt.NDArray[np.float64]:
    """Convex hull of the opaque part of a sprite, moved by ``offset`` (px)."""
    pts = cv2.findNonZero((alpha > 127).astype(np.uint8))
    if pts is None:
        h, w = alpha.shape
        pts = np.array([[[0, 0]], [[w - 1, 0]], [[w - 1, h - 1]], [[0, h - 1]]], np.int32)
    hull = np.asarray(cv2.convexHull(pts), np.float64).reshape(-1, 2)
    return hull + np.asarray(offset, np.float64) + 0.5


def _blend_over(dst: npt.NDArray[np.uint8], src: npt.NDArray[np.uint8]) -> None:
    """Composite premultiplied BGRA ``src`` over premultiplied ``dst`` in place."""
    a = src[..., 3:4].astype(np.uint16)
    dst[...] = (src.astype(np.uint16) + dst.astype(np.uint16) * (255 - a) // 255).astype(np.uint8)


class Scene:
    """A deterministic, endless synthetic checkout scene.

    Parameters
    ----------
    seed : int
        Everything random follows from it.
    fps : float
        Frames per second (sets speeds, durations and blur).
    size : tuple[int, int]
        ``(width, height)`` of the picture in pixels; objects scale with the width.
    difficulty : str or Difficulty
        ``easy``, ``standard`` or ``hard`` (see :mod:`edge.sim.difficulty`).
    balanced : bool
        Draw dish classes uniformly instead of by sales frequency (training data).
    menu : str
        Menu variant (:data:`edge.sim.menu.MENUS`): ``base`` or ``site2``, which
        adds dishes the shipped model never saw.
    keep_history : bool
        Keep the plans of trays that have left (needed to write ``trays.json``);
        a live camera sets it False so memory stays flat over days.
    angle_deg : float
        Camera roll: the counter (planned left to right) appears turned by this
        many degrees about the picture centre, clockwise on screen (y down), so
        trays travel along ``(cos a, sin a)`` in the picture. Corners the turned
        counter leaves uncovered show the still counter texture. 0 (default)
        renders exactly as without the option.
    """

    def __init__(
        self, seed: int, *, fps: float = 20.0, size: tuple[int, int] = (640, 480),
        difficulty: str | Difficulty = "standard", balanced: bool = False,
        keep_history: bool = True, menu: str = "base", angle_deg: float = 0.0,
    ) -> None:
        self.seed = int(seed)
        self.fps = float(fps)
        self.width, self.height = int(size[0]), int(size[1])
        if self.width < 160 or self.height < 120:
            raise ValueError(f"size must be at least 160x120, got {self.width}x{self.height}")
        if not 1.0 <= self.fps <= 120.0:
            raise ValueError(f"fps must be in [1, 120], got {fps}")
        self.level = get_level(difficulty) if isinstance(difficulty, str) else difficulty
        self.balanced = balanced
        menu_items(menu)  # refuse an unknown menu before any work
        self.menu = menu
        self.keep_history = keep_history
        self.scale = self.width / 640.0
        self.checkout_x = 0.62 * self.width
        rng = np.random.default_rng([self.seed, 0])
        self._counter = sprites.draw_counter(self.width, self.height, rng)
        self._light_phase = float(rng.uniform(0, 2 * np.pi))
        self._light_period = float(rng.uniform(20, 60)) * self.fps
        self._noise = [
            np.clip(rng.normal(0, self.level.noise_sigma, (self.height + 16, self.width + 16, 3)),
                    0, 255).astype(np.uint8)
            for _ in range(2)
        ]
        self._noise_neg = [
            np.clip(-rng.normal(0, self.level.noise_sigma, (self.height + 16, self.width + 16, 3)),
                    0, 255).astype(np.uint8)
            for _ in range(2)
        ]
        self._frame_rng = np.random.default_rng([self.seed, 1])
        self._plans: list[TrayPlan] = []
        self._n_planned = 0
        self._canvases: dict[int, _Canvas] = {}
        self._next_object_id = 1
        self._next_start = int(rng.uniform(0.2, 1.5) * self.fps)
        self._hand_mask: npt.NDArray[np.uint8] = np.zeros((self.height, self.width), np.uint8)
        self.angle_deg = float(angle_deg)
        # counter pixels -> picture pixels (2x3), None for the plain top-down view
        self._camera = (cv2.getRotationMatrix2D((self.width / 2, self.height / 2),
                                                -self.angle_deg, 1.0)
                        if self.angle_deg % 360.0 else None)

    @property
    def direction(self) -> tuple[float, float]:
        """Unit vector of tray travel in picture pixels (x right, y down)."""
        a = math.radians(self.angle_deg)
        return (1.0, 0.0) if self._camera is None else (math.cos(a), math.sin(a))

    def to_picture(self, x: float, y: float) -> tuple[float, float]:
        """Picture pixels of the counter point ``(x, y)`` (identity without ``angle_deg``)."""
        if self._camera is None:
            return x, y
        m = self._camera
        return (float(m[0, 0] * x + m[0, 1] * y + m[0, 2]),
                float(m[1, 0] * x + m[1, 1] * y + m[1, 2]))

    # ----------------------------------------------------------------- planning
    @property
    def plans(self) -> list[TrayPlan]:
        """Trays planned so far, in order of entry."""
        return self._plans

    def plan_until(self, frame: int) -> None:
        """Plan every tray that enters at or before ``frame``."""
        while self._next_start <= frame:
            k = self._n_planned
            self._n_planned += 1
            leader = self._plans[-1] if self._plans else None
            start = self._next_start
            if leader is not None:
                # wait until the leader has moved far enough into the picture
                need = (TRAY_SIZE[0] + 25) * self.scale - TRAY_SIZE[0] * self.scale / 2 + 1
                free = np.nonzero(leader.xs >= need)[0]
                start = max(start, leader.start + int(free[0]) if len(free) else leader.end)
            plan = plan_tray(
                tray_id=self._next_object_id, first_object_id=self._next_object_id + 1,
                seed=int(np.random.default_rng([self.seed, 2, k]).integers(2**31)),
                start=start, level=self.level, fps=self.fps, width=self.width,
                height=self.height, checkout_x=self.checkout_x, leader=leader,
                balanced=self.balanced, menu=self.menu,
            )
            self._next_object_id += 1 + len(plan.items)
            self._plans.append(plan)
            gap_rng = np.random.default_rng([self.seed, 3, k])
            self._next_start = start + int(gap_rng.uniform(*self.level.tray_gap_s) * self.fps)

    def active(self, frame: int) -> list[TrayPlan]:
        """Trays whose trajectory covers ``frame``."""
        self.plan_until(frame)
        return [p for p in self._plans if p.start <= frame <= p.end]

    # ---------------------------------------------------------------- drawing
    def _canvas(self, plan: TrayPlan) -> _Canvas:
        cached = self._canvases.get(plan.tray_id)
        if cached is not None:
            return cached
        rng = np.random.default_rng(plan.seed)
        tray = sprites.draw_tray(self.scale, rng)
        th, tw = tray.shape[:2]
        margin = int(16 * self.scale) + 2
        h, w = th + 2 * margin, tw + 2 * margin
        canvas = np.zeros((h, w, 4), np.uint8)
        centre = (w / 2.0, h / 2.0)
        sh = int(7 * self.scale)
        self._paste(canvas, self._shadow(tray, 0.38), margin + sh, margin + sh)
        self._paste(canvas, _premultiply(tray), margin, margin)
        hulls = [_hull(tray[..., 3], (margin - centre[0], margin - centre[1]))]
        for item in plan.items:
            spr = sprites.draw_item(ITEMS[item.class_id], self.scale,
                                    np.random.default_rng(item.seed))
            ih, iw = spr.shape[:2]
            x0 = round(centre[0] + item.local_xy[0] - iw / 2)
            y0 = round(centre[1] + item.local_xy[1] - ih / 2)
            s = max(2, int(3 * self.scale))
            self._paste(canvas, self._shadow(spr, 0.30), x0 + s, y0 + s)
            self._paste(canvas, _premultiply(spr), x0, y0)
            hulls.append(_hull(spr[..., 3], (x0 - centre[0], y0 - centre[1])))
        result = _Canvas(canvas, centre, hulls)
        self._canvases[plan.tray_id] = result
        return result

    @staticmethod
    def _shadow(bgra: npt.NDArray[np.uint8], strength: float) -> npt.NDArray[np.uint8]:
        a = cv2.GaussianBlur(bgra[..., 3], (0, 0), 3) * strength
        out = np.zeros_like(bgra)
        out[..., 3] = a.astype(np.uint8)
        return out

    @staticmethod
    def _paste(dst: npt.NDArray[np.uint8], src: npt.NDArray[np.uint8], x0: int, y0: int) -> None:
        h, w = src.shape[:2]
        dh, dw = dst.shape[:2]
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + w, dw), min(y0 + h, dh)
        if xa >= xb or ya >= yb:
            return
        _blend_over(dst[ya:yb, xa:xb], src[ya - y0 : yb - y0, xa - x0 : xb - x0])

    def _draw_tray(self, frame_img: npt.NDArray[np.uint8], plan: TrayPlan,
                   frame: int) -> npt.NDArray[np.float64]:
        """Warp, blur and composite one tray; returns the affine tray->image map (2x3)."""
        cv_ = self._canvas(plan)
        cx, cy, theta = plan.pose(frame)
        c, s = math.cos(theta), math.sin(theta)
        rot = np.array([[c, -s], [s, c]])
        to_img = np.hstack([rot, np.array([[cx], [cy]])])  # tray coords -> image
        h, w = cv_.image.shape[:2]
        corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], float) - cv_.centre
        pts = corners @ rot.T + (cx, cy)
        blur = min(self.level.max_blur_px, abs(plan.speed(frame)) * SHUTTER)
        pad = int(blur) + 2
        x0 = max(math.floor(pts[:, 0].min()) - pad, 0)
        y0 = max(math.floor(pts[:, 1].min()) - pad, 0)
        x1 = min(math.ceil(pts[:, 0].max()) + pad, self.width)
        y1 = min(math.ceil(pts[:, 1].max()) + pad, self.height)
        if x0 >= x1 or y0 >= y1:
            return to_img
        # canvas pixel -> ROI pixel
        m = np.hstack([rot, (np.array([cx - x0, cy - y0]) - rot @ np.array(cv_.centre))[:, None]])
        warped = cv2.warpAffine(
            cv_.image, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0),
        )
        if blur >= 1.5:
            k = round(blur) | 1
            warped = cv2.blur(warped, (k, 1))
        roi = frame_img[y0:y1, x0:x1]
        a = warped[..., 3:4].astype(np.uint16)
        roi[...] = (warped[..., :3] + roi.astype(np.uint16) * (255 - a) // 255).astype(np.uint8)
        return to_img

    def _hand_pose(self, hand: HandPlan, plan: TrayPlan, frame: int) -> tuple[float, float]:
        """Palm centre in image pixels."""
        cx, cy, theta = plan.pose(frame)
        if hand.target is not None:
            lx, ly = plan.items[hand.target].local_xy
        else:  # pushing hand at the trailing rim
            lx, ly = -TRAY_SIZE[0] * self.scale / 2 - hand.size * 0.4, 0.0
        c, s = math.cos(theta), math.sin(theta)
        px, py = cx + c * lx - s * ly, cy + s * lx + c * ly
        px += 2.0 * self.scale * math.sin(frame / 3.0 + hand.wobble)
        py += 2.0 * self.scale * math.cos(frame / 4.0 + hand.wobble)
        edge_y = self.height + 40 * self.scale if hand.from_bottom else -40 * self.scale
        reach = max(1, round(0.2 * self.fps))
        t = min(1.0, (frame - hand.start) / reach, (hand.end - frame) / reach)
        t = max(t, 0.0)
        return px, edge_y + (py - edge_y) * t

    def _draw_hand(self, img: npt.NDArray[np.uint8], hand: HandPlan,
                   palm: tuple[float, float]) -> None:
        px, py = palm
        edge_y = self.height + 60 * self.scale if hand.from_bottom else -60 * self.scale
        ex = px + (25 if hand.from_bottom else -25) * self.scale
        arm_w = max(3, int(hand.size * 1.2))
        p0 = (round(ex * 16), round(edge_y * 16))
        p1 = (round(px * 16), round(py * 16))
        sign = 1 if hand.from_bottom else -1
        wrist = (round(px * 16), round((py + sign * hand.size * 0.9) * 16))
        for target, colour in ((img, hand.sleeve), (self._hand_mask, (255,))):
            cv2.line(target, p0, wrist, colour, arm_w, cv2.LINE_AA, 4)
        for target, colour in ((img, hand.skin), (self._hand_mask, (255,))):
            cv2.line(target, wrist, p1, colour, int(arm_w * 0.8), cv2.LINE_AA, 4)
            axes = (round(hand.size * 16), round(hand.size * 1.15 * 16))
            cv2.ellipse(target, p1, axes, 0, 0, 360, colour, -1, cv2.LINE_AA, 4)
            for f in range(4):  # fingers
                fx = px + (f - 1.5) * hand.size * 0.42
                fy = py - sign * hand.size * 1.2
                cv2.ellipse(target, (round(fx * 16), round(fy * 16)),
                            (round(hand.size * 0.17 * 16), round(hand.size * 0.45 * 16)),
                            0, 0, 360, colour, -1, cv2.LINE_AA, 4)

    # ---------------------------------------------------------------- frames
    def render(self, frame: int) -> tuple[npt.NDArray[np.uint8], list[BoxRecord]]:
        """Render frame ``frame`` (0-based) and its ground truth.

        Returns
        -------
        image : np.ndarray
            ``(height, width, 3)`` uint8 BGR.
        truth : list[BoxRecord]
            One record per object at least partly in the picture, with
            ``frame = frame + 1`` (MOTChallenge is 1-based), boxes clipped to
            the picture, and visibility after hands and the border.
        """
        plans = self.active(frame)
        if frame % 100 == 0:
            self._forget_before(frame)
        img = self._counter.copy()
        poses: list[tuple[TrayPlan, npt.NDArray[np.float64]]] = []
        for plan in plans:
            poses.append((plan, self._draw_tray(img, plan, frame)))
        self._hand_mask[...] = 0
        for plan in plans:
            for hand in plan.hands:
                if hand.start <= frame <= hand.end:
                    self._draw_hand(img, hand, self._hand_pose(hand, plan, frame))
        if self._camera is not None:
            turned = self._counter.copy()
            cv2.warpAffine(img, self._camera, (self.width, self.height), dst=turned,
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
            img = turned
            self._hand_mask = np.asarray(
                cv2.warpAffine(self._hand_mask, self._camera, (self.width, self.height),
                               flags=cv2.INTER_NEAREST), np.uint8)
        gain = 1.0 + self.level.light_drift * math.sin(
            2 * math.pi * frame / self._light_period + self._light_phase
        )
        lut = np.clip(np.arange(256) * gain, 0, 255).astype(np.uint8)
        img = np.asarray(cv2.LUT(img, lut), np.uint8)
        ox, oy = (int(v) for v in self._frame_rng.integers(0, 16, 2))
        k = int(self._frame_rng.integers(2))
        cv2.add(img, self._noise[k][oy : oy + self.height, ox : ox + self.width], dst=img)
        cv2.subtract(img, self._noise_neg[1 - k][oy : oy + self.height, ox : ox + self.width],
                     dst=img)
        truth: list[BoxRecord] = []
        for plan, to_img in poses:
            cv_ = self._canvas(plan)
            ids = [(plan.tray_id, TRAY_ID)] + [(it.object_id, it.class_id) for it in plan.items]
            pose = to_img
            if self._camera is not None:
                r, c = self._camera[:, :2], self._camera[:, 2:]
                pose = np.hstack([r @ to_img[:, :2], r @ to_img[:, 2:] + c])
            for (oid, cls), hull in zip(ids, cv_.hulls, strict=True):
                rec = self._truth(frame, oid, cls, hull @ pose[:, :2].T + pose[:, 2])
                if rec is not None:
                    truth.append(rec)
        return img, truth

    def _truth(self, frame: int, oid: int, cls: int,
               pts: npt.NDArray[np.float64]) -> BoxRecord | None:
        x1, y1 = pts.min(axis=0)
        x2, y2 = pts.max(axis=0)
        cx1, cy1 = max(x1, 0.0), max(y1, 0.0)
        cx2, cy2 = min(x2, float(self.width)), min(y2, float(self.height))
        if cx2 - cx1 < MIN_BOX_PX or cy2 - cy1 < MIN_BOX_PX:
            return None
        # the object's footprint (its outline polygon) inside the picture, minus hands
        ix0, iy0 = math.floor(x1), math.floor(y1)
        ix1, iy1 = math.ceil(x2), math.ceil(y2)
        foot = np.zeros((iy1 - iy0 + 1, ix1 - ix0 + 1), np.uint8)
        cv2.fillConvexPoly(foot, np.round((pts - (ix0, iy0)) * 4).astype(np.int32), 1,
                           cv2.LINE_8, 2)
        total = int(foot.sum())
        if total == 0:
            return None
        ax0, ay0 = max(ix0, 0), max(iy0, 0)
        ax1, ay1 = min(ix1 + 1, self.width), min(iy1 + 1, self.height)
        inside = foot[ay0 - iy0 : ay1 - iy0, ax0 - ix0 : ax1 - ix0]
        hand = self._hand_mask[ay0:ay1, ax0:ax1] > 127
        visible = int(inside.sum()) - int(inside[hand].sum())
        return BoxRecord(
            frame=frame + 1, track_id=oid, x=float(cx1), y=float(cy1), w=float(cx2 - cx1),
            h=float(cy2 - cy1), conf=1.0, class_id=cls, visibility=round(visible / total, 3),
        )

    def frames(self, count: int) -> Iterator[tuple[int, npt.NDArray[np.uint8], list[BoxRecord]]]:
        """Yield ``(frame_index, image, truth)`` for frames ``0 .. count-1``."""
        for f in range(count):
            img, truth = self.render(f)
            yield f, img, truth

    def _forget_before(self, frame: int) -> None:
        """Drop canvases of trays that have left (keeps memory flat on a live source)."""
        for plan in self._plans:
            if plan.end < frame:
                self._canvases.pop(plan.tray_id, None)
        if not self.keep_history and len(self._plans) > 1:
            self._plans = [p for p in self._plans[:-1] if p.end >= frame] + self._plans[-1:]
