// The note form of a call the logged-in person took, its draft and its save.
//
// Owns, per call id: the draft (text, tags, follow-up date, new-customer fields and
// the idempotency key chosen when the draft starts), kept in localStorage on every
// keystroke so a reload, a crash or a lost connection loses nothing; the form's DOM,
// built once and never rebuilt while it is open (a redraw of the card must not take
// the text box out of the page: that would drop the cursor and an IME composition);
// and the save, POST /api/notes, retried with back-off and on reconnect with the same
// key until the server confirms it (docs/protocol.md), so the note is stored once.
// The draft is deleted only after 201/200.
//
// It knows calls and cards only as far as the form's header needs them. It does not
// place the form in the page (app.js does) or open sockets. Customer data reaches the
// page only as text (see card.js).

import { t, translatePage } from "./i18n.js";
import { callerSummary, el, shownCustomer } from "./card.js";
import { detailText, displayNumber, formatDate, formatTime } from "./format.js";

const DRAFT_PREFIX = "callpop.note.";
const DONE_KEY = "callpop.notes.done";
const DONE_KEEP_MS = 24 * 60 * 60 * 1000;
const DONE_MAX = 200;
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 30000;
const CARD_NOTES_MAX = 200; // card note elements kept (those not on the page go first)

// Quick tags: the value stored is the Japanese word, whatever the page's language.
export const TAGS = [
  ["見積依頼", "note.tag.quote"],
  ["予約", "note.tag.booking"],
  ["クレーム", "note.tag.complaint"],
  ["問い合わせ", "note.tag.inquiry"],
  ["その他", "note.tag.other"],
];

// Statuses that cannot be known from the card: the caller is no customer-to-be.
const NOT_A_CUSTOMER = new Set(["withheld", "internal", "invalid"]);

/** A version 4 UUID from getRandomValues (randomUUID needs a secure context). */
function uuid4() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function storageGet(key) {
  try {
    return window.localStorage.getItem(key);
  } catch {
    return null;
  }
}

function storageSet(key, value) {
  try {
    window.localStorage.setItem(key, value);
    return true;
  } catch {
    return false; // storage disabled or full: the draft lives in the page only
  }
}

function storageRemove(key) {
  try {
    window.localStorage.removeItem(key);
  } catch {
    // nothing stored
  }
}

function storageKeys() {
  try {
    return Object.keys(window.localStorage);
  } catch {
    return [];
  }
}

/** What the form's header and the save need to know about the call. */
function contextOf(entry) {
  const call = entry.call || {};
  const card = entry.card;
  const status = card ? card.status : null;
  const customer = shownCustomer(entry);
  const caller = call.caller || {};
  const list = (card && Array.isArray(card.customers) && card.customers) || [];
  return {
    started_at: call.started_at || null,
    number: displayNumber(call, card),
    summary: callerSummary(entry),
    customer_id: customer ? customer.id ?? null : null,
    customer_name: customer ? customer.name : null,
    // The header says 通話中 while the PBX reports the talk, then its talk time; a
    // claimed call's talk is not seen (null): neither.
    talk: talkOver(call) ? "over" : talkSeen(call) ? "on" : null,
    talk_seconds: Number.isInteger(call.talk_seconds) ? call.talk_seconds : null,
    // Unknown caller: the form offers to register the number as a new customer.
    unknown:
      list.length === 0 && !caller.withheld && !NOT_A_CUSTOMER.has(status) && Boolean(caller.number || caller.raw),
  };
}

/**
 * The talk is over: the call ended and callpop knows it was the talk that ended. A call
 * claimed with 応答しました (no dialog events from the PBX) "ends" when callpop's own
 * ring leg does, usually the moment someone picks up, while the talk goes on.
 */
export function talkOver(call) {
  if (!call || call.state !== "ended") return false;
  return !(call.answered_by && call.answered_by.how === "claimed");
}

/** The PBX's dialog events report this call's talk, and it goes on. */
function talkSeen(call) {
  const by = call && call.answered_by;
  return Boolean(by && by.how !== "claimed" && call.state !== "ended");
}

/** 3分12秒 (or 45秒), from seconds; "" when not known. */
export function talkText(seconds) {
  if (!Number.isInteger(seconds) || seconds < 0) return "";
  const minutes = Math.floor(seconds / 60);
  const rest = seconds % 60;
  return minutes ? t("calllog.minSec", { min: minutes, sec: rest }) : t("calllog.sec", { sec: rest });
}

export class NoteDesk {
  /**
   * api(method, path, body) -> {status, data}, throwing when the server cannot be
   * reached; onChange(callId) when a form must be placed again (opened, saved, closed).
   */
  constructor({ api, onChange }) {
    this.api = api;
    this.onChange = onChange;
    this.staffId = null;
    this.items = new Map(); // call id -> item (see makeItem)
    // "call id:note id" -> NoteCorrection of a note on a card's 対応履歴: the same element across
    // the card's redraws, so an open editor keeps its text. At most CARD_NOTES_MAX.
    this.cardNotes = new Map();
  }

  /**
   * The 修正/履歴 element of a note line on the card of call `callId` (card.js), or null
   * without an id. One per card: two calls from one customer each show the note.
   */
  cardNote(callId, line) {
    if (!line || !Number.isInteger(line.id)) return null;
    const key = `${callId}:${line.id}`;
    let found = this.cardNotes.get(key);
    if (!found) {
      found = new NoteCorrection({ api: this.api, note: line, compact: true });
      found.seen = line.corrected_at || null; // the card's word on it, as last drawn
      this.cardNotes.set(key, found);
      for (const [id, other] of this.cardNotes) {
        if (this.cardNotes.size <= CARD_NOTES_MAX) break;
        if (!other.editing && !other.element.isConnected) this.cardNotes.delete(id);
      }
    } else if ((line.corrected_at || null) !== found.seen) {
      // A newer card says it was corrected (elsewhere, or here): read it again.
      found.seen = line.corrected_at || null;
      if (!found.editing && !found.busy) found.loadHistory();
    }
    return found.element;
  }

  // --- life cycle ------------------------------------------------------------------

  /** Logged in as `me`: bring back this person's drafts, and resend unconfirmed saves. */
  start(me) {
    this.stop();
    this.staffId = me ? me.id : null;
    for (const key of storageKeys()) {
      if (!key.startsWith(DRAFT_PREFIX)) continue;
      let draft = null;
      try {
        draft = JSON.parse(storageGet(key));
      } catch {
        draft = null;
      }
      if (!draft || typeof draft !== "object" || !draft.call_id || !draft.key) continue;
      if (draft.staff_id !== this.staffId) continue; // someone else's, on a shared PC
      const item = this.makeItem(draft);
      this.items.set(draft.call_id, item);
      if (draft.sending) this.send(item);
    }
    return [...this.items.keys()];
  }

  /** Logged out: forget the forms (the drafts stay stored for the same person). */
  stop() {
    for (const item of this.items.values()) window.clearTimeout(item.timer);
    this.items.clear();
    this.cardNotes.clear();
    this.staffId = null;
  }

  /** Back online: unconfirmed saves go again now rather than at their next back-off. */
  retryNow() {
    for (const item of this.items.values()) {
      if (item.status === "pending" && !item.inflight) {
        window.clearTimeout(item.timer);
        item.timer = null;
        this.send(item);
      }
    }
  }

  // --- questions app.js asks ------------------------------------------------------------

  /** Whether the call has a form (open, saving, or showing the saved note). */
  has(id) {
    return this.items.has(id);
  }

  /** Whether the call's form is still open (not saved yet): it keeps its place in the page. */
  isOpen(id) {
    const item = this.items.get(id);
    return Boolean(item && item.status !== "saved");
  }

  /** The form's element, or null. */
  panel(id) {
    const item = this.items.get(id);
    return item ? item.panel : null;
  }

  /** When the call started, for ordering a form whose call is off the board. */
  startedAt(id) {
    const item = this.items.get(id);
    return (item && item.draft.context.started_at) || "";
  }

  /** The call ids with a form. */
  ids() {
    return [...this.items.keys()];
  }

  /** Saved or discarded before: the form does not open again for it. */
  isDone(id) {
    return id in this.doneMap();
  }

  // --- opening ------------------------------------------------------------------------

  /** The call is this person's: open its form (a new draft). True when it was opened now. */
  open(entry) {
    const id = entry.call.id;
    if (this.items.has(id) || this.isDone(id) || this.staffId === null) return false;
    const draft = {
      v: 1,
      call_id: id,
      staff_id: this.staffId,
      key: uuid4(),
      body: "",
      tags: [],
      follow_up_on: "",
      new_name: "",
      new_furigana: "",
      sending: false,
      context: contextOf(entry),
    };
    const item = this.makeItem(draft);
    this.items.set(id, item);
    this.persist(item);
    return true;
  }

  /**
   * The card changed (a card arrived late, another customer picked, the call ended):
   * follow it. True when the call ended just now, so the page puts the cursor in the
   * form (the moment the call ends is when the note gets written).
   */
  sync(entry) {
    const item = this.items.get(entry.call.id);
    if (!item || item.status === "saved" || item.draft.sending) return false;
    const context = contextOf(entry);
    const before = item.draft.context || {};
    if (JSON.stringify(context) === JSON.stringify(before)) return false;
    item.draft.context = context;
    this.persist(item);
    this.refresh(item);
    return context.talk === "over" && before.talk !== "over";
  }

  /** Put the cursor in the text box of the call's form. */
  focus(id) {
    const item = this.items.get(id);
    if (item && item.fields) item.fields.body.focus({ preventScroll: false });
  }

  /** The language changed. */
  translate() {
    for (const item of this.items.values()) {
      translatePage(item.panel);
      this.refresh(item);
      if (item.correction) item.correction.render();
    }
    for (const correction of this.cardNotes.values()) {
      correction.render();
    }
  }

  // --- the draft ------------------------------------------------------------------------

  persist(item) {
    storageSet(DRAFT_PREFIX + item.draft.call_id, JSON.stringify(item.draft));
  }

  doneMap() {
    let map = {};
    try {
      map = JSON.parse(storageGet(DONE_KEY) || "{}") || {};
    } catch {
      map = {};
    }
    return typeof map === "object" ? map : {};
  }

  markDone(id) {
    const now = Date.now();
    const kept = Object.entries(this.doneMap())
      .filter(([, at]) => typeof at === "number" && now - at < DONE_KEEP_MS)
      .sort((a, b) => b[1] - a[1])
      .slice(0, DONE_MAX - 1);
    storageSet(DONE_KEY, JSON.stringify(Object.fromEntries([[id, now], ...kept])));
  }

  /** The draft is gone for good: saved (confirmed) or discarded. */
  forget(item) {
    storageRemove(DRAFT_PREFIX + item.draft.call_id);
    this.markDone(item.draft.call_id);
  }

  // --- saving ---------------------------------------------------------------------------

  save(item) {
    if (item.status === "saving" || item.status === "pending" || item.status === "saved") return;
    const d = item.draft;
    if (!d.body.trim()) {
      // POST /api/notes wants a text (schemas.NoteIn: body min_length 1).
      item.status = "error";
      item.error = t("note.empty");
      this.refresh(item);
      item.fields.body.focus();
      return;
    }
    d.sending = true; // from here the key may have reached the server: the text is fixed
    this.persist(item);
    this.send(item);
  }

  requestBody(draft) {
    const registering = draft.context.unknown && draft.new_name.trim();
    return {
      idempotency_key: draft.key,
      call_id: draft.call_id,
      customer_id: registering ? null : draft.context.customer_id ?? null,
      body: draft.body.trim(),
      tags: draft.tags,
      follow_up_on: draft.follow_up_on || null,
      new_customer: registering
        ? { name: draft.new_name.trim(), furigana: draft.new_furigana.trim() || null }
        : null,
    };
  }

  async send(item) {
    if (item.inflight) return;
    item.inflight = true;
    if (item.status !== "pending") item.status = "saving";
    item.error = "";
    this.refresh(item);
    let answer = null;
    try {
      answer = await this.api("POST", "/api/notes", this.requestBody(item.draft));
    } catch {
      answer = null; // unreachable: retried below
    }
    item.inflight = false;
    if (this.items.get(item.draft.call_id) !== item) return; // logged out meanwhile
    const status = answer ? answer.status : 0;
    if (status === 200 || status === 201) {
      // 200: a retry of a save that had reached the server; the same note either way.
      window.clearTimeout(item.timer);
      item.timer = null;
      item.status = "saved";
      item.saved = answer.data || null;
      this.forget(item);
      this.renderSaved(item);
      this.onChange(item.draft.call_id);
      return;
    }
    if (status === 0 || status >= 500 || status === 401 || status === 408 || status === 429) {
      // Not stored, or not known to be: try again with the same key.
      item.status = "pending";
      item.attempts += 1;
      this.refresh(item);
      const ceiling = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(item.attempts - 1, 6));
      const delay = Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
      window.clearTimeout(item.timer);
      item.timer = window.setTimeout(() => {
        item.timer = null;
        this.send(item);
      }, delay);
      return;
    }
    // 422, 404, 409: the server read it and said no; the person can change it and try again.
    item.status = "error";
    item.attempts = 0;
    item.error = t("note.failed", { detail: detailText(answer && answer.data, status) });
    item.draft.sending = false;
    this.persist(item);
    this.refresh(item);
  }

  discard(item) {
    window.clearTimeout(item.timer);
    this.forget(item);
    this.items.delete(item.draft.call_id);
    item.panel.remove();
    this.onChange(item.draft.call_id);
  }

  // --- DOM --------------------------------------------------------------------------------

  makeItem(draft) {
    const item = {
      draft,
      status: draft.sending ? "pending" : "editing",
      error: "",
      attempts: 0,
      inflight: false,
      timer: null,
      saved: null,
      correction: null, // the saved note's NoteCorrection
      confirming: false,
      panel: null,
      fields: null,
    };
    this.buildForm(item);
    this.refresh(item);
    return item;
  }

  buildForm(item) {
    const d = item.draft;
    const base = `note-${d.call_id}`;
    const panel = el("section", {
      className: "note-panel",
      attrs: { "data-testid": "note-form", "data-call-id": d.call_id, "aria-labelledby": `${base}-title` },
    });
    const title = el("h3", { className: "note-title", attrs: { id: `${base}-title` } }, [
      el("span", { className: "note-heading", attrs: { "data-i18n": "note.heading" }, text: t("note.heading") }),
      el("span", { className: "note-who", attrs: { "data-testid": "note-who" } }),
      el("span", { className: "note-when" }),
    ]);

    const body = el("textarea", {
      className: "note-input",
      attrs: {
        id: `${base}-body`,
        rows: 4,
        "data-key": "note-body",
        "data-testid": "note-body",
        "data-i18n-placeholder": "note.placeholder",
        placeholder: t("note.placeholder"),
      },
    });
    body.value = d.body;
    const bodyLabel = el("label", {
      className: "note-label",
      text: t("note.body"),
      attrs: { for: body.id, "data-i18n": "note.body" },
    });

    const tagTitle = el("span", {
      className: "note-label",
      text: t("note.tags"),
      attrs: { id: `${base}-tags`, "data-i18n": "note.tags" },
    });
    const tagRow = el("div", { className: "note-tags", attrs: { role: "group", "aria-labelledby": tagTitle.id } });
    const tagButtons = TAGS.map(([value, key]) => {
      const button = el("button", {
        className: "note-tag",
        text: t(key),
        attrs: { type: "button", "data-i18n": key, "data-tag": value, "data-key": `note-tag-${value}` },
      });
      button.addEventListener("click", () => {
        if (this.locked(item)) return;
        const on = d.tags.includes(value);
        d.tags = on ? d.tags.filter((tag) => tag !== value) : [...d.tags, value];
        this.edited(item);
      });
      tagRow.append(button);
      return button;
    });

    const follow = el("input", {
      className: "note-date",
      attrs: { type: "date", id: `${base}-follow`, "data-key": "note-follow", "data-testid": "note-follow" },
    });
    follow.value = d.follow_up_on;
    const followLabel = el("label", {
      className: "note-label",
      text: t("note.followUp"),
      attrs: { for: follow.id, "data-i18n": "note.followUp" },
    });

    const newName = el("input", {
      attrs: { type: "text", id: `${base}-new-name`, autocomplete: "off", "data-key": "note-new-name", "data-testid": "new-name" },
    });
    newName.value = d.new_name;
    const newFurigana = el("input", {
      attrs: { type: "text", id: `${base}-new-furigana`, autocomplete: "off", lang: "ja", "data-key": "note-new-furigana", "data-testid": "new-furigana" },
    });
    newFurigana.value = d.new_furigana;
    const newNumber = el("span", { className: "new-number" });
    const newSection = el("fieldset", { className: "note-new", attrs: { "data-testid": "new-customer" } }, [
      el("legend", { text: t("note.newCustomer"), attrs: { "data-i18n": "note.newCustomer" } }),
      newNumber,
      el("div", { className: "note-new-fields" }, [
        el("label", { attrs: { for: newName.id } }, [
          el("span", { text: t("note.newName"), attrs: { "data-i18n": "note.newName" } }),
          newName,
        ]),
        el("label", { attrs: { for: newFurigana.id } }, [
          el("span", { text: t("note.newFurigana"), attrs: { "data-i18n": "note.newFurigana" } }),
          newFurigana,
        ]),
      ]),
      el("p", { className: "note-hint", text: t("note.newHint"), attrs: { "data-i18n": "note.newHint" } }),
    ]);

    const save = el("button", {
      className: "note-save primary",
      text: t("note.save"),
      attrs: { type: "button", "data-key": "note-save", "data-testid": "note-save", "data-i18n": "note.save" },
    });
    const shortcut = el("span", { className: "note-shortcut", text: t("note.shortcut"), attrs: { "data-i18n": "note.shortcut" } });
    const discard = el("button", {
      className: "note-discard",
      text: t("note.discard"),
      attrs: { type: "button", "data-key": "note-discard", "data-i18n": "note.discard" },
    });
    const confirmBox = el("div", { className: "note-confirm", attrs: { role: "group" } }, [
      el("span", { text: t("note.discardConfirm"), attrs: { "data-i18n": "note.discardConfirm" } }),
    ]);
    const confirmYes = el("button", {
      className: "note-discard-yes",
      text: t("note.discardYes"),
      attrs: { type: "button", "data-key": "note-discard-yes", "data-i18n": "note.discardYes" },
    });
    const confirmNo = el("button", {
      className: "note-discard-no",
      text: t("note.discardNo"),
      attrs: { type: "button", "data-key": "note-discard-no", "data-i18n": "note.discardNo" },
    });
    confirmBox.append(confirmYes, confirmNo);
    const status = el("p", { className: "note-status", attrs: { role: "status", "data-testid": "note-status" } });

    const input = () => {
      d.body = body.value;
      d.follow_up_on = follow.value;
      d.new_name = newName.value;
      d.new_furigana = newFurigana.value;
      this.edited(item);
    };
    for (const field of [body, follow, newName, newFurigana]) field.addEventListener("input", input);
    panel.addEventListener("keydown", (event) => {
      // Ctrl+Enter (⌘+Enter on a Mac) saves; not while an IME is still composing.
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && !event.isComposing) {
        event.preventDefault();
        this.save(item);
      }
    });
    save.addEventListener("click", () => this.save(item));
    discard.addEventListener("click", () => {
      item.confirming = true;
      this.refresh(item);
      confirmNo.focus();
    });
    confirmNo.addEventListener("click", () => {
      item.confirming = false;
      this.refresh(item);
      body.focus();
    });
    confirmYes.addEventListener("click", () => this.discard(item));

    const form = el("div", { className: "note-form" }, [
      el("div", { className: "note-field" }, [bodyLabel, body]),
      el("div", { className: "note-field" }, [tagTitle, tagRow]),
      el("div", { className: "note-field note-field-date" }, [followLabel, follow]),
      newSection,
      el("div", { className: "note-actions" }, [save, shortcut, discard]),
      confirmBox,
      status,
    ]);
    panel.append(title, form);
    item.panel = panel;
    item.fields = { body, follow, newName, newFurigana, newSection, newNumber, tagButtons, save, discard, confirmBox, status, title, form };
  }

  locked(item) {
    return item.status === "saving" || item.status === "pending" || item.status === "saved";
  }

  /** A keystroke or a tag: keep it (the draft survives a reload from here on). */
  edited(item) {
    if (item.status === "error") {
      item.status = "editing";
      item.error = "";
    }
    this.persist(item);
    this.refresh(item);
  }

  /** Show the item's state in its form, without rebuilding the inputs. */
  refresh(item) {
    if (!item.fields || item.status === "saved") return;
    const d = item.draft;
    const f = item.fields;
    const c = d.context;
    const who = c.customer_name ? t("honorific", { name: c.customer_name }) : c.number || c.summary || t("status.noNumber");
    f.title.querySelector(".note-who").textContent = who;
    const when = c.started_at ? t("note.callAt", { date: formatDate(c.started_at), time: formatTime(c.started_at) }) : "";
    const talk = talkText(c.talk_seconds);
    const length = talk ? t("note.talk", { talk }) : c.talk === "on" ? t("note.talking") : "";
    f.title.querySelector(".note-when").textContent = [when, length].filter(Boolean).join(" · ");
    const locked = this.locked(item);
    f.body.readOnly = locked;
    for (const field of [f.follow, f.newName, f.newFurigana]) field.readOnly = locked;
    for (const button of f.tagButtons) {
      const on = d.tags.includes(button.dataset.tag);
      button.setAttribute("aria-pressed", on ? "true" : "false");
      button.classList.toggle("on", on);
      button.setAttribute("aria-disabled", locked ? "true" : "false");
    }
    f.newSection.hidden = !c.unknown;
    f.newNumber.textContent = t("note.newNumber", { number: c.number || "" });
    f.save.setAttribute("aria-disabled", locked ? "true" : "false");
    f.discard.hidden = locked || item.confirming;
    f.confirmBox.hidden = !item.confirming;
    const text =
      item.status === "saving"
        ? t("note.saving")
        : item.status === "pending"
          ? t("note.pending")
          : item.status === "error"
            ? item.error
            : "";
    f.status.textContent = text;
    f.status.hidden = !text;
    f.status.dataset.state = item.status;
    item.panel.dataset.state = item.status;
  }

  /** The form closes; the saved note shows in its place. */
  renderSaved(item) {
    const note = item.saved || {};
    const d = item.draft;
    const panel = item.panel;
    panel.dataset.state = "saved";
    panel.classList.add("saved");
    const lines = [
      el("p", { className: "note-status", text: t("note.saved"), attrs: { role: "status", "data-testid": "note-status", "data-state": "saved" } }),
    ];
    const meta = [];
    if (note.staff_name || note.at) {
      meta.push(
        t("note.savedBy", {
          staff: note.staff_name || "",
          date: formatDate(note.at || ""),
          time: formatTime(note.at || ""),
        }),
      );
    }
    const tags = Array.isArray(note.tags) ? note.tags : d.tags;
    // The note as the server stored it can be corrected here (修正, 履歴).
    const correctable = Number.isInteger(note.id) && typeof note.body === "string";
    const row = el("div", { className: "saved-note", attrs: { "data-testid": "saved-note" } }, [
      correctable
        ? (item.correction = new NoteCorrection({ api: this.api, note })).element
        : el("div", { className: "saved-meta", text: meta.join(" ") }),
    ]);
    if (!correctable) row.append(el("div", { className: "saved-body", text: d.body.trim() }));
    if (tags.length) {
      row.append(el("div", { className: "badges" }, tags.map((tag) => el("span", { className: "badge tag", text: tag }))));
    }
    const follow = note.follow_up_on || d.follow_up_on;
    if (follow) row.append(el("div", { className: "saved-follow", text: t("note.followUpOn", { date: formatDate(follow) }) }));
    if (d.context.unknown && d.new_name.trim()) {
      row.append(el("div", { className: "saved-new", text: t("note.newCustomerSaved", { name: d.new_name.trim() }) }));
    }
    lines.push(row);
    const close = el("button", {
      className: "note-close",
      text: t("note.close"),
      attrs: { type: "button", "data-key": "note-close", "data-i18n": "note.close" },
    });
    close.addEventListener("click", () => {
      this.items.delete(d.call_id);
      panel.remove();
      this.onChange(d.call_id);
    });
    lines.push(close);
    const title = item.fields.title;
    item.fields = null;
    panel.replaceChildren(title, ...lines);
  }
}

// --- a saved note, corrected in place ---------------------------------------------------

let correctionCount = 0; // for element ids of their own

/** "佐藤 健 2026-11-22 10:33": who and when, as one line of text. */
function byAt(name, iso) {
  return t("noteEdit.byAt", { name: name || t("noteEdit.someone"), date: formatDate(iso || ""), time: formatTime(iso || "") });
}

/**
 * One saved note with 修正 (an inline editor: Ctrl+Enter saves through
 * PATCH /api/notes/{id}, Esc cancels) and 履歴 (its earlier texts: who wrote each, who
 * replaced it and when). Owns its element; the caller places it once and keeps it, so a
 * redraw around it does not take the text box away. `note` is a NoteOut
 * (docs/protocol.md); onSaved(note) after a correction the server confirmed.
 */
export class NoteCorrection {
  /**
   * `note` may also be a card's note line ({id, at, staff_name, body, corrected_at}, no
   * `revisions`): its history is then read from GET /api/notes/{id}/revisions, at once
   * when it was corrected (修正済み names who), else when 履歴 is first opened.
   * `compact`: as a line of the card's 対応履歴 (who and when are on the line already).
   */
  constructor({ api, note, onSaved = () => {}, compact = false }) {
    this.api = api;
    this.note = note;
    this.onSaved = onSaved;
    this.compact = compact;
    this.editing = false;
    this.busy = false;
    this.error = "";
    this.historyOpen = false;
    this.loading = false;
    this.build();
    this.render();
    if (!Array.isArray(note.revisions) && note.corrected_at) this.loadHistory();
  }

  /** The earlier texts, from the server (a card's note line has none). */
  async loadHistory() {
    if (this.loading) return;
    this.loading = true;
    let answer = null;
    try {
      answer = await this.api("GET", `/api/notes/${encodeURIComponent(this.note.id)}/revisions`);
    } catch {
      answer = null;
    }
    this.loading = false;
    if (answer && answer.status === 200 && answer.data && Array.isArray(answer.data.revisions)) {
      const d = answer.data;
      this.note = { ...this.note, body: d.body, staff_name: d.staff_name, at: d.at, revisions: d.revisions };
    } else if (answer && answer.status === 404) {
      this.error = t("noteEdit.gone");
    }
    this.render();
  }

  build() {
    const id = this.note.id;
    const base = `note-${id}-fix`; // data-key: the same on every redraw of a card
    correctionCount += 1;
    const uid = `${base}-${correctionCount}`; // element ids: one note may be on two cards
    this.element = el("div", { className: "note-record", attrs: { "data-testid": "note-record", "data-note-id": String(id) } });
    this.meta = el("div", { className: "note-record-meta" });
    this.body = el("div", { className: "note-record-body", attrs: { "data-testid": "note-record-body" } });
    this.corrected = el("div", { className: "note-corrected", attrs: { "data-testid": "note-corrected" } });
    this.correctButton = el("button", {
      className: "note-correct",
      attrs: { type: "button", "data-key": `${base}-open`, "data-testid": "note-correct" },
    });
    this.historyButton = el("button", {
      className: "note-history-toggle",
      attrs: { type: "button", "data-key": `${base}-history`, "data-testid": "note-history-toggle", "aria-controls": `${uid}-history` },
    });
    this.actions = el("div", { className: "note-record-actions" }, [this.correctButton, this.historyButton]);
    this.input = el("textarea", {
      className: "note-input note-edit-input",
      attrs: { id: `${uid}-text`, rows: 3, "data-key": `${base}-text`, "data-testid": "note-edit" },
    });
    this.inputLabel = el("label", { className: "visually-hidden", attrs: { for: this.input.id } });
    this.saveButton = el("button", {
      className: "primary note-edit-save",
      attrs: { type: "button", "data-key": `${base}-save`, "data-testid": "note-edit-save" },
    });
    this.cancelButton = el("button", {
      className: "note-edit-cancel",
      attrs: { type: "button", "data-key": `${base}-cancel`, "data-testid": "note-edit-cancel" },
    });
    this.hint = el("span", { className: "note-shortcut" });
    this.status = el("p", { className: "note-status", attrs: { role: "status", "data-testid": "note-edit-status" } });
    this.editor = el("div", { className: "note-editor", attrs: { "data-testid": "note-editor" } }, [
      this.inputLabel,
      this.input,
      el("div", { className: "note-actions" }, [this.saveButton, this.hint, this.cancelButton]),
      this.status,
    ]);
    this.history = el("ol", { className: "note-history", attrs: { id: `${uid}-history`, "data-testid": "note-history" } });
    this.element.append(this.meta, this.body, this.corrected, this.actions, this.editor, this.history);

    this.correctButton.addEventListener("click", () => this.open());
    this.historyButton.addEventListener("click", () => {
      this.historyOpen = !this.historyOpen;
      if (this.historyOpen && !Array.isArray(this.note.revisions)) this.loadHistory();
      this.render();
    });
    this.saveButton.addEventListener("click", () => this.save());
    this.cancelButton.addEventListener("click", () => this.cancel());
    this.editor.addEventListener("keydown", (event) => {
      if (event.isComposing) return; // an IME's Enter and Esc are the IME's
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.save();
      } else if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation(); // not the board's Escape (it closes a card)
        this.cancel();
      }
    });
  }

  open() {
    if (this.editing) return;
    this.editing = true;
    this.error = "";
    this.input.value = this.note.body || "";
    this.render();
    this.input.focus();
  }

  cancel() {
    this.editing = false;
    this.error = "";
    this.render();
    this.correctButton.focus();
  }

  async save() {
    if (this.busy) return;
    const body = this.input.value.trim();
    if (!body) {
      this.error = t("note.empty");
      this.render();
      return;
    }
    if (body === this.note.body) {
      this.cancel();
      return;
    }
    this.busy = true;
    this.error = "";
    this.render();
    let answer = null;
    try {
      answer = await this.api("PATCH", `/api/notes/${encodeURIComponent(this.note.id)}`, { body });
    } catch {
      answer = null;
    }
    this.busy = false;
    if (answer && answer.status === 200 && answer.data) {
      this.note = answer.data;
      this.editing = false;
      this.render();
      this.correctButton.focus();
      this.onSaved(this.note);
      return;
    }
    this.error = answer ? t("note.failed", { detail: detailText(answer.data, answer.status) }) : t("noteEdit.unreachable");
    this.render();
  }

  /** The earlier versions, newest first: each with who wrote it and who replaced it. */
  versions() {
    const note = this.note;
    const revisions = Array.isArray(note.revisions) ? note.revisions : [];
    return revisions
      .map((revision, i) => {
        const before = i === 0 ? { staff_name: note.staff_name, at: note.at } : revisions[i - 1];
        return { body: revision.body, wrote: before, replaced: revision };
      })
      .reverse();
  }

  render() {
    const note = this.note;
    const known = Array.isArray(note.revisions);
    const revisions = known ? note.revisions : [];
    const last = revisions[revisions.length - 1];
    this.meta.hidden = this.compact;
    this.meta.textContent = byAt(note.staff_name, note.at);
    this.body.textContent = note.body || "";
    this.corrected.hidden = !last && !note.corrected_at;
    this.corrected.textContent = last
      ? t("noteEdit.corrected", { who: byAt(last.staff_name, last.at) })
      : note.corrected_at
        ? t("noteEdit.corrected", { who: `${formatDate(note.corrected_at)} ${formatTime(note.corrected_at)}` })
        : "";
    this.correctButton.textContent = t("noteEdit.correct");
    this.correctButton.hidden = this.editing;
    this.historyButton.hidden = known ? revisions.length === 0 : !note.corrected_at;
    this.historyButton.textContent = t(this.historyOpen ? "noteEdit.historyHide" : "noteEdit.history", {
      count: known ? revisions.length : "…",
    });
    this.historyButton.setAttribute("aria-expanded", this.historyOpen ? "true" : "false");
    this.editor.hidden = !this.editing;
    this.body.hidden = this.editing;
    this.inputLabel.textContent = t("noteEdit.label");
    this.input.readOnly = this.busy;
    this.saveButton.textContent = t(this.busy ? "note.saving" : "noteEdit.save");
    this.saveButton.setAttribute("aria-disabled", this.busy ? "true" : "false");
    this.cancelButton.textContent = t("noteEdit.cancel");
    this.hint.textContent = t("noteEdit.shortcut");
    this.status.textContent = this.error;
    this.status.hidden = !this.error;
    this.history.hidden = !this.historyOpen || revisions.length === 0;
    this.element.classList.toggle("compact", this.compact);
    this.history.setAttribute("aria-label", t("noteEdit.historyLabel"));
    this.history.replaceChildren(
      ...this.versions().map((version) =>
        el("li", { className: "note-version", attrs: { "data-testid": "note-version" } }, [
          el("div", { className: "note-version-body", text: version.body }),
          el("div", {
            className: "note-version-meta",
            text: t("noteEdit.version", {
              wrote: byAt(version.wrote.staff_name, version.wrote.at),
              replaced: byAt(version.replaced.staff_name, version.replaced.at),
            }),
          }),
        ]),
      ),
    );
    this.element.dataset.corrected = last ? "true" : "false";
  }
}
