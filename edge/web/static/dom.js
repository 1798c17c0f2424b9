// DishTracker cashier page, DOM helpers shared by the page's scripts: build
// elements, patch a live subtree to match a freshly built one, format money.
//
// The page never re-renders a region wholesale: bills and trays arrive every
// few seconds, and a cashier may be half-way through a correction. morph()
// turns the nodes on screen into the ones just built, keeping every node that
// still has a counterpart (same tag, same data-key, or same place among
// unkeyed siblings): a focused button stays focused, an input keeps what was
// typed (only its attributes are synced, never its live value), and nothing
// moves unless its order changed. Listeners are delegated to stable parents
// (data-action attributes), so a kept node never runs a stale handler.
// Loaded first; exposes window.dishtrackerDom.
"use strict";

(() => {
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    node.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
    return node;
  }

  function keyOf(node) {
    return node.nodeType === 1 ? node.getAttribute("data-key") : null;
  }

  function syncAttributes(from, to) {
    for (const { name } of Array.from(from.attributes)) {
      if (!to.hasAttribute(name)) from.removeAttribute(name);
    }
    for (const { name, value } of Array.from(to.attributes)) {
      if (from.getAttribute(name) !== value) from.setAttribute(name, value);
    }
  }

  // Make the element `from` (on screen) look like `to` (just built, same tag).
  function morph(from, to) {
    syncAttributes(from, to);
    morphChildren(from, to);
  }

  function morphChildren(from, to) {
    const keyed = new Map();
    for (const n of from.childNodes) {
      const k = keyOf(n);
      if (k !== null) keyed.set(k, n);
    }
    let cursor = from.firstChild;
    for (const nu of Array.from(to.childNodes)) {
      const k = keyOf(nu);
      let match = null;
      if (k !== null) {
        const old = keyed.get(k);
        if (old && old.nodeName === nu.nodeName) {
          match = old;
          keyed.delete(k);
        }
      } else if (cursor && keyOf(cursor) === null && cursor.nodeName === nu.nodeName) {
        match = cursor;
      }
      if (!match) {
        from.insertBefore(nu, cursor);
        continue;
      }
      if (match === cursor) cursor = cursor.nextSibling;
      else from.insertBefore(match, cursor); // order changed: the one case a node moves
      if (match.nodeType === 1) morph(match, nu);
      else if (match.nodeValue !== nu.nodeValue) match.nodeValue = nu.nodeValue;
    }
    while (cursor) {
      const next = cursor.nextSibling;
      from.removeChild(cursor);
      cursor = next;
    }
  }

  // Money as the menu's currency and locale say (GET /api/menu), else "12.40".
  let money = (x) => Number(x).toFixed(2);
  function setCurrency(currency, locale) {
    if (!currency) {
      money = (x) => Number(x).toFixed(2);
      return;
    }
    try {
      const format = new Intl.NumberFormat(locale || undefined, { style: "currency", currency });
      money = (x) => format.format(Number(x));
    } catch (err) { // an unknown code or locale: the plain format, and say why
      console.warn(`dishtracker: cannot format ${currency} for ${locale}: ${err}`);
      money = (x) => Number(x).toFixed(2);
    }
  }

  const clock = (unix) => new Date(unix * 1000).toLocaleTimeString([], {
    hour: "2-digit", minute: "2-digit", second: "2-digit" });

  window.dishtrackerDom = { el, morph, morphChildren, setCurrency, money: (x) => money(x), clock };
})();
