// DishTracker cashier page, keyboard shortcuts and their help (press "?").
//
// j / k: next / previous bill · Enter or Space: open or fold it (the focused
// button's own action) · c: confirm the line (the focused one, else the first
// that asks for it) · 1, 2, 3: pick that proposed dish for the line (the
// focused one, else the first that offers proposals; a folded bill opens
// first, nothing picked) · v: void the bill (asks for a reason first) · u, h:
// go to the bill's Undo / Hand over button, which Enter or Space then presses
// · Esc: close a menu, form or this help · ?: this help. No single key changes
// a bill beyond a confirm or a pick, which Undo takes back: a stray key loses
// nothing.
// Keys typed into a field, or with Ctrl, Alt or Meta, are left alone.
// Loaded last; drives window.dishtrackerBills (till.js).
"use strict";

(() => {
  const bills = window.dishtrackerBills;
  const help = document.getElementById("keys-help");
  const helpButton = document.getElementById("keys-button");

  function typing(target) {
    return target instanceof HTMLElement
      && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
  }

  function showHelp(show) {
    if (show && !help.open) help.showModal();
    else if (!show && help.open) help.close();
  }

  helpButton.addEventListener("click", () => showHelp(!help.open));
  help.addEventListener("click", (ev) => { // a click on the backdrop or the button closes it
    if (ev.target === help || ev.target.closest("[data-close]")) showHelp(false);
  });

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.altKey || ev.metaKey || ev.defaultPrevented) return;
    if (ev.key === "Escape") {
      if (!help.open) bills.escape();
      return; // the dialog closes itself on Escape
    }
    if (typing(ev.target) || help.open) return;
    const act = {
      "?": () => showHelp(true),
      j: () => bills.move(1),
      k: () => bills.move(-1),
      c: () => bills.confirm(),
      1: () => bills.choose(1),
      2: () => bills.choose(2),
      3: () => bills.choose(3),
      v: () => bills.voidBill(),
      u: () => bills.goTo("undo"),
      h: () => bills.goTo("handover"),
    }[ev.key];
    if (act) {
      ev.preventDefault();
      act();
    }
  });
})();
