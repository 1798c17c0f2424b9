// DishTracker cashier page, the till's actions on a bill card: confirm,
// change, remove, add, quantity, void, undo (POST /api/bills/{id}/corrections),
// hand over (POST /api/bills/{id}/handover), the photo, the searchable menu
// and the quantity and void forms, and the keyboard's verbs (keys.js).
// A tap on one of a line's proposed dishes (card.js) is a change to it, or a
// confirm when it is the dish the line already names.
//
// Listeners sit on the list and find their card and action by data-action
// (card.js), so a card patched in place never runs a stale handler. What the
// cashier is doing (an open menu with its search text, an open form) lives
// in bills.js's `ui` and is drawn into the card on every patch. One request
// per bill at a time; a refusal stays in the card (auth.js says why).
// Loaded after bills.js; exposes window.dishtrackerBills for keys.js.
"use strict";

(() => {
  const { state, ui, cards, list, status, may, renderCard, placeCards, upsert } =
    window.dishtrackerBillList;
  const { matches, quantity } = window.dishtrackerCard;
  const auth = window.dishtrackerAuth;

  async function send(id, path, body, describe) {
    if (state.pending.has(id)) return null;
    state.pending.add(id);
    renderCard(id);
    let view = null;
    try {
      const resp = await auth.fetch(`/api/bills/${encodeURIComponent(id)}/${path}`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body) });
      if (!resp.ok) throw new Error(await auth.refusal(resp));
      view = await resp.json();
      state.errors.delete(id);
      status.corrections++;
    } catch (err) {
      state.errors.set(id, `${describe}: ${err.message || err}`);
    }
    state.pending.delete(id);
    if (view) upsert(view);
    renderCard(id);
    return view;
  }

  const correct = (id, body) => send(id, "corrections", body, "Not saved");

  function lineOf(id, n) {
    const bill = state.bills.get(id);
    return bill && bill.effective.items.find((ln) => ln.line === n);
  }

  async function togglePhoto(id) {
    const shown = state.photos.get(id);
    if (shown) {
      URL.revokeObjectURL(shown);
      state.photos.delete(id);
      renderCard(id);
      return;
    }
    try {
      const resp = await auth.fetch(`/api/bills/${encodeURIComponent(id)}/snapshot.jpg`);
      if (!resp.ok) throw new Error(await auth.refusal(resp));
      state.photos.set(id, URL.createObjectURL(await resp.blob()));
      state.errors.delete(id);
    } catch (err) {
      state.errors.set(id, `No photo: ${err.message || err}`);
    }
    renderCard(id);
  }

  function focusIn(id, selector) {
    const card = cards.get(id);
    const target = card && card.querySelector(selector);
    if (target) target.focus();
    return target;
  }

  function toggle(id) {
    if (state.open.has(id)) {
      state.open.delete(id);
      if (ui.form && ui.form.bill === id) ui.form = null;
      if (ui.picker && ui.picker.bill === id) ui.picker = null;
    } else {
      state.open.add(id);
    }
    renderCard(id);
    placeCards(); // a folded card beyond the cap may go now
  }

  function openPicker(id, slot) {
    const was = ui.picker;
    ui.picker = was && was.bill === id && was.slot === slot ? null : { bill: id, slot, query: "", active: 0 };
    if (was && was.bill !== id) renderCard(was.bill);
    renderCard(id);
    if (ui.picker) {
      const input = focusIn(id, `[data-key="picker-${slot}"] [data-role="picker-query"]`);
      if (input) input.closest(".picker-pop").scrollIntoView({ block: "nearest" });
    }
  }

  function closePicker(focusToggle) {
    const was = ui.picker;
    if (!was) return;
    ui.picker = null;
    renderCard(was.bill);
    if (focusToggle) focusIn(was.bill, `[data-key="picker-${was.slot}"] .pick`);
  }

  function pick(id, slot, key) {
    closePicker(true);
    if (slot === "add") correct(id, { action: "add", class_key: key });
    else correct(id, { action: "change", line: Number(slot.slice("line-".length)), class_key: key });
  }

  // The cashier says line `n` is the dish `key` (a proposal).
  function chooseDish(id, n, key) {
    const ln = lineOf(id, n);
    if (!ln) return;
    if (ln.key === key && !ln.unknown) correct(id, { action: "confirm", line: n });
    else correct(id, { action: "change", line: n, class_key: key });
  }

  function openForm(id, form, selector) {
    const was = ui.form;
    ui.form = { bill: id, ...form };
    if (was && was.bill !== id) renderCard(was.bill);
    renderCard(id);
    const input = focusIn(id, selector);
    if (input) {
      input.select?.();
      input.closest("form").scrollIntoView({ block: "nearest" });
    }
  }

  function closeForm(focusSelector) {
    const was = ui.form;
    if (!was) return;
    ui.form = null;
    renderCard(was.bill);
    if (focusSelector) focusIn(was.bill, focusSelector);
  }

  async function submitForm(id, formEl) {
    const form = ui.form;
    if (!form || form.bill !== id) return;
    if (form.kind === "void") {
      const reason = formEl.querySelector('[data-role="void-reason"]').value.trim();
      if (!reason) {
        state.errors.set(id, "Say why the bill is void: a reason is needed");
        renderCard(id);
        focusIn(id, '[data-role="void-reason"]');
        return;
      }
      const view = await send(id, "corrections", { action: "void", reason }, "Not voided");
      if (view) closeForm(".bill-head");
    } else if (form.kind === "qty") {
      const value = Number(formEl.querySelector('[data-role="qty-value"]').value);
      if (!Number.isInteger(value) || value < 1 || value > 99) {
        state.errors.set(id, "Quantity: a whole number from 1 to 99");
        renderCard(id);
        focusIn(id, '[data-role="qty-value"]');
        return;
      }
      const view = await correct(id, { action: "quantity", line: form.line, quantity: value });
      if (view) closeForm(`[data-key="line-${form.line}"] .qty`);
    }
  }

  // ---- Delegated events of the list -----------------------------------------------
  list.addEventListener("click", (ev) => {
    const target = ev.target.closest("[data-action]");
    const card = ev.target.closest(".bill-card");
    if (!target || !card || !list.contains(target)) return;
    const id = card.dataset.billId;
    const action = target.dataset.action;
    if (action === "toggle") return toggle(id);
    if (state.pending.has(id)) return; // one request per bill at a time
    const line = Number(target.dataset.line);
    if (action === "confirm") correct(id, { action: "confirm", line });
    else if (action === "remove") correct(id, { action: "remove", line });
    else if (action === "choose") chooseDish(id, line, target.dataset.value);
    else if (action === "pick-open") openPicker(id, target.dataset.slot);
    else if (action === "pick") pick(id, ui.picker.slot, target.dataset.value);
    else if (action === "photo") togglePhoto(id);
    else if (action === "undo") send(id, "corrections", { action: "undo" }, "Not undone");
    else if (action === "handover") send(id, "handover", {}, "Not handed over");
    else if (action === "void-open") {
      if (ui.form && ui.form.bill === id && ui.form.kind === "void") closeForm('[data-key="void"]');
      else openForm(id, { kind: "void", reason: "" }, '[data-role="void-reason"]');
    } else if (action === "qty-open") {
      const ln = lineOf(id, line);
      if (ln) openForm(id, { kind: "qty", line, value: quantity(ln) }, '[data-role="qty-value"]');
    } else if (action === "qty-step") {
      const input = card.querySelector('[data-role="qty-value"]');
      const value = Math.min(99, Math.max(1, (Number(input.value) || 1) + Number(target.dataset.step)));
      input.value = String(value);
      ui.form.value = value;
    } else if (action === "form-cancel") {
      const kind = ui.form && ui.form.kind;
      closeForm(kind === "qty" ? `[data-key="line-${ui.form.line}"] .qty` : '[data-key="void"]');
    }
  });

  list.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const card = ev.target.closest(".bill-card");
    if (card) submitForm(card.dataset.billId, ev.target);
  });

  list.addEventListener("input", (ev) => {
    const role = ev.target.dataset.role;
    if (role === "picker-query" && ui.picker) {
      ui.picker.query = ev.target.value;
      ui.picker.active = 0;
      renderCard(ui.picker.bill);
    } else if (role === "void-reason" && ui.form) {
      ui.form.reason = ev.target.value;
    } else if (role === "qty-value" && ui.form) {
      ui.form.value = ev.target.value;
    }
  });

  list.addEventListener("keydown", (ev) => {
    const role = ev.target.dataset.role;
    if (role === "picker-query" && ui.picker) {
      const found = matches(state.menu, ui.picker.query);
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        const step = ev.key === "ArrowDown" ? 1 : -1;
        ui.picker.active = Math.min(Math.max(ui.picker.active + step, 0), Math.max(found.length - 1, 0));
        renderCard(ui.picker.bill);
        const option = cards.get(ui.picker.bill).querySelector('[role="option"][aria-selected="true"]');
        if (option) option.scrollIntoView({ block: "nearest" });
      } else if (ev.key === "Enter") {
        ev.preventDefault();
        const chosen = found[Math.min(ui.picker.active, found.length - 1)];
        if (chosen) pick(ui.picker.bill, ui.picker.slot, chosen.key);
      } else if (ev.key === "Escape") {
        ev.preventDefault();
        closePicker(true);
      }
    } else if ((role === "void-reason" || role === "qty-value") && ev.key === "Escape") {
      ev.preventDefault();
      const kind = ui.form && ui.form.kind;
      closeForm(kind === "qty" ? `[data-key="line-${ui.form.line}"] .qty` : '[data-key="void"]');
    }
  });

  // An option is clicked, not blurred away: keep focus in the search while pressing.
  list.addEventListener("mousedown", (ev) => {
    if (ev.target.closest('[role="option"]')) ev.preventDefault();
  });

  list.addEventListener("focusout", (ev) => {
    if (!ui.picker) return;
    const picker = ev.target.closest(".picker");
    if (picker && !picker.contains(ev.relatedTarget) && ev.relatedTarget !== null) closePicker(false);
  });

  document.addEventListener("pointerdown", (ev) => { // a press outside an open menu closes it
    if (ui.picker && !ev.target.closest('.picker[data-open="true"]')) closePicker(false);
  });

  // ---- Keyboard (keys.js) -----------------------------------------------------------
  function currentId() {
    const active = document.activeElement;
    const card = active && list.contains(active) ? active.closest(".bill-card") : null;
    return card ? card.dataset.billId : null;
  }

  const keyboard = {
    move(step) {
      const ids = state.order.filter((id) => cards.has(id));
      if (!ids.length) return;
      const at = ids.indexOf(currentId());
      const next = at < 0 ? 0 : Math.min(Math.max(at + step, 0), ids.length - 1);
      const head = cards.get(ids[next]).querySelector(".bill-head");
      head.focus();
      head.scrollIntoView({ block: "nearest" });
    },
    confirm() { // the focused line, else the first that asks for it
      const id = currentId();
      if (!id) return;
      const focusedLine = document.activeElement.closest(".line");
      const button = (focusedLine && focusedLine.querySelector(".confirm"))
        || cards.get(id).querySelector(".line .confirm");
      if (button && !state.pending.has(id)) {
        button.focus();
        correct(id, { action: "confirm", line: Number(button.dataset.line) });
      }
    },
    // Keys 1-3: the focused line's proposal, else that of the first line of the
    // focused bill that offers one (as c confirms). A folded bill with a dish
    // to pick opens first, focus on that proposal, and nothing is sent: the
    // cashier sees what the key would pick.
    choose(n) {
      const id = currentId();
      if (!id || state.pending.has(id)) return;
      const selector = `.choice[data-choice="${n}"]`;
      if (!state.open.has(id)) {
        const toPick = state.bills.get(id).effective.items.some((ln) => ln.unknown
          || (ln.needs_review && Array.isArray(ln.proposals) && ln.proposals.length > 0));
        if (!toPick) return;
        toggle(id);
        focusIn(id, selector);
        return;
      }
      const focusedLine = document.activeElement.closest(".line");
      const button = (focusedLine && focusedLine.querySelector(selector))
        || cards.get(id).querySelector(`.line ${selector}`);
      if (!button) return;
      button.focus();
      chooseDish(id, Number(button.dataset.line), button.dataset.value);
    },
    voidBill() {
      const id = currentId();
      if (!id || !may().void) return;
      if (!state.open.has(id)) toggle(id);
      openForm(id, { kind: "void", reason: "" }, '[data-role="void-reason"]');
    },
    goTo(key) { // u and h only move to the button; Enter or Space does it
      const id = currentId();
      if (!id) return;
      if (!state.open.has(id)) toggle(id);
      focusIn(id, `[data-key="${key}"]`);
    },
    escape() {
      if (ui.picker) closePicker(true);
      else if (ui.form) closeForm(".bill-head");
    },
  };
  window.dishtrackerBills = keyboard;
})();
