// DishTracker models page (managers): the models on the box and what runs
// (GET /api/models: models, history, rollout status), a model uploaded as the
// raw body (POST /api/models), and the actions on one
// (POST /api/models/{id}/shadow, /promote, /rollback, /retire). The shadow's
// figures are whatever the daemon reports (rollout.shadow.stats), shown as a
// small table and refreshed every few seconds. auth.js (loaded before) keeps
// the token; a role that may not manage models sees a note instead of the
// page. Exposes window.dishtrackerModels ({ models, history, rollout }) for tests.
"use strict";

(() => {
  const { el, morphChildren } = window.dishtrackerDom;
  const auth = window.dishtrackerAuth;
  const $ = (id) => document.getElementById(id);
  const rows = $("rows");
  const historyRows = $("history");
  const running = $("running");
  const status = $("status");
  const uploadForm = $("upload-form");
  const fileInput = $("upload-file");
  const REFRESH_MS = 3000;
  const state = { models: [], history: [], rollout: null, busy: false };
  window.dishtrackerModels = state;
  let timer = null;
  let seq = 0; // the latest load; an older answer is dropped and starts no timer

  const ACTIONS = {
    shadow: { label: "Shadow", done: "shadowing", ok: (m) => m.state !== "serving" && m.state !== "shadow" },
    promote: { label: "Promote", done: "promoted", ok: (m) => m.state !== "serving",
      confirm: (m) => `Make ${m.id} (${m.version}) serve every stream now?` },
    // only while the daemon names a model to go back to (status rollback_to)
    rollback: { label: "Roll back", done: "rolled back",
      ok: (m) => m.state === "serving" && Boolean(state.rollout && state.rollout.rollback_to),
      confirm: (m) => `Roll ${m.id} (${m.version}) back to the model that served before it?` },
    retire: { label: "Retire", done: "retired", ok: (m) => m.state !== "serving" && m.state !== "retired" },
  };

  function say(text, kind = "") {
    status.textContent = text;
    status.dataset.kind = kind;
  }

  function mayManage() {
    const access = auth.access();
    return !access.checked || auth.may("models");
  }

  const size = (n) => (n >= 100000 ? `${(n / 1e6).toFixed(1)} MB` : `${Math.round(n / 1e3)} kB`);
  const when = (unix) => new Date(unix * 1000).toLocaleString([], {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit" });
  const named = (m) => (m ? `${m.id} · ${m.version}` : "none");
  const isTime = (k, v) => typeof v === "number" && v > 1e9 && (k === "since" || k.endsWith("_at"));
  const number = (v) => (Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000));
  // a nested figure in words: {"p50": 31.7, "p95": 100.7} -> "p50 31.7 · p95 100.7",
  // a list -> "a, b" ("none" when empty)
  const shown = (k, v) => (v === null || v === undefined ? "–"
    : isTime(k, v) ? when(v)
      : Array.isArray(v) ? (v.length ? v.map((x) => shown("", x)).join(", ") : "none")
        : typeof v === "object" ? Object.entries(v).map(
          ([kk, vv]) => `${kk.replace(/_/g, " ")} ${shown(kk, vv)}`).join(" · ")
          : typeof v === "number" ? number(v)
            : String(v));

  // key → value rows; nested objects in words, so whatever the daemon adds shows
  function table(pairs, label) {
    return el("table", { class: "grid kv", "aria-label": label },
      el("tbody", {}, pairs.map(([k, v]) => el("tr", { "data-key": k },
        el("th", { scope: "row", text: k.replace(/_/g, " ") }), el("td", { text: shown(k, v) })))));
  }

  function renderRunning(rollout) {
    if (!rollout) return [el("p", { class: "notice-line", text: "No rollout status yet." })];
    const { serving, shadow, rollback_to: back, ...rest } = rollout;
    const out = [table([["serving", named(serving)], ["shadow", named(shadow)],
      ["rollback to", named(back)], ...Object.entries(rest)], "Rollout status")];
    if (shadow) {
      const stats = Object.entries(shadow.stats || {});
      out.push(el("h3", { class: "sub", text: `Shadow ${named(shadow)}: how it compares` }),
        stats.length ? table(stats, "Shadow figures")
          : el("p", { class: "notice-line", text: "No figures yet: no tray has passed." }));
    }
    return out;
  }

  function row(m) {
    const buttons = Object.entries(ACTIONS).filter(([, a]) => a.ok(m)).map(([name, a]) =>
      el("button", { type: "button", class: name === "promote" ? "" : "secondary",
        "data-action": name, "data-id": m.id, disabled: state.busy || !mayManage(),
        "aria-label": `${a.label} ${m.id}`, text: a.label }));
    return el("tr", { "data-key": m.id, "data-state": m.state },
      el("td", { class: "menu-key", title: m.sha256, text: m.id }),
      el("td", { text: m.name }),
      el("td", { text: m.version }),
      el("td", {}, el("span", { class: `model-state state-${m.state}`, text: m.state })),
      el("td", { text: m.source }),
      el("td", { text: when(m.added_at) }),
      el("td", { class: "num", text: size(m.size_bytes) }),
      el("td", { class: "num", title: m.classes.join(", "), text: String(m.classes.length) }),
      el("td", {}, el("div", { class: "actions" }, buttons)));
  }

  function historyRow(e, i) {
    return el("tr", { "data-key": `${e.at}-${i}` },
      el("td", { text: when(e.at) }),
      el("td", { text: `${e.model} · ${e.version}` }),
      el("td", { text: `${e.from || "added"} → ${e.to}` }),
      el("td", { text: e.actor || "–" }),
      el("td", { text: e.reason || "" }));
  }

  function render() {
    morphChildren(running, el("div", {}, renderRunning(state.rollout)));
    morphChildren(rows, el("tbody", {}, state.models.length ? state.models.map(row)
      : el("tr", {}, el("td", { colspan: "9", class: "notice-line", text: "No models yet." }))));
    morphChildren(historyRows, el("tbody", {}, state.history.map(historyRow)));
  }

  async function load() {
    const mine = ++seq;
    clearTimeout(timer);
    timer = null;
    if (!auth.token()) return;
    try {
      const resp = await auth.fetch("/api/models", { cache: "no-store" });
      if (mine !== seq) return;
      if (resp.status === 403) {
        applyAccess(true);
        return;
      }
      if (!resp.ok) {
        if (resp.status !== 401) say(`The models could not be loaded: ${await auth.refusal(resp)}`, "error");
        return;
      }
      const answer = await resp.json();
      if (mine !== seq) return;
      Object.assign(state, answer);
      render();
    } catch (err) {
      say(`The models could not be loaded: ${err}`, "error");
    }
    if (mine === seq) timer = setTimeout(load, REFRESH_MS);
  }

  async function act(name, id) {
    const model = state.models.find((m) => m.id === id);
    const action = ACTIONS[name];
    if (!model || !action) return;
    if (action.confirm && !window.confirm(action.confirm(model))) return;
    state.busy = true;
    render();
    say(`${action.label}: ${named(model)}…`);
    try {
      const resp = await auth.fetch(`/api/models/${encodeURIComponent(id)}/${name}`,
        { method: "POST" });
      if (resp.ok) {
        const entry = await resp.json();
        say(`${action.label}: done, ${named(entry)} is ${entry.state}`, "ok");
      } else {
        say(`${action.label} refused: ${await auth.refusal(resp)}`, "error");
      }
    } catch (err) {
      say(`${action.label} failed: ${err}`, "error");
    } finally {
      state.busy = false;
      await load();
    }
  }

  async function upload(file) {
    state.busy = true;
    say(`Uploading ${file.name} (${size(file.size)})…`);
    try {
      const resp = await auth.fetch(`/api/models?name=${encodeURIComponent(file.name)}`, {
        method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
      if (resp.ok) {
        const entry = await resp.json();
        say(resp.status === 201 ? `Uploaded: ${named(entry)} is a candidate; shadow it to compare`
          : `Already on the box: ${named(entry)} (${entry.state})`, "ok");
        uploadForm.reset();
      } else {
        say(`Not uploaded: ${await auth.refusal(resp)}`, "error");
      }
    } catch (err) {
      say(`Not uploaded: ${err}`, "error");
    } finally {
      state.busy = false;
      await load();
    }
  }

  // a signed-in token whose role may not manage models sees a note, not the page
  function applyAccess(forbidden = false) {
    const refused = forbidden || (!mayManage() && auth.access().signedIn);
    $("role-note").hidden = !refused;
    document.querySelectorAll("[data-managers]").forEach((s) => { s.hidden = refused; });
    if (refused) {
      clearTimeout(timer);
      timer = null;
    }
  }

  rows.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    if (button && !button.disabled) act(button.dataset.action, button.dataset.id);
  });
  uploadForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = fileInput.files[0];
    if (!file) {
      say("Choose an ONNX file first", "error");
      return;
    }
    upload(file);
  });
  document.addEventListener("dishtracker:access", (ev) => {
    if (!ev.detail.checked) return;
    applyAccess();
    if (ev.detail.signedIn && mayManage() && !state.models.length) load();
  });
  load();
})();
