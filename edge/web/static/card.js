// DishTracker cashier page, one bill card: what a bill looks like and which
// actions it offers, built from the bill (GET /api/bills, events), the page's
// UI state (open, picker, form) and what the token's role may do.
//
// build(bill, ui) returns a fresh <li>; bills.js morphs the card on screen
// into it (dom.js), so what the cashier is doing in the card survives. Every
// control carries a data-key (stable within the card) and, when it acts, a
// data-action that bills.js handles by delegation. A line that needs review
// shows why (its reason), never a confidence beside the "Review" tag.
// An unknown line (a dish the box does not know, price 0 until picked) reads
// "Unknown dish — pick it" with "—" for a price, never as a priced dish; it
// and a flagged line with proposals get a row of choices below: the best
// three dishes as one-tap buttons (keys 1-3, keys.js), name and today's menu
// price, then the full searchable menu. A bill with an unknown line left
// shows its total as "12.40 + ?".
// Loaded after dom.js and auth.js; exposes window.dishtrackerCard.
"use strict";

(() => {
  const { el, money, clock } = window.dishtrackerDom;
  const LINE_REVIEW = "Unsure of the dish: check the tray";
  const LINE_DISABLED = "Off the menu (disabled): check the tray and the price";
  const LINE_UNKNOWN = "Not a dish the box knows";
  const UNKNOWN_TITLE = "Unknown dish — pick it";
  const NO_PRICE = "—";
  const MAX_CHOICES = 3; // keys 1-3

  const quantity = (ln) => (Number.isInteger(ln.quantity) ? ln.quantity : 1);
  const lineTotal = (ln) => (typeof ln.line_total === "number" ? ln.line_total
    : ln.price * quantity(ln));
  const handedOverAt = (bill) => bill.handed_over_at ?? bill.effective.handed_over_at ?? null;
  const isUnknown = (ln) => ln.unknown === true;
  const unpriced = (items) => items.some(isUnknown); // a total that is not the whole bill yet
  const totalText = (total, items) => (unpriced(items) ? `${money(total)} + ?` : money(total));
  const shortName = (ln) => (isUnknown(ln) ? "Unknown dish?" : ln.name);

  // The proposals of a line the cashier may pick from, at today's menu prices
  // (a change bills the menu's price); dishes no longer on the menu are left out.
  function choicesOf(ln, menu) {
    if (!(isUnknown(ln) || ln.needs_review) || !Array.isArray(ln.proposals)) return [];
    const byKey = new Map(menu.map((m) => [m.key, m]));
    return ln.proposals.filter((p) => byKey.has(p.key)).slice(0, MAX_CHOICES)
      .map((p) => ({ key: p.key, name: byKey.get(p.key).name, price: byKey.get(p.key).price }));
  }

  // Menu items the picker offers for `query`: names or keys that contain it.
  function matches(menu, query) {
    const q = query.trim().toLocaleLowerCase();
    if (!q) return menu;
    return menu.filter((m) => m.name.toLocaleLowerCase().includes(q) || m.key.includes(q));
  }

  // A button that opens a searchable menu (type to filter, arrows, Enter).
  function picker(bill, slot, label, text, ctx) {
    const open = ctx.ui.picker && ctx.ui.picker.bill === bill.bill_id && ctx.ui.picker.slot === slot;
    const listId = `pick-${bill.bill_id}-${slot}`.replace(/[^A-Za-z0-9_-]/g, "_");
    const toggle = el("button", { type: "button", class: `pick ${slot === "add" ? "add" : "change"}`,
      "data-key": `pick-${slot}`, "data-action": "pick-open", "data-slot": slot,
      "aria-haspopup": "listbox", "aria-expanded": open ? "true" : "false",
      "aria-label": label, title: label, text });
    if (!open) return el("span", { class: "picker", "data-key": `picker-${slot}` }, toggle);
    const { query, active } = ctx.ui.picker;
    const found = matches(ctx.menu, query);
    const current = found.length ? Math.min(Math.max(active, 0), found.length - 1) : -1;
    const options = found.map((m, i) => el("li", {
      role: "option", id: `${listId}-${i}`, "data-key": `opt-${m.key}`, "data-action": "pick",
      "data-value": m.key, "aria-selected": i === current ? "true" : "false" },
      el("span", { text: m.name }), el("span", { class: "price", text: money(m.price) })));
    return el("span", { class: "picker", "data-key": `picker-${slot}`, "data-open": "true" },
      toggle,
      el("div", { class: "picker-pop", "data-key": "pop" },
        el("input", { type: "search", "data-key": "query", "data-role": "picker-query",
          role: "combobox", "aria-expanded": "true", "aria-controls": listId,
          "aria-autocomplete": "list", "aria-label": `${label} (type to search)`,
          placeholder: "Type to search the menu", autocomplete: "off", spellcheck: "false",
          value: query, "aria-activedescendant": current >= 0 ? `${listId}-${current}` : null }),
        el("ul", { role: "listbox", id: listId, class: "picker-list", "data-key": "options",
          "aria-label": label },
          options.length ? options : el("li", { class: "none", text: "No dish matches" }))));
  }

  // One-tap choices under a line: the proposals (1-3), then the whole menu.
  function choicesNode(bill, ln, choices, ctx) {
    const what = isUnknown(ln) ? `the dish of line ${ln.line + 1}` : `line ${ln.line + 1}, ${ln.name}`;
    return el("span", { class: "choices", "data-key": "choices", role: "group",
      "aria-label": `Pick ${what}` },
      choices.map((c, i) => el("button", { type: "button", class: "choice",
        "data-key": `choice-${c.key}`, "data-action": "choose", "data-line": String(ln.line),
        "data-value": c.key, "data-choice": String(i + 1), "aria-keyshortcuts": String(i + 1),
        "aria-label": `${c.name}, ${money(c.price)} (key ${i + 1})`,
        title: `${c.name} (${i + 1})` },
      el("kbd", { "aria-hidden": "true", text: String(i + 1) }),
      el("span", { class: "choice-name", text: c.name }),
      el("span", { class: "choice-price", text: money(c.price) }))),
      picker(bill, `line-${ln.line}`, `Pick ${what} from the menu`,
        choices.length ? "Other…" : "Pick from the menu…", ctx));
  }

  function lineNode(bill, ln, ctx) {
    const unknown = isUnknown(ln);
    const note = ln.status === "changed" ? `was ${ln.detected.name}`
      : ln.status === "added" ? "added" : ln.status === "confirmed" ? "confirmed" : null;
    const reason = !ln.needs_review ? null
      : unknown ? (bill.has_snapshot ? `${LINE_UNKNOWN}; "${ln.line + 1} ?" in the photo`
        : LINE_UNKNOWN)
        : ln.review_text || (ctx.disabled.has(ln.key) ? LINE_DISABLED : LINE_REVIEW);
    const n = quantity(ln);
    // while the bill's own reason is open every line can be confirmed: a sure
    // bill whose tray was checked needs one click, and any correction answers it;
    // an unknown line is never confirmed (nor counted): its dish is picked
    const askConfirm = !unknown
      && (ln.needs_review || (bill.review.length > 0 && !bill.effective.corrected));
    const edit = ctx.may.correct && !ctx.voided;
    const choices = edit ? choicesOf(ln, ctx.menu) : [];
    const choose = edit && (unknown || choices.length > 0);
    const title = unknown ? UNKNOWN_TITLE : n > 1 ? `${n} × ${ln.name}` : ln.name;
    return el("li", {
      class: "line", "data-key": `line-${ln.line}`, "data-line": String(ln.line),
      "data-status": ln.status, "data-review": ln.needs_review ? "true" : null,
      "data-unknown": unknown ? "true" : null },
      el("span", { class: "name" },
        el("span", { text: title }),
        note ? el("small", { text: note }) : null,
        reason ? el("small", { class: "reason", text: reason }) : null),
      unknown ? el("span", { class: "price" },
        el("span", { "aria-hidden": "true", text: NO_PRICE }),
        el("span", { class: "visually-hidden", text: "no price until the dish is picked" }))
        : el("span", { class: "price", text: money(lineTotal(ln)) }),
      edit ? el("span", { class: "actions" },
        askConfirm ? el("button", { type: "button", class: "confirm", "data-key": "confirm",
          "data-action": "confirm", "data-line": String(ln.line), title: "Confirm (c)",
          "aria-label": `Confirm ${ln.name}`, text: "✓" }) : null,
        unknown ? null : el("button", { type: "button", class: "qty", "data-key": "qty",
          "data-action": "qty-open", "data-line": String(ln.line),
          title: "Quantity", "aria-label": `Quantity of ${ln.name}: ${n}`, text: `×${n}` }),
        choose ? null : picker(bill, `line-${ln.line}`, `Change ${ln.name} to…`, "⇄", ctx),
        el("button", { type: "button", class: "remove", "data-key": "remove",
          "data-action": "remove", "data-line": String(ln.line), title: "Remove",
          "aria-label": `Remove ${unknown ? `line ${ln.line + 1}, the unknown dish` : ln.name}`,
          text: "✕" })) : null,
      choose ? choicesNode(bill, ln, choices, ctx) : null);
  }

  function quantityForm(ln, form) {
    return el("li", { class: "line-form", "data-key": `qty-form-${ln.line}` },
      el("form", { class: "qty-form", "data-key": "form", "data-form": "qty", novalidate: true,
        "data-line": String(ln.line) },
        el("label", { for: `qty-${ln.line}`, text: `How many ${ln.name}?` }),
        el("button", { type: "button", "data-key": "minus", "data-action": "qty-step",
          "data-step": "-1", "aria-label": "One less", text: "−" }),
        el("input", { type: "number", id: `qty-${ln.line}`, "data-key": "qty-value",
          "data-role": "qty-value", min: "1", max: "99", step: "1", inputmode: "numeric",
          required: true, value: String(form.value) }),
        el("button", { type: "button", "data-key": "plus", "data-action": "qty-step",
          "data-step": "1", "aria-label": "One more", text: "+" }),
        el("button", { type: "submit", class: "primary", "data-key": "set", text: "Set" }),
        el("button", { type: "button", "data-key": "cancel", "data-action": "form-cancel",
          text: "Cancel" })));
  }

  function voidForm(bill, form) {
    return el("form", { class: "void-form", "data-key": "void-form", "data-form": "void",
      novalidate: true },
      el("label", { for: `void-${bill.bill_id}`, text: "Why is this bill void?" }),
      el("input", { type: "text", id: `void-${bill.bill_id}`, "data-key": "void-reason",
        "data-role": "void-reason", maxlength: "200", required: true, autocomplete: "off",
        placeholder: "e.g. customer left, tray billed twice", value: form.reason || "" }),
      el("span", { class: "form-buttons" },
        el("button", { type: "submit", class: "danger", "data-key": "void-submit",
          text: "Void bill" }),
        el("button", { type: "button", "data-key": "cancel", "data-action": "form-cancel",
          text: "Cancel" })));
  }

  function head(bill, open) {
    const eff = bill.effective;
    const handed = handedOverAt(bill);
    return el("button", {
      class: "bill-head", type: "button", "data-key": "head", "data-action": "toggle",
      "aria-expanded": open ? "true" : "false" },
      el("span", { class: "when", text: clock(bill.closed_at) }),
      el("span", { class: "tray-no", text: `Tray ${bill.tray_id}` }),
      eff.voided ? el("span", { class: "tag void", text: "Void" }) : null,
      eff.needs_review && !eff.voided ? el("span", { class: "tag review", text: "Review" }) : null,
      eff.corrected && !eff.needs_review && !eff.voided
        ? el("span", { class: "tag corrected", text: "Corrected" }) : null,
      handed ? el("span", { class: "tag handed", title: `Handed over at ${clock(handed)}`,
        text: "Handed over" }) : null,
      el("span", { class: "total", text: totalText(eff.total, eff.items) }),
      open ? null : el("span", { class: "summary",
        text: eff.items.map((ln) => (quantity(ln) > 1 ? `${quantity(ln)} × ${ln.name}`
          : shortName(ln))).join(" · ") || "no items" }));
  }

  // The card of `bill`; ctx: {ui, menu, disabled (keys off the menu), may: {correct,
  // void, handover, watch}, open, fresh, pending, error, photo}.
  function build(bill, ctx) {
    const eff = bill.effective;
    const c = { ...ctx, voided: Boolean(eff.voided) };
    const card = el("li", {
      class: "bill-card", "data-key": bill.bill_id, "data-bill-id": bill.bill_id,
      "data-review": eff.needs_review ? "true" : "false", "data-voided": eff.voided ? "true" : null,
      "data-open": ctx.open ? "true" : "false", "data-fresh": ctx.fresh ? "true" : null,
      "aria-busy": ctx.pending ? "true" : null },
      head(bill, ctx.open));
    if (!ctx.open) return card;
    const form = ctx.ui.form && ctx.ui.form.bill === bill.bill_id ? ctx.ui.form : null;
    const reasons = bill.review.map((reason, i) => el("li", {
      class: "review-reason", "data-reason": reason,
      "data-open": eff.corrected ? "false" : "true", text: bill.review_text[i] || reason }));
    const lines = [];
    for (const ln of eff.items) {
      lines.push(lineNode(bill, ln, c));
      if (form && form.kind === "qty" && form.line === ln.line) lines.push(quantityForm(ln, form));
    }
    for (const ln of eff.removed) {
      lines.push(el("li", { class: "line removed", "data-key": `line-${ln.line}`,
        "data-line": String(ln.line) },
      el("span", { class: "name", text: ln.name }),
      el("span", { class: "price", text: money(lineTotal(ln)) })));
    }
    const edit = ctx.may.correct && !c.voided;
    const handed = handedOverAt(bill);
    const foot = el("div", { class: "bill-foot", "data-key": "foot" },
      edit ? picker(bill, "add", `Add an item to tray ${bill.tray_id}`, "+ Add item", c) : null,
      bill.has_snapshot && ctx.may.watch ? el("button", { type: "button", class: "photo",
        "data-key": "photo", "data-action": "photo", "aria-pressed": ctx.photo ? "true" : "false",
        text: ctx.photo ? "Hide photo" : "Photo" }) : null,
      eff.total !== bill.total ? el("s", { class: "was", text: money(bill.total) }) : null,
      el("strong", { class: "total", text: totalText(eff.total, eff.items),
        title: unpriced(eff.items) ? "Without the unknown dishes: pick them to complete the bill"
          : null }));
    const tillActions = [
      ctx.may.correct && bill.corrections.length ? el("button", { type: "button",
        class: "undo", "data-key": "undo", "data-action": "undo",
        title: "Undo the last correction of this bill (u)", text: "Undo" }) : null,
      ctx.may.void && !c.voided ? el("button", { type: "button", class: "void",
        "data-key": "void", "data-action": "void-open", "aria-expanded": form && form.kind === "void"
          ? "true" : "false", title: "Void the whole bill, with a reason (v)", text: "Void…" }) : null,
      ctx.may.handover && !handed && !c.voided ? el("button", { type: "button", class: "handover",
        "data-key": "handover", "data-action": "handover",
        title: "Mark the bill as handed over to the till (h)", text: "Hand over" }) : null,
    ].filter(Boolean);
    card.append(el("div", { class: "bill-body-lines", "data-key": "body" },
      c.voided ? el("p", { class: "void-note", "data-key": "void-note",
        text: `Void${eff.void_reason ? `: ${eff.void_reason}` : ""}` }) : null,
      reasons.length ? el("ul", { class: "review-reasons", "data-key": "reasons" }, reasons) : null,
      el("ul", { class: "lines", "data-key": "lines" }, lines),
      foot,
      tillActions.length || handed ? el("div", { class: "till-actions", "data-key": "till" },
        tillActions,
        handed ? el("span", { class: "handed-at", text: `Handed over ${clock(handed)}` }) : null)
        : null,
      form && form.kind === "void" ? voidForm(bill, form) : null,
      ctx.photo ? el("img", { class: "snapshot", "data-key": "snapshot", src: ctx.photo,
        alt: `Tray ${bill.tray_id} at the checkout` }) : null,
      ctx.error ? el("p", { class: "error", "data-key": "error", role: "alert", text: ctx.error })
        : null));
    return card;
  }

  // The open tray(s) of the camera: running bills, nothing to act on.
  function trayNode(t) {
    return el("div", { class: "tray", "data-key": `tray-${t.tray_id}` },
      el("div", { class: "tray-head" },
        el("span", { text: `Tray ${t.tray_id}` }),
        el("span", { class: "muted", text: t.items.length === 1 ? "1 item" : `${t.items.length} items` })),
      el("ul", { class: "lines" }, t.items.map((it, i) => el("li", {
        class: "line", "data-review": it.needs_review ? "true" : null,
        "data-unknown": isUnknown(it) ? "true" : null, "data-key": `item-${i}` },
      el("span", { class: "name" }, el("span", { text: shortName(it) }),
        it.needs_review ? el("small", { class: "reason",
          text: isUnknown(it) ? "pick it on the bill" : "check" }) : null),
      el("span", { class: "price", text: isUnknown(it) ? NO_PRICE : money(it.price) })))),
      el("div", { class: "tray-total" }, el("span", { text: "Running total" }),
        el("strong", { text: totalText(t.total, t.items) })));
  }

  window.dishtrackerCard = { build, trayNode, matches, quantity, isUnknown };
})();
