// DishTracker day report page: GET /api/report for a day and a camera, as
// tables, and the same as CSV (GET /api/report.csv). Both need a cashier's or
// a manager's token, which auth.js keeps (loaded before this script). The
// day is the box's own calendar day. Exposes window.dishtrackerReport
// ({ last }) for tests.
"use strict";

(() => {
  const { el, setCurrency, money } = window.dishtrackerDom;
  const auth = window.dishtrackerAuth;
  const $ = (id) => document.getElementById(id);
  const form = $("report-form");
  const day = $("day");
  const stream = $("stream");
  const status = $("status");
  const state = { last: null, loading: false };
  window.dishtrackerReport = state;

  function today() {
    const d = new Date();
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  }

  function say(text, kind = "") {
    status.textContent = text;
    status.dataset.kind = kind;
  }

  function query() {
    const q = new URLSearchParams({ day: day.value || today() });
    if (stream.value) q.set("stream", stream.value);
    return q.toString();
  }

  function summaryRow(label, part, total) {
    return el("tr", { class: total ? "total" : "" },
      el("th", { scope: "row", text: label }),
      el("td", { class: "num", text: String(part.bills) }),
      el("td", { class: "num", text: String(part.handed_over) }),
      el("td", { class: "num", text: String(part.voided) }),
      el("td", { class: "num", text: String(part.corrections) }),
      el("td", { class: "num", text: `${part.reviewed} / ${part.needed_review}` }),
      el("td", { class: "num", text: String(part.count) }),
      el("td", { class: "num", text: money(part.revenue) }));
  }

  function render(report) {
    state.last = report;
    $("currency").textContent = report.currency;
    const rows = report.streams.map((s) => summaryRow(s.stream_id, s, false));
    rows.push(summaryRow(report.stream ? `${report.stream} (total)` : "All cameras",
      report.total, true));
    $("summary-rows").replaceChildren(...rows);
    $("total-revenue").textContent = money(report.total.revenue);
    $("dish-rows").replaceChildren(...report.total.dishes.map((d) => el("tr", { "data-key": d.key },
      el("td", { text: d.name }),
      el("td", { class: "num", text: String(d.count) }),
      el("td", { class: "num", text: money(d.revenue) }))));
    $("no-bills").hidden = report.total.bills > 0;
  }

  async function load() {
    if (state.loading) return;
    state.loading = true;
    say("Loading…");
    try {
      const resp = await auth.fetch(`/api/report?${query()}`, { cache: "no-store" });
      if (!resp.ok) {
        say(await auth.refusal(resp), "error");
        return;
      }
      render(await resp.json());
      say(`Day ${state.last.day}`, "ok");
    } catch (err) {
      say(`The report could not be loaded: ${err}`, "error");
    } finally {
      state.loading = false;
    }
  }

  async function download() {
    say("Preparing the CSV…");
    try {
      const resp = await auth.fetch(`/api/report.csv?${query()}`, { cache: "no-store" });
      if (!resp.ok) {
        say(await auth.refusal(resp), "error");
        return;
      }
      const name = /filename="([^"]+)"/.exec(resp.headers.get("Content-Disposition") || "");
      const url = URL.createObjectURL(await resp.blob());
      const link = el("a", { href: url, download: name ? name[1] : "report.csv" });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      say("CSV downloaded", "ok");
    } catch (err) {
      say(`The CSV could not be made: ${err}`, "error");
    }
  }

  async function setup() {
    day.value = today();
    try {
      const menu = await (await fetch("/api/menu", { cache: "no-store" })).json();
      setCurrency(menu.currency, menu.locale);
    } catch (_) { /* plain numbers */ }
    try {
      const streams = await (await fetch("/api/streams", { cache: "no-store" })).json();
      stream.append(...streams.map((s) => el("option", { value: s.id, text: s.id })));
    } catch (_) { /* all cameras only */ }
    if (auth.token()) await load();
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    load();
  });
  stream.addEventListener("change", load);
  day.addEventListener("change", () => { if (day.value) load(); });
  $("csv").addEventListener("click", download);
  // after setup: the currency is known, and its own load() may have run already
  const ready = setup();
  document.addEventListener("dishtracker:access", (ev) => {
    if (!(ev.detail.signedIn && ev.detail.checked)) return;
    ready.then(() => { if (state.last === null) load(); });
  });
})();
