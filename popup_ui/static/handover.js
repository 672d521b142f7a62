// 転送メモ (hand-over note): before transferring a call on the phone, the person who has
// it leaves one line for the colleague it goes to (POST /api/calls/{id}/handover,
// docs/protocol.md). Every browser then shows 「佐藤 → 鈴木へ転送」 on the card
// (card.js, from call.handover) and the target's browser pops the card with the line
// on top.
//
// One form per call, kept across redraws of the card (like the note form in notes.js)
// so that what someone types and picks is never lost when the call or a presence
// changes. The page (app.js) asks for the form of a call it holds and puts it in the
// call's slot; this module owns the request and what the server answered.
//
// The colleagues offered are the board's staff (watched extensions, with presence).
// When the board lists nobody (trunk mode: no extension is watched), they come from
// GET /api/staff instead (everyone active with an extension; presence unknown), read
// once and again at most every STAFF_DIRECTORY_MAX_AGE_MS, so a note can still be
// addressed.

import { t } from "./i18n.js";
import { el } from "./card.js";
import { PRESENCES } from "./board.js";
import { familyName, presenceText } from "./presence.js";

export const HANDOVER_NOTE_MAX = 200; // as the server checks it (HandoverIn)
export const STAFF_DIRECTORY_MAX_AGE_MS = 60_000; // GET /api/staff read again after this
const STAFF_DIRECTORY_LIMIT = 500; // as the server lists at most (StaffList)

/** One GET /api/staff entry as the board's staff entries look, or null. */
function directoryEntry(item) {
  if (!item || typeof item !== "object" || !Number.isInteger(item.id)) return null;
  if (typeof item.extension !== "string" || !item.extension) return null; // cannot be rung
  return {
    staff_id: item.id,
    name: typeof item.name === "string" ? item.name : null,
    extension: item.extension,
    presence: PRESENCES.includes(item.presence) ? item.presence : "unknown",
  };
}

export class HandoverForms {
  /** api(method, path, body) -> {status, data}; onChange(id) redraws the call. */
  constructor({ api, onChange }) {
    this.api = api;
    this.onChange = onChange;
    this.forms = new Map(); // call id -> {element, input, select, button, status, busy}
    this.directory = null; // GET /api/staff as board staff entries, once read
    this.directoryAt = 0; // when it was read (Date.now()), 0: never
    this.directoryLoading = false;
  }

  /** Forget every form and the staff directory (logout). */
  stop() {
    this.forms.clear();
    this.directory = null;
    this.directoryAt = 0;
  }

  /** The form for `entry`'s call, brought up to date: `staff` are the colleagues to pick from. */
  panel(entry, staff, meId) {
    const id = entry.call.id;
    let form = this.forms.get(id);
    if (!form) {
      form = this.build(id);
      this.forms.set(id, form);
    }
    let colleagues = staff.filter((s) => s.staff_id !== null && s.staff_id !== meId);
    if (colleagues.length === 0) colleagues = this.fromDirectory(meId);
    this.update(form, colleagues);
    return form.element;
  }

  /** The colleagues from GET /api/staff (the board lists nobody); read when stale. */
  fromDirectory(meId) {
    if (Date.now() - this.directoryAt > STAFF_DIRECTORY_MAX_AGE_MS) this.loadDirectory();
    return (this.directory || []).filter((s) => s.staff_id !== meId);
  }

  async loadDirectory() {
    if (this.directoryLoading) return;
    this.directoryLoading = true;
    let answer = null;
    try {
      answer = await this.api("GET", "/api/staff");
    } catch {
      answer = null; // unreachable: tried again when the forms are next drawn after the max age
    }
    this.directoryLoading = false;
    this.directoryAt = Date.now();
    const staff = answer && answer.status === 200 && answer.data && answer.data.staff;
    if (Array.isArray(staff)) {
      this.directory = staff.slice(0, STAFF_DIRECTORY_LIMIT).map(directoryEntry).filter(Boolean);
    }
    for (const id of this.forms.keys()) this.onChange(id);
  }

  drop(id) {
    this.forms.delete(id);
  }

  build(id) {
    const base = `handover-${id}`;
    const input = el("input", {
      className: "handover-input",
      attrs: {
        id: `${base}-note`,
        type: "text",
        maxlength: HANDOVER_NOTE_MAX,
        autocomplete: "off",
        "data-key": "handover-note",
        "data-testid": "handover-input",
      },
    });
    const select = el("select", {
      className: "handover-to",
      attrs: { id: `${base}-to`, "data-key": "handover-to", "data-testid": "handover-to" },
    });
    const button = el("button", {
      className: "handover-button",
      attrs: { type: "submit", "data-key": "handover-send", "data-testid": "handover-send" },
    });
    const status = el("span", { className: "handover-status", attrs: { role: "status", "data-testid": "handover-status" } });
    const heading = el("span", { className: "handover-heading" });
    const noteLabel = el("label", { className: "visually-hidden", attrs: { for: input.id } });
    const toLabel = el("label", { className: "handover-to-label", attrs: { for: select.id } });
    const element = el("form", { className: "handover-form", attrs: { "data-testid": "handover-form", "data-call-id": id } }, [
      heading,
      el("div", { className: "handover-row" }, [noteLabel, input, toLabel, select, button]),
      status,
    ]);
    const form = { id, element, input, select, button, status, heading, noteLabel, toLabel, busy: false, sentTo: null };
    element.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send(form);
    });
    return form;
  }

  update(form, staff) {
    form.heading.textContent = t("handover.heading");
    form.noteLabel.textContent = t("handover.noteInput");
    form.input.setAttribute("placeholder", t("handover.placeholder"));
    form.toLabel.textContent = t("handover.to");
    form.button.textContent = form.busy ? t("handover.sending") : t("handover.send");
    // Keep the pick across redraws; the words (presence) follow the strip.
    const picked = form.select.value;
    form.select.replaceChildren(
      ...staff.map((s) =>
        el("option", {
          text: t("handover.option", {
            name: s.name || t("presence.noName"),
            ext: s.extension,
            presence: presenceText(s.presence),
          }),
          attrs: { value: String(s.staff_id), "data-presence": s.presence },
        }),
      ),
    );
    if (staff.some((s) => String(s.staff_id) === picked)) form.select.value = picked;
    const none = staff.length === 0;
    form.select.disabled = none;
    form.button.disabled = none || form.busy;
    if (none && !form.busy) this.say(form, t("handover.nobody"), "info");
    else if (!none && form.status.dataset.kind === "info") this.say(form, "", "");
  }

  say(form, text, kind) {
    form.status.textContent = text;
    form.status.dataset.kind = kind;
  }

  async send(form) {
    if (form.busy) return;
    const note = form.input.value.trim();
    const to = Number.parseInt(form.select.value, 10);
    if (!note) {
      this.say(form, t("handover.empty"), "error");
      form.input.focus();
      return;
    }
    if (!Number.isInteger(to)) {
      this.say(form, t("handover.nobody"), "error");
      return;
    }
    form.busy = true;
    form.button.disabled = true;
    form.button.textContent = t("handover.sending");
    let answer = null;
    try {
      answer = await this.api("POST", `/api/calls/${encodeURIComponent(form.id)}/handover`, {
        to_staff_id: to,
        note: note.slice(0, HANDOVER_NOTE_MAX),
      });
    } catch {
      answer = null;
    }
    form.busy = false;
    form.button.disabled = false;
    form.button.textContent = t("handover.send");
    if (answer && answer.status === 200 && answer.data) {
      const handover = answer.data.handover || {};
      this.say(form, t("handover.sent", { to: familyName(handover.to_name) }), "ok");
    } else {
      // 409: only the person who has the call; 404: no such call or colleague — the
      // server's words say which.
      const detail = answer && answer.data && typeof answer.data.detail === "string" ? answer.data.detail : "";
      this.say(form, t("handover.failed", { detail: detail || t("handover.unreachable") }), "error");
    }
    this.onChange(form.id);
  }
}
