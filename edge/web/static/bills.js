// DishTracker cashier page, bill panel: the open bill of the tray at the
// checkout as it builds up, the last closed bills, and the till's actions.
//
// Data: GET /api/bills?stream=…, GET /api/menu (names, prices, currency and
// locale) and the server-sent
// events of GET /api/events (edge/web/bills.py): "tray" (open trays of a
// stream), "bill" (a bill committed to the journal), "bill_corrected",
// "journal" (storage fault) and "resync". EventSource reconnects by itself
// and sends Last-Event-ID, so the server replays the bills missed meanwhile.
// The camera comes from app.js ("dishtracker:stream"), who may do what from
// auth.js ("dishtracker:access"), each card's look from card.js; what the
// cashier does on a card is till.js.
//
// The page keeps up without getting in the way: an arriving or corrected bill
// patches its own card (dom.js morph), so an open card, a focused control, a
// half-typed search or reason survive any number of arrivals. A new bill
// comes in folded, highlighted and announced (aria-live); when the cashier is
// busy in the list (focus, pointer, an open card, scrolled) it goes in above
// without moving the cards in view, and a "N new" pill leads to it. The list
// keeps LIST_LIMIT cards, never dropping one that is open or in use.
// State for tests: window.dishtracker.bills (tests/test_cashier_page.py).
"use strict";

(() => {
  const LIST_LIMIT = 50;
  const FRESH_MS = 8000;       // how long a new card stays highlighted
  const POINTER_MS = 10000;    // a pointer that rested longer no longer pins the list
  const { el, morph, morphChildren, setCurrency, money } = window.dishtrackerDom;
  const { build, trayNode } = window.dishtrackerCard;
  const auth = window.dishtrackerAuth;
  const $ = (id) => document.getElementById(id);
  const openBox = $("bill");
  const list = $("bills");
  const empty = $("bills-empty");
  const pill = $("new-pill");
  const announcer = $("announce");
  const eventsBadge = $("events");
  const faultBox = $("journal-fault");

  const state = {
    stream: null,
    bills: new Map(),   // bill id -> journal view (this stream only)
    order: [],          // bill ids, newest first (by seq)
    trays: new Map(),   // stream id -> open trays
    menu: [],           // billable, enabled menu items, by name
    disabled: new Set(), // keys of dishes disabled on the menu (billed, flagged)
    menuLoaded: false,
    open: new Set(),
    fresh: new Set(),
    pending: new Set(), // bills with a request in flight
    errors: new Map(),  // bill id -> message of the last failed action
    photos: new Map(),  // bill id -> blob: URL of its snapshot, while shown
    lastSeq: 0,
    source: null,
    unseen: 0,
    extraPad: 0,        // px of bottom padding that lets the list hold a card in place
  };
  // what the cashier is doing: one open picker, one open form (page-wide)
  const ui = { picker: null, form: null };
  const cards = new Map(); // bill id -> <li> on screen
  let hovered = null;
  let hoveredAt = 0;

  const status = { events: "connecting", shown: 0, lastBillId: null, corrections: 0,
    unseen: 0, announced: null, renders: 0 };
  window.dishtracker = window.dishtracker || {};
  window.dishtracker.bills = status;

  function may() {
    return { correct: auth.may("correct"), void: auth.may("void"),
      handover: auth.may("handover"), watch: auth.may("watch") };
  }

  function ctxOf(id) {
    return { ui, menu: state.menu, disabled: state.disabled, may: may(), open: state.open.has(id),
      fresh: state.fresh.has(id), pending: state.pending.has(id),
      error: state.errors.get(id), photo: state.photos.get(id) };
  }

  // ---- Cards: built by card.js, patched in place ------------------------------
  function renderCard(id) {
    const bill = state.bills.get(id);
    const card = cards.get(id);
    if (!bill || !card) return;
    const hadFocus = card.contains(document.activeElement);
    morph(card, build(bill, ctxOf(id)));
    status.renders++;
    // the control that had focus went (e.g. ✓ after a confirm): the card keeps it
    if (hadFocus && !card.contains(document.activeElement)) card.querySelector(".bill-head").focus();
  }

  function renderAll() {
    for (const id of cards.keys()) renderCard(id);
  }

  function inUse(id) {
    const card = cards.get(id);
    return state.open.has(id) || state.pending.has(id)
      || (ui.form && ui.form.bill === id) || (ui.picker && ui.picker.bill === id)
      || Boolean(card && card.contains(document.activeElement));
  }

  // The card to hold still while others go in above it, or null when the
  // cashier is not busy in the list (then the newest simply shows on top).
  function anchorCard() {
    const active = document.activeElement;
    if (active && list.contains(active)) return active.closest(".bill-card");
    if (hovered && list.contains(hovered) && Date.now() - hoveredAt < POINTER_MS) return hovered;
    if (list.scrollTop > 0 || state.open.size) {
      const top = list.getBoundingClientRect().top;
      return [...cards.values()].find((c) => c.getBoundingClientRect().bottom > top) || null;
    }
    return null;
  }

  function holdStill(anchor, before) {
    const delta = anchor.getBoundingClientRect().top - before;
    if (Math.abs(delta) < 1) return;
    const want = list.scrollTop + delta;
    const last = list.lastElementChild;
    const end = last ? last.getBoundingClientRect().bottom - list.getBoundingClientRect().top
      + list.scrollTop : 0;
    const pad = Math.ceil(want + list.clientHeight - end);
    if (pad > state.extraPad) { // too little below to scroll by: pad the list's end
      state.extraPad = pad;
      list.style.paddingBottom = `${pad}px`;
    }
    list.scrollTop = want;
  }

  // Put the cards of state.order on screen, newest first: new ones go in,
  // dropped ones go out, the rest stay where they are.
  function placeCards(arrived = []) {
    const anchor = arrived.length ? anchorCard() : null;
    const before = anchor ? anchor.getBoundingClientRect().top : 0;
    const keep = state.order.filter((id, i) => i < LIST_LIMIT || inUse(id));
    const kept = new Set(keep);
    for (const id of state.order) {
      if (kept.has(id)) continue;
      state.bills.delete(id);
      state.errors.delete(id);
      state.fresh.delete(id);
      const url = state.photos.get(id);
      if (url) URL.revokeObjectURL(url);
      state.photos.delete(id);
    }
    state.order = keep;
    for (const [id, card] of cards) {
      if (!kept.has(id)) {
        card.remove();
        cards.delete(id);
      }
    }
    let prev = null;
    for (const id of keep) {
      let card = cards.get(id);
      if (!card) {
        card = build(state.bills.get(id), ctxOf(id));
        cards.set(id, card);
      }
      const want = prev ? prev.nextSibling : list.firstChild;
      if (card !== want) list.insertBefore(card, want);
      prev = card;
    }
    if (anchor && anchor.isConnected) holdStill(anchor, before);
    if (arrived.length && list.scrollTop > 1) state.unseen += arrived.length;
    showUnseen();
    empty.hidden = keep.length > 0;
    status.shown = keep.length;
    status.lastBillId = keep.length ? keep[0] : null;
  }

  function showUnseen() {
    status.unseen = state.unseen;
    pill.hidden = state.unseen === 0;
    pill.textContent = state.unseen === 1 ? "1 new bill ↑" : `${state.unseen} new bills ↑`;
  }

  function announce(bill) {
    const eff = bill.effective;
    const unknown = eff.items.filter((ln) => ln.unknown === true).length;
    const text = `New bill: tray ${bill.tray_id}, ${eff.items.length} `
      + `${eff.items.length === 1 ? "item" : "items"}, ${money(eff.total)}`
      + `${unknown ? `, ${unknown} unknown ${unknown === 1 ? "dish" : "dishes"} to pick` : ""}`
      + `${eff.needs_review ? ", needs review" : ""}`;
    announcer.textContent = text;
    status.announced = text;
    state.fresh.add(bill.bill_id);
    setTimeout(() => {
      state.fresh.delete(bill.bill_id);
      renderCard(bill.bill_id);
    }, FRESH_MS);
  }

  function upsert(view, { live = false } = {}) {
    if (view.stream_id !== state.stream) return;
    state.lastSeq = Math.max(state.lastSeq, view.seq || 0);
    if (state.bills.has(view.bill_id)) {
      state.bills.set(view.bill_id, view);
      renderCard(view.bill_id);
      return;
    }
    const seqs = state.order.map((id) => state.bills.get(id).seq);
    if (seqs.length >= LIST_LIMIT && view.seq < seqs[seqs.length - 1]) return; // older than the list
    state.bills.set(view.bill_id, view);
    state.order.push(view.bill_id);
    state.order.sort((a, b) => state.bills.get(b).seq - state.bills.get(a).seq);
    if (live) announce(view);
    placeCards([view.bill_id]);
  }

  // ---- Open tray(s) at the checkout -------------------------------------------
  function renderOpen() {
    const trays = state.trays.get(state.stream) || [];
    morphChildren(openBox, el("div", {}, trays.map(trayNode)));
  }

  list.addEventListener("pointerover", (ev) => {
    hovered = ev.target.closest(".bill-card");
    hoveredAt = Date.now();
  });
  list.addEventListener("pointerleave", () => { hovered = null; });

  list.addEventListener("scroll", () => {
    if (list.scrollTop <= 1) {
      state.unseen = 0;
      showUnseen();
      if (state.extraPad) {
        state.extraPad = 0;
        list.style.paddingBottom = "";
      }
    }
  }, { passive: true });

  pill.addEventListener("click", () => {
    list.scrollTo({ top: 0 });
    state.unseen = 0;
    showUnseen();
    const first = cards.get(state.order[0]);
    if (first) first.querySelector(".bill-head").focus({ preventScroll: true });
  });


  // ---- Loading and live events ------------------------------------------------------
  async function loadMenu() {
    const resp = await fetch("/api/menu", { cache: "no-store" });
    if (!resp.ok) throw new Error(`GET /api/menu: HTTP ${resp.status}`);
    const menu = await resp.json();
    setCurrency(menu.currency, menu.locale);
    state.menu = menu.items.filter((m) => m.billable && m.enabled !== false);
    state.disabled = new Set(menu.items.filter((m) => m.enabled === false).map((m) => m.key));
    state.menuLoaded = true;
  }

  async function loadBills() {
    const stream = state.stream;
    const resp = await fetch(`/api/bills?limit=${LIST_LIMIT}&stream=${encodeURIComponent(stream)}`,
      { cache: "no-store" });
    if (!resp.ok) throw new Error(`GET /api/bills: HTTP ${resp.status}`);
    const page = await resp.json();
    if (stream !== state.stream) return;
    const fresh = [];
    for (const view of page.bills) {
      if (state.bills.has(view.bill_id)) {
        state.bills.set(view.bill_id, view);
        renderCard(view.bill_id);
      } else {
        state.bills.set(view.bill_id, view);
        state.order.push(view.bill_id);
        fresh.push(view.bill_id);
      }
    }
    state.order.sort((a, b) => state.bills.get(b).seq - state.bills.get(a).seq);
    state.lastSeq = Math.max(state.lastSeq, page.last_seq);
    showFault(page.journal);
    placeCards(fresh);
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
    source.addEventListener("bill", (ev) => upsert(JSON.parse(ev.data), { live: true }));
    source.addEventListener("bill_corrected", (ev) => {
      const view = JSON.parse(ev.data);
      if (state.bills.has(view.bill_id)) upsert(view);
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
      if (!state.menuLoaded) await loadMenu();
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
    state.bills.clear();
    state.order = [];
    state.photos.forEach((url) => URL.revokeObjectURL(url));
    state.photos.clear();
    state.open.clear();
    state.errors.clear();
    state.unseen = 0;
    ui.picker = null;
    ui.form = null;
    for (const card of cards.values()) card.remove();
    cards.clear();
    placeCards();
    renderOpen();
    refresh();
  });

  document.addEventListener("dishtracker:access", () => {
    if (!auth.may("correct")) ui.picker = null;
    if (ui.form && !auth.may(ui.form.kind === "void" ? "void" : "correct")) ui.form = null;
    renderAll();
  });

  placeCards();
  // for till.js: the actions on a card
  window.dishtrackerBillList = { state, ui, cards, list, status, may, renderCard, placeCards, upsert };
})();
