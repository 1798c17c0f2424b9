// DishTracker cashier page: pick a camera, watch its annotated stream over
// WebRTC, show connection state, frame rate and glass-to-glass delay.
//
// Signalling is one POST of a complete offer (ICE gathered, no trickle) to
// /api/streams/{id}/webrtc (edge/web/webrtc.py). The delay is read from the
// corner stamp of the engineer's overlay (edge/stamp.py; stamp.js reads it),
// drawn into a small canvas in requestVideoFrameCallback. The page reconnects by itself, with
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
    codec: null, // what the connection decodes ("H264", "VP8"), from its stats
  };
  window.dishtracker = metrics;

  const { readStamp, unwrapTime, median } = window.dishtrackerStamp;

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
            const codec = s.codecId && report.get(s.codecId);
            if (codec) metrics.codec = String(codec.mimeType || "").replace(/^video\//, "");
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
