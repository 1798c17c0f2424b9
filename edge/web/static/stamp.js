// DishTracker cashier page, the corner stamp reader: mirrors edge/stamp.py
// (keep in sync). The engineer's overlay carries the stamp in each frame's
// top-left corner; app.js reads it from the shown frame to measure the
// glass-to-glass delay. Exposes window.dishtrackerStamp.
"use strict";

(() => {
  // Grid of GRID_ROWS x GRID_COLS cells at the top-left corner. Rows 0-3:
  // K (black) A (white/black/...) 20 data cells E (black/white/...) Q (quiet);
  // row 4 quiet. Data is row-major, black = 1, 80 bits big-endian:
  // frame_id (32) | time_ms mod 2^40 (40) | CRC-8/AUTOSAR of the 9 bytes before.
  const DATA_ROWS = 4, DATA_COLS = 20, DATA_COL0 = 2;
  const GRID_ROWS = 5, GRID_COLS = 24;
  const E_COL = DATA_COL0 + DATA_COLS;
  const TIME_MODULUS = 2 ** 40;

  function cellSize(width) {
    return Math.max(4, Math.floor(width / 80 / 4) * 4);
  }

  function crc8(bytes) {
    let crc = 0xff;
    for (const b of bytes) {
      crc ^= b;
      for (let i = 0; i < 8; i++) {
        crc = crc & 0x80 ? ((crc << 1) ^ 0x2f) & 0xff : (crc << 1) & 0xff;
      }
    }
    return crc ^ 0xff;
  }

  function median(values) {
    if (!values.length) return null;
    const s = [...values].sort((a, b) => a - b);
    const mid = s.length >> 1;
    return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  }

  const stampCanvas = document.createElement("canvas");
  const stampCtx = stampCanvas.getContext("2d", { willReadFrequently: true });

  // Returns {frameId, timeMs} or null when there is no valid stamp.
  function readStamp(source, width, height) {
    const cell = cellSize(width);
    const w = GRID_COLS * cell, h = GRID_ROWS * cell;
    if (w > width || h > height) return null;
    if (stampCanvas.width !== w || stampCanvas.height !== h) {
      stampCanvas.width = w;
      stampCanvas.height = h;
    }
    stampCtx.drawImage(source, 0, 0, w, h, 0, 0, w, h);
    const px = stampCtx.getImageData(0, 0, w, h).data;
    const lo = cell >> 2, hi = cell - lo;
    const mean = (row, col) => {
      let sum = 0, n = 0;
      for (let y = row * cell + lo; y < row * cell + hi; y++) {
        for (let x = col * cell + lo; x < col * cell + hi; x++) {
          const i = (y * w + x) * 4;
          sum += px[i] + px[i + 1] + px[i + 2];
          n += 3;
        }
      }
      return sum / n;
    };
    const black = [], white = [];
    for (let r = 0; r < DATA_ROWS; r++) {
      black.push(mean(r, 0));
      (r % 2 ? black : white).push(mean(r, 1));
      (r % 2 ? white : black).push(mean(r, E_COL));
    }
    const b = median(black), wl = median(white);
    if (wl - b < 60) return null;
    const threshold = (b + wl) / 2;
    if (Math.max(...black) >= threshold || Math.min(...white) <= threshold) return null;
    const bytes = new Uint8Array(10);
    let bit = 0;
    for (let r = 0; r < DATA_ROWS; r++) {
      for (let c = 0; c < DATA_COLS; c++, bit++) {
        if (mean(r, DATA_COL0 + c) < threshold) bytes[bit >> 3] |= 0x80 >> (bit & 7);
      }
    }
    if (crc8(bytes.subarray(0, 9)) !== bytes[9]) return null;
    const frameId = ((bytes[0] << 24) | (bytes[1] << 16) | (bytes[2] << 8) | bytes[3]) >>> 0;
    let timeMs = 0;
    for (let i = 4; i < 9; i++) timeMs = timeMs * 256 + bytes[i];
    return { frameId, timeMs };
  }

  // Full epoch milliseconds from a 40-bit stamp time, nearest to nowMs.
  function unwrapTime(timeMs, nowMs) {
    const base = nowMs - (nowMs % TIME_MODULUS) + timeMs;
    let best = base;
    for (const t of [base - TIME_MODULUS, base + TIME_MODULUS]) {
      if (Math.abs(t - nowMs) < Math.abs(best - nowMs)) best = t;
    }
    return best;
  }

  window.dishtrackerStamp = { readStamp, unwrapTime, median };
})();
