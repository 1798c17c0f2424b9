// DishTracker menu page (managers): the menu in force (GET /api/menu), a dish
// added (POST /api/menu) or renamed, repriced, disabled (PATCH
// /api/menu/{key}). The server validates as it validates the site config and
// applies the change live; its errors ("price: …") are shown next to their
// field. auth.js (loaded before) keeps the token; a role that may not edit
// the menu sees a note instead of the page. Exposes window.dishtrackerMenu ({ items }) for
// tests.
"use strict";

(() => {
  const { el, setCurrency, money } = window.dishtrackerDom;
  const auth = window.dishtrackerAuth;
  const $ = (id) => document.getElementById(id);
  const rows = $("rows");
  const status = $("status");
  const addForm = $("add-form");
  const state = { items: [], currency: null };
  window.dishtrackerMenu = state;

  function say(text, kind = "") {
    status.textContent = text;
    status.dataset.kind = kind;
  }

  function mayEdit() {
    const access = auth.access();
    return !access.checked || auth.may("menu");
  }

  // "price: must be …" lines to the error slots of a form or row; the rest to status.
  function showErrors(scope, errors) {
    scope.querySelectorAll("[data-error]").forEach((slot) => { slot.textContent = ""; });
    const rest = [];
    for (const line of errors) {
      const field = line.split(":", 1)[0];
      const slot = scope.querySelector(`[data-error="${CSS.escape(field)}"]`);
      if (slot) slot.textContent = line.slice(field.length + 1).trim();
      else rest.push(line);
    }
    if (rest.length) say(rest.join("; "), "error");
  }

  async function send(scope, url, method, body) {
    say("Saving…");
    let resp;
    try {
      resp = await auth.fetch(url, { method, body: JSON.stringify(body),
        headers: { "Content-Type": "application/json" } });
    } catch (err) {
      say(`Not saved: ${err}`, "error");
      return false;
    }
    if (resp.ok) {
      showErrors(scope, []);
      const answer = await resp.json();
      say(`Saved: ${answer.item.name}, live now`, "ok");
      await load();
      return true;
    }
    const data = await resp.clone().json().catch(() => ({}));
    if (resp.status === 422 && Array.isArray(data.errors)) {
      showErrors(scope, data.errors);
      say("Not saved: see the marked fields", "error");
    } else {
      showErrors(scope, []);
      say(`Not saved: ${await auth.refusal(resp)}`, "error");
    }
    return false;
  }

  function row(item) {
    const editable = mayEdit();
    const name = el("input", { class: "name-input", value: item.name, "aria-label": `Name of ${item.key}`,
      disabled: !editable });
    const price = el("input", { class: "price-input", type: "number", step: "0.01", min: "0",
      value: String(item.price), "aria-label": `Price of ${item.key}`, disabled: !editable });
    const billable = el("input", { type: "checkbox", checked: item.billable,
      "aria-label": `${item.key} is billable`, disabled: !editable });
    const enabled = el("input", { type: "checkbox", checked: item.enabled,
      "aria-label": `${item.key} is on the menu`, disabled: !editable });
    const tr = el("tr", { "data-key": item.key, "data-enabled": String(item.enabled) },
      el("td", {}, el("div", { class: "field" }, name,
        el("span", { class: "menu-key", text: item.key }),
        el("span", { class: "field-error", "data-error": "name" }))),
      el("td", {}, el("div", { class: "field" }, price,
        el("span", { class: "muted", text: money(item.price) }),
        el("span", { class: "field-error", "data-error": "price" }))),
      el("td", {}, billable, el("span", { class: "field-error", "data-error": "billable" })),
      el("td", {}, enabled, el("span", { class: "field-error", "data-error": "enabled" })),
      el("td", {}, el("button", { type: "button", class: "save", disabled: !editable, text: "Save",
        onclick: () => {
          const change = {};
          if (name.value !== item.name) change.name = name.value;
          if (price.value === "" || Number(price.value) !== item.price) {
            change.price = price.value === "" ? null : Number(price.value);
          }
          if (billable.checked !== item.billable) change.billable = billable.checked;
          if (enabled.checked !== item.enabled) change.enabled = enabled.checked;
          if (!Object.keys(change).length) {
            say(`Nothing changed for ${item.name}`);
            return;
          }
          send(tr, `/api/menu/${encodeURIComponent(item.key)}`, "PATCH", change);
        } }),
        el("span", { class: "field-error", "data-error": "(root)" })));
    return tr;
  }

  async function load() {
    try {
      const menu = await (await fetch("/api/menu", { cache: "no-store" })).json();
      state.items = menu.items;
      state.currency = menu.currency;
      setCurrency(menu.currency, menu.locale);
      $("currency").textContent = menu.currency;
      rows.replaceChildren(...menu.items.map(row));
    } catch (err) {
      say(`The menu could not be loaded: ${err}`, "error");
    }
  }

  // a signed-in token whose role may not edit the menu sees no menu page, only a note
  function applyAccess() {
    const editable = mayEdit();
    const refused = !editable && auth.access().signedIn;
    $("role-note").hidden = !refused;
    document.querySelectorAll("[data-managers]").forEach((s) => { s.hidden = refused; });
    // the rows loaded at the start follow too: no second fetch, no edit in progress lost
    for (const scope of [addForm, rows]) {
      scope.querySelectorAll("input, button").forEach((c) => { c.disabled = !editable; });
    }
  }

  addForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const data = new FormData(addForm);
    const body = { key: String(data.get("key") || "").trim(), name: String(data.get("name") || ""),
      billable: data.get("billable") === "on" };
    const price = String(data.get("price") || "");
    if (price !== "") body.price = Number(price);
    send(addForm, "/api/menu", "POST", body).then((ok) => { if (ok) addForm.reset(); });
  });
  document.addEventListener("dishtracker:access", (ev) => {
    if (ev.detail.checked) applyAccess();
  });
  load();
})();
