// The 管理 view (admins only): staff accounts, customers in and out as CSV, deleted
// records, the audit log. And パスワード変更, which every staff member opens from the
// top bar (openPasswordDialog).
//
// Owns the DOM inside #admin-view: a side menu of sections (スタッフ, 取り込み, 書き出し,
// 削除済み, 変更履歴), each a panel built once and filled from the admin routes of
// docs/protocol.md (popup_ui/admin.py, popup_ui/trash.py). The import sends the file's
// raw bytes (File.arrayBuffer()) as the body, first as a dry run (確認する: counts, the
// first rows, every error and every repaired number), then for real (取り込む, enabled
// only after a dry run without errors); the server does all of the checking. The
// export downloads what the server wrote, byte for byte. Customer data reaches the page
// only as text (el() / textContent, see card.js); clear() drops every fact of it.

import { t } from "./i18n.js";
import { el } from "./card.js";
import { detailText, formatDate, formatTime } from "./format.js";

export const SECTIONS = ["staff", "import", "export", "deleted", "audit"];
export const ENTITIES = ["customer", "phone", "family", "transaction", "note"];
export const AUDIT_PAGE = 50;
export const MAX_IMPORT_BYTES = 20 * 1024 * 1024; // popup_ui.admin.MAX_IMPORT_BYTES
const MIN_PASSWORD = 8; // db.staff.MIN_PASSWORD
const IMPORT_ENCODINGS = ["auto", "utf-8", "utf-8-sig", "cp932"];

// The import's row errors (db/customer_import.py speaks English) in the page's words.
const IMPORT_MESSAGES = [
  [/^neither a name nor a company$/, "admin.import.msg.noName"],
  [/^(['"])(.*)\1 is not a phone number$/, "admin.import.msg.notNumber"],
  [/^(['"])(.*)\1 has two readings \((.*)\); write it with its leading 0$/, "admin.import.msg.twoReadings"],
  [/^(['"])(.*)\1 is not a date \(2026-11-22\)$/, "admin.import.msg.notDate"],
  [/^no staff member named (['"])(.*)\1$/, "admin.import.msg.noStaff"],
  [/^longer than (\d+) characters$/, "admin.import.msg.tooLong"],
];

/** An import error's message in the current language (unknown ones as the server wrote). */
export function importMessage(message) {
  for (const [pattern, key] of IMPORT_MESSAGES) {
    const found = pattern.exec(String(message ?? ""));
    if (!found) continue;
    if (key === "admin.import.msg.tooLong") return t(key, { count: found[1] });
    return t(key, { value: found[2] ?? "", readings: found[3] ?? "" });
  }
  return String(message ?? "");
}

/** The fields an audit entry changed: [{field, before, after}] (unchanged ones left out). */
export function changedFields(entry) {
  const before = (entry && entry.before) || {};
  const after = (entry && entry.after) || {};
  const skip = new Set(["id", "created_at", "updated_at", "search_text", "search_digits"]);
  return [...new Set([...Object.keys(before), ...Object.keys(after)])]
    .filter((key) => !skip.has(key))
    .filter((key) => shown(before[key]) !== shown(after[key])) // [] and null both read "—"
    .map((key) => ({ field: key, before: before[key], after: after[key] }));
}

const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}/;

/** A recorded value as the audit shows it: text, a list joined, a time in Tokyo, "—". */
function shown(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "string" && DATE_TIME.test(value)) return when(value);
  if (Array.isArray(value)) return value.length ? value.map(String).join("、") : "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** t(key), or `fallback` when the language has no such word (an unknown enum value). */
function word(key, fallback) {
  const text = t(key);
  return text === key ? String(fallback ?? "") : text;
}

function when(iso) {
  return iso ? `${formatDate(iso)} ${formatTime(iso)}` : "";
}

function isOk(answer) {
  return Boolean(answer) && answer.status >= 200 && answer.status < 300;
}

/** Why a request failed, in words: the server's detail, else that it was unreachable. */
function failure(answer) {
  if (!answer || !answer.status) return t("admin.unreachable");
  return detailText(answer.data, answer.status);
}

/**
 * A file as the body (the shared api() sends JSON): POST the bytes as text/csv.
 * Resolves {status, data} like api(); status 0 when the server could not be reached.
 */
async function sendFile(path, bytes) {
  try {
    const response = await fetch(path, {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "text/csv" },
      credentials: "same-origin",
      body: bytes,
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    return { status: response.status, data };
  } catch {
    return { status: 0, data: null };
  }
}

/** GET a file and hand it to the browser as a download named as the server says. */
async function download(path, fallbackName) {
  let response;
  try {
    response = await fetch(path, { credentials: "same-origin" });
  } catch {
    return { status: 0, data: null };
  }
  if (!response.ok) {
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    return { status: response.status, data };
  }
  const blob = await response.blob();
  const named = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  const link = el("a", { attrs: { href: URL.createObjectURL(blob), download: named ? named[1] : fallbackName } });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60_000);
  return { status: response.status, data: null, name: link.download, size: blob.size };
}

/** A labelled field: <label for> around its words and the control. */
function field(id, key, control, { words, className = "ad-field" } = {}) {
  control.id = id;
  const text = el("span", { className: "ad-label-text" });
  words.push([text, key]);
  return el("label", { className, attrs: { for: id } }, [text, control]);
}

/** A modal <dialog> with a form: Escape or キャンセル closes it, Enter submits. */
function makeDialog(testid) {
  const dialog = el("dialog", { className: "ad-dialog", attrs: { "data-testid": testid } });
  const form = el("form", { className: "ad-dialog-form", attrs: { method: "dialog", novalidate: "" } });
  const title = el("h3", { className: "ad-dialog-title", attrs: { id: `${testid}-title` } });
  const body = el("div", { className: "ad-dialog-body" });
  const error = el("p", { className: "ad-error", attrs: { role: "alert", "data-testid": `${testid}-error` } });
  error.hidden = true;
  const ok = el("button", { className: "ad-button ad-primary", attrs: { type: "submit", "data-testid": `${testid}-ok` } });
  const cancel = el("button", { className: "ad-button", attrs: { type: "button", "data-testid": `${testid}-cancel` } });
  form.append(title, body, error, el("div", { className: "ad-buttons" }, [ok, cancel]));
  dialog.append(form);
  dialog.setAttribute("aria-labelledby", title.id);
  cancel.addEventListener("click", () => dialog.close());
  const showError = (text) => {
    error.textContent = text || "";
    error.hidden = !text;
  };
  return { dialog, form, title, body, error, ok, cancel, showError };
}

// --- パスワード変更 (every staff member) ----------------------------------------------

let passwordDialog = null;

/**
 * The logged-in person's own password: current, new, new again (POST /api/me/password).
 * Their other sessions end; this one stays. Built on first use, kept in <body>.
 */
export function openPasswordDialog({ api }) {
  if (!passwordDialog) passwordDialog = buildPasswordDialog(api);
  const d = passwordDialog;
  d.translate();
  for (const input of Object.values(d.inputs)) input.value = "";
  d.showError("");
  d.done.hidden = true;
  d.ok.disabled = false;
  d.dialog.showModal();
  d.inputs.current.focus();
}

/** Closed and emptied (logged out). */
export function closePasswordDialog() {
  if (!passwordDialog) return;
  for (const input of Object.values(passwordDialog.inputs)) input.value = "";
  if (passwordDialog.dialog.open) passwordDialog.dialog.close();
}

function buildPasswordDialog(api) {
  const d = makeDialog("password-dialog");
  const words = [];
  const input = (autocomplete) => el("input", { attrs: { type: "password", autocomplete, required: "" } });
  d.inputs = {
    current: input("current-password"),
    next: input("new-password"),
    again: input("new-password"),
  };
  d.done = el("p", { className: "ad-done", attrs: { role: "status", "data-testid": "password-dialog-done" } });
  d.done.hidden = true;
  d.body.append(
    field("pw-current", "admin.password.current", d.inputs.current, { words }),
    field("pw-new", "admin.password.new", d.inputs.next, { words }),
    field("pw-again", "admin.password.again", d.inputs.again, { words }),
    d.done,
  );
  d.translate = () => {
    for (const [node, key] of words) node.textContent = t(key);
    d.title.textContent = t("admin.password.title");
    d.ok.textContent = t("admin.password.submit");
    d.cancel.textContent = t("admin.close");
  };
  d.form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const current = d.inputs.current.value;
    const next = d.inputs.next.value;
    if (!current) return fail("admin.password.needCurrent", d.inputs.current);
    if (next.length < MIN_PASSWORD) return fail("admin.password.short", d.inputs.next);
    if (next !== d.inputs.again.value) return fail("admin.password.mismatch", d.inputs.again);
    d.showError("");
    d.ok.disabled = true;
    const answer = await api("POST", "/api/me/password", { current_password: current, new_password: next });
    d.ok.disabled = false;
    if (answer.status === 204) {
      for (const one of Object.values(d.inputs)) one.value = "";
      d.done.textContent = t("admin.password.done");
      d.done.hidden = false;
      d.cancel.focus();
      return undefined;
    }
    d.showError(answer.status === 400 ? t("admin.password.wrong") : failure(answer));
    d.inputs.current.select();
    return undefined;
  });
  function fail(key, focus) {
    d.showError(t(key, { min: MIN_PASSWORD }));
    focus.focus();
  }
  document.body.append(d.dialog);
  return d;
}

// --- the view ------------------------------------------------------------------------

export class AdminView {
  /**
   * api(method, path, body) -> {status, data}; root: the view's <main>; navigate(view,
   * params) opens another view (an audit entry's customer); me() the logged-in person.
   */
  constructor({ api, root, navigate, me }) {
    this.api = api;
    this.root = root;
    this.navigate = navigate || (() => {});
    this.me = typeof me === "function" ? me : () => null;
    this.section = "staff";
    this.built = false;
    this.generation = 0; // bumped by clear(): a late answer for a logged-out page is dropped
  }

  // --- the shell -------------------------------------------------------------------

  build() {
    this.words = []; // [node, key, attr]: fixed words, set again by render()
    this.heading = this.word(el("h2", { className: "section-title", attrs: { id: "admin-heading" } }), "admin.heading");
    this.menu = el("nav", { className: "ad-menu", attrs: { "data-testid": "admin-menu" } });
    this.word(this.menu, "admin.menu", "aria-label");
    this.tabs = {};
    this.panels = {};
    for (const name of SECTIONS) {
      const tab = this.word(
        el("button", { className: "ad-tab", attrs: { type: "button", "aria-pressed": "false", "data-section": name, "data-testid": `admin-tab-${name}` } }),
        `admin.section.${name}`,
      );
      tab.addEventListener("click", () => this.show(name, { focus: true }));
      tab.addEventListener("keydown", (event) => this.onMenuKey(event, name));
      this.tabs[name] = tab;
      this.menu.append(tab);
      this.panels[name] = el("section", { className: "ad-panel", attrs: { "data-testid": `admin-${name}`, "aria-labelledby": `admin-${name}-title`, tabindex: "-1" } });
      this.panels[name].hidden = true;
    }
    this.buildStaff();
    this.buildImport();
    this.buildExport();
    this.buildDeleted();
    this.buildAudit();
    this.confirmBox = makeDialog("purge-dialog");
    this.resetBox = makeDialog("reset-dialog");
    this.root.replaceChildren(
      this.heading,
      el("div", { className: "ad-layout" }, [this.menu, el("div", { className: "ad-panels" }, Object.values(this.panels))]),
      this.confirmBox.dialog,
      this.resetBox.dialog,
    );
    this.root.setAttribute("aria-labelledby", this.heading.id);
    this.built = true;
  }

  /** Put t(key) into node (its text, or attribute attr) now and on every render(). */
  word(node, key, attr = null) {
    this.words.push([node, key, attr]);
    if (attr) node.setAttribute(attr, t(key));
    else node.textContent = t(key);
    return node;
  }

  /** A panel's title (h3 named by the panel's aria-labelledby) and lead. */
  panelHead(name, leadKey) {
    const title = this.word(el("h3", { className: "ad-title", attrs: { id: `admin-${name}-title` } }), `admin.section.${name}`);
    const parts = [title];
    if (leadKey) parts.push(this.word(el("p", { className: "ad-lead" }), leadKey));
    return parts;
  }

  onMenuKey(event, name) {
    const step = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1 }[event.key];
    if (!step) return;
    event.preventDefault();
    const next = SECTIONS[(SECTIONS.indexOf(name) + step + SECTIONS.length) % SECTIONS.length];
    this.tabs[next].focus();
  }

  show(name, { focus = false } = {}) {
    if (!SECTIONS.includes(name)) name = "staff";
    this.section = name;
    for (const one of SECTIONS) {
      this.tabs[one].setAttribute("aria-pressed", one === name ? "true" : "false");
      this.panels[one].hidden = one !== name;
    }
    if (name === "staff") this.loadStaff();
    if (name === "deleted") this.loadDeleted();
    if (name === "audit") this.loadAudit({ first: true });
    if (focus) this.panels[name].focus();
  }

  /** The view is shown (#/admin): the section last open, with fresh data. */
  load() {
    if (!this.built) this.build();
    this.show(this.section);
  }

  /** Logged out: no account, customer or audit fact stays in the page. */
  clear() {
    this.generation += 1;
    if (this.built) {
      for (const box of [this.confirmBox, this.resetBox]) if (box.dialog.open) box.dialog.close();
    }
    closePasswordDialog();
    this.root.replaceChildren();
    this.built = false;
    this.section = "staff";
    this.staff = null;
    this.report = null;
    this.deleted = null;
    this.audit = null;
  }

  /** The language changed: every word again, the tables from what they hold. */
  render() {
    if (!this.built) return;
    for (const [node, key, attr] of this.words) {
      if (attr) node.setAttribute(attr, t(key));
      else node.textContent = t(key);
    }
    this.drawStaff();
    this.drawReport();
    this.drawDeleted();
    this.drawAudit();
    if (passwordDialog) passwordDialog.translate();
  }

  async call(method, path, body) {
    try {
      return await this.api(method, path, body);
    } catch {
      return { status: 0, data: null };
    }
  }

  // --- スタッフ ----------------------------------------------------------------------

  buildStaff() {
    const panel = this.panels.staff;
    const words = [];
    this.staffStatus = el("p", { className: "ad-status", attrs: { role: "status", "data-testid": "staff-status" } });
    this.staffHead = el("tr");
    this.staffBody = el("tbody", { attrs: { "data-testid": "staff-rows" } });
    const table = el("table", { className: "ad-table ad-staff-table" }, [el("thead", {}, [this.staffHead]), this.staffBody]);
    // 追加: login, name, furigana, extension, role, initial password.
    const inputs = {
      login: el("input", { attrs: { type: "text", autocomplete: "off", autocapitalize: "off", spellcheck: "false", required: "", maxlength: "64" } }),
      name: el("input", { attrs: { type: "text", autocomplete: "off", required: "", maxlength: "100" } }),
      furigana: el("input", { attrs: { type: "text", autocomplete: "off", maxlength: "100" } }),
      extension: el("input", { attrs: { type: "text", inputmode: "numeric", autocomplete: "off", maxlength: "16" } }),
      role: this.roleSelect(),
      password: el("input", { attrs: { type: "password", autocomplete: "new-password", required: "", minlength: String(MIN_PASSWORD) } }),
    };
    this.addError = el("p", { className: "ad-error", attrs: { role: "alert", "data-testid": "staff-add-error" } });
    this.addError.hidden = true;
    const submit = this.word(el("button", { className: "ad-button ad-primary", attrs: { type: "submit", "data-testid": "staff-add-submit" } }), "admin.staff.add");
    const form = el("form", { className: "ad-form ad-staff-add", attrs: { novalidate: "", "data-testid": "staff-add" } }, [
      this.word(el("h4", { className: "ad-subtitle" }), "admin.staff.addTitle"),
      el("div", { className: "ad-grid" }, [
        field("staff-add-login", "admin.staff.login", inputs.login, { words }),
        field("staff-add-name", "admin.staff.name", inputs.name, { words }),
        field("staff-add-furigana", "admin.staff.furigana", inputs.furigana, { words }),
        field("staff-add-extension", "admin.staff.extension", inputs.extension, { words }),
        field("staff-add-role", "admin.staff.role", inputs.role, { words }),
        field("staff-add-password", "admin.staff.initialPassword", inputs.password, { words }),
      ]),
      this.addError,
      el("div", { className: "ad-buttons" }, [submit]),
    ]);
    for (const [node, key] of words) this.word(node, key);
    for (const [name, input] of Object.entries(inputs)) input.setAttribute("data-testid", `staff-add-${name}`);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.addStaff(inputs, submit);
    });
    panel.append(
      ...this.panelHead("staff", "admin.staff.lead"),
      this.staffStatus,
      el("div", { className: "ad-scroll" }, [table]),
      form,
    );
  }

  roleSelect(value = "staff") {
    const select = el("select");
    for (const role of ["staff", "admin"]) {
      const option = this.word(el("option", { attrs: { value: role } }), `admin.role.${role}`);
      select.append(option);
    }
    select.value = value;
    return select;
  }

  async loadStaff() {
    const generation = this.generation;
    this.staffStatus.textContent = t("admin.loading");
    const answer = await this.call("GET", "/api/admin/staff");
    if (generation !== this.generation || !this.built) return;
    if (answer.status === 200 && answer.data && Array.isArray(answer.data.staff)) {
      this.staff = { rows: answer.data.staff, truncated: Boolean(answer.data.truncated), editing: null, errors: {} };
      this.staffStatus.textContent = this.staff.truncated ? t("admin.staff.truncated") : "";
    } else {
      this.staffStatus.textContent = failure(answer);
    }
    this.drawStaff();
  }

  drawStaff() {
    if (!this.staffHead) return;
    const columns = ["login", "name", "furigana", "extension", "role", "active", "lastLogin", "actions"];
    this.staffHead.replaceChildren(...columns.map((c) => el("th", { text: t(`admin.staff.${c}`), attrs: { scope: "col" } })));
    const rows = this.staff ? this.staff.rows : [];
    this.staffBody.replaceChildren(...rows.map((row) => (this.staff.editing === row.id ? this.editRow(row) : this.staffRow(row))));
  }

  staffRow(row) {
    const me = this.me();
    const edit = el("button", { className: "ad-button ad-small", text: t("admin.staff.edit"), attrs: { type: "button", "data-testid": "staff-edit", "data-key": `edit-${row.id}` } });
    const reset = el("button", { className: "ad-button ad-small", text: t("admin.staff.reset"), attrs: { type: "button", "data-testid": "staff-reset" } });
    edit.setAttribute("aria-label", t("admin.staff.editOf", { name: row.name }));
    reset.setAttribute("aria-label", t("admin.staff.resetOf", { name: row.name }));
    edit.addEventListener("click", () => {
      this.staff.editing = row.id;
      this.staff.errors[row.id] = "";
      this.drawStaff();
      this.staffBody.querySelector("[data-testid=staff-edit-name]")?.focus();
    });
    reset.addEventListener("click", () => this.openReset(row, reset));
    const tr = el("tr", { className: row.active ? "" : "ad-inactive", attrs: { "data-testid": "staff-row", "data-login": row.login } }, [
      el("td", { className: "ad-mono", text: row.login }),
      el("td", {}, [
        el("span", { text: row.name }),
        me && me.id === row.id ? el("span", { className: "ad-you", text: t("admin.staff.you") }) : null,
      ]),
      el("td", { text: row.furigana || "" }),
      el("td", { className: "ad-mono", text: row.extension || "" }),
      el("td", {}, [el("span", { className: `ad-role ad-role-${row.role}`, text: t(`admin.role.${row.role}`) })]),
      el("td", { text: row.active ? t("admin.staff.activeYes") : t("admin.staff.activeNo") }),
      el("td", { className: "ad-when", text: row.last_login ? when(row.last_login) : "—" }),
      el("td", { className: "ad-actions" }, [edit, reset]),
    ]);
    const error = this.staff.errors[row.id];
    if (!error) return tr;
    return this.withError(tr, error);
  }

  /** The row followed by a row that says why the last change was refused. */
  withError(tr, error) {
    const frag = document.createDocumentFragment();
    frag.append(
      tr,
      el("tr", { className: "ad-row-error" }, [
        el("td", { attrs: { colspan: "8" } }, [el("p", { className: "ad-error", text: error, attrs: { role: "alert", "data-testid": "staff-row-error" } })]),
      ]),
    );
    return frag;
  }

  /** 編集: name, furigana, extension, role and active in the row; Enter saves, Escape cancels. */
  editRow(row) {
    const input = (key, value, attrs = {}) =>
      el("input", { className: "ad-cell-input", attrs: { type: "text", value: value || "", autocomplete: "off", "data-testid": `staff-edit-${key}`, ...attrs } });
    const name = input("name", row.name, { "aria-label": t("admin.staff.name"), maxlength: "100" });
    const furigana = input("furigana", row.furigana, { "aria-label": t("admin.staff.furigana"), maxlength: "100" });
    const extension = input("extension", row.extension, { "aria-label": t("admin.staff.extension"), inputmode: "numeric", maxlength: "16" });
    name.value = row.name || "";
    furigana.value = row.furigana || "";
    extension.value = row.extension || "";
    const role = this.roleSelect(row.role);
    role.setAttribute("aria-label", t("admin.staff.role"));
    role.setAttribute("data-testid", "staff-edit-role");
    const active = el("input", { attrs: { type: "checkbox", id: `staff-active-${row.id}`, "data-testid": "staff-edit-active" } });
    active.checked = Boolean(row.active);
    const save = el("button", { className: "ad-button ad-primary ad-small", text: t("admin.save"), attrs: { type: "button", "data-testid": "staff-edit-save" } });
    const cancel = el("button", { className: "ad-button ad-small", text: t("admin.cancel"), attrs: { type: "button", "data-testid": "staff-edit-cancel" } });
    const close = () => {
      this.staff.editing = null;
      this.staff.errors[row.id] = ""; // cancelled: the refusal is about a change not made
      this.drawStaff();
      this.staffBody.querySelector(`[data-key="edit-${row.id}"]`)?.focus();
    };
    const submit = () => this.saveStaff(row, { name: name.value.trim(), furigana: furigana.value.trim(), extension: extension.value.trim(), role: role.value, active: active.checked }, save);
    save.addEventListener("click", submit);
    cancel.addEventListener("click", close);
    const tr = el("tr", { className: "ad-editing", attrs: { "data-testid": "staff-row", "data-login": row.login } }, [
      el("td", { className: "ad-mono", text: row.login }),
      el("td", {}, [name]),
      el("td", {}, [furigana]),
      el("td", {}, [extension]),
      el("td", {}, [role]),
      el("td", {}, [el("label", { className: "ad-check", attrs: { for: active.id } }, [active, el("span", { text: t("admin.staff.activeYes") })])]),
      el("td", { className: "ad-when", text: row.last_login ? when(row.last_login) : "—" }),
      el("td", { className: "ad-actions" }, [save, cancel]),
    ]);
    tr.addEventListener("keydown", (event) => {
      if (event.isComposing) return;
      if (event.key === "Escape") {
        event.preventDefault();
        close();
      } else if (event.key === "Enter" && event.target.tagName === "INPUT" && event.target.type !== "checkbox") {
        event.preventDefault();
        submit();
      }
    });
    const error = this.staff.errors[row.id];
    return error ? this.withError(tr, error) : tr;
  }

  async saveStaff(row, values, button) {
    if (!values.name) {
      this.staff.errors[row.id] = t("admin.staff.needName");
      this.drawStaff();
      return;
    }
    const body = {};
    for (const key of ["name", "furigana", "extension", "role", "active"]) {
      if ((row[key] ?? "") !== values[key]) body[key] = values[key];
    }
    const generation = this.generation;
    button.disabled = true;
    const answer = Object.keys(body).length ? await this.call("PATCH", `/api/admin/staff/${row.id}`, body) : { status: 200, data: row };
    if (generation !== this.generation || !this.staff) return;
    if (answer.status === 200 && answer.data) {
      const me = this.me();
      if (me && me.id === row.id && (answer.data.role !== "admin" || !answer.data.active)) {
        // I stepped down (another admin remains): the page starts again as what I am now.
        window.location.replace(window.location.pathname);
        return;
      }
      this.staff.rows = this.staff.rows.map((one) => (one.id === row.id ? answer.data : one));
      this.staff.errors[row.id] = "";
      this.staff.editing = null;
      this.staffStatus.textContent = Object.keys(body).length ? t("admin.staff.saved", { name: answer.data.name }) : "";
      this.drawStaff();
      this.staffBody.querySelector(`[data-key="edit-${row.id}"]`)?.focus();
      return;
    }
    // 409: the last admin cannot be demoted or deactivated; the editor stays as typed.
    this.staff.errors[row.id] = answer.status === 409 ? t("admin.staff.lastAdmin") : failure(answer);
    const typed = values;
    this.drawStaff();
    const tr = this.staffBody.querySelector(`[data-login="${CSS.escape(row.login)}"]`);
    if (tr) {
      tr.querySelector("[data-testid=staff-edit-name]").value = typed.name;
      tr.querySelector("[data-testid=staff-edit-furigana]").value = typed.furigana;
      tr.querySelector("[data-testid=staff-edit-extension]").value = typed.extension;
      tr.querySelector("[data-testid=staff-edit-role]").value = typed.role;
      tr.querySelector("[data-testid=staff-edit-active]").checked = typed.active;
      tr.querySelector("[data-testid=staff-edit-save]").focus();
    }
  }

  async addStaff(inputs, button) {
    const values = Object.fromEntries(Object.entries(inputs).map(([k, input]) => [k, input.value.trim()]));
    values.password = inputs.password.value;
    const show = (text, focus) => {
      this.addError.textContent = text;
      this.addError.hidden = !text;
      if (focus) focus.focus();
    };
    if (!/^[A-Za-z0-9._@-]+$/.test(values.login)) return show(t("admin.staff.badLogin"), inputs.login);
    if (!values.name) return show(t("admin.staff.needName"), inputs.name);
    if (values.password.length < MIN_PASSWORD) return show(t("admin.password.short", { min: MIN_PASSWORD }), inputs.password);
    show("");
    button.disabled = true;
    const generation = this.generation;
    const answer = await this.call("POST", "/api/admin/staff", {
      login: values.login,
      name: values.name,
      furigana: values.furigana || null,
      extension: values.extension || null,
      role: values.role,
      password: values.password,
    });
    button.disabled = false;
    if (generation !== this.generation) return undefined;
    if (answer.status !== 201) return show(failure(answer), inputs.login);
    for (const input of Object.values(inputs)) if (input.tagName === "INPUT") input.value = "";
    inputs.role.value = "staff";
    this.staffStatus.textContent = t("admin.staff.added", { login: answer.data.login, name: answer.data.name });
    await this.loadStaff();
    this.staffStatus.textContent = t("admin.staff.added", { login: answer.data.login, name: answer.data.name });
    inputs.login.focus();
    return undefined;
  }

  /** パスワード再設定: a new password for someone who forgot theirs. */
  openReset(row, back) {
    const d = this.resetBox;
    const input = el("input", { attrs: { type: "password", autocomplete: "new-password", "data-testid": "reset-password" } });
    const again = el("input", { attrs: { type: "password", autocomplete: "new-password", "data-testid": "reset-again" } });
    const words = [];
    d.title.textContent = t("admin.staff.resetTitle", { name: row.name });
    d.body.replaceChildren(
      el("p", { className: "ad-lead", text: t("admin.staff.resetLead") }),
      field("reset-new", "admin.password.new", input, { words }),
      field("reset-again", "admin.password.again", again, { words }),
    );
    for (const [node, key] of words) node.textContent = t(key);
    d.ok.textContent = t("admin.staff.resetSubmit");
    d.cancel.textContent = t("admin.cancel");
    d.ok.disabled = false;
    d.showError("");
    d.form.onsubmit = async (event) => {
      event.preventDefault();
      if (input.value.length < MIN_PASSWORD) return d.showError(t("admin.password.short", { min: MIN_PASSWORD }));
      if (input.value !== again.value) return d.showError(t("admin.password.mismatch"));
      d.ok.disabled = true;
      const answer = await this.call("POST", `/api/admin/staff/${row.id}/password`, { password: input.value });
      d.ok.disabled = false;
      if (answer.status !== 204) return d.showError(failure(answer));
      input.value = "";
      again.value = "";
      d.dialog.close();
      this.staffStatus.textContent = t("admin.staff.resetDone", { name: row.name });
      return undefined;
    };
    d.dialog.onclose = () => {
      input.value = "";
      again.value = "";
      if (back.isConnected) back.focus();
    };
    d.dialog.showModal();
    input.focus();
  }

  // --- 取り込み -------------------------------------------------------------------------

  buildImport() {
    const panel = this.panels.import;
    const words = [];
    this.file = el("input", { attrs: { type: "file", accept: ".csv,text/csv", "data-testid": "import-file" } });
    this.encoding = el("select", { attrs: { "data-testid": "import-encoding" } });
    for (const value of IMPORT_ENCODINGS) this.encoding.append(this.word(el("option", { attrs: { value } }), `admin.import.enc.${value}`));
    this.check = this.word(el("button", { className: "ad-button ad-primary", attrs: { type: "submit", "data-testid": "import-check" } }), "admin.import.check");
    this.run = this.word(el("button", { className: "ad-button ad-go", attrs: { type: "button", "data-testid": "import-run" } }), "admin.import.run");
    this.run.disabled = true;
    const form = el("form", { className: "ad-form ad-import-form", attrs: { novalidate: "" } }, [
      el("div", { className: "ad-grid" }, [
        field("import-file", "admin.import.file", this.file, { words }),
        field("import-encoding", "admin.import.encoding", this.encoding, { words }),
      ]),
      el("div", { className: "ad-buttons" }, [this.check, this.run]),
    ]);
    for (const [node, key] of words) this.word(node, key);
    this.importStatus = el("p", { className: "ad-status", attrs: { role: "status", "data-testid": "import-status" } });
    this.importResult = el("div", { className: "ad-report", attrs: { "data-testid": "import-report" } });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.sendImport(true);
    });
    this.run.addEventListener("click", () => this.sendImport(false));
    // Another file or encoding: the dry run shown is no longer about what would be sent.
    const stale = () => {
      this.report = null;
      this.importStatus.textContent = "";
      this.drawReport();
    };
    this.file.addEventListener("change", stale);
    this.encoding.addEventListener("change", stale);
    panel.append(...this.panelHead("import", "admin.import.lead"), form, this.importStatus, this.importResult);
  }

  async sendImport(dryRun) {
    const file = this.file.files && this.file.files[0];
    if (!file) {
      this.importStatus.textContent = t("admin.import.noFile");
      this.file.focus();
      return;
    }
    if (file.size > MAX_IMPORT_BYTES) {
      this.importStatus.textContent = t("admin.import.tooBig", { mb: MAX_IMPORT_BYTES / 1024 / 1024 });
      return;
    }
    if (!dryRun && !(this.report && this.report.dry_run && !this.report.errors.length)) return;
    const generation = this.generation;
    this.check.disabled = true;
    this.run.disabled = true;
    this.importStatus.textContent = t(dryRun ? "admin.import.checking" : "admin.import.running");
    const bytes = await file.arrayBuffer();
    const params = new URLSearchParams({ dry_run: dryRun ? "true" : "false", encoding: this.encoding.value });
    const answer = await sendFile(`/api/admin/import/customers?${params}`, bytes);
    if (generation !== this.generation || !this.built) return;
    this.check.disabled = false;
    if (answer.status === 200 && answer.data) {
      this.report = answer.data;
      this.importStatus.textContent = "";
    } else {
      this.report = null;
      this.importStatus.textContent = t("admin.import.refused", { detail: failure(answer) });
    }
    this.drawReport();
    if (this.report && this.report.written) this.importStatus.textContent = t("admin.import.done");
  }

  drawReport() {
    if (!this.importResult) return;
    const report = this.report;
    this.run.disabled = !(report && report.dry_run && report.errors.length === 0 && report.rows > 0);
    if (!report) {
      this.importResult.replaceChildren();
      return;
    }
    const count = (key, value, testid) =>
      el("div", { className: `ad-count ad-count-${testid}`, attrs: { "data-testid": `import-count-${testid}` } }, [
        el("span", { className: "ad-count-label", text: t(key) }),
        el("span", { className: "ad-count-value", text: String(value) }),
      ]);
    const headline = report.written
      ? t("admin.import.written", { rows: report.rows })
      : report.errors.length
        ? t("admin.import.hasErrors", { count: report.errors.length })
        : t("admin.import.dryOk", { rows: report.rows });
    const parts = [
      el("p", { className: `ad-headline ${report.errors.length ? "bad" : "good"}`, text: headline, attrs: { "data-testid": "import-headline" } }),
      el("div", { className: "ad-counts" }, [
        count("admin.import.created", report.created, "created"),
        count("admin.import.updated", report.updated, "updated"),
        count("admin.import.unchanged", report.unchanged, "unchanged"),
        count("admin.import.errors", report.errors.length, "errors"),
      ]),
    ];
    if (report.errors.length) {
      parts.push(
        el("h4", { className: "ad-subtitle", text: t("admin.import.errorsTitle") }),
        el(
          "ul",
          { className: "ad-list ad-errors", attrs: { "data-testid": "import-errors" } },
          report.errors.map((e) =>
            el("li", {}, [
              el("span", { className: "ad-where", text: e.column ? t("admin.import.lineColumn", { line: e.line, column: e.column }) : t("admin.import.line", { line: e.line }) }),
              el("span", { text: importMessage(e.message) }),
            ]),
          ),
        ),
      );
    }
    if (report.repaired.length) {
      parts.push(
        el("h4", { className: "ad-subtitle", text: t("admin.import.repairedTitle", { count: report.repaired.length }) }),
        el(
          "ul",
          { className: "ad-list ad-repaired", attrs: { "data-testid": "import-repaired" } },
          report.repaired.map((r) =>
            el("li", {}, [
              el("span", { className: "ad-where", text: t("admin.import.line", { line: r.line }) }),
              el("span", { className: "ad-mono", text: `${r.from} → ${r.to}` }),
            ]),
          ),
        ),
      );
    }
    if (report.preview.length) {
      const columns = ["line", "action", "code", "name", "furigana", "company", "phones"];
      parts.push(
        el("h4", { className: "ad-subtitle", text: t("admin.import.previewTitle", { count: report.preview.length }) }),
        el("div", { className: "ad-scroll" }, [
          el("table", { className: "ad-table ad-preview", attrs: { "data-testid": "import-preview" } }, [
            el("thead", {}, [el("tr", {}, columns.map((c) => el("th", { text: t(`admin.import.col.${c}`), attrs: { scope: "col" } })))]),
            el(
              "tbody",
              {},
              report.preview.map((row) =>
                el("tr", { attrs: { "data-testid": "import-preview-row" } }, [
                  el("td", { className: "ad-mono", text: String(row.line) }),
                  el("td", {}, [el("span", { className: `ad-action ad-action-${row.action}`, text: word(`admin.import.action.${row.action}`, row.action) })]),
                  el("td", { className: "ad-mono", text: row.code || "" }),
                  el("td", { text: row.name || "" }),
                  el("td", { text: row.furigana || "" }),
                  el("td", { text: row.company || "" }),
                  el("td", { className: "ad-mono", text: (row.phones || []).join("\n") }),
                ]),
              ),
            ),
          ]),
        ]),
      );
    }
    this.importResult.replaceChildren(...parts);
  }

  // --- 書き出し -------------------------------------------------------------------------

  buildExport() {
    const panel = this.panels.export;
    this.exportStatus = el("p", { className: "ad-status", attrs: { role: "status", "data-testid": "export-status" } });
    const buttons = el("div", { className: "ad-buttons" });
    for (const encoding of ["utf-8-sig", "cp932"]) {
      const button = this.word(
        el("button", { className: "ad-button ad-primary", attrs: { type: "button", "data-testid": `export-${encoding}` } }),
        `admin.export.${encoding}`,
      );
      button.addEventListener("click", async () => {
        button.disabled = true;
        this.exportStatus.textContent = t("admin.export.working");
        const answer = await download(`/api/admin/export/customers.csv?encoding=${encoding}`, "customers.csv");
        button.disabled = false;
        this.exportStatus.textContent =
          answer.status === 200 ? t("admin.export.done", { name: answer.name }) : t("admin.export.failed", { detail: failure(answer) });
      });
      buttons.append(button);
    }
    panel.append(...this.panelHead("export", "admin.export.lead"), buttons, this.exportStatus);
  }

  // --- 削除済み -------------------------------------------------------------------------

  buildDeleted() {
    const panel = this.panels.deleted;
    const words = [];
    this.entity = el("select", { attrs: { "data-testid": "deleted-entity" } });
    for (const entity of ENTITIES) this.entity.append(this.word(el("option", { attrs: { value: entity } }), `admin.entity.${entity}`));
    this.entity.addEventListener("change", () => this.loadDeleted());
    const label = field("deleted-entity", "admin.deleted.entity", this.entity, { words });
    for (const [node, key] of words) this.word(node, key);
    this.deletedStatus = el("p", { className: "ad-status", attrs: { role: "status", "data-testid": "deleted-status" } });
    this.deletedHead = el("tr");
    this.deletedBody = el("tbody", { attrs: { "data-testid": "deleted-rows" } });
    panel.append(
      ...this.panelHead("deleted", "admin.deleted.lead"),
      el("div", { className: "ad-form ad-inline" }, [label]),
      this.deletedStatus,
      (this.deletedScroll = el("div", { className: "ad-scroll" }, [
        el("table", { className: "ad-table" }, [el("thead", {}, [this.deletedHead]), this.deletedBody]),
      ])),
    );
    this.deletedScroll.hidden = true;
  }

  async loadDeleted() {
    const entity = this.entity.value;
    const generation = this.generation;
    this.deletedStatus.textContent = t("admin.loading");
    const answer = await this.call("GET", `/api/admin/deleted?entity=${encodeURIComponent(entity)}`);
    if (generation !== this.generation || !this.built || entity !== this.entity.value) return;
    if (answer.status === 200 && answer.data && Array.isArray(answer.data.items)) {
      this.deleted = { entity, items: answer.data.items };
      this.deletedStatus.textContent = !answer.data.items.length
        ? t("admin.deleted.none")
        : answer.data.truncated
          ? t("admin.deleted.truncated", { count: answer.data.items.length })
          : "";
    } else {
      this.deleted = null;
      this.deletedStatus.textContent = failure(answer);
    }
    this.drawDeleted();
  }

  drawDeleted() {
    if (!this.deletedHead) return;
    const columns = ["id", "label", "customer", "deletedAt", "deletedBy", "actions"];
    this.deletedHead.replaceChildren(...columns.map((c) => el("th", { text: t(`admin.deleted.${c}`), attrs: { scope: "col" } })));
    const items = this.deleted ? this.deleted.items : [];
    this.deletedScroll.hidden = items.length === 0;
    this.deletedBody.replaceChildren(
      ...items.map((item) => {
        const restore = el("button", { className: "ad-button ad-small", text: t("admin.deleted.restore"), attrs: { type: "button", "data-testid": "deleted-restore" } });
        const purge = el("button", { className: "ad-button ad-small ad-danger", text: t("admin.deleted.purge"), attrs: { type: "button", "data-testid": "deleted-purge" } });
        restore.addEventListener("click", () => this.restore(item, restore));
        purge.addEventListener("click", () => this.openPurge(item, purge));
        return el("tr", { attrs: { "data-testid": "deleted-row", "data-id": String(item.id) } }, [
          el("td", { className: "ad-mono", text: String(item.id) }),
          el("td", { text: item.label || "" }),
          el("td", { text: item.customer_id ? t("admin.deleted.customerOf", { name: item.customer_name || "", id: item.customer_id }) : "" }),
          el("td", { className: "ad-when", text: when(item.deleted_at) }),
          el("td", { text: item.deleted_by_name || "" }),
          el("td", { className: "ad-actions" }, [restore, purge]),
        ]);
      }),
    );
  }

  async restore(item, button) {
    button.disabled = true;
    const answer = await this.call("POST", `/api/admin/restore/${item.entity}/${item.id}`);
    button.disabled = false;
    if (!isOk(answer)) {
      this.deletedStatus.textContent = failure(answer);
      return;
    }
    await this.loadDeleted();
    this.deletedStatus.textContent = t("admin.deleted.restored", { label: item.label || String(item.id) });
  }

  /** 完全に削除: only after the admin types the id shown (the route's `confirm`). */
  openPurge(item, back) {
    const d = this.confirmBox;
    const typed = el("input", { attrs: { type: "text", inputmode: "numeric", autocomplete: "off", "data-testid": "purge-confirm" } });
    const words = [];
    d.title.textContent = t("admin.deleted.purgeTitle");
    d.body.replaceChildren(
      el("p", { className: "ad-warn", text: t("admin.deleted.purgeLead", { label: item.label || "", entity: word(`admin.entity.${item.entity}`, item.entity) }) }),
      el("p", { className: "ad-lead" }, [
        el("span", { text: t("admin.deleted.purgeType") }),
        el("strong", { className: "ad-mono ad-id", text: String(item.id), attrs: { "data-testid": "purge-id" } }),
      ]),
      field("purge-typed", "admin.deleted.purgeField", typed, { words }),
    );
    for (const [node, key] of words) node.textContent = t(key);
    d.ok.textContent = t("admin.deleted.purge");
    d.ok.classList.add("ad-danger");
    d.cancel.textContent = t("admin.cancel");
    d.ok.disabled = true;
    d.showError("");
    typed.addEventListener("input", () => {
      d.ok.disabled = typed.value.trim() !== String(item.id);
    });
    d.form.onsubmit = async (event) => {
      event.preventDefault();
      if (typed.value.trim() !== String(item.id)) return;
      d.ok.disabled = true;
      const answer = await this.call("POST", `/api/admin/purge/${item.entity}/${item.id}`, { confirm: typed.value.trim() });
      d.ok.disabled = false;
      if (!isOk(answer)) {
        d.showError(failure(answer));
        return;
      }
      d.dialog.close();
      await this.loadDeleted();
      this.deletedStatus.textContent = t("admin.deleted.purged", { label: item.label || String(item.id) });
    };
    d.dialog.onclose = () => {
      if (back.isConnected) back.focus();
      else this.entity.focus();
    };
    d.dialog.showModal();
    typed.focus();
  }

  // --- 変更履歴 -------------------------------------------------------------------------

  buildAudit() {
    const panel = this.panels.audit;
    this.auditStatus = el("p", { className: "ad-status", attrs: { role: "status", "data-testid": "audit-status" } });
    this.auditList = el("ol", { className: "ad-audit", attrs: { "data-testid": "audit-entries" } });
    this.auditNewest = this.word(el("button", { className: "ad-button", attrs: { type: "button", "data-testid": "audit-newest" } }), "admin.audit.newest");
    this.auditOlder = this.word(el("button", { className: "ad-button", attrs: { type: "button", "data-testid": "audit-older" } }), "admin.audit.older");
    this.auditPage = el("span", { className: "ad-page", attrs: { "data-testid": "audit-page" } });
    this.auditNewest.addEventListener("click", () => this.loadAudit({ first: true }));
    this.auditOlder.addEventListener("click", () => this.loadAudit({ first: false }));
    panel.append(
      ...this.panelHead("audit", "admin.audit.lead"),
      this.auditStatus,
      this.auditList,
      el("nav", { className: "ad-pager" }, [this.auditNewest, this.auditPage, this.auditOlder]),
    );
  }

  /** The newest page (first), or the page older than the one shown. */
  async loadAudit({ first }) {
    const before = first ? null : this.audit && this.audit.next;
    if (!first && !before) return;
    const params = new URLSearchParams({ limit: String(AUDIT_PAGE) });
    if (before) params.set("before", String(before));
    const generation = this.generation;
    this.auditStatus.textContent = t("admin.loading");
    const answer = await this.call("GET", `/api/admin/audit?${params}`);
    if (generation !== this.generation || !this.built) return;
    if (answer.status === 200 && answer.data && Array.isArray(answer.data.entries)) {
      const page = first ? 1 : this.audit.page + 1;
      this.audit = { entries: answer.data.entries, next: answer.data.next || null, page };
      this.auditStatus.textContent = answer.data.entries.length ? "" : t("admin.audit.none");
    } else {
      this.auditStatus.textContent = failure(answer);
    }
    this.drawAudit();
    if (!first) this.auditList.scrollIntoView({ block: "start" });
  }

  drawAudit() {
    if (!this.auditList) return;
    const audit = this.audit;
    this.auditNewest.disabled = !audit || audit.page <= 1;
    this.auditOlder.disabled = !audit || !audit.next;
    this.auditPage.textContent = audit ? t("admin.audit.page", { page: audit.page }) : "";
    this.auditList.replaceChildren(...(audit ? audit.entries : []).map((entry) => this.auditEntry(entry)));
  }

  auditEntry(entry) {
    const entity = word(`admin.entity.${entry.entity}`, entry.entity);
    const head = el("div", { className: "ad-audit-head" }, [
      el("time", { className: "ad-when", text: when(entry.at), attrs: { datetime: entry.at || "" } }),
      el("span", { className: "ad-who", text: entry.staff_name || word(`admin.source.${entry.source}`, entry.source || "") }),
      el("span", { className: `ad-action ad-action-${entry.action}`, text: word(`admin.action.${entry.action}`, entry.action) }),
      el("span", { className: "ad-what", text: `${entity} #${entry.entity_id ?? ""}` }),
    ]);
    if (entry.source && entry.source !== "web" && entry.staff_name) {
      head.append(el("span", { className: "ad-source", text: word(`admin.source.${entry.source}`, entry.source) }));
    }
    if (entry.customer_id) {
      const open = el("button", {
        className: "ad-link",
        text: t("admin.audit.customer", { id: entry.customer_id }),
        attrs: { type: "button", "data-testid": "audit-customer" },
      });
      open.addEventListener("click", () => this.navigate("customers", { id: entry.customer_id }));
      head.append(open);
    }
    const item = el("li", { className: "ad-audit-entry", attrs: { "data-testid": "audit-entry" } }, [head]);
    const changes = changedFields(entry);
    if (changes.length) {
      item.append(
        el(
          "ul",
          { className: "ad-changes" },
          changes.map((change) =>
            el("li", {}, [
              el("span", { className: "ad-field-name", text: `${word(`admin.field.${change.field}`, change.field)}: ` }),
              el("span", { className: "ad-before", text: shown(change.before) }),
              el("span", { className: "ad-arrow", text: " → ", attrs: { "aria-hidden": "true" } }),
              el("span", { className: "ad-after", text: shown(change.after) }),
            ]),
          ),
        ),
      );
    }
    return item;
  }
}
