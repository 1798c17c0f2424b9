// DishTracker cashier page, access: the token and what its role may do.
//
// Changes (the WebRTC offer, bill corrections, void, hand-over) and bill
// snapshots need "Authorization: Bearer <token>" (edge/web/access.py,
// docs/SECURITY.md). The daemon prints a URL with the token in its fragment
// (#token=…), which browsers never send to a server: this script takes it
// from there once, keeps it in sessionStorage (this tab, until the tab
// closes) and removes it from the address bar and the history.
//
// GET /api/whoami says who the token is and what its role may do
// ({"name", "role", "may": [...]}); the page shows only those actions. No
// token, or a 401, shows the sign-in form instead of buttons that cannot
// work. A daemon without /api/whoami (404) predates roles: its one token may
// do everything. A 403 keeps the token (it is valid, the role is not enough):
// the caller shows the server's reason.
// Loaded after dom.js and before app.js and bills.js, which use
// window.dishtrackerAuth and listen for "dishtracker:access".
"use strict";

(() => {
  const KEY = "dishtracker.token";
  const EVERYTHING = ["watch", "correct", "void", "handover", "menu", "config", "report", "label",
    "models"];
  const $ = (id) => document.getElementById(id);
  const form = $("token-form");
  const input = $("token-input");
  const message = $("token-message");
  const who = $("who");
  const whoName = $("who-name");
  const signOut = $("sign-out");
  const links = [[$("link-report"), "report"], [$("link-menu"), "menu"],
    [$("link-models"), "models"]].filter(([link]) => link); // a page may lack one
  const pages = new Map(); // href -> Promise<bool>: is the page installed?
  let waiting = []; // resolvers of ensure() calls while the form is open
  // signedIn: a token the server accepted (or did not check yet); may: role's actions
  let access = { signedIn: false, checked: false, name: null, role: null, may: [] };

  function takeFromFragment() {
    const parts = location.hash.replace(/^#/, "").split("&").filter(Boolean);
    const found = parts.find((p) => p.startsWith("token="));
    if (found === undefined) return;
    let value = "";
    try {
      value = decodeURIComponent(found.slice("token=".length)).trim();
    } catch (_) { /* malformed escape: ask instead */ }
    if (value) sessionStorage.setItem(KEY, value);
    const rest = parts.filter((p) => p !== found);
    // replaceState: the token leaves the address bar and is not kept in the history
    history.replaceState(history.state, "",
      location.pathname + location.search + (rest.length ? `#${rest.join("&")}` : ""));
  }

  function token() {
    return sessionStorage.getItem(KEY);
  }

  function publish(next) {
    access = next;
    document.body.dataset.signedIn = access.signedIn ? "true" : "false";
    who.hidden = !access.signedIn;
    whoName.textContent = access.role
      ? `${access.name || "signed in"} · ${access.role}` : "Signed in";
    showLinks();
    document.dispatchEvent(new CustomEvent("dishtracker:access", { detail: access }));
  }

  // A link to the report or menu page only for a role that may use it, and
  // only when this daemon has the page.
  function showLinks() {
    for (const [link, what] of links) {
      const href = link.getAttribute("href");
      if (!pages.has(href)) {
        pages.set(href, fetch(href, { method: "HEAD", cache: "no-store" })
          .then((r) => r.ok, () => false));
      }
      const allowed = access.signedIn && access.may.includes(what);
      if (!allowed) link.hidden = true;
      else pages.get(href).then((installed) => { link.hidden = !(installed && access.may.includes(what)); });
    }
  }

  // Shows the sign-in form; a reason already on it stays unless a new one comes.
  function ask(text) {
    if (text || form.hidden) message.textContent = text || "Sign in with the access token";
    form.hidden = false;
    if (access.signedIn) publish({ signedIn: false, checked: true, name: null, role: null, may: [] });
    input.focus();
  }

  async function whoami() {
    const current = token();
    if (!current) {
      ask();
      return;
    }
    let resp;
    try {
      resp = await fetch("/api/whoami", { cache: "no-store",
        headers: { Authorization: `Bearer ${current}` } });
    } catch (err) { // server away: keep what we have and look again soon
      setTimeout(whoami, 2000);
      return;
    }
    if (current !== token()) return; // another token came meanwhile
    if (resp.status === 401) {
      sessionStorage.removeItem(KEY);
      ask("Token refused, enter the current one");
      return;
    }
    if (resp.status === 404) { // a daemon before roles: one token, every action
      publish({ signedIn: true, checked: true, name: null, role: null, may: EVERYTHING });
      return;
    }
    const body = await resp.json().catch(() => null);
    if (!resp.ok || !body || !Array.isArray(body.may)) {
      setTimeout(whoami, 2000);
      return;
    }
    publish({ signedIn: true, checked: true, name: body.name || null, role: body.role || null,
      may: body.may.filter((m) => typeof m === "string") });
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    sessionStorage.setItem(KEY, value);
    input.value = "";
    form.hidden = true;
    publish({ signedIn: true, checked: false, name: null, role: null, may: [] });
    whoami();
    const resolvers = waiting;
    waiting = [];
    resolvers.forEach((resolve) => resolve(value));
  });

  signOut.addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    ask("Signed out. Sign in with the access token");
  });

  // The token; when there is none, shows the form and resolves once it is entered.
  function ensure() {
    const current = token();
    if (current) return Promise.resolve(current);
    ask();
    return new Promise((resolve) => waiting.push(resolve));
  }

  // fetch() with the token. A 401 forgets the token and asks for another; a 403
  // (the role may not) keeps it. The response goes back to the caller either way.
  async function authFetch(url, options = {}) {
    const current = await ensure();
    const headers = new Headers(options.headers || {});
    headers.set("Authorization", `Bearer ${current}`);
    const resp = await fetch(url, { ...options, headers });
    if (resp.status === 401) {
      if (token() === current) sessionStorage.removeItem(KEY);
      ask("Token refused, enter the current one");
    }
    return resp;
  }

  // Why a change was refused, in words for the cashier.
  async function refusal(resp) {
    const data = await resp.json().catch(() => ({}));
    const detail = (data.errors || [data.error || `HTTP ${resp.status}`]).join("; ");
    if (resp.status === 403) {
      return `Not allowed${access.role ? ` for the ${access.role} role` : ""}: ${detail}`;
    }
    if (resp.status === 401) return `Sign in again: ${detail}`;
    return detail;
  }

  takeFromFragment();
  window.dishtrackerAuth = {
    token, ensure, fetch: authFetch, refusal,
    access: () => access,
    may: (what) => access.signedIn && access.may.includes(what),
  };
  if (token()) {
    publish({ signedIn: true, checked: false, name: null, role: null, may: [] });
  }
  whoami();
})();
