// DishTracker cashier page: pick a camera, watch its annotated stream over
// WebRTC, show connection state, frame rate and glass-to-glass delay.
//
// Signalling is one POST of a complete offer (ICE gathered, no trickle) to
// /api/streams/{id}/webrtc (edge/web/webrtc.py). The delay is read from the
// corner stamp each frame carries (edge/sim/stamp.py) and drawn into a small
// canvas in requestVideoFrameCallback. The page reconnects by itself, with
// backoff, when the connection fails, the video stalls or the daemon restarts.
// Latest measurements: window.dishtracker (read by tests/test_browser.py).
// The bill panel is bills.js; it follows the camera chosen here. The offer
// carries the access token (auth.js); without one the page waits, "Locked",
// until it is entered; a token whose role may not watch (auth.js, "watch") gets
// a notice, not an offer. A 429 or 503 answer's Retry-After stretches the backoff.
// The overlay toggle asks the server for the engineer's overlay (track ids,
// scores, stamp) instead of the cashier's: an "overlay" field in the offer,
// remembered in localStorage; toggling negotiates again. A daemon that does
// not know the field (422 naming it) gets offers without it, and the toggle hides.
"use strict";

(() => {
  const STORAGE_KEY = "dishtracker.stream";
  const OVERLAY_KEY = "dishtracker.overlay";
  const WINDOW_MS = 2000;            // latency median and fps over the last 2 s
  const STALL_MS = 5000;             // connected but no new frame: reconnect
  const DISCONNECTED_GRACE_MS = 3000; // "disconnected" may recover by itself
  const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 10000];
  const ICE_GATHER_TIMEOUT_MS = 3000;
  const auth = window.dishtrackerAuth;

  const $ = (id) => document.getElementById(id);
  const video = $("video");
  const select = $("stream");
  const badge = $("state");
  const notice = $("notice");
  const overlayToggle = $("overlay");
  let overlay = localStorage.getItem(OVERLAY_KEY) === "engineer" ? "engineer" : "cashier";
  let overlaySupported = true;

  const metrics = {
    framesDecoded: 0,
    latencyMs: null,
    latencySamples: [],
    fps: 0,
    state: "new",
    streamId: null,
    overlay,
    stampsRead: 0,
    stampsUnreadable: 0,
  };
  window.dishtracker = metrics;

  // ---- Corner stamp reader: mirrors edge/sim/stamp.py (keep in sync) -------
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

  // ---- Per-frame measurement ------------------------------------------------
  const latencies = []; // [wallMs, latencyMs]
  const presented = []; // wall ms of presented frames
  let lastFrameAt = 0;

  function prune(list, now, key) {
    while (list.length && key(list[0]) < now - WINDOW_MS) list.shift();
  }

  function onVideoFrame(_now, meta) {
    const now = Date.now();
    lastFrameAt = now;
    presented.push(now);
    prune(presented, now, (t) => t);
    const span = presented.length > 1 ? presented[presented.length - 1] - presented[0] : 0;
    metrics.fps = span > 0 ? ((presented.length - 1) * 1000) / span : 0;
    const stamp = readStamp(video, meta.width || video.videoWidth, meta.height || video.videoHeight);
    if (stamp) {
      metrics.stampsRead++;
      latencies.push([now, now - unwrapTime(stamp.timeMs, now)]);
    } else {
      metrics.stampsUnreadable++;
    }
    prune(latencies, now, (s) => s[0]);
    metrics.latencySamples = latencies.map((s) => s[1]);
    metrics.latencyMs = median(metrics.latencySamples);
    video.requestVideoFrameCallback(onVideoFrame);
  }

  function render() {
    $("fps").textContent = metrics.fps ? metrics.fps.toFixed(1) : "–";
    $("latency").textContent = metrics.latencyMs === null ? "–" : Math.round(metrics.latencyMs);
    $("frames").textContent = metrics.framesDecoded;
  }
  setInterval(render, 250);

  // ---- Connection -------------------------------------------------------------
  const STATE_TEXT = {
    new: "Starting…", connecting: "Connecting…", connected: "Live",
    disconnected: "Reconnecting…", failed: "Connection lost", offline: "Server offline",
    closed: "Closed", locked: "Locked",
  };

  function setState(state, message) {
    metrics.state = state;
    badge.dataset.state = state;
    badge.textContent = STATE_TEXT[state] || state;
    notice.hidden = state === "connected" && !message;
    if (message) notice.textContent = message;
  }

  let pc = null;
  let decodedBefore = 0; // frames decoded by earlier connections
  let decodedNow = 0;    // by the current one
  let generation = 0; // bumps on every (re)connect; stale callbacks compare and quit
  let attempt = 0;
  let retryTimer = null;
  let disconnectTimer = null;

  function waitForIceGathering(conn) {
    if (conn.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (conn.iceGatheringState === "complete") {
          conn.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      conn.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, ICE_GATHER_TIMEOUT_MS); // send what we have
    });
  }

  async function fetchStreams() {
    const resp = await fetch("/api/streams", { cache: "no-store" });
    if (!resp.ok) throw new Error(`GET /api/streams: HTTP ${resp.status}`);
    const streams = await resp.json();
    const wanted = select.value || localStorage.getItem(STORAGE_KEY);
    select.replaceChildren(...streams.map((s) => {
      const option = document.createElement("option");
      option.value = s.id;
      option.textContent = s.state && s.state !== "running" ? `${s.id} (${s.state})` : s.id;
      return option;
    }));
    if (streams.some((s) => s.id === wanted)) select.value = wanted;
    return select.value || null;
  }

  function teardown() {
    clearTimeout(disconnectTimer);
    disconnectTimer = null;
    if (pc) {
      pc.close();
      pc = null;
    }
    decodedBefore += decodedNow;
    decodedNow = 0;
    video.srcObject = null;
  }

  function scheduleRetry(reason, minDelayMs = 0) {
    teardown();
    clearTimeout(retryTimer);
    const delay = Math.max(minDelayMs, BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]);
    attempt++;
    const gen = ++generation;
    retryTimer = setTimeout(() => { if (gen === generation) connect(); }, delay);
    console.info(`dishtracker: ${reason}; retrying in ${delay} ms`);
  }

  async function connect() {
    const gen = ++generation;
    teardown();
    setState("connecting", "Connecting to the camera…");
    let streamId;
    try {
      streamId = await fetchStreams();
    } catch (err) {
      if (gen !== generation) return;
      setState("offline", "The checkout server does not answer. Retrying…");
      scheduleRetry(String(err));
      return;
    }
    if (gen !== generation) return;
    if (!streamId) {
      setState("offline", "No camera is configured.");
      scheduleRetry("no streams");
      return;
    }
    metrics.streamId = streamId;
    // bills.js shows this stream's open tray and bills
    document.dispatchEvent(new CustomEvent("dishtracker:stream", { detail: streamId }));
    if (!auth.token()) {
      setState("locked", "Sign in with the access token to watch the camera.");
      await auth.ensure();
      if (gen !== generation) return;
      setState("connecting", "Connecting to the camera…");
    }
    const access = auth.access();
    if (access.checked && !access.may.includes("watch")) {
      setState("locked", `The ${access.role || "token's"} role may not watch the camera.`);
      return; // "dishtracker:access" connects again when another token comes
    }
    const conn = new RTCPeerConnection({ iceServers: [] }); // LAN: host candidates
    pc = conn;
    conn.addTransceiver("video", { direction: "recvonly" });
    conn.ontrack = (ev) => {
      video.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      video.play().catch(() => {});
    };
    conn.onconnectionstatechange = () => onConnectionState(conn, gen);
    try {
      await conn.setLocalDescription(await conn.createOffer());
      await waitForIceGathering(conn);
      if (gen !== generation) return;
      const resp = await auth.fetch(`/api/streams/${encodeURIComponent(streamId)}/webrtc`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ sdp: conn.localDescription.sdp, type: "offer",
          ...(overlaySupported ? { overlay } : {}) }),
      });
      const body = await resp.json().catch(() => ({}));
      if (gen !== generation) return;
      if (resp.status === 422 && overlaySupported
          && (body.errors || []).some((e) => String(e).startsWith("overlay"))) {
        overlaySupported = false; // a daemon without the cashier/engineer choice
        overlayToggle.hidden = true;
        document.body.dataset.overlay = "fixed"; // whatever it draws, the stats show
        connect();
        return;
      }
      if (resp.status === 403) {
        teardown();
        setState("locked", `${body.error || "This token may not watch the camera"}.`);
        return;
      }
      if (resp.status === 401) {
        // auth.js forgot the token and shows the form; connect again once it is entered
        teardown();
        setState("locked", `${body.error || "Access token refused"}: enter the current one.`);
        await auth.ensure();
        if (gen === generation) connect();
        return;
      }
      if (!resp.ok) {
        const err = new Error(body.error || `HTTP ${resp.status}`);
        err.retryAfterMs = 1000 * (Number(resp.headers.get("Retry-After")) || 0);
        throw err;
      }
      await conn.setRemoteDescription(body);
    } catch (err) {
      if (gen !== generation) return;
      setState("failed", `Cannot watch ${streamId}: ${err.message || err}. Retrying…`);
      scheduleRetry(String(err), err.retryAfterMs || 0);
    }
  }

  function onConnectionState(conn, gen) {
    if (gen !== generation || conn !== pc) return;
    const state = conn.connectionState;
    if (state === "connected") {
      clearTimeout(disconnectTimer);
      disconnectTimer = null;
      lastFrameAt = Date.now();
      setState("connected", video.readyState < 2 ? "Waiting for video…" : "");
    } else if (state === "disconnected") {
      setState("disconnected", "Connection interrupted…");
      disconnectTimer = setTimeout(() => {
        if (gen === generation) scheduleRetry("disconnected too long");
      }, DISCONNECTED_GRACE_MS);
    } else if (state === "failed" || state === "closed") {
      setState("failed", "Connection lost. Reconnecting…");
      scheduleRetry(`connection ${state}`);
    }
  }

  // framesDecoded from the receiver's stats; a stream that stops decoding counts as lost.
  async function pollStats() {
    const conn = pc;
    if (conn && metrics.state === "connected") {
      try {
        const report = await conn.getStats();
        report.forEach((s) => {
          if (s.type === "inbound-rtp" && s.kind === "video" && conn === pc) {
            if (s.framesDecoded > decodedNow) {
              attempt = 0; // healthy again: reset the backoff
              lastFrameAt = Date.now(); // also in background tabs, where rVFC pauses
            }
            decodedNow = s.framesDecoded || 0;
            metrics.framesDecoded = decodedBefore + decodedNow;
          }
        });
      } catch (_) { /* connection closing */ }
      if (conn === pc && Date.now() - lastFrameAt > STALL_MS) {
        setState("failed", "The video stopped. Reconnecting…");
        scheduleRetry("video stalled");
      }
    }
  }
  setInterval(pollStats, 500);

  video.addEventListener("playing", () => {
    if (metrics.state === "connected") setState("connected", "");
  });

  function showOverlay() {
    metrics.overlay = overlay;
    document.body.dataset.overlay = overlay; // the delay and rates need the stamp
    overlayToggle.setAttribute("aria-pressed", overlay === "engineer" ? "true" : "false");
  }

  overlayToggle.addEventListener("click", () => {
    overlay = overlay === "engineer" ? "cashier" : "engineer";
    localStorage.setItem(OVERLAY_KEY, overlay);
    showOverlay();
    attempt = 0;
    connect();
  });
  showOverlay();

  let watching = auth.access().may.includes("watch");
  document.addEventListener("dishtracker:access", (ev) => {
    const may = ev.detail.checked && ev.detail.may.includes("watch");
    if (!ev.detail.signedIn && ev.detail.checked && metrics.state !== "locked") {
      // signed out, or the token was refused: no picture without one
      const gen = ++generation;
      teardown();
      setState("locked", "Sign in with the access token to watch the camera.");
      auth.ensure().then(() => { if (gen === generation) connect(); });
    } else if (may && !watching && metrics.state === "locked") connect();
    else if (ev.detail.checked && !ev.detail.may.includes("watch") && ev.detail.signedIn) {
      generation++;
      teardown();
      setState("locked", `The ${ev.detail.role || "token's"} role may not watch the camera.`);
    }
    watching = may;
  });

  select.addEventListener("change", () => {
    localStorage.setItem(STORAGE_KEY, select.value);
    attempt = 0;
    latencies.length = 0;
    presented.length = 0;
    connect();
  });

  if ("requestVideoFrameCallback" in HTMLVideoElement.prototype) {
    video.requestVideoFrameCallback(onVideoFrame);
  } else {
    console.warn("dishtracker: no requestVideoFrameCallback; delay is not measured");
  }
  connect();
})();
