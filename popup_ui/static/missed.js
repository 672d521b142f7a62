// The 不在着信 view: calls nobody answered, grouped by number, until someone calls back.
//
// Owns the list from GET /api/calls/missed, its DOM in #missed-list, and the two
// answers a row takes (折り返し済み, 対応不要, with an optional note) through
// POST /api/calls/missed/resolve (docs/protocol.md). It is told when to load again
// (the view opens, a call ends unanswered, the socket reconnects) and loads at most
// once at a time, with one more load queued if asked meanwhile. It knows nothing of
// the board or sockets; customer data reaches the page only as text (see card.js).

import { t } from "./i18n.js";
import { el } from "./card.js";
import { detailText, formatDate, formatTime } from "./format.js";

const OPEN = new Set(["open", "missed", "unresolved", null, undefined]);

function isOpen(row) {
  return OPEN.has(row.status);
}

function when(iso) {
  return { date: formatDate(iso || ""), time: formatTime(iso || "") };
}

export class MissedCalls {
  /** api(method, path, body) -> {status, data}; onCount(open rows) for the header tab. */
  constructor({ api, onCount, list, status, showResolved }) {
    this.api = api;
    this.onCount = onCount;
    this.list = list; // the <ul>
    this.status = status; // a <p> for loading errors and "none"
    this.showResolved = showResolved; // the checkbox
    this.rows = [];
    this.loading = false;
    this.again = false;
    this.generation = 0; // bumped on logout: a late answer is dropped
    this.rowState = new Map(); // row key -> {busy, error}
    this.showResolved.addEventListener("change", () => this.load());
  }

  clear() {
    this.generation += 1;
    this.rows = [];
    this.rowState.clear();
    this.list.replaceChildren();
    this.status.hidden = true;
    this.onCount(0);
  }

  /** Load the list now (or once more after the load under way). */
  async load() {
    if (this.loading) {
      this.again = true;
      return;
    }
    this.loading = true;
    const generation = this.generation;
    try {
      do {
        this.again = false;
        const path = this.showResolved.checked ? "/api/calls/missed?include_resolved=true" : "/api/calls/missed";
        let answer = null;
        try {
          answer = await this.api("GET", path);
        } catch {
          answer = null;
        }
        if (generation !== this.generation) return;
        if (answer && answer.status === 200 && answer.data && Array.isArray(answer.data.missed)) {
          this.rows = answer.data.missed;
          this.loadError = "";
        } else {
          this.loadError = t("missed.loadFailed");
        }
        this.render();
      } while (this.again);
    } finally {
      this.loading = false;
    }
  }

  rowKey(row) {
    return (Array.isArray(row.call_ids) ? row.call_ids : []).join(",") || row.number || "";
  }

  visibleRows() {
    return this.showResolved.checked ? this.rows : this.rows.filter(isOpen);
  }

  render() {
    const open = this.rows.filter(isOpen).length;
    this.onCount(open);
    const rows = this.visibleRows();
    // Focus inside a row that is redrawn goes back to the same control of that row.
    const focused = document.activeElement;
    const focusKey = focused && this.list.contains(focused) ? focused.dataset.key : null;
    const focusRow = focused && focused.closest ? focused.closest("[data-row]") : null;
    const focusRowKey = focusRow ? focusRow.dataset.row : null;
    const notes = new Map();
    for (const input of this.list.querySelectorAll("input.missed-note")) {
      notes.set(input.closest("[data-row]").dataset.row, input.value);
    }
    this.list.replaceChildren(...rows.map((row) => this.renderRow(row, notes.get(this.rowKey(row)) || "")));
    if (this.loadError) {
      this.status.textContent = this.loadError;
      this.status.hidden = false;
    } else if (rows.length === 0) {
      this.status.textContent = this.showResolved.checked ? t("missed.emptyResolved") : t("missed.empty");
      this.status.hidden = false;
    } else {
      this.status.hidden = true;
    }
    if (focusKey && focusRowKey) {
      const row = this.list.querySelector(`[data-row="${CSS.escape(focusRowKey)}"]`);
      const target = row && row.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
      if (target) target.focus();
    }
  }

  renderRow(row, noteText) {
    const key = this.rowKey(row);
    const state = this.rowState.get(key) || {};
    const resolved = !isOpen(row);
    const item = el("li", {
      className: `missed-row${resolved ? " resolved" : ""}`,
      attrs: { "data-row": key, "data-testid": "missed-row", "data-status": row.status || "open" },
    });
    const customer = row.customer && row.customer.name ? row.customer : null;
    const who = el("div", { className: "missed-who" }, [
      el("span", {
        className: customer ? "missed-name" : "missed-number",
        text: customer ? t("honorific", { name: customer.name }) : row.national || row.number || t("status.noNumber"),
      }),
    ]);
    if (customer && (row.national || row.number)) {
      who.append(el("span", { className: "missed-sub", text: row.national || row.number }));
    }
    const attempts = Number.isInteger(row.attempts) ? row.attempts : (row.call_ids || []).length;
    const facts = el("div", { className: "missed-facts" }, [
      el("span", {
        className: "missed-attempts",
        text: t("missed.attempts", { count: attempts }),
        attrs: { title: t("missed.attemptsLabel"), "data-testid": "missed-attempts" },
      }),
      el("span", { className: "missed-last", text: t("missed.last", when(row.last_at)) }),
    ]);
    if (attempts > 1 && row.first_at) {
      facts.append(el("span", { className: "missed-first", text: t("missed.first", when(row.first_at)) }));
    }
    item.append(who, facts);
    if (resolved) {
      const status = t(`missed.status.${row.status}`);
      const by = row.resolved_by && typeof row.resolved_by === "object" ? row.resolved_by.name : row.resolved_by;
      item.append(
        el("div", {
          className: "missed-resolved",
          text: t("missed.resolved", { status, name: by || "", ...when(row.resolved_at) }),
          attrs: { "data-testid": "missed-resolved" },
        }),
      );
      if (row.resolution_note) {
        item.append(el("div", { className: "missed-resolved-note", text: t("missed.resolvedNote", { note: row.resolution_note }) }));
      }
      return item;
    }
    const noteId = `missed-note-${key.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 80)}`;
    const note = el("input", {
      className: "missed-note",
      attrs: { type: "text", id: noteId, "data-key": "note", "aria-label": t("missed.note"), placeholder: t("missed.note") },
    });
    note.value = noteText;
    const actions = el("div", { className: "missed-actions" }, [note]);
    for (const [status, label] of [
      ["called_back", "missed.calledBack"],
      ["no_action", "missed.noAction"],
    ]) {
      const button = el("button", {
        className: `missed-resolve resolve-${status}`,
        text: t(label),
        attrs: { type: "button", "data-key": status, "data-testid": `resolve-${status}` },
      });
      if (state.busy) button.setAttribute("aria-disabled", "true");
      button.addEventListener("click", () => this.resolve(row, status, note.value));
      actions.append(button);
    }
    item.append(actions);
    if (state.error) {
      item.append(el("p", { className: "missed-error", text: state.error, attrs: { role: "status" } }));
    }
    return item;
  }

  async resolve(row, status, note) {
    const key = this.rowKey(row);
    const state = this.rowState.get(key) || {};
    if (state.busy) return;
    this.rowState.set(key, { busy: true, error: "" });
    const generation = this.generation;
    let answer = null;
    try {
      answer = await this.api("POST", "/api/calls/missed/resolve", {
        call_ids: row.call_ids,
        status,
        note: note.trim() || null,
      });
    } catch {
      answer = null;
    }
    if (generation !== this.generation) return;
    if (answer && answer.status >= 200 && answer.status < 300) {
      this.rowState.delete(key);
      // The row leaves the list now; the reload brings who and when for the resolved view.
      this.rows = this.rows.filter((r) => this.rowKey(r) !== key);
      this.render();
      this.load();
      return;
    }
    const detail = answer ? detailText(answer.data, answer.status) : t("login.unreachable");
    this.rowState.set(key, { busy: false, error: t("missed.resolveFailed", { detail }) });
    this.render();
  }
}
