"""A machine-readable corner code that carries a frame id and a capture time.

The simulator (and any live source) stamps each frame just before it is
encoded; a client reads the stamp back after decoding, so that the
glass-to-glass latency is ``client_now_ms - time_ms`` and dropped or repeated
frames show up as gaps in ``frame_id``. The reader may be this module (Python,
after decoding a WebRTC frame) or JavaScript reading a ``<canvas>``:
``stamp_geometry`` returns everything such a reader needs.

Layout, in cells of ``cell`` pixels, top-left corner of the image::

    rows 0..3        K A d d d ... d (20 data cols) E Q
    row 4            Q Q Q ...                        Q Q

    Q  quiet cell (white): separates the code from the picture; the image
       edge does that on the top and left
    K  black column (black reference)
    A  alternating start column, white/black/white/black from row 0
    E  alternating end column, black/white/black/white from row 0
    d  data cells, row-major, most significant bit first, black = 1

Payload (``STAMP_BITS`` = 80, big-endian): ``frame_id`` (32 bits),
``time_ms`` = Unix epoch milliseconds modulo 2**40 (40 bits), then
CRC-8/AUTOSAR (polynomial 0x2F, init 0xFF, final xor 0xFF, no reflection) of
the 9 preceding bytes.

Cells are multiples of 4 pixels from the grid origin (0, 0): every cell then
covers whole 4x4 transform blocks of H.264 and VP8, which code a flat block
with one DC coefficient, so the code survives low bitrates (see
``tests/test_stamp.py``). Where a starved encoder skips the corner's
macroblocks, the reader sees the previous frame's stamp: that is what the
viewer sees too, so the latency it measures stays true.
The reader samples the central half of each cell and thresholds at the
mid-level between the black and the white reference cells, which makes it
independent of the encoder's level shifts (full vs limited range).
"""

from __future__ import annotations

from functools import cache
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

FRAME_ID_BITS = 32
TIME_BITS = 40
CRC_BITS = 8
STAMP_BITS = FRAME_ID_BITS + TIME_BITS + CRC_BITS
TIME_MODULUS = 1 << TIME_BITS

DATA_ROWS = 4
DATA_COLS = STAMP_BITS // DATA_ROWS
_START_COLS = 2  # K and A
_END_COLS = 1  # E
_QUIET = 1  # right and bottom only
GRID_ROWS = DATA_ROWS + _QUIET
GRID_COLS = _START_COLS + DATA_COLS + _END_COLS + _QUIET

_BLACK = 0
_WHITE = 255
# Stamped black and white are 255 apart; below this the region is no stamp.
_MIN_CONTRAST = 60.0

_CRC_POLY = 0x2F
_CRC_INIT = 0xFF
_CRC_XOROUT = 0xFF


class StampGeometry(TypedDict):
    """Where the stamp lies in an image, in pixels and cells.

    Cell ``(row, col)`` covers pixels ``x0 + col*cell <= x < x0 + (col+1)*cell``,
    ``y0 + row*cell <= y < y0 + (row+1)*cell``; read it at its centre.
    """

    cell: int
    x0: int
    y0: int
    rows: int
    cols: int
    width_px: int
    height_px: int
    data_row0: int
    data_col0: int
    data_rows: int
    data_cols: int
    bits: int
    black_cells: list[tuple[int, int]]
    white_cells: list[tuple[int, int]]
    crc: str


def cell_size(width: int) -> int:
    """Cell side in pixels for an image ``width`` pixels wide.

    About 1/80 of the width, rounded down to a multiple of 4 (at least 4):
    4 px at 320, 8 px at 640 (a 192x40 px code), 16 px at 1280. Measured with
    libx264 at 300 kb/s on a 640x480 full-frame noise background: 4 and 6 px
    cells failed in 25 of 30 frames, 8 px cells read back in all 30.
    """
    return max(4, width // 80 // 4 * 4)


def _pattern() -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Fixed cells of the code.

    Returns
    -------
    colour : np.ndarray
        ``(GRID_ROWS, GRID_COLS)`` int, 0 = black, 1 = white, -1 = data cell.
    is_reference : np.ndarray
        ``(GRID_ROWS, GRID_COLS)`` bool, the K, A and E cells (the quiet border
        is not used as reference: its outer side touches the background).
    """
    colour = np.ones((GRID_ROWS, GRID_COLS), dtype=np.int64)
    reference = np.zeros((GRID_ROWS, GRID_COLS), dtype=bool)
    rows = slice(0, DATA_ROWS)
    k_col, a_col = 0, 1
    d0 = _START_COLS
    e_col = d0 + DATA_COLS
    colour[rows, k_col] = 0
    alternating = np.arange(DATA_ROWS) % 2
    colour[rows, a_col] = 1 - alternating
    colour[rows, e_col] = alternating
    colour[rows, d0:e_col] = -1
    reference[rows, k_col] = reference[rows, a_col] = reference[rows, e_col] = True
    return colour, reference


def stamp_geometry(width: int, height: int) -> StampGeometry:
    """Geometry a reader needs to decode the stamp of a ``width`` x ``height`` image.

    Parameters
    ----------
    width, height : int
        Image size in pixels.

    Returns
    -------
    StampGeometry
        Cell size and origin in pixels, grid and data-block size in cells,
        black and white reference cells as ``(row, col)``, the CRC variant.

    Raises
    ------
    ValueError
        If the code does not fit in the image.
    """
    cell = cell_size(width)
    if GRID_COLS * cell > width or GRID_ROWS * cell > height:
        msg = (
            f"image {width}x{height} is too small for the stamp: it needs "
            f"{GRID_COLS * cell}x{GRID_ROWS * cell} px at cell={cell}"
        )
        raise ValueError(msg)
    colour, reference = _pattern()
    black = [(int(r), int(c)) for r, c in np.argwhere(reference & (colour == 0))]
    white = [(int(r), int(c)) for r, c in np.argwhere(reference & (colour == 1))]
    return StampGeometry(
        cell=cell,
        x0=0,
        y0=0,
        rows=GRID_ROWS,
        cols=GRID_COLS,
        width_px=GRID_COLS * cell,
        height_px=GRID_ROWS * cell,
        data_row0=0,
        data_col0=_START_COLS,
        data_rows=DATA_ROWS,
        data_cols=DATA_COLS,
        bits=STAMP_BITS,
        black_cells=black,
        white_cells=white,
        crc="CRC-8/AUTOSAR poly=0x2F init=0xFF xorout=0xFF over 9 big-endian bytes",
    )


def crc8(data: bytes) -> int:
    """CRC-8/AUTOSAR of ``data`` (check value of ``b"123456789"`` is 0xDF)."""
    crc = _CRC_INIT
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ _CRC_POLY) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc ^ _CRC_XOROUT


def _payload_bits(frame_id: int, time_ms: int) -> npt.NDArray[np.uint8]:
    """``(STAMP_BITS,)`` uint8 payload bits, most significant first."""
    body = (frame_id << TIME_BITS) | time_ms
    body_bytes = body.to_bytes((FRAME_ID_BITS + TIME_BITS) // 8, "big")
    word = (body << CRC_BITS) | crc8(body_bytes)
    # 80 bits do not fit a numpy integer: unpack the Python int's bytes.
    return np.unpackbits(np.frombuffer(word.to_bytes(STAMP_BITS // 8, "big"), dtype=np.uint8))


def stamp_frame(img: npt.NDArray[np.uint8], frame_id: int, time_ms: int) -> None:
    """Draw the stamp into the top-left corner of ``img``, in place.

    Parameters
    ----------
    img : np.ndarray
        ``(H, W, 3)`` BGR or ``(H, W)`` grey, uint8.
    frame_id : int
        ``0 <= frame_id < 2**32``.
    time_ms : int
        Capture time, Unix epoch milliseconds (>= 0); stored modulo 2**40.

    Raises
    ------
    ValueError
        If an argument is out of range or the image is too small or not uint8.
    """
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        msg = f"img must be (H, W) or (H, W, 3) uint8, got {img.shape} {img.dtype}"
        raise ValueError(msg)
    if not 0 <= frame_id < 1 << FRAME_ID_BITS:
        msg = f"frame_id={frame_id} is out of range: valid is 0 <= frame_id < 2**32"
        raise ValueError(msg)
    if time_ms < 0:
        msg = f"time_ms={time_ms} must be >= 0 (Unix epoch milliseconds)"
        raise ValueError(msg)
    geo = stamp_geometry(img.shape[1], img.shape[0])
    colour, _ = _pattern()
    bits = _payload_bits(frame_id, time_ms % TIME_MODULUS)
    r0, c0 = geo["data_row0"], geo["data_col0"]
    colour[r0 : r0 + DATA_ROWS, c0 : c0 + DATA_COLS] = 1 - bits.reshape(DATA_ROWS, DATA_COLS)
    levels = np.where(colour == 0, _BLACK, _WHITE).astype(np.uint8)
    cell = geo["cell"]
    block = np.repeat(np.repeat(levels, cell, axis=0), cell, axis=1)
    region = img[: geo["height_px"], : geo["width_px"]]
    region[...] = block if img.ndim == 2 else block[:, :, None]


def _cell_means(grey: npt.NDArray[np.floating[Any]], geo: StampGeometry) -> npt.NDArray[np.float64]:
    """Mean level of the central half of every cell, ``(rows, cols)`` float."""
    cell = geo["cell"]
    lo = cell // 4
    hi = cell - lo
    grid = grey[: geo["height_px"], : geo["width_px"]].reshape(geo["rows"], cell, geo["cols"], cell)
    means: npt.NDArray[np.float64] = grid[:, lo:hi, :, lo:hi].mean(axis=(1, 3), dtype=np.float64)
    return means


def read_stamp(img: npt.NDArray[np.uint8]) -> tuple[int, int] | None:
    """Read the stamp written by ``stamp_frame``.

    Parameters
    ----------
    img : np.ndarray
        ``(H, W, 3)`` BGR or ``(H, W)`` grey, uint8, same size as when stamped.

    Returns
    -------
    tuple[int, int] or None
        ``(frame_id, time_ms)`` with ``time_ms`` modulo 2**40 (see
        ``unwrap_time_ms``), or None when there is no stamp, the reference cells
        are inconsistent, or the CRC fails.
    """
    height, width = img.shape[:2]
    try:
        geo = stamp_geometry(width, height)
    except ValueError:
        return None
    region = img[: geo["height_px"], : geo["width_px"]]
    grey = region.astype(np.float32) if region.ndim == 2 else region.mean(axis=2)
    means = _cell_means(grey, geo)
    colour, reference = _pattern()
    black = means[reference & (colour == 0)]
    white = means[reference & (colour == 1)]
    black_level, white_level = float(np.median(black)), float(np.median(white))
    if white_level - black_level < _MIN_CONTRAST:
        return None
    threshold = (black_level + white_level) / 2
    if black.max() >= threshold or white.min() <= threshold:
        return None
    r0, c0 = geo["data_row0"], geo["data_col0"]
    data = means[r0 : r0 + DATA_ROWS, c0 : c0 + DATA_COLS].ravel() < threshold
    word = 0
    for bit in data:
        word = (word << 1) | int(bit)
    body = word >> CRC_BITS
    body_bytes = body.to_bytes((FRAME_ID_BITS + TIME_BITS) // 8, "big")
    if crc8(body_bytes) != word & 0xFF:
        return None
    return body >> TIME_BITS, body & (TIME_MODULUS - 1)


def stamp_area(img: npt.NDArray[np.uint8]) -> tuple[int, int] | None:
    """``(width, height)`` in pixels of the stamp in ``img``'s top-left corner, or None
    when its reference cells do not read black and white.

    Cheap (one read of the centres of the ``K``, ``A`` and ``E`` cells, no
    decoding, no CRC): for a picture that hides the stamp from view (the
    cashier's overlay), not for reading one (:func:`read_stamp`).

    Parameters
    ----------
    img : np.ndarray
        ``(H, W, 3)`` BGR or ``(H, W)`` grey, uint8.
    """
    found = _reference_points(img.shape[1], img.shape[0])
    if found is None:
        return None
    ys, xs, n_black, size = found
    levels = img[ys, xs].reshape(len(ys), -1).mean(axis=1)
    if levels[n_black:].min() - levels[:n_black].max() < _MIN_CONTRAST:
        return None
    return size


@cache
def _reference_points(width: int, height: int
                      ) -> tuple[list[int], list[int], int, tuple[int, int]] | None:
    """Pixel rows and columns of the reference cells' centres (black ones first), how
    many are black, and the stamp's size; None when no stamp fits."""
    try:
        geo = stamp_geometry(width, height)
    except ValueError:
        return None
    half = geo["cell"] // 2
    cells = geo["black_cells"] + geo["white_cells"]
    return ([r * geo["cell"] + half for r, _ in cells],
            [c * geo["cell"] + half for _, c in cells], len(geo["black_cells"]),
            (geo["width_px"], geo["height_px"]))


def unwrap_time_ms(time_ms: int, now_ms: int) -> int:
    """Full Unix epoch milliseconds from a stamp's 40-bit time, nearest to ``now_ms``.

    Parameters
    ----------
    time_ms : int
        Stamp time modulo 2**40 (about 34.8 years).
    now_ms : int
        Reader's clock, Unix epoch milliseconds.

    Returns
    -------
    int
        The value congruent to ``time_ms`` modulo 2**40 closest to ``now_ms``.
    """
    base = now_ms - now_ms % TIME_MODULUS + time_ms
    candidates = (base - TIME_MODULUS, base, base + TIME_MODULUS)
    return min(candidates, key=lambda t: abs(t - now_ms))
