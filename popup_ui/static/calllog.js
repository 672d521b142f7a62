// The 通話履歴 view: every call with its outcome, searched by date and number.
//
// Owns the view's DOM inside #calllog-view (the search form, the results table, the
// pager), the query it last ran, and its page of GET /api/calls (docs/protocol.md). The
// number is sent as the person typed it (0312345678, 03-1234-5678, +81 3…): the server
// normalises it with the office's numbering plan. A call's notes are shown with 修正 and
// 履歴 (notes.js NoteCorrection). It knows nothing of the board or sockets; customer
// data reaches the page only as text (see card.js).

import { t } from "./i18n.js";
import { el, routingText } from "./card.js";
import { detailText, formatDate, formatTime } from "./format.js";
import { NoteCorrection, talkText } from "./notes.js";

export const PAGE_SIZE = 20;
const DAY_MS = 24 * 60 * 60 * 1000;

/** "YYYY-MM-DD" + one day, for an `until` that includes the last day typed. */
function nextDay(day) {
  const at = Date.parse(`${day}T00:00:00Z`);
  return Number.isNaN(at) ? null : new Date(at + DAY_MS).toISOString().slice(0, 10);
}

/**
 * What became of the call, and where it went: 応答: 佐藤 健 / 他で応答 / 不在 / 放棄 …,
 * then 転送: 鈴木 一郎 (a 転送メモ the target answered) and 佐藤 健へ直通 (routing).
 */
export function outcomeLabel(call) {
  const parts = [];
  const handover = call.handover;
  const handedOver = handover && handover.state === "answered" && handover.from_name;
  parts.push(handedOver ? t("calllog.answeredBy", { name: handover.from_name }) : baseOutcome(call));
  if (handover && handover.to_name) {
    parts.push(t(handedOver ? "calllog.transferred" : "calllog.handoverNote", { name: handover.to_name }));
  }
  const routing = call.routing;
  if (routing && routing.to) {
    const extension = /^[0-9*#]+$/.test(routing.to) ? routing.to : null;
    parts.push(routingText({ name: routing.name, extension, reason: routing.reason }));
  }
  return parts.join(" / ");
}

function baseOutcome(call) {
  const by = call.answered_by;
  if (by && (by.name || by.extension)) return t("calllog.answeredBy", { name: by.name || t("calllog.ext", { ext: by.extension }) });
  switch (call.outcome) {
    case "answered_elsewhere":
      return t("calllog.outcome.elsewhere");
    case "abandoned":
      return t("calllog.outcome.abandoned");
    case "timeout":
      return t("calllog.outcome.missed");
    case "hangup":
      return t("calllog.outcome.hangup");
    case "interrupted":
      return t("calllog.outcome.interrupted");
    case "routed":
      return t("calllog.outcome.routed");
    case null:
    case undefined:
      return t("calllog.outcome.ringing");
    default:
      return String(call.outcome);
  }
}

export class CallLogView {
  /**
   * api(method, path, body) -> {status, data}; root: the view's <main>, filled here;
   * navigate(view, params) opens a customer's page from a row.
   */
  constructor({ api, root, navigate }) {
    this.api = api;
    this.root = root;
    this.navigate = navigate || null;
    this.query = { from: "", to: "", number: "" };
    this.page = 1;
    this.data = null; // the CallPage shown
    this.error = "";
    this.loading = false;
    this.generation = 0; // bumped by every load and by clear(): a late answer is dropped
    this.notes = new Map(); // note id -> NoteCorrection of the page shown
    this.build();
    this.render();
  }

  build() {
    this.heading = el("h2", { className: "section-title", attrs: { id: "calllog-heading" } });
    this.from = el("input", { attrs: { type: "date", id: "calllog-from", "data-testid": "calllog-from" } });
    this.to = el("input", { attrs: { type: "date", id: "calllog-to", "data-testid": "calllog-to" } });
    this.number = el("input", {
      attrs: {
        type: "text",
        id: "calllog-number",
        inputmode: "tel",
        autocomplete: "off",
        spellcheck: "false",
        "data-testid": "calllog-number",
      },
    });
    this.labels = {
      from: el("span"),
      to: el("span"),
      number: el("span"),
    };
    this.search = el("button", { className: "primary", attrs: { type: "submit", "data-testid": "calllog-search" } });
    this.reset = el("button", { className: "calllog-reset", attrs: { type: "button", "data-testid": "calllog-reset" } });
    this.form = el("form", { className: "calllog-form", attrs: { role: "search", "data-testid": "calllog-form" } }, [
      el("label", { attrs: { for: this.from.id } }, [this.labels.from, this.from]),
      el("label", { attrs: { for: this.to.id } }, [this.labels.to, this.to]),
      el("label", { className: "calllog-number", attrs: { for: this.number.id } }, [this.labels.number, this.number]),
      el("div", { className: "calllog-buttons" }, [this.search, this.reset]),
    ]);
    this.status = el("p", { className: "calllog-status", attrs: { role: "status", "data-testid": "calllog-status" } });
    this.head = el("tr");
    this.body = el("tbody", { attrs: { "data-testid": "calllog-rows" } });
    this.table = el("table", { className: "calllog-table", attrs: { "data-testid": "calllog-table" } }, [
      el("thead", {}, [this.head]),
      this.body,
    ]);
    this.prev = el("button", { attrs: { type: "button", "data-testid": "calllog-prev" } });
    this.next = el("button", { attrs: { type: "button", "data-testid": "calllog-next" } });
    this.pageText = el("span", { className: "calllog-page", attrs: { "data-testid": "calllog-page" } });
    this.pager = el("nav", { className: "calllog-pager" }, [this.prev, this.pageText, this.next]);
    this.root.replaceChildren(
      el("div", { className: "calllog-head" }, [this.heading]),
      this.form,
      this.status,
      el("div", { className: "calllog-scroll" }, [this.table]),
      this.pager,
    );
    this.root.setAttribute("aria-labelledby", this.heading.id);
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.query = { from: this.from.value, to: this.to.value, number: this.number.value.trim() };
      this.load(1);
    });
    this.reset.addEventListener("click", () => {
      this.from.value = "";
      this.to.value = "";
      this.number.value = "";
      this.query = { from: "", to: "", number: "" };
      this.load(1);
    });
    this.prev.addEventListener("click", () => this.page > 1 && this.load(this.page - 1));
    this.next.addEventListener("click", () => this.hasNext() && this.load(this.page + 1));
  }

  /** Logged out: no customer data may stay in the page. */
  clear() {
    this.generation += 1;
    this.data = null;
    this.error = "";
    this.page = 1;
    this.from.value = "";
    this.to.value = "";
    this.number.value = "";
    this.query = { from: "", to: "", number: "" };
    this.notes.clear();
    this.body.replaceChildren();
    this.render();
  }

  pages() {
    const total = this.data ? this.data.total : 0;
    return Math.max(1, Math.ceil(total / PAGE_SIZE));
  }

  hasNext() {
    return Boolean(this.data) && this.page < this.pages();
  }

  path(page) {
    const params = new URLSearchParams({ page: String(page), page_size: String(PAGE_SIZE) });
    if (this.query.from) params.set("since", this.query.from);
    const until = this.query.to ? nextDay(this.query.to) : null;
    if (until) params.set("until", until);
    if (this.query.number) params.set("number", this.query.number);
    return `/api/calls?${params}`;
  }

  /** Load page `page` of the current query (the view opened, a search, 次へ/前へ). */
  async load(page = this.page) {
    const generation = ++this.generation;
    this.loading = true;
    this.render();
    let answer = null;
    try {
      answer = await this.api("GET", this.path(page));
    } catch {
      answer = null;
    }
    if (generation !== this.generation) return;
    this.loading = false;
    if (answer && answer.status === 200 && answer.data && Array.isArray(answer.data.calls)) {
      this.data = answer.data;
      this.page = page;
      this.error = "";
      this.notes.clear();
      this.body.replaceChildren(...this.data.calls.map((call) => this.row(call)));
    } else if (answer && answer.status === 422) {
      // 電話番号として読めません, or a date out of range: the server's words.
      this.error = t("calllog.badQuery", { detail: detailText(answer.data, answer.status) });
    } else {
      this.error = t("calllog.loadFailed");
    }
    this.render();
  }

  row(call) {
    const at = call.started_at || "";
    const customer = call.customer && call.customer.name ? call.customer : null;
    const number = call.withheld ? t("calllog.withheld") : call.caller_national || call.caller_number || "";
    const who = el("td", { className: "calllog-caller" });
    if (customer) {
      // The customer's page (#/customers/12); a plain click opens it in this tab.
      const link = el("a", {
        className: "calllog-customer",
        text: t("honorific", { name: customer.name }),
        attrs: { href: `#/customers/${encodeURIComponent(customer.id)}`, "data-testid": "calllog-customer" },
      });
      link.addEventListener("click", (event) => {
        if (!this.navigate || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) return;
        event.preventDefault();
        this.navigate("customers", { id: customer.id });
      });
      who.append(link);
    } else if (call.display_name) {
      who.append(el("span", { className: "calllog-display", text: call.display_name }));
    }
    who.append(el("span", { className: "calllog-number", text: number, attrs: { "data-testid": "calllog-number-cell" } }));
    const line = call.dialed_name || call.dialed_national || call.dialed_number || "";
    const notes = el("td", { className: "calllog-notes" });
    for (const note of Array.isArray(call.notes) ? call.notes : []) {
      const first = String(note.body || "").split("\n", 1)[0];
      const details = el("details", { className: "calllog-note", attrs: { "data-testid": "calllog-note" } });
      const summary = el("summary", { text: first });
      const correction = new NoteCorrection({
        api: this.api,
        note,
        onSaved: (saved) => {
          summary.textContent = String(saved.body || "").split("\n", 1)[0];
        },
      });
      this.notes.set(note.id, correction);
      details.append(summary, correction.element);
      notes.append(details);
    }
    return el("tr", { attrs: { "data-testid": "calllog-row", "data-call-id": call.id } }, [
      el("td", { className: "calllog-when", text: `${formatDate(at)} ${formatTime(at)}` }),
      who,
      el("td", { className: "calllog-line", text: line }),
      el("td", { className: `calllog-outcome outcome-${call.outcome || "none"}`, text: outcomeLabel(call), attrs: { "data-testid": "calllog-outcome" } }),
      el("td", { className: "calllog-talk", text: talkText(call.talk_seconds) }),
      notes,
    ]);
  }

  /** Words and state into the DOM (a new language re-renders the rows too). */
  render() {
    this.heading.textContent = t("calllog.heading");
    this.labels.from.textContent = t("calllog.from");
    this.labels.to.textContent = t("calllog.to");
    this.labels.number.textContent = t("calllog.number");
    this.number.placeholder = t("calllog.numberHint");
    this.search.textContent = t("calllog.search");
    this.reset.textContent = t("calllog.reset");
    this.head.replaceChildren(
      ...["when", "caller", "line", "outcome", "talk", "note"].map((key) =>
        el("th", { text: t(`calllog.col.${key}`), attrs: { scope: "col" } }),
      ),
    );
    this.prev.textContent = t("calllog.prev");
    this.next.textContent = t("calllog.next");
    this.prev.disabled = this.loading || this.page <= 1 || !this.data;
    this.next.disabled = this.loading || !this.hasNext();
    const total = this.data ? this.data.total : 0;
    this.pageText.textContent = this.data ? t("calllog.pageOf", { page: this.page, pages: this.pages(), total }) : "";
    this.pager.hidden = !this.data || total === 0;
    this.table.hidden = !this.data || total === 0;
    let text = "";
    if (this.error) text = this.error;
    else if (this.loading && !this.data) text = t("calllog.loading");
    else if (this.data && total === 0) text = t("calllog.empty");
    this.status.textContent = text;
    this.status.hidden = !text;
    this.root.dataset.state = this.loading ? "loading" : "ready";
    if (this.data) {
      for (const correction of this.notes.values()) correction.render();
      const rows = this.body.querySelectorAll("tr[data-call-id]");
      rows.forEach((row, i) => {
        const call = this.data.calls[i];
        if (!call) return;
        row.querySelector(".calllog-outcome").textContent = outcomeLabel(call);
        row.querySelector(".calllog-talk").textContent = talkText(call.talk_seconds);
      });
    }
  }
}
