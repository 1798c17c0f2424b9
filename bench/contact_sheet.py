"""Render every sprite class at scale 1 and as the detector sees it, to one PNG.

Usage: python bench/contact_sheet.py [out.png] [--seed N]
(default out: docs/sprites.png)

Each cell shows the sprite at scale 1 (640x480 reference view) and, below it
at true size, the same view after what the detector input does to it: 2x
downscale, 3 px Gaussian blur, JPEG quality 50. The bottom strip shows trays at
half scale on a counter. Prints the mean draw_item time.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.sim.menu import MENU
from edge.sim.sprites import draw_counter, draw_item

CELL = 120  # cell side at scale 1, pixels
HALF_BAND = 64  # height of the detector-view strip under each row
TRAY_BAND = 110
COLS = 8


def _over(bg: npt.NDArray[np.uint8], sprite: npt.NDArray[np.uint8], x: int, y: int) -> None:
    """Alpha-composite a BGRA sprite onto ``bg`` with its top-left at (x, y)."""
    h, w = sprite.shape[:2]
    roi = bg[y : y + h, x : x + w]
    a = sprite[:, :, 3:4].astype(np.float32) / 255
    roi[...] = (sprite[:, :, :3] * a + roi * (1 - a)).astype(np.uint8)


def _detector_view(img: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """2x down, 3 px blur, JPEG q50: what the detector's 320x240 input keeps."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (3, 3), 0)
    _, jpg = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 50])
    return np.asarray(cv2.imdecode(jpg, cv2.IMREAD_COLOR), np.uint8)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default="docs/sprites.png")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    items = [m for m in MENU if m.key != "tray"]
    rows = -(-len(items) // COLS)
    row_h = CELL + HALF_BAND
    sheet_w, sheet_h = COLS * CELL, rows * row_h + TRAY_BAND
    # Sprites on the counter's mean colour, trays on a counter strip: a full
    # counter's noise does not compress and would push the PNG over 300 KB.
    counter = draw_counter(sheet_w, sheet_h, rng)
    sheet = np.empty_like(counter)
    sheet[...] = counter[sheet_h // 3 : 2 * sheet_h // 3].mean(axis=(0, 1)).astype(np.uint8)
    sheet[-TRAY_BAND:] = counter[sheet_h // 2 : sheet_h // 2 + TRAY_BAND]
    elapsed = 0.0
    for i, item in enumerate(items):
        t0 = time.perf_counter()
        spr = draw_item(item, 1.0, rng)
        elapsed += time.perf_counter() - t0
        r, c = divmod(i, COLS)
        x0, y0 = c * CELL, r * row_h
        h, w = spr.shape[:2]
        _over(sheet, spr, x0 + (CELL - w) // 2, y0 + (CELL - 16 - h) // 2)
        cv2.putText(
            sheet,
            item.key,
            (x0 + 4, y0 + CELL - 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.36,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    for r in range(rows):
        y0 = r * row_h
        half = _detector_view(sheet[y0 : y0 + CELL - 16])
        hw = CELL // 2
        for c in range(COLS):
            x = c * CELL + hw // 2
            sheet[y0 + CELL : y0 + CELL + half.shape[0], x : x + hw] = half[
                :, c * hw : (c + 1) * hw
            ]
    for k in range(sheet_w // 140):
        _over(sheet, draw_item(MENU[0], 0.5, rng), 6 + k * 140, sheet_h - TRAY_BAND + 6)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # 6 bits per channel: invisible here, and keeps docs/sprites.png under 300 KB.
    sheet = (sheet // 4 * 4 + 2).astype(np.uint8)
    cv2.imwrite(args.out, sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    ms = elapsed / len(items) * 1000
    print(f"{args.out}: {sheet_w}x{sheet_h}, {ms:.2f} ms per draw_item at scale 1")


if __name__ == "__main__":
    main()
