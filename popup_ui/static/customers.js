// The 顧客 view: search as you type, and one customer's page.
//
// Owns the DOM inside #customers-view: the search box and its results (GET
// /api/customers?q=), the 新規顧客 form, and the page of one customer (#/customers/12):
// the header with every fact the pop shows, each editable in place (PATCH), phones and
// family, one timeline of calls, notes and transactions with the forms that add to it,
// and, for admins, the 変更履歴 (GET /api/admin/audit). The routes are those of
// docs/protocol.md; the view knows nothing of the board or sockets.
//
// Search: each keystroke waits SEARCH_DEBOUNCE_MS, then asks the server; the request
// before it is aborted, and an answer that is not the newest is dropped, so what is
// shown always belongs to what is typed. Editing: what someone typed is never lost —
// a failed save leaves the editor open with the text and the server's reason beside it.
// Customer data reaches the page only as text (el() / textContent, see card.js); the
// matched part of a result is marked with a <mark> made from text nodes, not markup.

import { t } from "./i18n.js";
import { el } from "./card.js";
import { outcomeLabel } from "./calllog.js";
import { detailText, formatDate, formatTime, formatYen } from "./format.js";
import { talkText } from "./notes.js";

export const SEARCH_DEBOUNCE_MS = 120;
export const SEARCH_LIMIT = 20;
export const TIMELINE_PAGE = 50;
export const AUDIT_PAGE = 50;
export const PHONE_LABELS = ["自宅", "携帯", "会社", "FAX", "その他"];
// The kinds a note written by hand can have (a call's note is written from the pop).
export const NOTE_KINDS = ["visit", "email", "call", "other"];

// The customer's fields editable in place, in the order the header lists them.
// kind: text | long (textarea, Ctrl+Enter saves) | date | tags | staff (a select).
const FIELDS = [
  { key: "name", kind: "text", required: true },
  { key: "furigana", kind: "text" },
  { key: "honorific", kind: "text" },
  { key: "company", kind: "text" },
  { key: "department", kind: "text" },
  { key: "code", kind: "text" },
  { key: "rank", kind: "text" },
  { key: "tags", kind: "tags" },
  { key: "assigned_staff_id", kind: "staff" },
  { key: "contact_hours", kind: "text" },
  { key: "preferences", kind: "long" },
  { key: "birthday", kind: "date" },
  { key: "next_follow_up_on", kind: "date" },
  { key: "postal_code", kind: "text" },
  { key: "address", kind: "long" },
  { key: "email", kind: "text" },
  { key: "memo", kind: "long" },
];

// --- pure helpers (no DOM) ---------------------------------------------------------

/** Yen typed as people type it (58,000 / ５８０００ / ¥58000円) → {ok, value}; "" → null. */
export function parseYen(text) {
  const plain = String(text ?? "")
    .normalize("NFKC")
    .replace(/[\s,¥円]/g, "");
  if (plain === "") return { ok: true, value: null };
  if (!/^-?\d+$/.test(plain)) return { ok: false, value: null };
  const value = Number(plain);
  return Number.isSafeInteger(value) ? { ok: true, value } : { ok: false, value: null };
}

/** Today in Tokyo, YYYY-MM-DD (the default date of a new transaction). */
export function todayTokyo() {
  return formatDate(new Date().toISOString());
}

/** One character folded the way search matches: NFKC, lower case, katakana → hiragana. */
function foldChar(ch) {
  return ch
    .normalize("NFKC")
    .toLowerCase()
    .replace(/[\u30a1-\u30f6]/g, (k) => String.fromCharCode(k.charCodeAt(0) - 0x60));
}

/**
 * Where `query` occurs in `text`, as the server matches (spaces ignored, kana folded; for
 * phones digits only): [start, end) in `text`, or null. Used only to mark the match.
 */
export function matchRange(text, query, { digits = false } = {}) {
  const source = String(text ?? "");
  let wanted = foldChar(String(query ?? "")).replace(/\s+/g, "");
  if (digits) wanted = wanted.replace(/\D/g, "");
  if (!source || !wanted) return null;
  let folded = "";
  const at = [];
  for (let i = 0; i < source.length; i += 1) {
    let part = foldChar(source[i]).replace(/\s+/g, "");
    if (digits) part = part.replace(/\D/g, "");
    for (const ch of part) {
      folded += ch;
      at.push(i);
    }
  }
  const start = folded.indexOf(wanted);
  if (start < 0) return null;
  return [at[start], at[start + wanted.length - 1] + 1];
}

/** A random key for a note save that a retry sends again (randomUUID needs https). */
function newKey() {
  const bytes = new Uint8Array(16);
  window.crypto.getRandomValues(bytes);
  return `c-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

/** 山田 太郎 様 (the customer's own honorific, 様 unless set); the name alone in English. */
export function customerName(customer) {
  if (!customer) return "";
  return t("customers.named", { name: customer.name || "", honorific: customer.honorific || "様" });
}

function staffText(staff) {
  if (!staff || !staff.name) return "";
  return staff.extension ? t("customer.staffExt", { name: staff.name, ext: staff.extension }) : staff.name;
}

function phoneNumber(phone) {
  return (phone && (phone.national || phone.raw || phone.number)) || "";
}

/** Why a request failed, for the line beside what was being done: the server's words. */
function errorText(answer, whatKey) {
  if (!answer) return t("customers.unreachable");
  return t("customers.failedWith", { what: t(whatKey), detail: detailText(answer.data, answer.status) });
}

function isOk(answer) {
  return Boolean(answer) && answer.status >= 200 && answer.status < 300;
}

/** A type=button with a class, its words and attributes (data-key, data-testid …). */
function button(className, text, attrs = {}) {
  return el("button", { className, text, attrs: { type: "button", ...attrs } });
}

/** Text with the [start, end) part in <mark> (text nodes only). */
function marked(text, range) {
  const value = String(text ?? "");
  if (!range) return [document.createTextNode(value)];
  return [
    document.createTextNode(value.slice(0, range[0])),
    el("mark", { text: value.slice(range[0], range[1]) }),
    document.createTextNode(value.slice(range[1])),
  ];
}

/** A value as the audit shows it: text, a list joined, "—" for nothing. */
function auditValue(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (Array.isArray(value)) return value.length ? value.map(String).join("、") : "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** The fields whose value an audit entry changed: [{field, before, after}]. */
export function auditChanges(entry) {
  const before = (entry && entry.before) || {};
  const after = (entry && entry.after) || {};
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])];
  const skip = new Set(["id", "customer_id", "created_at", "updated_at", "deleted_at", "search_text", "search_digits"]);
  return keys
    .filter((key) => !skip.has(key) && JSON.stringify(before[key] ?? null) !== JSON.stringify(after[key] ?? null))
    .map((key) => ({ field: key, before: before[key], after: after[key] }));
}

// --- the view ------------------------------------------------------------------------

export class CustomersView {
  /**
   * api(method, path, body) -> {status, data}; root: the view's <main>; navigate(view,
   * params) opens a view; me() the logged-in staff member (admins see 変更履歴).
   */
  constructor({ api, root, navigate, me }) {
    this.api = api;
    this.root = root;
    this.navigate = navigate || (() => {});
    this.me = typeof me === "function" ? me : () => null;
    this.words = []; // [node, key, attr]: fixed words, set again when the language changes
    this.build();
    this.reset();
  }

  // --- words --------------------------------------------------------------------

  /** Put t(key) into node (its text, or attribute attr) now and on every render(). */
  word(node, key, attr = null) {
    this.words.push([node, key, attr]);
    if (attr) node.setAttribute(attr, t(key));
    else node.textContent = t(key);
    return node;
  }

  // --- the DOM built once --------------------------------------------------------

  build() {
    this.words = [];
    // Search
    this.heading = this.word(el("h2", { className: "section-title", attrs: { id: "customers-heading" } }), "customers.heading");
    this.newButton = this.word(
      el("button", { className: "cu-button cu-new", attrs: { type: "button", "data-testid": "customer-new" } }),
      "customers.new",
    );
    this.input = el("input", {
      className: "cu-search-input",
      attrs: {
        id: "customers-q",
        type: "search",
        role: "combobox",
        autocomplete: "off",
        spellcheck: "false",
        "aria-autocomplete": "list",
        "aria-controls": "customers-results",
        "aria-expanded": "false",
        "data-testid": "customer-search",
      },
    });
    this.word(this.input, "customers.searchHint", "placeholder");
    const searchLabel = this.word(el("label", { className: "cu-search-label", attrs: { for: "customers-q" } }), "customers.searchLabel");
    this.status = el("p", { className: "cu-status", attrs: { role: "status", "data-testid": "customer-search-status" } });
    this.results = el("ul", {
      className: "cu-results",
      attrs: { id: "customers-results", role: "listbox", "data-testid": "customer-results" },
    });
    this.word(this.results, "customers.resultsLabel", "aria-label");
    this.createForm = this.buildCreateForm();
    this.searchSection = el("section", { className: "cu-search", attrs: { "data-testid": "customer-search-view" } }, [
      el("div", { className: "cu-head" }, [this.heading, this.newButton]),
      el("div", { className: "cu-search-box" }, [searchLabel, this.input]),
      this.createForm,
      this.status,
      this.results,
    ]);
    // Page
    this.pageSection = el("section", { className: "cu-page", attrs: { "data-testid": "customer-page" } });
    this.dialog = this.buildDialog();
    this.root.replaceChildren(this.searchSection, this.pageSection, this.dialog);
    this.root.setAttribute("aria-labelledby", "customers-heading");

    this.input.addEventListener("input", () => {
      this.notice = "";
      this.scheduleSearch();
    });
    this.input.addEventListener("keydown", (event) => this.onSearchKey(event));
    this.newButton.addEventListener("click", () => this.openCreate());
  }

  /** 新規顧客: name (required), furigana, company, one phone with its label. */
  buildCreateForm() {
    const form = el("form", { className: "cu-form cu-create", attrs: { "data-testid": "customer-create", novalidate: "" } });
    const fields = {
      name: this.input_("cu-new-name", "customers.field.name", { required: true }),
      furigana: this.input_("cu-new-furigana", "customers.field.furigana"),
      company: this.input_("cu-new-company", "customers.field.company"),
      phone: this.input_("cu-new-phone", "customers.phone.number", { type: "tel" }),
      label: this.labelSelect("cu-new-label"),
    };
    const error = el("p", { className: "cu-error", attrs: { role: "alert", "data-testid": "customer-create-error" } });
    error.hidden = true;
    const save = this.word(
      el("button", { className: "cu-button cu-primary", attrs: { type: "submit", "data-testid": "customer-create-save" } }),
      "customers.create",
    );
    const cancel = this.word(el("button", { className: "cu-button", attrs: { type: "button" } }), "customers.cancel");
    form.append(
      this.word(el("h3", { className: "cu-form-title" }), "customers.new"),
      el("div", { className: "cu-form-grid" }, [
        fields.name.label,
        fields.furigana.label,
        fields.company.label,
        fields.phone.label,
        fields.label.label,
      ]),
      error,
      el("div", { className: "cu-form-buttons" }, [save, cancel]),
    );
    form.hidden = true;
    this.create = { form, fields, error, save };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submitCreate();
    });
    cancel.addEventListener("click", () => this.closeCreate());
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        this.closeCreate();
      }
    });
    return form;
  }

  /** A labelled input: {label (the <label> holding it), input}. */
  input_(id, key, { type = "text", required = false, testid = null } = {}) {
    const input = el("input", { attrs: { id, type, autocomplete: "off", "data-testid": testid || id } });
    if (required) input.required = true;
    if (type === "tel") input.setAttribute("inputmode", "tel");
    const text = this.word(el("span", { className: "cu-label-text" }), key);
    const label = el("label", { className: "cu-field", attrs: { for: id } }, [text, input]);
    if (required) label.classList.add("required");
    return { label, input };
  }

  labelSelect(id) {
    const select = el("select", { attrs: { id, "data-testid": id } });
    for (const value of PHONE_LABELS) {
      select.append(this.word(el("option", { attrs: { value } }), `customers.phoneLabel.${value}`));
    }
    const text = this.word(el("span", { className: "cu-label-text" }), "customers.phone.label");
    return { label: el("label", { className: "cu-field", attrs: { for: id } }, [text, select]), input: select };
  }

  /** One <dialog> for every 削除 question (Escape or キャンセル says no). */
  buildDialog() {
    const dialog = el("dialog", { className: "cu-dialog", attrs: { "data-testid": "customer-confirm" } });
    this.dialogText = el("p", { className: "cu-dialog-text" });
    this.dialogYes = el("button", { className: "cu-button cu-danger", attrs: { type: "button", "data-testid": "confirm-yes" } });
    this.dialogNo = this.word(el("button", { className: "cu-button", attrs: { type: "button", "data-testid": "confirm-no" } }), "customers.cancel");
    dialog.append(this.dialogText, el("div", { className: "cu-form-buttons" }, [this.dialogYes, this.dialogNo]));
    return dialog;
  }

  /** Ask before deleting; resolves true for yes. */
  confirm(text, yesKey) {
    return new Promise((resolve) => {
      const dialog = this.dialog;
      const back = document.activeElement;
      this.dialogText.textContent = text;
      this.dialogYes.textContent = t(yesKey);
      const done = (answer) => {
        this.dialogYes.onclick = null;
        this.dialogNo.onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        if (back && back.isConnected) back.focus();
        resolve(answer);
      };
      this.dialogYes.onclick = () => done(true);
      this.dialogNo.onclick = () => done(false);
      dialog.onclose = () => done(false);
      if (!dialog.open) dialog.showModal();
      this.dialogNo.focus();
    });
  }

  // --- life cycle ----------------------------------------------------------------------

  /** Everything back to empty (logged out, or just built). */
  reset() {
    this.generation = (this.generation || 0) + 1; // answers for what was shown before are dropped
    if (this.controller) this.controller.abort();
    window.clearTimeout(this.searchTimer);
    this.controller = null;
    this.searchTimer = null;
    this.searchSeq = (this.searchSeq || 0) + 1;
    this.hits = [];
    this.query = "";
    this.truncated = false;
    this.searchError = "";
    this.searching = false;
    this.searched = false;
    this.active = -1;
    this.notice = "";
    this.customer = null;
    this.timeline = [];
    this.timelineNext = null;
    this.timelineMore = false;
    this.timelineError = "";
    this.pageError = "";
    this.editors = new Map(); // field key -> its open editor (kept across redraws)
    this.drafts = new Map(); // phone / family add forms: what is typed, per customer
    this.forms = new Map(); // transaction / note forms: what is typed, per customer
    this.staff = null; // GET /api/staff, once per page
    this.audit = null;
    this.mode = "search";
    this.input.value = "";
    for (const { input } of Object.values(this.create.fields)) input.value = input.tagName === "SELECT" ? PHONE_LABELS[0] : "";
    this.create.form.hidden = true;
    this.create.error.hidden = true;
    this.results.replaceChildren();
    this.pageSection.replaceChildren();
    if (this.dialog.open) this.dialog.close();
    this.show();
  }

  /** Logged out: no customer data may stay in the page. */
  clear() {
    this.reset();
  }

  /** Shown: the search ({}), or the page of customer `id`. */
  load(params = {}) {
    const id = Number(params && params.id);
    if (Number.isSafeInteger(id) && id > 0) {
      this.openPage(id);
      return;
    }
    this.mode = "search";
    this.show();
    this.input.focus();
    this.runSearch(); // the newest state of what is typed (or the recently updated)
  }

  show() {
    this.searchSection.hidden = this.mode !== "search";
    this.pageSection.hidden = this.mode !== "page";
    this.root.dataset.mode = this.mode;
  }

  /** The language changed: every word again, the results and the page redrawn. */
  render() {
    // The fixed words belong to the search box, the 新規顧客 form and the dialog, which
    // stay in the view for good; the page is drawn from its data, in the new language.
    for (const [node, key, attr] of this.words) {
      if (attr) node.setAttribute(attr, t(key));
      else node.textContent = t(key);
    }
    this.drawResults();
    if (this.customer) this.drawPage();
  }

  // --- search -----------------------------------------------------------------------------

  scheduleSearch() {
    window.clearTimeout(this.searchTimer);
    this.searchTimer = window.setTimeout(() => this.runSearch(), SEARCH_DEBOUNCE_MS);
  }

  async runSearch() {
    window.clearTimeout(this.searchTimer);
    this.searchTimer = null;
    const query = this.input.value.trim();
    const seq = ++this.searchSeq;
    if (this.controller) this.controller.abort();
    const controller = new AbortController();
    this.controller = controller;
    this.searching = true;
    this.root.dataset.search = "loading";
    this.drawStatus();
    const params = new URLSearchParams({ q: query, limit: String(SEARCH_LIMIT) });
    let answer = null;
    try {
      const response = await fetch(`/api/customers?${params}`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
        signal: controller.signal,
      });
      let data = null;
      try {
        data = await response.json();
      } catch {
        data = null;
      }
      answer = { status: response.status, data };
    } catch (error) {
      if (error && error.name === "AbortError") return; // a newer search took over
      answer = null;
    }
    if (seq !== this.searchSeq) return; // stale: a newer search is on its way
    this.controller = null;
    this.searching = false;
    this.searched = true;
    this.query = query;
    if (answer && answer.status === 200 && answer.data && Array.isArray(answer.data.results)) {
      this.hits = answer.data.results;
      this.truncated = Boolean(answer.data.truncated);
      this.searchError = "";
    } else {
      this.hits = [];
      this.truncated = false;
      this.searchError = answer
        ? t("customers.searchFailed", { detail: detailText(answer.data, answer.status) })
        : t("customers.unreachable");
    }
    this.active = -1;
    this.root.dataset.search = "ready";
    this.drawResults();
  }

  drawStatus() {
    let text = "";
    let kind = "";
    if (this.searchError) {
      text = this.searchError;
      kind = "error";
    } else if (this.notice) {
      text = this.notice; // 山田 太郎 様を削除しました
    } else if (this.searched && this.hits.length === 0 && this.query) {
      text = t("customers.noMatch");
    } else if (this.searched && this.hits.length === 0) {
      text = t("customers.none");
    } else if (this.truncated) {
      text = t("customers.truncated", { count: this.hits.length });
    } else if (this.searching && !this.searched) {
      text = t("customers.loading");
    } else if (this.searched && !this.query && this.hits.length) {
      text = t("customers.recent");
    }
    this.status.textContent = text;
    this.status.hidden = !text;
    this.status.classList.toggle("cu-error", kind === "error");
  }

  drawResults() {
    this.drawStatus();
    this.results.replaceChildren(...this.hits.map((hit, index) => this.hitItem(hit, index)));
    this.input.setAttribute("aria-expanded", this.hits.length ? "true" : "false");
    this.markActive();
  }

  hitItem(hit, index) {
    const matched = hit.matched || "";
    const mark = (field, text, opts) => marked(text, matched === field ? matchRange(text, this.query, opts) : null);
    const head = el("div", { className: "hit-head" });
    if (hit.furigana) {
      head.append(el("span", { className: "hit-furigana", attrs: { "data-testid": "hit-furigana" } }, mark("furigana", hit.furigana)));
    }
    const name = el("span", { className: "hit-name", attrs: { "data-testid": "hit-name" } }, mark("name", hit.name));
    const honorific = customerName(hit).slice(String(hit.name || "").length);
    if (honorific) name.append(el("span", { className: "hit-honorific", text: honorific }));
    head.append(name);
    const org = [hit.company, hit.department].filter(Boolean);
    const item = el("li", {
      className: "cu-hit",
      attrs: {
        id: `customers-hit-${index}`,
        role: "option",
        "aria-selected": "false",
        "data-testid": "customer-hit",
        "data-customer-id": hit.id,
      },
    });
    item.append(head);
    if (org.length || hit.code) {
      const line = el("div", { className: "hit-org" });
      if (hit.company) line.append(el("span", {}, mark("company", hit.company)));
      if (hit.department) line.append(el("span", { text: hit.department }));
      if (hit.code) line.append(el("span", { className: "hit-code" }, [document.createTextNode("No. "), ...mark("code", hit.code)]));
      item.append(line);
    }
    const meta = el("div", { className: "hit-meta" });
    if (hit.rank) meta.append(el("span", { className: "cu-chip cu-rank", text: t("customer.rank", { rank: hit.rank }) }));
    for (const tag of Array.isArray(hit.tags) ? hit.tags : []) meta.append(el("span", { className: "cu-chip", text: tag }));
    if (hit.assigned_staff) meta.append(el("span", { className: "hit-staff", text: t("customers.staffShort", { who: staffText(hit.assigned_staff) }) }));
    if (meta.childNodes.length) item.append(meta);
    const phones = Array.isArray(hit.phones) ? hit.phones : [];
    if (phones.length) {
      item.append(
        el(
          "div",
          { className: "hit-phones" },
          phones.map((phone) =>
            el("span", { className: "hit-phone" }, [
              phone.label ? el("span", { className: "hit-phone-label", text: phone.label }) : null,
              el("span", { className: "hit-phone-number" }, mark("phone", phoneNumber(phone), { digits: true })),
            ]),
          ),
        ),
      );
    }
    if (hit.email && matched === "email") item.append(el("div", { className: "hit-email" }, mark("email", hit.email)));
    item.addEventListener("click", () => this.open(hit.id));
    item.addEventListener("mousemove", () => {
      if (this.active !== index) {
        this.active = index;
        this.markActive();
      }
    });
    return item;
  }

  markActive() {
    const items = this.results.children;
    for (let i = 0; i < items.length; i += 1) {
      const on = i === this.active;
      items[i].setAttribute("aria-selected", on ? "true" : "false");
      items[i].classList.toggle("active", on);
      if (on) items[i].scrollIntoView({ block: "nearest" });
    }
    if (this.active >= 0 && items[this.active]) this.input.setAttribute("aria-activedescendant", items[this.active].id);
    else this.input.removeAttribute("aria-activedescendant");
  }

  onSearchKey(event) {
    if (event.isComposing) return; // the IME is choosing kanji: its Enter is not ours
    const count = this.hits.length;
    if (event.key === "ArrowDown" && count) {
      event.preventDefault();
      this.active = (this.active + 1) % count;
      this.markActive();
    } else if (event.key === "ArrowUp" && count) {
      event.preventDefault();
      this.active = this.active <= 0 ? count - 1 : this.active - 1;
      this.markActive();
    } else if (event.key === "Enter") {
      event.preventDefault();
      const hit = this.hits[this.active] || (count === 1 ? this.hits[0] : null);
      if (hit) this.open(hit.id);
      else this.runSearch();
    } else if (event.key === "Escape") {
      event.preventDefault();
      event.stopPropagation();
      this.input.value = "";
      this.notice = "";
      this.runSearch();
    }
  }

  open(id) {
    this.navigate("customers", { id });
  }

  // --- 新規顧客 ---------------------------------------------------------------------------

  openCreate() {
    const { form, fields, error } = this.create;
    form.hidden = false;
    error.hidden = true;
    // What was typed into the search box is most likely the new customer's name.
    const typed = this.input.value.trim();
    if (!fields.name.input.value && typed) {
      if (/^[0-9０-９+\-ー－()（） ]+$/.test(typed)) fields.phone.input.value = typed;
      else fields.name.input.value = typed;
    }
    fields.name.input.focus();
  }

  closeCreate() {
    this.create.form.hidden = true;
    this.newButton.focus();
  }

  async submitCreate() {
    const { fields, error, save } = this.create;
    const name = fields.name.input.value.trim();
    if (!name) {
      error.textContent = t("customers.nameRequired");
      error.hidden = false;
      fields.name.input.focus();
      return;
    }
    const body = { name };
    for (const key of ["furigana", "company"]) {
      const value = fields[key].input.value.trim();
      if (value) body[key] = value;
    }
    const number = fields.phone.input.value.trim();
    if (number) body.phones = [{ number, label: fields.label.input.value }];
    save.disabled = true;
    const generation = this.generation;
    let answer = null;
    try {
      answer = await this.api("POST", "/api/customers", body);
    } catch {
      answer = null;
    }
    save.disabled = false;
    if (generation !== this.generation) return;
    if (isOk(answer) && answer.data && answer.data.id) {
      for (const { input } of Object.values(fields)) input.value = input.tagName === "SELECT" ? PHONE_LABELS[0] : "";
      error.hidden = true;
      this.create.form.hidden = true;
      this.open(answer.data.id);
      return;
    }
    error.textContent = errorText(answer, "customers.createWhat");
    error.hidden = false;
  }

  // --- the customer's page ------------------------------------------------------------------

  async openPage(id) {
    const generation = ++this.generation;
    this.mode = "page";
    this.show();
    if (!this.customer || this.customer.id !== id) {
      this.customer = null;
      this.editors = new Map();
      this.audit = null;
      this.timeline = [];
      this.pageSection.replaceChildren(el("p", { className: "cu-status", text: t("customers.loading") }));
    }
    this.root.dataset.page = "loading";
    const answer = await this.call("GET", `/api/customers/${id}`);
    if (generation !== this.generation) return;
    if (!(answer && answer.status === 200 && answer.data)) {
      this.customer = null;
      const text = answer && answer.status === 404 ? t("customers.notFound") : errorText(answer, "customers.loadWhat");
      this.pageSection.replaceChildren(
        this.backButton(),
        el("p", { className: "cu-status cu-error", text, attrs: { role: "alert", "data-testid": "customer-page-error" } }),
      );
      this.root.dataset.page = "error";
      return;
    }
    const fresh = !this.customer;
    this.setCustomer(answer.data);
    this.drawPage();
    this.root.dataset.page = "ready";
    if (fresh) this.pageSection.querySelector(".cu-title")?.focus();
    this.loadStaff(generation);
    this.loadAudit(generation);
  }

  /** The customer's record as the server returned it; the timeline starts over from it. */
  setCustomer(data) {
    this.customer = data;
    this.timeline = Array.isArray(data.timeline) ? [...data.timeline] : [];
    this.timelineMore = Boolean(data.timeline_more);
    this.timelineNext = null;
    this.timelineError = "";
  }

  async call(method, path, body) {
    try {
      return await this.api(method, path, body);
    } catch {
      return null;
    }
  }

  async loadStaff(generation) {
    if (this.staff) return;
    const answer = await this.call("GET", "/api/staff");
    if (generation !== this.generation) return;
    if (answer && answer.status === 200 && answer.data && Array.isArray(answer.data.staff)) {
      this.staff = answer.data.staff;
      this.drawStaffSelects();
    }
  }

  isAdmin() {
    const me = this.me();
    return Boolean(me && me.role === "admin");
  }

  backButton() {
    const back = el("button", { className: "cu-back", attrs: { type: "button", "data-testid": "customer-back" }, text: t("customers.back") });
    back.addEventListener("click", () => this.navigate("customers", {}));
    return back;
  }

  drawPage() {
    const c = this.customer;
    if (!c) return;
    const focusKey = document.activeElement && this.pageSection.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    const header = this.headerCard(c);
    const left = el("div", { className: "cu-col cu-col-facts" }, [header, this.phonesCard(c), this.familyCard(c), this.dangerCard(c)]);
    const right = el("div", { className: "cu-col cu-col-history" }, [this.timelineCard()]);
    if (this.isAdmin()) right.append(this.auditCard());
    this.pageSection.replaceChildren(
      el("div", { className: "cu-page-top" }, [this.backButton()]),
      el("div", { className: "cu-page-grid" }, [left, right]),
    );
    this.drawStaffSelects();
    if (focusKey) {
      const again = this.pageSection.querySelector(`[data-key="${CSS.escape(focusKey)}"]`);
      if (again) again.focus();
    }
  }

  headerCard(c) {
    const title = el("h2", { className: "cu-title", attrs: { tabindex: "-1", "data-testid": "customer-title" } });
    if (c.furigana) title.append(el("span", { className: "cu-furigana", text: c.furigana, attrs: { "data-testid": "customer-furigana" } }));
    title.append(el("span", { className: "cu-name", text: customerName(c), attrs: { "data-testid": "customer-name" } }));
    const chips = el("div", { className: "cu-chips" });
    if (c.code) chips.append(el("span", { className: "cu-chip cu-code", text: `No. ${c.code}` }));
    if (c.rank) chips.append(el("span", { className: "cu-chip cu-rank", text: t("customer.rank", { rank: c.rank }) }));
    for (const tag of Array.isArray(c.tags) ? c.tags : []) chips.append(el("span", { className: "cu-chip", text: tag }));
    const org = [c.company, c.department].filter(Boolean).join(" ");
    const staff = c.assigned_staff ? t("customers.staffShort", { who: staffText(c.assigned_staff) }) : t("customer.noAssigned");
    const card = el("section", { className: "cu-card cu-header", attrs: { "data-testid": "customer-header" } }, [
      title,
      org ? el("p", { className: "cu-org", text: org }) : null,
      chips.childNodes.length ? chips : null,
      el("p", { className: "cu-staff", text: staff, attrs: { "data-testid": "customer-staff" } }),
    ]);
    if (c.next_follow_up_on) {
      card.append(el("p", { className: "cu-follow", text: t("customers.followUpOn", { date: formatDate(c.next_follow_up_on) }) }));
    }
    const list = el("dl", { className: "cu-fields" });
    for (const field of FIELDS) list.append(this.fieldRow(field, c));
    card.append(list);
    return card;
  }

  /** What a field shows as text. */
  fieldText(field, c) {
    if (field.kind === "staff") return staffText(c.assigned_staff);
    const value = c[field.key];
    if (field.kind === "tags") return Array.isArray(value) ? value.join("、") : "";
    if (field.kind === "date") return formatDate(value || "");
    return value === null || value === undefined ? "" : String(value);
  }

  fieldRow(field, c) {
    const label = t(`customers.field.${field.key}`);
    const row = el("div", { className: `cu-row cu-row-${field.kind}`, attrs: { "data-field": field.key, "data-testid": `field-${field.key}` } });
    row.append(el("dt", { text: label }));
    const dd = el("dd");
    const open = this.editors.get(field.key);
    if (open) {
      dd.append(open.element);
    } else {
      const text = this.fieldText(field, c);
      dd.append(el("span", { className: text ? "cu-value" : "cu-value cu-empty", text: text || "—", attrs: { "data-testid": "field-value" } }));
      const edit = el("button", {
        className: "cu-edit",
        text: t("customers.edit"),
        attrs: { type: "button", "aria-label": t("customers.editField", { field: label }), "data-key": `edit-${field.key}`, "data-testid": "field-edit" },
      });
      edit.addEventListener("click", () => this.startEdit(field));
      dd.append(edit);
    }
    row.append(dd);
    return row;
  }

  startEdit(field) {
    const c = this.customer;
    if (!c || this.editors.has(field.key)) return;
    const id = `cu-edit-${field.key}`;
    let input;
    if (field.kind === "long") {
      input = el("textarea", { attrs: { id, rows: "3" } });
      input.value = c[field.key] || "";
    } else if (field.kind === "staff") {
      input = el("select", { attrs: { id, "data-staff-select": "" } });
      input.dataset.value = c.assigned_staff ? String(c.assigned_staff.id) : "";
    } else {
      input = el("input", { attrs: { id, type: field.kind === "date" ? "date" : "text", autocomplete: "off" } });
      input.value = field.kind === "tags" ? (Array.isArray(c.tags) ? c.tags.join(", ") : "") : field.kind === "date" ? c[field.key] || "" : c[field.key] || "";
    }
    input.setAttribute("data-testid", "field-input");
    input.setAttribute("aria-label", t(`customers.field.${field.key}`));
    const save = el("button", { className: "cu-button cu-primary", text: t("customers.save"), attrs: { type: "button", "data-testid": "field-save" } });
    const cancel = el("button", { className: "cu-button", text: t("customers.cancel"), attrs: { type: "button", "data-testid": "field-cancel" } });
    const error = el("p", { className: "cu-error", attrs: { role: "alert", "data-testid": "field-error" } });
    error.hidden = true;
    const hint = el("span", { className: "cu-hint", text: t(field.kind === "long" ? "customers.hintLong" : "customers.hintShort") });
    const element = el("div", { className: "cu-editor" }, [input, el("div", { className: "cu-editor-buttons" }, [save, cancel, hint]), error]);
    const editor = { field, element, input, error, save, busy: false };
    this.editors.set(field.key, editor);
    save.addEventListener("click", () => this.saveEdit(editor));
    cancel.addEventListener("click", () => this.cancelEdit(editor));
    input.addEventListener("keydown", (event) => {
      if (event.isComposing) return;
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        this.cancelEdit(editor);
      } else if (event.key === "Enter" && (field.kind !== "long" || event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.saveEdit(editor);
      }
    });
    this.redrawRow(field.key);
    if (field.kind === "staff") this.drawStaffSelects();
    input.focus();
    if (input.select && field.kind !== "staff" && field.kind !== "date") input.select();
  }

  redrawRow(key) {
    const row = this.pageSection.querySelector(`.cu-row[data-field="${key}"]`);
    const field = FIELDS.find((f) => f.key === key);
    if (row && field && this.customer) row.replaceWith(this.fieldRow(field, this.customer));
  }

  cancelEdit(editor) {
    this.editors.delete(editor.field.key);
    this.redrawRow(editor.field.key);
    this.focusEditButton(editor.field.key);
  }

  focusEditButton(key) {
    const button = this.pageSection.querySelector(`[data-key="edit-${key}"]`);
    if (button) button.focus();
  }

  /** The value an editor sends: trimmed text, "" as null (clears), tags as a list. */
  editValue(editor) {
    const { field, input } = editor;
    const raw = input.value;
    if (field.kind === "staff") return raw ? Number(raw) : null;
    if (field.kind === "tags") {
      return raw
        .split(/[,、，\n]+/)
        .map((s) => s.trim())
        .filter(Boolean);
    }
    const value = field.kind === "long" ? raw.replace(/\s+$/, "") : raw.trim();
    return value === "" ? null : value;
  }

  async saveEdit(editor) {
    if (editor.busy || !this.customer) return;
    const { field, error, save } = editor;
    const value = this.editValue(editor);
    if (field.required && !value) {
      error.textContent = t("customers.nameRequired");
      error.hidden = false;
      return;
    }
    editor.busy = true;
    save.disabled = true;
    const id = this.customer.id;
    const generation = this.generation;
    const answer = await this.call("PATCH", `/api/customers/${id}`, { [field.key]: value });
    editor.busy = false;
    save.disabled = false;
    if (generation !== this.generation || !this.customer || this.customer.id !== id) return;
    if (answer && answer.status === 200 && answer.data) {
      this.editors.delete(field.key);
      this.mergeCustomer(answer.data);
      this.drawPage();
      this.focusEditButton(field.key);
      this.loadAudit(this.generation);
      return;
    }
    // Nothing typed is lost: the editor stays open with the text and the reason.
    error.textContent = errorText(answer, "customers.saveWhat");
    error.hidden = false;
    editor.input.focus();
  }

  /** A PATCH answer: the record's fields, keeping the timeline we already show. */
  mergeCustomer(data) {
    const timeline = this.timeline;
    const more = this.timelineMore;
    const next = this.timelineNext;
    this.customer = { ...this.customer, ...data };
    this.timeline = timeline;
    this.timelineMore = more;
    this.timelineNext = next;
  }

  /** Fill every 担当者 select (in the field editor and the transaction form). */
  drawStaffSelects() {
    const me = this.me();
    for (const select of this.pageSection.querySelectorAll("select[data-staff-select]")) {
      const wanted = select.dataset.value ?? (select.value || "");
      const options = [el("option", { attrs: { value: "" }, text: t("customers.noStaff") })];
      const list = this.staff || [];
      const ids = new Set(list.map((s) => String(s.id)));
      for (const person of list) options.push(el("option", { attrs: { value: person.id }, text: staffText(person) }));
      // Until the list is in (or when they left), the current value still shows.
      if (wanted && !ids.has(wanted) && me && String(me.id) === wanted) {
        options.push(el("option", { attrs: { value: wanted }, text: staffText(me) }));
      } else if (wanted && !ids.has(wanted) && this.customer?.assigned_staff && String(this.customer.assigned_staff.id) === wanted) {
        options.push(el("option", { attrs: { value: wanted }, text: staffText(this.customer.assigned_staff) }));
      }
      select.replaceChildren(...options);
      select.value = wanted;
      delete select.dataset.value;
    }
  }

  // --- phones -----------------------------------------------------------------------------

  phonesCard(c) {
    const phones = Array.isArray(c.phones) ? c.phones : [];
    const list = el("ul", { className: "cu-list cu-phones", attrs: { "data-testid": "customer-phones" } });
    for (const phone of phones) {
      const item = el("li", { className: "cu-phone", attrs: { "data-testid": "customer-phone", "data-phone-id": phone.id } });
      const text = el("div", { className: "cu-phone-text" }, [
        phone.label ? el("span", { className: "cu-phone-label", text: phone.label }) : null,
        el("span", { className: "cu-phone-number", text: phoneNumber(phone) }),
        phone.owner_name ? el("span", { className: "cu-phone-owner", text: t("customer.phoneOwner", { owner: phone.owner_name }) }) : null,
      ]);
      item.append(text);
      const shared = Array.isArray(phone.shared_with) ? phone.shared_with : [];
      if (shared.length) {
        const line = el("div", { className: "cu-shared", attrs: { "data-testid": "phone-shared" } }, [el("span", { text: t("customers.sharedWith") })]);
        shared.forEach((other, i) => {
          if (i) line.append(document.createTextNode("、"));
          line.append(this.customerLink(other));
        });
        item.append(line);
      }
      const remove = button("cu-link-button cu-delete", t("customers.delete"), {
        "aria-label": t("customers.deletePhone", { number: phoneNumber(phone) }),
        "data-key": `phone-del-${phone.id}`,
        "data-testid": "phone-delete",
      });
      remove.addEventListener("click", () => this.deleteChild("phones", phone.id, t("customers.confirmPhone", { number: phoneNumber(phone) })));
      item.append(remove);
      list.append(item);
    }
    if (!phones.length) list.append(el("li", { className: "cu-empty", text: t("customers.noPhones") }));
    const form = this.childForm("phone", [
      { key: "number", type: "tel", labelKey: "customers.phone.number", required: true },
      { key: "label", type: "phoneLabel", labelKey: "customers.phone.label" },
      { key: "owner_name", type: "text", labelKey: "customers.phone.owner" },
    ], (values) => this.addChild("phones", values), "customers.phone.add");
    return el("section", { className: "cu-card" }, [el("h3", { className: "cu-card-title", text: t("customers.phones") }), list, form]);
  }

  customerLink(other) {
    const link = el("a", {
      className: "cu-customer-link",
      text: t("customers.named", { name: other.name, honorific: other.honorific || "様" }),
      attrs: { href: `#/customers/${encodeURIComponent(other.id)}` },
    });
    link.addEventListener("click", (event) => {
      if (event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) return;
      event.preventDefault();
      this.open(other.id);
    });
    return link;
  }

  /**
   * A small add form (phone, family member) behind a button; its typed values survive a
   * redraw of the page (kept in this.drafts) and a failed save.
   */
  childForm(name, specs, submit, buttonKey) {
    this.drafts = this.drafts || new Map();
    let draft = this.drafts.get(name);
    if (!draft || draft.customerId !== this.customer.id) {
      draft = { customerId: this.customer.id, open: false, values: {}, error: "" };
      this.drafts.set(name, draft);
    }
    const toggle = button("cu-button cu-add", t(buttonKey), {
      "aria-expanded": draft.open ? "true" : "false",
      "data-key": `add-${name}`,
      "data-testid": `${name}-add`,
    });
    const form = el("form", { className: "cu-form cu-child-form", attrs: { "data-testid": `${name}-form`, novalidate: "" } });
    const inputs = {};
    const grid = el("div", { className: "cu-form-grid" });
    for (const spec of specs) {
      const id = `cu-${name}-${spec.key}`;
      let input;
      if (spec.type === "phoneLabel") {
        const options = PHONE_LABELS.map((v) => el("option", { attrs: { value: v }, text: t(`customers.phoneLabel.${v}`) }));
        input = el("select", { attrs: { id, "data-testid": id } }, options);
      } else {
        input = el("input", { attrs: { id, type: spec.type, autocomplete: "off", "data-testid": id } });
        if (spec.type === "tel") input.setAttribute("inputmode", "tel");
      }
      if (draft.values[spec.key] !== undefined) input.value = draft.values[spec.key];
      input.addEventListener("input", () => {
        draft.values[spec.key] = input.value;
      });
      input.addEventListener("change", () => {
        draft.values[spec.key] = input.value;
      });
      inputs[spec.key] = input;
      grid.append(
        el("label", { className: `cu-field${spec.required ? " required" : ""}`, attrs: { for: id } }, [
          el("span", { className: "cu-label-text", text: t(spec.labelKey) }),
          input,
        ]),
      );
    }
    const error = el("p", { className: "cu-error", text: draft.error, attrs: { role: "alert", "data-testid": `${name}-error` } });
    error.hidden = !draft.error;
    const save = el("button", { className: "cu-button cu-primary", text: t("customers.add"), attrs: { type: "submit", "data-testid": `${name}-save` } });
    const cancel = el("button", { className: "cu-button", text: t("customers.cancel"), attrs: { type: "button" } });
    form.append(grid, error, el("div", { className: "cu-form-buttons" }, [save, cancel]));
    form.hidden = !draft.open;
    const close = () => {
      draft.open = false;
      draft.error = "";
      form.hidden = true;
      toggle.setAttribute("aria-expanded", "false");
      toggle.focus();
    };
    toggle.addEventListener("click", () => {
      draft.open = !draft.open;
      form.hidden = !draft.open;
      toggle.setAttribute("aria-expanded", draft.open ? "true" : "false");
      if (draft.open) inputs[specs[0].key].focus();
    });
    cancel.addEventListener("click", close);
    form.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        close();
      }
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const values = {};
      for (const spec of specs) {
        const value = inputs[spec.key].value.trim();
        if (spec.required && !value) {
          draft.error = t("customers.required", { field: t(spec.labelKey) });
          error.textContent = draft.error;
          error.hidden = false;
          inputs[spec.key].focus();
          return;
        }
        if (value) values[spec.key] = value;
      }
      save.disabled = true;
      const problem = await submit(values);
      save.disabled = false;
      if (problem) {
        draft.error = problem;
        const now = this.pageSection.querySelector(`[data-testid="${name}-error"]`);
        if (now) {
          now.textContent = problem;
          now.hidden = false;
        }
        return;
      }
      this.drafts.delete(name);
      this.drawPage();
      this.pageSection.querySelector(`[data-key="add-${name}"]`)?.focus();
    });
    return el("div", { className: "cu-child" }, [toggle, form]);
  }

  /** POST a phone or family member; "" when saved (the page is read again), else why not. */
  async addChild(what, values) {
    const c = this.customer;
    if (!c) return t("customers.unreachable");
    const generation = this.generation;
    const answer = await this.call("POST", `/api/customers/${c.id}/${what}`, values);
    if (generation !== this.generation) return "";
    if (!isOk(answer)) return errorText(answer, "customers.saveWhat");
    await this.reloadRecord();
    return "";
  }

  async deleteChild(what, id, question) {
    if (!(await this.confirm(question, "customers.deleteYes"))) return;
    const generation = this.generation;
    const path = what === "phones" ? `/api/phones/${id}` : `/api/family/${id}`;
    const answer = await this.call("DELETE", path);
    if (generation !== this.generation) return;
    if (!isOk(answer)) {
      this.pageError = errorText(answer, "customers.deleteWhat");
      this.drawPage();
      return;
    }
    this.pageError = "";
    await this.reloadRecord();
  }

  /** Read the record again (after a phone or family change), keeping the timeline shown. */
  async reloadRecord() {
    const c = this.customer;
    if (!c) return;
    const generation = this.generation;
    const answer = await this.call("GET", `/api/customers/${c.id}`);
    if (generation !== this.generation || !answer || answer.status !== 200 || !answer.data) return;
    this.mergeCustomer(answer.data);
    this.drawPage();
    this.loadAudit(generation);
  }

  // --- family -------------------------------------------------------------------------------

  familyCard(c) {
    const family = Array.isArray(c.family) ? c.family : [];
    const list = el("ul", { className: "cu-list cu-family", attrs: { "data-testid": "customer-family" } });
    for (const person of family) {
      const parts = [person.relation, person.name].filter(Boolean).join(" ");
      const item = el("li", { className: "cu-family-member", attrs: { "data-testid": "family-member" } }, [
        el("div", {}, [
          person.furigana ? el("span", { className: "cu-small", text: person.furigana }) : null,
          el("span", { className: "cu-family-name", text: parts }),
          person.birthday ? el("span", { className: "cu-small", text: t("customers.bornOn", { date: formatDate(person.birthday) }) }) : null,
        ]),
      ]);
      const remove = button("cu-link-button cu-delete", t("customers.delete"), {
        "aria-label": t("customers.deleteFamily", { name: person.name }),
        "data-key": `family-del-${person.id}`,
        "data-testid": "family-delete",
      });
      remove.addEventListener("click", () => this.deleteChild("family", person.id, t("customers.confirmFamily", { name: person.name })));
      item.append(remove);
      list.append(item);
    }
    if (!family.length) list.append(el("li", { className: "cu-empty", text: t("customers.noFamily") }));
    const form = this.childForm("family", [
      { key: "name", type: "text", labelKey: "customers.family.name", required: true },
      { key: "furigana", type: "text", labelKey: "customers.field.furigana" },
      { key: "relation", type: "text", labelKey: "customers.family.relation" },
      { key: "birthday", type: "date", labelKey: "customers.field.birthday" },
    ], (values) => this.addChild("family", values), "customers.family.add");
    return el("section", { className: "cu-card" }, [el("h3", { className: "cu-card-title", text: t("customers.familyTitle") }), list, form]);
  }

  // --- delete the customer ------------------------------------------------------------------

  dangerCard(c) {
    const remove = button("cu-button cu-danger", t("customers.deleteCustomer"), {
      "data-key": "delete-customer",
      "data-testid": "customer-delete",
    });
    remove.addEventListener("click", () => this.deleteCustomer());
    const card = el("section", { className: "cu-card cu-danger-zone" }, [
      remove,
      el("p", { className: "cu-small", text: t("customers.deleteNote", { name: customerName(c) }) }),
    ]);
    if (this.pageError) card.append(el("p", { className: "cu-error", text: this.pageError, attrs: { role: "alert" } }));
    return card;
  }

  async deleteCustomer() {
    const c = this.customer;
    if (!c) return;
    const yes = await this.confirm(t("customers.confirmCustomer", { name: customerName(c) }), "customers.deleteYes");
    if (!yes || !this.customer || this.customer.id !== c.id) return;
    const answer = await this.call("DELETE", `/api/customers/${c.id}`);
    if (!isOk(answer)) {
      this.pageError = errorText(answer, "customers.deleteWhat");
      this.drawPage();
      return;
    }
    this.pageError = "";
    this.customer = null;
    this.notice = t("customers.deleted", { name: customerName(c) });
    this.navigate("customers", {});
  }

  // --- the timeline ---------------------------------------------------------------------------

  timelineCard() {
    const list = el("ol", { className: "cu-timeline", attrs: { "data-testid": "customer-timeline" } });
    for (const item of this.timeline) list.append(this.timelineItem(item));
    if (!this.timeline.length) list.append(el("li", { className: "cu-empty", text: t("customers.timelineEmpty") }));
    const card = el("section", { className: "cu-card cu-history" }, [
      el("div", { className: "cu-card-head" }, [el("h3", { className: "cu-card-title", text: t("customers.timeline") })]),
      this.transactionForm(),
      this.noteForm(),
      list,
    ]);
    if (this.timelineError) card.append(el("p", { className: "cu-error", text: this.timelineError, attrs: { role: "alert" } }));
    if (this.timelineMore) {
      const more = button("cu-button cu-more", t("customers.more"), { "data-key": "timeline-more", "data-testid": "timeline-more" });
      more.addEventListener("click", () => this.loadMoreTimeline());
      card.append(more);
    }
    return card;
  }

  timelineItem(item) {
    const kind = item.kind;
    const when = kind === "transaction" ? formatDate(item.date || item.at) : `${formatDate(item.at)} ${formatTime(item.at)}`.trim();
    const li = el("li", { className: `cu-item cu-item-${kind}`, attrs: { "data-testid": "timeline-item", "data-kind": kind } });
    const badge = el("span", { className: `cu-badge cu-badge-${kind}`, attrs: { "aria-hidden": "true" } });
    const head = el("div", { className: "cu-item-head" });
    const body = el("div", { className: "cu-item-body" });
    if (kind === "call") {
      badge.textContent = "☎";
      // Answered at a desk phone nobody is known for: the extension (内線 204), not "204".
      const who = /^[0-9*#]+$/.test(item.answered_by_name || "") ? t("calllog.ext", { ext: item.answered_by_name }) : item.answered_by_name;
      const outcome = item.answered_by_name
        ? [t("calllog.answeredBy", { name: who }), talkText(item.talk_seconds)].filter(Boolean).join(" ")
        : outcomeLabel({ outcome: item.outcome, answered_by: null });
      head.append(
        el("span", { className: "cu-item-kind", text: t("customers.kind.call") }),
        el("span", { text: t(item.direction === "out" ? "customers.outgoing" : "customers.incoming") }),
        el("span", { className: `cu-outcome${item.answered_by_name ? "" : " missed"}`, text: outcome }),
      );
    } else if (kind === "note") {
      badge.textContent = "✎";
      const noteKind = NOTE_KINDS.includes(item.note_kind) ? item.note_kind : "call";
      head.append(
        el("span", { className: "cu-item-kind", text: t("customers.kind.noteOf", { kind: t(`customers.noteKind.${noteKind}`) }) }),
        item.staff_name ? el("span", { className: "cu-item-who", text: item.staff_name }) : null,
      );
      body.append(el("p", { className: "cu-item-text", text: item.body || "" }));
      if (item.follow_up_on) body.append(el("p", { className: "cu-small", text: t("customers.followUpOn", { date: formatDate(item.follow_up_on) }) }));
      if (item.corrected_at) body.append(el("p", { className: "cu-small", text: t("customers.corrected", { date: formatDate(item.corrected_at) }) }));
    } else if (kind === "transaction") {
      badge.textContent = "¥";
      head.append(
        el("span", { className: "cu-item-kind", text: t("customers.kind.transaction") }),
        Number.isFinite(item.amount)
          ? el("span", { className: "cu-amount", text: formatYen(item.amount), attrs: { "data-testid": "transaction-amount" } })
          : null,
        el("span", { className: "cu-item-title", text: item.title || "" }),
        item.staff_name ? el("span", { className: "cu-item-who", text: item.staff_name }) : null,
      );
      if (item.detail) body.append(el("p", { className: "cu-item-text", text: item.detail }));
    } else {
      head.append(el("span", { text: String(kind || "") }));
    }
    li.append(
      badge,
      el("div", { className: "cu-item-main" }, [
        el("div", { className: "cu-item-line" }, [el("time", { className: "cu-when", text: when, attrs: { datetime: item.at || item.date || "" } }), head]),
        body.childNodes.length ? body : null,
      ]),
    );
    return li;
  }

  async loadMoreTimeline() {
    const c = this.customer;
    if (!c) return;
    const generation = this.generation;
    const seen = new Set(this.timeline.map((i) => `${i.kind}:${i.id}`));
    let cursor = this.timelineNext;
    // The record's first page carries no cursor: the route's first page gives it, and
    // what is already shown is skipped.
    for (let round = 0; round < 3; round += 1) {
      const params = new URLSearchParams({ limit: String(TIMELINE_PAGE) });
      if (cursor) params.set("before", cursor);
      const answer = await this.call("GET", `/api/customers/${c.id}/timeline?${params}`);
      if (generation !== this.generation) return;
      if (!(answer && answer.status === 200 && answer.data && Array.isArray(answer.data.items))) {
        this.timelineError = errorText(answer, "customers.loadWhat");
        this.drawPage();
        return;
      }
      const fresh = answer.data.items.filter((i) => !seen.has(`${i.kind}:${i.id}`));
      this.timeline.push(...fresh);
      cursor = answer.data.next || null;
      this.timelineNext = cursor;
      this.timelineMore = Boolean(cursor);
      this.timelineError = "";
      if (fresh.length || !cursor) break;
    }
    this.drawPage();
  }

  /** 取引を追加: date (today), title, amount (58,000 / ５８０００), staff (me), detail. */
  transactionForm() {
    const me = this.me();
    return this.inlineForm("transaction", "customers.addTransaction", [
      { key: "date", type: "date", labelKey: "customers.tx.date", required: true, initial: () => todayTokyo() },
      { key: "title", type: "text", labelKey: "customers.tx.title", required: true, wide: true, focus: true },
      { key: "amount", type: "text", labelKey: "customers.tx.amount", inputmode: "numeric", placeholder: "58,000" },
      { key: "staff_id", type: "staff", labelKey: "customers.tx.staff", initial: () => (me ? String(me.id) : "") },
      { key: "detail", type: "long", labelKey: "customers.tx.detail", wide: true },
    ], (values) => this.saveTransaction(values));
  }

  /** メモを追加: kind (訪問), text, next follow-up date. */
  noteForm() {
    return this.inlineForm("note", "customers.addNote", [
      { key: "kind", type: "noteKind", labelKey: "customers.note.kind", initial: () => "visit" },
      { key: "body", type: "long", labelKey: "customers.note.body", required: true, wide: true, focus: true },
      { key: "follow_up_on", type: "date", labelKey: "customers.note.followUp" },
    ], (values, draft) => this.saveNote(values, draft));
  }

  /**
   * A timeline form behind its button. Drafts (this.forms) keep what is typed across
   * redraws of the page and through a failed save; a saved form starts afresh.
   */
  inlineForm(name, buttonKey, specs, submit) {
    this.forms = this.forms || new Map();
    let draft = this.forms.get(name);
    if (!draft || draft.customerId !== this.customer.id) {
      draft = { customerId: this.customer.id, open: false, values: {}, error: "", key: newKey() };
      this.forms.set(name, draft);
    }
    const toggle = el("button", {
      className: "cu-button cu-add",
      text: t(buttonKey),
      attrs: { type: "button", "aria-expanded": draft.open ? "true" : "false", "data-key": `open-${name}`, "data-testid": `${name}-open` },
    });
    const form = el("form", { className: `cu-form cu-inline cu-${name}-form`, attrs: { "data-testid": `${name}-form`, novalidate: "" } });
    const grid = el("div", { className: "cu-form-grid" });
    const inputs = {};
    for (const spec of specs) {
      const id = `cu-${name}-${spec.key}`;
      let input;
      if (spec.type === "long") input = el("textarea", { attrs: { id, rows: "3" } });
      else if (spec.type === "staff") input = el("select", { attrs: { id, "data-staff-select": "" } });
      else if (spec.type === "noteKind") {
        input = el("select", { attrs: { id } }, NOTE_KINDS.map((k) => el("option", { attrs: { value: k }, text: t(`customers.noteKind.${k}`) })));
      } else input = el("input", { attrs: { id, type: spec.type, autocomplete: "off" } });
      input.setAttribute("data-testid", id);
      if (spec.inputmode) input.setAttribute("inputmode", spec.inputmode);
      if (spec.placeholder) input.setAttribute("placeholder", spec.placeholder);
      if (draft.values[spec.key] === undefined && spec.initial) draft.values[spec.key] = spec.initial();
      const value = draft.values[spec.key] ?? "";
      if (spec.type === "staff") input.dataset.value = value;
      else input.value = value;
      const keep = () => {
        draft.values[spec.key] = input.value;
      };
      input.addEventListener("input", keep);
      input.addEventListener("change", keep);
      inputs[spec.key] = input;
      grid.append(
        el("label", { className: `cu-field${spec.required ? " required" : ""}${spec.wide ? " wide" : ""}`, attrs: { for: id } }, [
          el("span", { className: "cu-label-text", text: t(spec.labelKey) }),
          input,
        ]),
      );
    }
    const error = el("p", { className: "cu-error", text: draft.error, attrs: { role: "alert", "data-testid": `${name}-error` } });
    error.hidden = !draft.error;
    const save = el("button", { className: "cu-button cu-primary", text: t("customers.save"), attrs: { type: "submit", "data-testid": `${name}-save` } });
    const cancel = el("button", { className: "cu-button", text: t("customers.cancel"), attrs: { type: "button" } });
    form.append(grid, error, el("div", { className: "cu-form-buttons" }, [save, cancel, el("span", { className: "cu-hint", text: t("customers.hintLong") })]));
    form.hidden = !draft.open;
    const setOpen = (open) => {
      draft.open = open;
      form.hidden = !open;
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    };
    toggle.addEventListener("click", () => {
      setOpen(!draft.open);
      if (draft.open) inputs[(specs.find((s) => s.focus) || specs[0]).key].focus();
    });
    cancel.addEventListener("click", () => {
      setOpen(false);
      toggle.focus();
    });
    const run = async () => {
      if (draft.busy) return;
      const values = {};
      for (const spec of specs) {
        const raw = inputs[spec.key].value;
        const value = spec.type === "long" ? raw.replace(/\s+$/, "") : raw.trim();
        if (spec.required && !value.trim()) {
          draft.error = t("customers.required", { field: t(spec.labelKey) });
          error.textContent = draft.error;
          error.hidden = false;
          inputs[spec.key].focus();
          return;
        }
        values[spec.key] = value;
      }
      draft.busy = true;
      save.disabled = true;
      const problem = await submit(values, draft);
      draft.busy = false;
      save.disabled = false;
      if (problem) {
        draft.error = problem;
        error.textContent = problem;
        error.hidden = false;
        return;
      }
      this.forms.delete(name); // saved: the next one starts empty, with a new key
      this.drawPage();
      this.pageSection.querySelector(`[data-key="open-${name}"]`)?.focus();
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      run();
    });
    form.addEventListener("keydown", (event) => {
      if (event.isComposing) return;
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        setOpen(false);
        toggle.focus();
      } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        run();
      }
    });
    return el("div", { className: "cu-inline-wrap" }, [toggle, form]);
  }

  /** "" when saved (the item is on top of the timeline), else why not. */
  async saveTransaction(values) {
    const c = this.customer;
    const amount = parseYen(values.amount);
    if (!amount.ok) return t("customers.badAmount");
    const body = { date: values.date, title: values.title };
    if (amount.value !== null) body.amount = amount.value;
    if (values.staff_id) body.staff_id = Number(values.staff_id);
    if (values.detail) body.detail = values.detail;
    const generation = this.generation;
    const answer = await this.call("POST", `/api/customers/${c.id}/transactions`, body);
    if (generation !== this.generation) return "";
    if (!(isOk(answer) && answer.data)) return errorText(answer, "customers.saveWhat");
    const saved = answer.data;
    this.timeline.unshift({
      kind: "transaction",
      at: saved.date || body.date,
      id: saved.id,
      date: saved.date || body.date,
      title: saved.title ?? body.title,
      amount: saved.amount ?? null,
      staff_name: (saved.staff && saved.staff.name) || saved.staff_name || null,
      detail: saved.detail ?? saved.memo ?? body.detail ?? null,
    });
    this.loadAudit(generation);
    return "";
  }

  async saveNote(values, draft) {
    const c = this.customer;
    const body = { idempotency_key: draft.key, customer_id: c.id, body: values.body, kind: values.kind || "visit" };
    if (values.follow_up_on) body.follow_up_on = values.follow_up_on;
    const generation = this.generation;
    const answer = await this.call("POST", "/api/notes", body);
    if (generation !== this.generation) return "";
    if (!(isOk(answer) && answer.data)) return errorText(answer, "customers.saveWhat");
    const saved = answer.data;
    this.timeline.unshift({
      kind: "note",
      at: saved.at || new Date().toISOString(),
      id: saved.id,
      note_kind: saved.kind || body.kind,
      body: saved.body ?? body.body,
      staff_name: saved.staff_name || (this.me() && this.me().name) || null,
      follow_up_on: saved.follow_up_on ?? body.follow_up_on ?? null,
      corrected_at: null,
    });
    this.loadAudit(generation);
    return "";
  }

  // --- 変更履歴 (admins) ---------------------------------------------------------------------------

  async loadAudit(generation, { more = false } = {}) {
    const c = this.customer;
    if (!c || !this.isAdmin()) return;
    const params = new URLSearchParams({ customer_id: String(c.id), limit: String(AUDIT_PAGE) });
    if (more && this.audit && this.audit.next) params.set("before", String(this.audit.next));
    const answer = await this.call("GET", `/api/admin/audit?${params}`);
    if (generation !== this.generation || !this.customer || this.customer.id !== c.id) return;
    if (answer && answer.status === 200 && answer.data && Array.isArray(answer.data.entries)) {
      const entries = more && this.audit ? [...this.audit.entries, ...answer.data.entries] : answer.data.entries;
      this.audit = { entries, next: answer.data.next || null, error: "" };
    } else {
      this.audit = { entries: this.audit ? this.audit.entries : [], next: null, error: errorText(answer, "customers.loadWhat") };
    }
    const old = this.pageSection.querySelector("[data-testid=customer-audit]");
    if (old) old.replaceWith(this.auditCard());
  }

  auditCard() {
    const card = el("section", { className: "cu-card cu-audit", attrs: { "data-testid": "customer-audit" } }, [
      el("h3", { className: "cu-card-title", text: t("customers.audit") }),
    ]);
    if (!this.audit) {
      card.append(el("p", { className: "cu-status", text: t("customers.loading") }));
      return card;
    }
    const list = el("ol", { className: "cu-audit-list" });
    for (const entry of this.audit.entries) {
      const changes = entry.action === "update" ? auditChanges(entry) : [];
      // A kind of record or action this page has no words for shows as the server says it.
      const known = (key, raw) => (t(key) === key ? raw : t(key));
      const entity = known(`customers.entity.${entry.entity}`, entry.entity);
      const action = known(`customers.action.${entry.action}`, entry.action);
      const item = el("li", { className: "cu-audit-entry", attrs: { "data-testid": "audit-entry" } }, [
        el("div", { className: "cu-audit-head" }, [
          el("time", { className: "cu-when", text: `${formatDate(entry.at)} ${formatTime(entry.at)}`, attrs: { datetime: entry.at || "" } }),
          el("span", { className: "cu-item-who", text: entry.staff_name || t(`customers.source.${entry.source || "web"}`) }),
          el("span", { className: "cu-audit-action", text: `${entity} ${action}` }),
        ]),
      ]);
      if (changes.length) {
        const ul = el("ul", { className: "cu-audit-changes" });
        for (const change of changes) {
          const label = known(`customers.field.${change.field}`, change.field);
          ul.append(
            el("li", {}, [
              el("span", { className: "cu-audit-field", text: `${label}: ` }),
              el("span", { className: "cu-audit-before", text: auditValue(change.before) }),
              el("span", { className: "cu-audit-arrow", text: " → " }),
              el("span", { className: "cu-audit-after", text: auditValue(change.after) }),
            ]),
          );
        }
        item.append(ul);
      }
      list.append(item);
    }
    if (!this.audit.entries.length) list.append(el("li", { className: "cu-empty", text: t("customers.auditEmpty") }));
    card.append(list);
    if (this.audit.error) card.append(el("p", { className: "cu-error", text: this.audit.error, attrs: { role: "alert" } }));
    if (this.audit.next) {
      const more = el("button", { className: "cu-button cu-more", text: t("customers.more"), attrs: { type: "button", "data-key": "audit-more" } });
      more.addEventListener("click", () => this.loadAudit(this.generation, { more: true }));
      card.append(more);
    }
    return card;
  }
}
