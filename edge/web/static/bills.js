// DishTracker cashier page, bill panel: the open bill of the tray at the
// checkout as it builds up, the last closed bills, and corrections.
//
// Data: GET /api/bills?stream=…, GET /api/menu, POST /api/bills/{id}/corrections
// and the server-sent events of GET /api/events (edge/web/bills.py):
// "tray" (open trays of a stream), "bill" (a bill committed to the journal),
// "bill_corrected", "journal" (storage fault) and "resync". EventSource
// reconnects by itself and sends Last-Event-ID, so the server replays the
// bills missed meanwhile. The camera comes from app.js ("dishtracker:stream").
// Corrections and snapshots carry the access token (auth.js): a snapshot is
// fetched with it and shown inline as a blob: image (a plain link could not
// send the header). A bill's own review reasons come with their text
// (review_text, from REVIEW_REASONS in edge/billing/model.py); they hold the
// "Review" tag until the cashier corrects or confirms anything on the bill.
// State for tests: window.dishtracker.bills (see tests/test_cashier_bills.py).
"use strict";

(() => {
  const LIST_LIMIT = 30;
  const auth = window.dishtrackerAuth;
  const $ = (id) => document.getElementById(id);
  const openBox = $("bill");
  const list = $("bills");
  const eventsBadge = $("events");
  const faultBox = $("journal-fault");

  const state = {
    stream: null,
    bills: [],          // journal views, newest first (this stream only)
    trays: new Map(),   // stream id -> open trays
    menu: [],           // billable menu items, by name
    expanded: new Set(),
    collapsed: new Set(),
    errors: new Map(),  // bill id -> message of the last failed correction
    photos: new Map(),  // bill id -> blob: URL of its snapshot, while shown
    lastSeq: 0,
    source: null,
  };
  const status = { events: "connecting", shown: 0, lastBillId: null, corrections: 0 };
  window.dishtracker = window.dishtracker || {};
  window.dishtracker.bills = status;

  const money = (x) => Number(x).toFixed(2);
  const clock = (unix) => new Date(unix * 1000).toLocaleTimeString([], {
    hour: "2-digit", minute: "2-digit", second: "2-digit" });

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else if (k in node && typeof v !== "string") node[k] = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  // ---- Open tray(s) at the checkout -------------------------------------------
  function renderOpen() {
    const trays = state.trays.get(state.stream) || [];
    openBox.replaceChildren(...trays.map((t) => el("div", { class: "tray" },
      el("div", { class: "tray-head" },
        el("span", { text: `Tray ${t.tray_id}` }),
        el("span", { class: "muted", text: t.items.length === 1 ? "1 item" : `${t.items.length} items` })),
      el("ul", { class: "lines" }, ...t.items.map((it) => el("li", {
        class: "line", "data-review": it.needs_review ? "true" : null },
        el("span", { class: "name", text: it.name }),
        it.needs_review ? el("span", { class: "conf", text: `${Math.round(it.confidence * 100)} %` }) : null,
        el("span", { class: "price", text: money(it.price) })))),
      el("div", { class: "tray-total" }, el("span", { text: "Running total" }),
        el("strong", { text: money(t.total) })))));
  }

  // ---- Last bills ---------------------------------------------------------------
  function isExpanded(bill, index) {
    if (state.collapsed.has(bill.bill_id)) return false;
    return index === 0 || state.expanded.has(bill.bill_id);
  }

  function renderList() {
    list.replaceChildren(...state.bills.map((b, i) => renderBill(b, isExpanded(b, i))));
    status.shown = state.bills.length;
    status.lastBillId = state.bills.length ? state.bills[0].bill_id : null;
    if (!state.bills.length) {
      list.append(el("li", { class: "empty", text: "No bills yet." }));
    }
  }

  function renderBill(bill, open) {
    const eff = bill.effective;
    const head = el("button", {
      class: "bill-head", type: "button", "aria-expanded": open ? "true" : "false",
      onclick: () => toggle(bill.bill_id, open) },
      el("span", { class: "when", text: clock(bill.closed_at) }),
      el("span", { class: "tray-no", text: `Tray ${bill.tray_id}` }),
      eff.needs_review ? el("span", { class: "tag review", text: "Review" }) : null,
      eff.corrected && !eff.needs_review ? el("span", { class: "tag corrected", text: "Corrected" }) : null,
      el("span", { class: "total", text: money(eff.total) }));
    const card = el("li", {
      class: "bill-card", "data-bill-id": bill.bill_id,
      "data-review": eff.needs_review ? "true" : "false" }, head);
    if (!open) return card;
    const reasons = bill.review.map((reason, i) => el("li", {
      class: "review-reason", "data-reason": reason,
      "data-open": eff.corrected ? "false" : "true",
      text: bill.review_text[i] || reason }));
    const lines = el("ul", { class: "lines" },
      ...eff.items.map((ln) => renderLine(bill, ln)),
      ...eff.removed.map((ln) => el("li", { class: "line removed", "data-line": String(ln.line) },
        el("span", { class: "name", text: ln.name }),
        el("span", { class: "price", text: money(ln.price) }))));
    const add = menuSelect("+ Add an item…", `Add an item to tray ${bill.tray_id}`,
      (key) => correct(bill, { action: "add", class_key: key }));
    add.classList.add("add");
    const foot = el("div", { class: "bill-foot" },
      add,
      bill.has_snapshot ? el("button", { type: "button", class: "photo",
        "aria-pressed": state.photos.has(bill.bill_id) ? "true" : "false",
        text: state.photos.has(bill.bill_id) ? "Hide photo" : "Photo",
        onclick: () => togglePhoto(bill) }) : null,
      eff.corrected && eff.total !== bill.total ? el("s", { class: "was", text: money(bill.total) }) : null,
      el("strong", { class: "total", text: money(eff.total) }));
    const error = state.errors.get(bill.bill_id);
    const photo = state.photos.get(bill.bill_id);
    card.append(el("div", { class: "bill-body-lines" },
      reasons.length ? el("ul", { class: "review-reasons" }, ...reasons) : null, lines, foot,
      photo ? el("img", { class: "snapshot", src: photo, alt: `Tray ${bill.tray_id} at the checkout` }) : null,
      error ? el("p", { class: "error", role: "alert", text: error }) : null));
    return card;
  }

  async function togglePhoto(bill) {
    const shown = state.photos.get(bill.bill_id);
    if (shown) {
      URL.revokeObjectURL(shown);
      state.photos.delete(bill.bill_id);
      renderList();
      return;
    }
    try {
      const resp = await auth.fetch(`/api/bills/${encodeURIComponent(bill.bill_id)}/snapshot.jpg`);
      if (!resp.ok) {
        const data = await resp.json().catch(() => ({}));
        throw new Error(data.error || `HTTP ${resp.status}`);
      }
      state.photos.set(bill.bill_id, URL.createObjectURL(await resp.blob()));
      state.errors.delete(bill.bill_id);
    } catch (err) {
      state.errors.set(bill.bill_id, `No photo: ${err.message || err}`);
    }
    renderList();
  }

  function renderLine(bill, ln) {
    const note = ln.status === "changed" ? `was ${ln.detected.name}`
      : ln.status === "added" ? "added" : ln.status === "confirmed" ? "confirmed" : null;
    // while the bill's own reason is open every line can be confirmed: a sure
    // bill whose tray was checked needs one click, and any correction answers it
    const askConfirm = ln.needs_review || (bill.review.length > 0 && !bill.effective.corrected);
    const change = menuSelect("⇄", `Change ${ln.name} to…`,
      (key) => correct(bill, { action: "change", line: ln.line, class_key: key }));
    change.classList.add("change");
    return el("li", {
      class: "line", "data-line": String(ln.line), "data-status": ln.status,
      "data-review": ln.needs_review ? "true" : null },
      el("span", { class: "name" }, el("span", { text: ln.name }),
        note ? el("small", { text: note }) : null,
        ln.needs_review ? el("small", { class: "conf", text: `${Math.round(ln.confidence * 100)} % sure` }) : null),
      el("span", { class: "price", text: money(ln.price) }),
      el("span", { class: "actions" },
        askConfirm ? el("button", { type: "button", class: "confirm", title: "Confirm",
          "aria-label": `Confirm ${ln.name}`, text: "✓",
          onclick: () => correct(bill, { action: "confirm", line: ln.line }) }) : null,
        change,
        el("button", { type: "button", class: "remove", title: "Remove",
          "aria-label": `Remove ${ln.name}`, text: "✕",
          onclick: () => correct(bill, { action: "remove", line: ln.line }) })));
  }

  function menuSelect(placeholder, label, onPick) {
    const select = el("select", { "aria-label": label, title: label },
      el("option", { value: "", text: placeholder }),
      ...state.menu.map((m) => el("option", { value: m.key, text: `${m.name} · ${money(m.price)}` })));
    select.addEventListener("change", () => {
      if (select.value) onPick(select.value);
    });
    return select;
  }

  function toggle(billId, open) {
    if (open) {
      state.expanded.delete(billId);
      state.collapsed.add(billId);
    } else {
      state.collapsed.delete(billId);
      state.expanded.add(billId);
    }
    renderList();
  }

  function upsert(view) {
    if (view.stream_id !== state.stream) return;
    const i = state.bills.findIndex((b) => b.bill_id === view.bill_id);
    if (i >= 0) state.bills[i] = view;
    else {
      state.bills.unshift(view);
      state.bills.sort((a, b) => b.seq - a.seq);
      state.bills.length = Math.min(state.bills.length, LIST_LIMIT);
    }
    state.lastSeq = Math.max(state.lastSeq, view.seq);
    renderList();
  }

  async function correct(bill, body) {
    const card = list.querySelector(`[data-bill-id="${CSS.escape(bill.bill_id)}"]`);
    if (card) card.querySelectorAll("button, select").forEach((c) => { c.disabled = true; });
    try {
      const resp = await auth.fetch(`/api/bills/${encodeURIComponent(bill.bill_id)}/corrections`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body) });
      const data = await resp.json().catch(() => ({}));
      if (!resp.ok) {
        throw new Error((data.errors || [data.error || `HTTP ${resp.status}`]).join("; "));
      }
      state.errors.delete(bill.bill_id);
      status.corrections++;
      upsert(data);
    } catch (err) {
      state.errors.set(bill.bill_id, `Not saved: ${err.message || err}`);
      renderList();
    }
  }

  // ---- Loading and live events ------------------------------------------------------
  async function loadMenu() {
    const resp = await fetch("/api/menu", { cache: "no-store" });
    if (!resp.ok) throw new Error(`GET /api/menu: HTTP ${resp.status}`);
    state.menu = (await resp.json()).items.filter((m) => m.billable);
  }

  async function loadBills() {
    const stream = state.stream;
    const resp = await fetch(`/api/bills?limit=${LIST_LIMIT}&stream=${encodeURIComponent(stream)}`,
      { cache: "no-store" });
    if (!resp.ok) throw new Error(`GET /api/bills: HTTP ${resp.status}`);
    const page = await resp.json();
    if (stream !== state.stream) return;
    state.bills = page.bills;
    state.lastSeq = Math.max(state.lastSeq, page.last_seq);
    showFault(page.journal);
    renderList();
  }

  function showFault(journal) {
    const fault = journal && journal.fault;
    faultBox.hidden = !fault;
    faultBox.textContent = fault
      ? `Bills are not being saved (${journal.pending} waiting): ${fault}` : "";
  }

  function setEvents(s) {
    status.events = s;
    eventsBadge.dataset.state = s;
    eventsBadge.textContent = s === "open" ? "live" : "reconnecting…";
  }

  function openEvents() {
    if (state.source) return;
    // after= only for the first connection; EventSource then sends Last-Event-ID itself
    const source = new EventSource(`/api/events?after=${state.lastSeq}`);
    state.source = source;
    source.onopen = () => setEvents("open");
    source.onerror = () => setEvents("connecting");
    source.addEventListener("bill", (ev) => upsert(JSON.parse(ev.data)));
    source.addEventListener("bill_corrected", (ev) => {
      const view = JSON.parse(ev.data);
      if (state.bills.some((b) => b.bill_id === view.bill_id)) upsert(view);
    });
    source.addEventListener("tray", (ev) => {
      const msg = JSON.parse(ev.data);
      state.trays.set(msg.stream_id, msg.trays);
      if (msg.stream_id === state.stream) renderOpen();
    });
    source.addEventListener("journal", (ev) => showFault(JSON.parse(ev.data)));
    source.addEventListener("resync", () => { refresh(); });
  }

  async function refresh() {
    try {
      if (!state.menu.length) await loadMenu();
      await loadBills();
    } catch (err) {
      console.info(`dishtracker bills: ${err}; retrying`);
      setTimeout(refresh, 2000);
      return;
    }
    openEvents();
  }

  document.addEventListener("dishtracker:stream", (ev) => {
    if (ev.detail === state.stream) return;
    state.stream = ev.detail;
    state.bills = [];
    state.photos.forEach((url) => URL.revokeObjectURL(url));
    state.photos.clear();
    state.expanded.clear();
    state.collapsed.clear();
    renderOpen();
    refresh();
  });
  renderList();
})();
