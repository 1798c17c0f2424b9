// DishTracker labelling workspace (labellers and managers), keyboard first.
//
// POST /api/label/lease gives this labeller a frame nobody else holds (the
// next one, or with P the previous one they wrote); the frame's boxes come
// with three candidates each, ranked by the server over every label accepted
// so far. Every action is saved at once as a new revision
// (PUT /api/label/frames/{id} with the version it was made from): 1-3 or
// Enter accept a candidate, / searches every class, Delete removes a box, a
// drag draws a missing one, C marks the frame complete, N/P move on. A 409
// means the frame changed elsewhere: the page shows the server's newest
// version and says so (nothing on the server is lost; the last action is
// redone by hand). Activity renews the lease (5 minutes without any lets it
// go). auth.js (loaded before) keeps the token. Exposes
// window.dishtrackerLabel ({ item, selected, status, saving, message, job }) for
// tests. The side panel follows the newest training job (GET /api/label/training)
// and, for a manager, starts and cancels one. The checkout's questions (GET
// /api/questions: frames with an unknown or doubtful dish) are counted beside the
// progress; "Label them" takes them into the queue (POST
// /api/label/questions/import), the boxes they ask about drawn already.
"use strict";

(() => {
  const { el, morphChildren } = window.dishtrackerDom;
  const auth = window.dishtrackerAuth;
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const img = $("frame-image");
  const svg = $("boxes");
  const stage = $("stage");
  const statusLine = $("status");
  const candidateList = $("candidates");
  const menuInput = $("menu-input");
  const menuList = $("menu-list");
  const RENEW_MS = 60000;
  const STATUS_MS = 10000;
  const MIN_BOX_PX = 6;
  const state = { item: null, selected: -1, status: null, saving: false, message: "",
    imageFor: null, lastActivity: Date.now(), menuIndex: 0, done: false, pending: 0,
    job: null, questions: 0 };
  window.dishtrackerLabel = state;
  let queue = Promise.resolve(); // writes go one after the other
  let drag = null;
  let imageUrl = null;

  function say(text, kind = "") {
    state.message = text;
    statusLine.textContent = text;
    statusLine.dataset.kind = kind;
  }

  const mayLabel = () => !auth.access().checked || auth.may("label");

  async function api(method, url, body) {
    const options = { method, headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const resp = await auth.fetch(url, options);
    const data = await resp.json().catch(() => null);
    return { resp, data };
  }

  // ---- frames ---------------------------------------------------------------

  async function lease(step) {
    const after = state.item ? state.item.frame : null;
    const { resp, data } = await api("POST", "/api/label/lease", { step, after });
    if (!resp.ok) {
      say(await auth.refusal(resp), "error");
      return;
    }
    if (!data.item) {
      say(step === "next" ? "Nothing left to label: every frame is complete or held by "
        + "someone else." : "No earlier frame of yours.", step === "next" ? "ok" : "");
      if (step === "next" && !state.item) state.done = true;
      return;
    }
    state.done = false;
    show(data.item, 0);
    say(`Frame ${data.item.frame}${data.item.pass === 2 ? " (second labelling)" : ""}: `
      + `${data.item.boxes.length} boxes.`);
  }

  function firstOpen(item, from = 0) {
    const n = item.boxes.length;
    for (let k = 0; k < n; k += 1) {
      const i = (from + k) % n;
      if (!item.boxes[i].class) return i;
    }
    return n ? Math.min(from, n - 1) : -1;
  }

  function show(item, prefer) {
    state.item = item;
    state.selected = item.boxes.length ? firstOpen(item, Math.max(prefer, 0)) : -1;
    $("frame-name").textContent = `${item.frame}${item.pass === 2 ? " · pass 2" : ""} · `
      + `version ${item.version}${item.complete ? " · complete" : ""}`
      + `${item.origin === "question" ? " · asked at the checkout" : ""}`;
    if (state.imageFor !== item.frame) loadImage(item.frame);
    render();
  }

  async function loadImage(frameId) {
    state.imageFor = frameId;
    const resp = await auth.fetch(`/api/label/frames/${frameId}/image`);
    if (!resp.ok || state.imageFor !== frameId) return;
    const blob = await resp.blob();
    if (imageUrl) URL.revokeObjectURL(imageUrl);
    imageUrl = URL.createObjectURL(blob);
    img.src = imageUrl;
  }

  // ---- drawing --------------------------------------------------------------

  function svgEl(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    node.append(...children);
    return node;
  }

  function rectOf([x1, y1, x2, y2], cls, text) {
    const g = svgEl("g", { class: cls });
    g.append(svgEl("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1 }));
    if (text) {
      const t = svgEl("text", { x: x1 + 3, y: Math.max(y1 - 5, 14) });
      t.textContent = text;
      g.append(t);
    }
    return g;
  }

  function render() {
    const item = state.item;
    svg.replaceChildren();
    if (!item) return;
    svg.setAttribute("viewBox", `0 0 ${item.width} ${item.height}`);
    svg.setAttribute("preserveAspectRatio", "none");
    item.boxes.forEach((b, i) => {
      const top = (b.candidates[0] || {}).class;
      const text = b.class ? b.class : `? ${top || ""}`;
      const cls = `${b.class ? "labelled" : "unlabelled"}${b.asked ? " asked" : ""}`
        + `${i === state.selected ? " selected" : ""}`;
      const g = rectOf(b.box, cls, text);
      g.dataset.index = String(i);
      svg.append(g);
    });
    if (drag && drag.box) svg.append(rectOf(drag.box, "drawing", ""));
    renderCandidates();
  }

  function renderCandidates() {
    const item = state.item;
    const b = item && state.selected >= 0 ? item.boxes[state.selected] : null;
    $("box-name").textContent = b ? `${state.selected + 1} of ${item.boxes.length}`
      + `${b.class ? ` · ${b.class}` : " · not labelled"}` : "–";
    morphChildren(candidateList, el("ol", {}, (b ? b.candidates : []).map((c, i) =>
      el("li", { "data-key": c.class, "data-chosen": b.class === c.class ? "true" : "false" },
        el("kbd", { text: String(i + 1) }), el("span", { text: c.class }),
        el("span", { class: "score", text: c.score.toFixed(2) })))));
  }

  // ---- writes ---------------------------------------------------------------

  function boxesBody(boxes) {
    return boxes.map((b) => ({ box: b.box, class: b.class, proposal: b.proposal,
      rank: b.rank }));
  }

  // Save the frame as `edit` makes it from the boxes as saved before (edits run one
  // after the other, each on the answer to the one before); the answer replaces the item.
  function save(edit, complete, prefer) {
    if (!state.item) return queue;
    state.pending += 1;
    queue = queue.then(async () => {
      state.saving = true;
      const base = state.item;
      const boxes = edit(base.boxes.map((b) => ({ ...b })));
      const done = typeof complete === "function" ? complete(boxes) : complete;
      const body = { pass: base.pass, version: base.version, boxes: boxesBody(boxes),
        complete: done };
      const { resp, data } = await api("PUT", `/api/label/frames/${base.frame}`, body);
      state.saving = false;
      state.lastActivity = Date.now();
      if (resp.ok) {
        show(data, typeof prefer === "function" ? prefer(boxes) : prefer);
        refreshStatus();
        if (done) say(`Frame ${data.frame} is complete. N for the next one.`, "ok");
        return;
      }
      if (resp.status === 409 && data && data.current) {
        show(data.current, 0);
        say(`This frame changed elsewhere (now version ${data.current.version}, by `
          + `${data.current.written_by || "nobody"}); it is shown as saved. Redo your last change.`,
        "error");
        return;
      }
      say(await auth.refusal(resp), "error");
      if (resp.status === 422 && done) {
        state.selected = firstOpen(state.item, 0);
        render();
      }
    }).finally(() => { state.pending -= 1; });
    return queue;
  }

  function accept(name, rank) {
    if (!state.item || state.selected < 0 || !name) return;
    const i = state.selected;
    const wasComplete = state.item.complete;
    save((boxes) => {
      if (boxes[i]) boxes[i] = { ...boxes[i], class: name, rank };
      return boxes;
    }, (boxes) => wasComplete && boxes.every((b) => b.class),
    (boxes) => firstOpen({ boxes }, i + 1));
  }

  function removeSelected() {
    if (!state.item || state.selected < 0) return;
    const i = state.selected;
    save((boxes) => boxes.filter((_, k) => k !== i), state.item.complete,
      (boxes) => Math.min(i, boxes.length - 1));
  }

  function addBox(box) {
    save((boxes) => [...boxes, { box, class: null, proposal: null, rank: null }], false,
      (boxes) => boxes.length - 1);
  }

  function markComplete() {
    if (!state.item) return;
    const open = state.item.boxes.filter((b) => !b.class).length;
    if (open) {
      say(`${open} box${open > 1 ? "es are" : " is"} not labelled: label or delete `
        + "every box before marking the frame complete.", "error");
      state.selected = firstOpen(state.item, 0);
      render();
      return;
    }
    save((boxes) => boxes, true, state.selected);
  }

  function select(delta) {
    const n = state.item ? state.item.boxes.length : 0;
    if (!n) return;
    state.selected = (state.selected + delta + n) % n;
    render();
  }

  // ---- the class menu -------------------------------------------------------

  function matches() {
    const names = (state.status && state.status.class_names) || [];
    const q = menuInput.value.trim().toLowerCase();
    const found = q ? names.filter((n) => n.toLowerCase().includes(q)) : names.slice();
    const exact = /^[A-Za-z0-9_.-]{1,80}$/.test(menuInput.value.trim());
    if (q && exact && !names.includes(menuInput.value.trim())) {
      found.push(menuInput.value.trim()); // a new dish: the name as typed
    }
    return found.slice(0, 40);
  }

  function renderMenu() {
    const found = matches();
    state.menuIndex = Math.min(state.menuIndex, Math.max(found.length - 1, 0));
    menuList.hidden = document.activeElement !== menuInput;
    morphChildren(menuList, el("ul", {}, found.map((n, i) => el("li", {
      "data-key": n, "data-active": i === state.menuIndex ? "true" : "false",
      text: (state.status && state.status.class_names.includes(n)) ? n : `${n} (new class)` }))));
  }

  menuInput.addEventListener("input", () => { state.menuIndex = 0; renderMenu(); });
  menuInput.addEventListener("focus", renderMenu);
  menuInput.addEventListener("blur", () => { menuList.hidden = true; });
  menuInput.addEventListener("keydown", (ev) => {
    const found = matches();
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      state.menuIndex = (state.menuIndex + (ev.key === "ArrowDown" ? 1 : -1) + found.length)
        % Math.max(found.length, 1);
      renderMenu();
      ev.preventDefault();
    } else if (ev.key === "Enter") {
      ev.preventDefault();
      const name = found[state.menuIndex];
      menuInput.value = "";
      menuInput.blur();
      stage.focus();
      accept(name, null);
    } else if (ev.key === "Escape") {
      menuInput.value = "";
      menuInput.blur();
      stage.focus();
    }
    ev.stopPropagation();
  });
  menuList.addEventListener("mousedown", (ev) => {
    const li = ev.target.closest("li");
    if (!li) return;
    ev.preventDefault();
    menuInput.value = "";
    menuInput.blur();
    accept(li.dataset.key, null);
  });

  // ---- keys and the mouse ---------------------------------------------------

  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (!state.item && !["n", "N"].includes(ev.key)) return;
    state.lastActivity = Date.now();
    const b = state.item && state.selected >= 0 ? state.item.boxes[state.selected] : null;
    const key = ev.key;
    let handled = true;
    if (["1", "2", "3"].includes(key)) {
      const c = b && b.candidates[Number(key) - 1];
      if (c) accept(c.class, Number(key));
    } else if (key === "Enter") {
      if (b && b.candidates[0]) accept(b.candidates[0].class, 1);
    } else if (key === "Delete" || key === "Backspace") {
      removeSelected();
    } else if (key === "Tab" || key === "ArrowRight" || key === "ArrowDown") {
      select(ev.shiftKey && key === "Tab" ? -1 : 1);
    } else if (key === "ArrowLeft" || key === "ArrowUp") {
      select(-1);
    } else if (key === "/" || key === "m" || key === "M") {
      menuInput.focus();
    } else if (key === "c" || key === "C") {
      markComplete();
    } else if (key === "n" || key === "N" || key === "p" || key === "P") {
      state.pending += 1;
      queue = queue.then(() => lease(key.toLowerCase() === "n" ? "next" : "previous"))
        .finally(() => { state.pending -= 1; });
    } else {
      handled = false;
    }
    if (handled) ev.preventDefault();
  });

  function framePoint(ev) {
    const r = svg.getBoundingClientRect();
    const item = state.item;
    const x = Math.min(Math.max((ev.clientX - r.left) * item.width / r.width, 0), item.width);
    const y = Math.min(Math.max((ev.clientY - r.top) * item.height / r.height, 0), item.height);
    return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
  }

  svg.addEventListener("mousedown", (ev) => {
    if (!state.item || ev.button !== 0) return;
    ev.preventDefault();
    stage.focus();
    const hit = ev.target.closest("g[data-index]");
    const start = framePoint(ev);
    drag = { start, box: null, hit: hit ? Number(hit.dataset.index) : -1 };
  });
  window.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const [x, y] = framePoint(ev);
    const [x0, y0] = drag.start;
    drag.box = [Math.min(x0, x), Math.min(y0, y), Math.max(x0, x), Math.max(y0, y)];
    render();
  });
  window.addEventListener("mouseup", () => {
    if (!drag) return;
    const { box, hit } = drag;
    drag = null;
    state.lastActivity = Date.now();
    if (box && box[2] - box[0] >= MIN_BOX_PX && box[3] - box[1] >= MIN_BOX_PX) {
      addBox(box);
    } else if (hit >= 0) {
      state.selected = hit;
      render();
    } else {
      render();
    }
  });

  // ---- counts, lease renewal ------------------------------------------------

  async function refreshStatus() {
    const { resp, data } = await api("GET", "/api/label/status");
    if (!resp.ok || !data) return;
    state.status = data;
    $("totals").textContent = `${data.complete} of ${data.items} labellings complete `
      + `(${data.frames} frames, ${data.double} labelled twice); `
      + `${data.leased.length} being labelled now.`;
    morphChildren($("classes"), el("tbody", {}, data.classes.map((c) => el("tr",
      { "data-key": c.name }, el("td", { text: c.name }),
      el("td", { class: "num", text: String(c.labelled) }),
      el("td", { class: "num", text: `${Math.round(c.top1 * 100)} %` }),
      el("td", { class: "num", text: c.needed ? String(c.needed) : "–" })))));
    morphChildren($("labellers"), el("tbody", {}, data.labellers.map((p) => el("tr",
      { "data-key": p.name }, el("td", { text: p.name }),
      el("td", { class: "num", text: `${p.complete}/${p.frames}` }),
      el("td", { class: "num", text: p.agreement === null ? "–"
        : `${Math.round(p.agreement * 100)} % (${p.compared})` })))));
  }

  // ---- the checkout's questions ------------------------------------------------

  async function refreshQuestions() {
    const { resp, data } = await api("GET", "/api/questions");
    if (!resp.ok || !Array.isArray(data)) return;
    state.questions = data.length;
    const unknown = data.filter((q) => q.reason === "unknown").length;
    $("questions-text").textContent = data.length
      ? `${data.length} frame${data.length === 1 ? "" : "s"} from the checkout to label`
        + `${unknown ? ` (${unknown} with a dish the box does not know)` : ""}.`
      : "";
    $("questions").hidden = !data.length;
  }

  async function importQuestions() {
    const { resp, data } = await api("POST", "/api/label/questions/import", {});
    if (!resp.ok) {
      say((data && data.error) || `HTTP ${resp.status}`, "error");
      return;
    }
    say(`${data.imported} frame${data.imported === 1 ? "" : "s"} from the checkout joined `
      + "the queue.", "ok");
    await Promise.all([refreshQuestions(), refreshStatus()]);
    if (!state.item || state.done) queue = queue.then(() => lease("next"));
  }

  $("questions-import").addEventListener("click", importQuestions);

  // ---- the training job: everyone follows it, a manager starts and cancels it ---

  const pct = (v) => (v === null || v === undefined ? "–" : `${Math.round(v * 1000) / 10} %`);

  async function refreshJob() {
    const { resp, data } = await api("GET", "/api/label/training");
    if (!resp.ok || !data) return;
    const job = data.job;
    state.job = job;
    const running = Boolean(job && ["exporting", "training", "evaluating"].includes(job.state));
    const line = !job ? "No training job yet."
      : `Job ${job.id}: ${job.state}` + (running
        ? ` (${job.epochs_done} of ${job.options.epochs} epochs)` : "")
        + (job.detail ? ` · ${job.detail}` : "")
        + (job.candidate ? ` · candidate ${job.candidate.id}` : "");
    $("train-state").textContent = line;
    const bar = $("train-progress");
    bar.hidden = !running;
    bar.value = job ? job.progress : 0;
    const figures = job && job.figures && job.figures.new ? job.figures : null;
    $("train-figures").hidden = !figures;
    if (figures) {
      const names = Object.keys(figures.new.per_class || {});
      const rows = [["all classes", figures.new.map50, figures.serving.map50],
        ...names.map((n) => [n, figures.new.per_class[n], (figures.serving.per_class || {})[n]])];
      morphChildren($("train-rows"), el("tbody", {}, rows.map(([n, a, b]) => el("tr",
        { "data-key": n }, el("td", { text: n }), el("td", { class: "num", text: pct(a) }),
        el("td", { class: "num", text: pct(b) })))));
    }
    const doubted = (job && job.figures && job.figures.doubted) || [];
    $("train-doubted").hidden = !doubted.length;
    $("train-doubted-count").textContent = String(doubted.length);
    morphChildren($("train-doubted-rows"), el("tbody", {}, doubted.map((d, i) => el("tr",
      { "data-key": String(i) }, el("td", { class: "num", text: String(d.frame) }),
      el("td", { text: d.label }), el("td", { text: d.model_says }),
      el("td", { class: "num", text: pct(d.p_label) })))));
    $("train-start").hidden = running;
    $("train-cancel").hidden = !running;
  }

  async function trainAction(path, body, question) {
    if (question && !window.confirm(question)) return;
    const { resp, data } = await api("POST", path, body);
    say(resp.ok ? "" : (data && data.error) || `HTTP ${resp.status}`, resp.ok ? "" : "error");
    await refreshJob();
  }

  $("train-start").addEventListener("click", () => trainAction("/api/label/training", {},
    "Fine-tune a model on the complete frames now? It uses this box's CPU for a while."));
  $("train-cancel").addEventListener("click", () => trainAction("/api/label/training/cancel",
    undefined, "Stop the training job?"));

  async function renew() {
    const item = state.item;
    if (!item || Date.now() - state.lastActivity > 4 * RENEW_MS) return;
    const { resp, data } = await api("GET", `/api/label/frames/${item.frame}?pass=${item.pass}`);
    if (resp.ok && data && state.item && data.frame === state.item.frame && !state.saving
      && data.version === state.item.version) {
      state.item.lease = data.lease;
      state.item.mine = data.mine;
    }
  }

  function start() {
    if (!mayLabel()) return;
    document.querySelector("[data-trainer]").hidden = !auth.may("train");
    refreshStatus();
    refreshQuestions();
    setInterval(refreshQuestions, STATUS_MS);
    refreshJob();
    setInterval(refreshJob, STATUS_MS);
    queue = queue.then(() => lease("next"));
    setInterval(renew, RENEW_MS);
    setInterval(refreshStatus, STATUS_MS);
  }

  let started = false;
  document.addEventListener("dishtracker:access", (ev) => {
    const refused = ev.detail.checked && ev.detail.signedIn && !ev.detail.may.includes("label");
    $("role-note").hidden = !refused;
    document.querySelector("[data-labellers]").hidden = refused;
    if (!started && ev.detail.signedIn && !refused) {
      started = true;
      start();
    }
  });
  if (auth.token() && !started) {
    started = true;
    start();
  }
})();
