// DishTracker cashier page, access token. Changes (the WebRTC offer, bill
// corrections) and bill snapshots need "Authorization: Bearer <token>"
// (edge/web/access.py, docs/SECURITY.md). The daemon prints a URL with the
// token in its fragment (#token=…), which browsers never send to a server:
// this script takes it from there once, keeps it in sessionStorage (this tab,
// until the tab closes) and removes it from the address bar and the history.
// Without a token, or when the server refuses it, the form in the top bar
// asks for it. Loaded before app.js and bills.js, which use
// window.dishtrackerAuth.
"use strict";

(() => {
  const KEY = "dishtracker.token";
  const $ = (id) => document.getElementById(id);
  const form = $("token-form");
  const input = $("token-input");
  const message = $("token-message");
  let waiting = []; // resolvers of ensure() calls while the form is open

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

  // Shows the form; a reason already on it stays unless a new one comes.
  function ask(text) {
    if (text || form.hidden) message.textContent = text || "Access token";
    form.hidden = false;
    input.focus();
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    sessionStorage.setItem(KEY, value);
    input.value = "";
    form.hidden = true;
    const resolvers = waiting;
    waiting = [];
    resolvers.forEach((resolve) => resolve(value));
  });

  // The token; when there is none, shows the form and resolves once it is entered.
  function ensure() {
    const current = token();
    if (current) return Promise.resolve(current);
    ask();
    return new Promise((resolve) => waiting.push(resolve));
  }

  // fetch() with the token. A 401 or 403 forgets the token and asks for another;
  // the response goes back to the caller either way.
  async function authFetch(url, options = {}) {
    const current = await ensure();
    const headers = new Headers(options.headers || {});
    headers.set("Authorization", `Bearer ${current}`);
    const resp = await fetch(url, { ...options, headers });
    if (resp.status === 401 || resp.status === 403) {
      if (token() === current) sessionStorage.removeItem(KEY);
      ask("Token refused, enter the current one");
    }
    return resp;
  }

  takeFromFragment();
  window.dishtrackerAuth = { token, ensure, fetch: authFetch };
})();
