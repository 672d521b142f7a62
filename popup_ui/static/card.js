// The pop card: one call (ringing, answered or ended) rendered as DOM.
//
// SECURITY: every piece of customer or caller data reaches the page through
// textContent / setAttribute on elements made with createElement. Nothing here
// ever assigns innerHTML, so a name like <img src=x onerror=...> stays text.
// This module knows the card JSON of docs/protocol.md and the words of i18n.js,
// not sockets, sessions or the board's ordering.

import { language, t } from "./i18n.js";
import { dialedLine, displayNumber, formatDate, formatTime, formatYen } from "./format.js";
import { familyName, presenceChip } from "./presence.js";

/** createElement with a class list, text and attributes; children appended. */
export function el(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  if (options.className) node.className = options.className;
  if (options.text !== undefined && options.text !== null) node.textContent = String(options.text);
  if (options.attrs) {
    for (const [name, value] of Object.entries(options.attrs)) {
      if (value !== undefined && value !== null) node.setAttribute(name, String(value));
    }
  }
  for (const child of children) {
    if (child) node.append(child);
  }
  return node;
}

const WITHHELD_KEYS = {
  anonymous: "withheld.anonymous",
  payphone: "withheld.payphone",
  unavailable: "withheld.unavailable",
  interaction: "withheld.interaction",
};

const DEGRADED_KEYS = {
  timeout: "status.degraded.timeout",
  database: "status.degraded.database",
  error: "status.degraded.error",
};

const OUTCOME_KEYS = {
  answered_elsewhere: "outcome.answered_elsewhere",
  abandoned: "outcome.abandoned",
  timeout: "outcome.timeout",
  hangup: "outcome.hangup",
  routed: "outcome.routed",
};

/** The reason an ended call shows, e.g. 他の人が応答しました; "" when it is not known. */
export function outcomeText(outcome) {
  if (!outcome) return ""; // ended while the page was disconnected: claim nothing
  return t(OUTCOME_KEYS[outcome] || "outcome.gone");
}

/** Known-customer routing: 「佐藤 健へ直通 — 担当者が空いています」; "" when not routed. */
export function routingText(routing) {
  if (!routing || typeof routing !== "object") return "";
  let where;
  if (routing.name) where = t("routing.assignee", { name: routing.name });
  else if (routing.extension) where = t("routing.groupExt", { ext: routing.extension });
  else where = t("routing.group");
  const reason = t(`routing.reason.${routing.reason}`);
  return reason.startsWith("routing.") ? where : t("routing.withReason", { where, reason });
}

function withheldText(reason) {
  return t(WITHHELD_KEYS[reason] || "withheld.anonymous");
}

function customers(card) {
  return (card && Array.isArray(card.customers) && card.customers) || [];
}

function selectedCustomer(entry) {
  const list = customers(entry.card);
  if (list.length === 0) return null;
  const index = Math.min(Math.max(entry.selected || 0, 0), list.length - 1);
  return list[index];
}

/** Who is calling, in a few words: for document.title and notifications. */
export function callerSummary(entry) {
  const { call, card } = entry;
  const caller = (call && call.caller) || {};
  const status = card ? card.status : null;
  const withheld = caller.withheld || (status === "withheld" ? "anonymous" : null);
  if (withheld) return withheldText(withheld);
  const customer = status === "matched" ? selectedCustomer(entry) : null;
  if (customer) {
    const list = customers(card);
    const name = t("honorific", { name: customer.name });
    return list.length > 1 ? `${name} (+${list.length - 1})` : name;
  }
  const number = displayNumber(call, card);
  if (status === "internal") return t("status.internal", { ext: caller.raw || number });
  return number || t("status.noNumber");
}

/** Who took a call, as the card names them: 佐藤 健, else 内線 203. */
export function answererName(by) {
  if (!by || typeof by !== "object") return t("claim.someone");
  if (by.name) return by.name;
  if (by.extension) return t("claim.ext", { ext: by.extension });
  return t("claim.someone");
}

// The server takes claims for calls up to this old (docs/protocol.md, 404 after).
const CLAIM_WINDOW_MS = 30 * 60 * 1000;
// Ended calls that nobody is known to have answered: the person who did can say so.
const CLAIMABLE_OUTCOMES = new Set(["answered_elsewhere", "abandoned", "timeout"]);

/** Whether the card offers 応答しました. */
export function claimable(call, now = Date.now()) {
  if (!call || call.answered_by) return false;
  if (call.state === "ringing") return true;
  if (call.state !== "ended" || !CLAIMABLE_OUTCOMES.has(call.outcome)) return false;
  const started = Date.parse(call.started_at || "");
  return Number.isNaN(started) || now - started < CLAIM_WINDOW_MS;
}

/** The customer of a number several share that the picker shows; null for none. */
export function shownCustomer(entry) {
  return entry.card && entry.card.status === "matched" ? selectedCustomer(entry) : null;
}

// --- parts -------------------------------------------------------------------

function stateChip(entry) {
  const call = entry.call || {};
  if (call.state === "ended") {
    if (!call.outcome) return null;
    return el("span", {
      className: `chip chip-ended outcome-${call.outcome}`,
      text: outcomeText(call.outcome),
      attrs: { "data-testid": "outcome" },
    });
  }
  if (call.state === "answered") {
    const text = call.answered_by ? t("claim.active", { name: answererName(call.answered_by) }) : t("call.answered");
    return el("span", {
      className: "chip chip-answered",
      text,
      attrs: call.answered_by ? { "data-testid": "answered-by" } : {},
    });
  }
  return el("span", { className: "chip chip-ringing" }, [
    el("span", { className: "pulse", attrs: { "aria-hidden": "true" } }),
    el("span", { text: t("board.ringing") }),
  ]);
}

/**
 * The card's first row: state, times and the office line that was called. For an
 * ended call (disclosure set) the row is the heading's button that opens and closes
 * the details; nothing interactive sits inside it (the copy button is outside).
 */
function topLine(entry, disclosure) {
  const call = entry.call || {};
  const caller = call.caller || {};
  const meta = el("span", { className: "card-meta" }, [stateChip(entry)]);
  if (call.state === "ended" && call.answered_by) {
    meta.append(
      el("span", {
        className: "chip chip-answerer",
        text: t("claim.ended", { name: answererName(call.answered_by) }),
        attrs: { "data-testid": "answered-by" },
      }),
    );
  }
  if (call.started_at) {
    meta.append(el("span", { className: "time", text: t("call.at", { time: formatTime(call.started_at) }) }));
  }
  if (call.state === "ended" && call.ended_at) {
    meta.append(el("span", { className: "time ended-time", text: t("call.endedAt", { time: formatTime(call.ended_at) }) }));
  }
  const line = dialedLine(call);
  if (line) {
    meta.append(
      el("span", { className: "dialed-line", text: t("call.line", { line }), attrs: { "data-testid": "dialed-line" } }),
    );
  }
  const routed = routingText(call.routing);
  if (routed) {
    meta.append(el("span", { className: "chip chip-routing", text: routed, attrs: { "data-testid": "routing" } }));
  }
  let head = meta;
  if (disclosure) {
    const button = el(
      "button",
      {
        className: "card-toggle",
        attrs: {
          type: "button",
          "aria-expanded": disclosure.expanded ? "true" : "false",
          "aria-controls": disclosure.controls,
          "data-key": "toggle",
          "data-testid": "card-toggle",
        },
      },
      [
        // Who called, for the button's name; the eye reads it in the card below.
        el("span", { className: "visually-hidden", text: `${callerSummary(entry)} ` }),
        meta,
        el("span", { className: "chevron", attrs: { "aria-hidden": "true" } }),
      ],
    );
    button.addEventListener("click", disclosure.onToggle);
    head = el("h3", { className: "card-heading" }, [button]);
  }
  const side = el("div", { className: "card-caller" });
  const status = entry.card ? entry.card.status : null;
  const number = displayNumber(call, entry.card);
  // The number heads the card for a known customer; the other kinds show it large below.
  if (status === "matched" && number) {
    const customer = selectedCustomer(entry);
    side.append(el("span", { className: "number", text: number, attrs: { "data-testid": "number" } }));
    if (customer && (customer.phone_owner || customer.phone_label)) {
      const label = customer.phone_owner
        ? t("customer.phoneOwner", { owner: customer.phone_owner })
        : t("customer.phone", { label: customer.phone_label });
      side.append(el("span", { className: "phone-label", text: label }));
    }
  }
  if (caller.display_name) {
    side.append(
      el("span", {
        className: "display-name",
        text: t("call.display", { name: caller.display_name }),
        attrs: { "data-testid": "display-name" },
      }),
    );
  }
  return el("header", { className: "card-top" }, [head, side]);
}

function badges(customer) {
  const row = el("div", { className: "badges" });
  if (customer.rank) {
    row.append(
      el("span", {
        className: `badge rank rank-${String(customer.rank).toLowerCase().replace(/[^a-z0-9]/g, "")}`,
        text: t("customer.rank", { rank: customer.rank }),
      }),
    );
  }
  for (const tag of Array.isArray(customer.tags) ? customer.tags : []) {
    row.append(el("span", { className: "badge tag", text: tag }));
  }
  if (customer.birthday_today) {
    // An icon instead of the 🎂 character: not every office PC has an emoji font.
    row.append(
      el("span", { className: "badge birthday", attrs: { "data-testid": "birthday" } }, [
        el("img", { className: "icon", attrs: { src: "/static/cake.svg", alt: "🎂", width: 18, height: 18 } }),
        el("span", { text: t("customer.birthday") }),
      ]),
    );
  }
  return row.childElementCount ? row : null;
}

/**
 * 最近の対応: who else handled this customer lately (the card's recent_staff), each with
 * their extension and presence, for when the 担当者 cannot take the call. Null when
 * there is nobody to name (the person on the call is left out).
 */
function recentStaffLine(customer, handlers, answeredBy) {
  const onCall = answeredBy && answeredBy.staff_id != null ? answeredBy.staff_id : null;
  const staff = (Array.isArray(customer.recent_staff) ? customer.recent_staff : []).filter(
    (s) => s && s.id !== onCall,
  );
  if (!staff.length) return null;
  const line = el("div", { className: "assigned-others", attrs: { "data-testid": "recent-staff" } }, [
    el("span", { className: "assigned-others-label", text: t("customer.recentStaff") }),
  ]);
  for (const s of staff) {
    const item = el("span", { className: "assigned-other", attrs: { "data-staff-id": String(s.id) } }, [
      el("span", {
        text: s.extension ? t("customer.staffExt", { name: s.name, ext: s.extension }) : s.name,
      }),
    ]);
    const presence = handlers.presenceOf ? handlers.presenceOf(s.id) : null;
    if (presence) item.append(" ", presenceChip(presence, "recent-staff-presence"));
    line.append(item);
  }
  return line;
}

function assignedPanel(entry, customer, handlers, { compact }) {
  const staff = customer.assigned_staff;
  if (!staff) {
    return el("div", { className: "assigned none", text: t("customer.noAssigned") });
  }
  const ext = staff.extension;
  const panel = el("div", { className: "assigned", attrs: { "data-testid": "assigned" } });
  panel.append(
    el("div", {
      className: "assigned-name",
      text: ext
        ? t("customer.assignedExt", { name: staff.name, ext })
        : t("customer.assigned", { name: staff.name }),
    }),
  );
  // The 担当者 has this very call: nothing to warn about, nobody to transfer to.
  const by = entry.call && entry.call.answered_by;
  const theirs = Boolean(by && by.staff_id != null && by.staff_id === staff.id);
  // Their extension's presence, when it is watched (register mode): say when they cannot
  // take a transfer now.
  const presence = handlers.presenceOf ? handlers.presenceOf(staff.id) : null;
  if (presence) {
    panel.querySelector(".assigned-name").append(" ", presenceChip(presence, "assigned-presence"));
    if (!theirs && (presence === "busy" || presence === "unknown" || presence === "ringing")) {
      panel.append(
        el("div", {
          className: `assigned-warning presence-${presence}`,
          text: t(`presence.warn.${presence}`, { name: familyName(staff.name) }),
          attrs: { "data-testid": "assigned-warning" },
        }),
      );
      const others = recentStaffLine(customer, handlers, by);
      if (others) panel.append(others);
    }
  }
  if (ext && !compact && !theirs) {
    // No PBX transfer yet: say what to do and offer the extension to copy, nothing more.
    const hint = el("div", { className: "transfer" }, [
      el("span", { className: "transfer-hint", text: t("transfer.hint", { ext }) }),
    ]);
    const button = el("button", {
      className: "copy-ext",
      text: t("transfer.copy"),
      attrs: { type: "button", "data-ext": ext, "data-key": "copy" },
    });
    button.addEventListener("click", () => handlers.onCopyExtension(entry, ext));
    hint.append(button);
    if (entry.copyFeedback && entry.copyFeedback.ext === ext) {
      hint.append(
        el("span", {
          className: "copy-feedback",
          text: entry.copyFeedback.ok
            ? t("transfer.copied", { ext })
            : t("transfer.copyFailed", { ext }),
          attrs: { role: "status" },
        }),
      );
    }
    panel.append(hint);
  }
  return panel;
}

function facts(customer) {
  const list = el("ul", { className: "facts" });
  if (customer.preferences) {
    list.append(
      el("li", { className: "fact preferences" }, [
        el("span", { className: "fact-label", text: t("customer.preferences") }),
        el("span", { className: "fact-text", text: customer.preferences }),
      ]),
    );
  }
  if (typeof customer.days_since_contact === "number") {
    const text =
      customer.days_since_contact === 0
        ? t("customer.daysSinceToday")
        : t("customer.daysSince", { days: customer.days_since_contact });
    const date = customer.last_contact_at ? formatDate(customer.last_contact_at) : "";
    list.append(
      el("li", { className: "fact since" }, [
        el("span", { className: "fact-text", text }),
        date ? el("span", { className: "fact-sub", text: `(${date})` }) : null,
      ]),
    );
  }
  if (customer.memo) {
    list.append(
      el("li", { className: "fact memo" }, [
        el("span", { className: "fact-label", text: t("customer.memo") }),
        el("span", { className: "fact-text", text: customer.memo }),
      ]),
    );
  }
  return list.childElementCount ? list : null;
}

/** One history section (取引履歴, 対応履歴) from its lines; null when it has none. */
function historySection(className, title, lines) {
  if (lines.length === 0) return null; // nothing on file: no empty box, no "none" line
  return el("section", { className: `history ${className}` }, [
    el("h4", { text: title }),
    el("ul", { className: "lines" }, lines),
  ]);
}

function history(customer, handlers, callId) {
  const transactions = (Array.isArray(customer.transactions) ? customer.transactions : []).map(
    (line) =>
      el("li", { className: "line" }, [
        el("span", { className: "date", text: formatDate(line.date) }),
        el("span", { className: "title", text: line.title }),
        el("span", { className: "amount", text: formatYen(line.amount) }),
      ]),
  );
  const notes = (Array.isArray(customer.notes) ? customer.notes : []).map((note) => {
    // 修正 and 履歴 (notes.js): the same element across redraws, holding the note's text.
    const fix = handlers && handlers.noteControl ? handlers.noteControl(callId, note) : null;
    return el("li", { className: "line note" }, [
      el("span", { className: "date", text: formatDate(note.at) }),
      el("span", { className: "body" }, [
        note.staff_name ? el("span", { className: "note-staff", text: `${note.staff_name}: ` }) : null,
        fix || el("span", { className: "note-body", text: note.body }),
      ]),
    ]);
  });
  const sections = [
    historySection("transactions", t("customer.transactions"), transactions),
    historySection("notes", t("customer.notes"), notes),
  ].filter(Boolean);
  return sections.length ? el("div", { className: "histories" }, sections) : null;
}

/** Several customers on one number (a family landline): toggle buttons, one pressed. */
function picker(entry, list, handlers, idBase) {
  const titleId = `${idBase}-picker`;
  const box = el("div", { className: "picker", attrs: { "data-testid": "picker" } }, [
    el("div", { className: "picker-title", text: t("customer.family", { count: list.length }), attrs: { id: titleId } }),
  ]);
  const buttons = el("div", { className: "picker-list", attrs: { role: "group", "aria-labelledby": titleId } });
  list.forEach((customer, index) => {
    const chosen = index === (entry.selected || 0);
    const extra = customer.phone_owner || customer.company || customer.phone_label;
    const button = el(
      "button",
      {
        className: chosen ? "pick chosen" : "pick",
        attrs: { type: "button", "aria-pressed": chosen ? "true" : "false", "data-key": `pick-${index}` },
      },
      [
        el("span", { className: "pick-name", text: t("honorific", { name: customer.name }) }),
        extra ? el("span", { className: "pick-extra", text: extra }) : null,
      ],
    );
    button.addEventListener("click", () => handlers.onSelectCustomer(entry, index));
    buttons.append(button);
  });
  box.append(buttons);
  return box;
}

/**
 * 会話のきっかけ: the card's openers (at most three, the server's order), in the UI's
 * language; null when there are none.
 */
function openerList(customer) {
  const openers = (Array.isArray(customer.openers) ? customer.openers : []).slice(0, 3);
  if (!openers.length) return null;
  const list = el("ul", { className: "opener-list" });
  for (const opener of openers) {
    list.append(
      el("li", {
        className: `opener opener-${opener.kind}`,
        text: language() === "en" ? opener.text_en : opener.text_ja,
        attrs: { "data-testid": "opener", "data-kind": opener.kind },
      }),
    );
  }
  return el("section", { className: "openers", attrs: { "aria-label": t("followups.openers"), "data-testid": "openers" } }, [list]);
}

/**
 * The name: a button to the customer's page (顧客ページ) when the page offers one, then
 * the honorific (様, or the customer's own) in Japanese. The button stands on its own,
 * never inside the card's heading button.
 */
function customerName(customer, handlers) {
  const text = el("span", { className: "name-text", text: customer.name });
  let name = text;
  if (handlers && handlers.onOpenCustomer && customer.id != null) {
    name = el("button", {
      className: "name-link",
      attrs: { type: "button", title: t("followups.openCustomer"), "data-key": "open-customer", "data-testid": "open-customer" },
    }, [text]);
    name.addEventListener("click", () => handlers.onOpenCustomer(customer.id));
  }
  return el("div", { className: "name", attrs: { "data-testid": "customer-name" } }, [
    name,
    language() === "ja" ? el("span", { className: "sama", text: customer.honorific || "様" }) : null,
  ]);
}

function customerBody(entry, customer, handlers, { compact }) {
  const who = el("div", { className: "who" });
  if (customer.furigana) {
    who.append(el("div", { className: "furigana", text: customer.furigana, attrs: { lang: "ja" } }));
  }
  who.append(customerName(customer, handlers));
  if (customer.company) who.append(el("div", { className: "company", text: customer.company }));
  if (customer.contact_hours && !compact) {
    who.append(
      el("div", {
        className: "contact-hours",
        text: t("followups.contactHours", { hours: customer.contact_hours }),
        attrs: { "data-testid": "contact-hours" },
      }),
    );
  }
  const body = el("div", { className: "card-body matched" }, [
    el("div", { className: "identity" }, [who, badges(customer)]),
  ]);
  const openers = compact ? null : openerList(customer);
  if (openers) body.append(openers);
  body.append(assignedPanel(entry, customer, handlers, { compact }));
  if (!compact) {
    // Node.append(null) would add the text "null": only sections that exist go in.
    for (const section of [facts(customer), history(customer, handlers, entry.call.id)]) {
      if (section) body.append(section);
    }
  }
  return body;
}

function bigNumber(number) {
  return el("div", { className: "big-number", text: number, attrs: { "data-testid": "number" } });
}

function statusBody(entry) {
  const { call, card } = entry;
  const caller = (call && call.caller) || {};
  const status = card ? card.status : caller.withheld ? "withheld" : null;
  const number = displayNumber(call, card);
  const body = el("div", { className: `card-body status-${status || "none"}` });

  if (caller.withheld || status === "withheld") {
    body.append(el("div", { className: "headline withheld", text: withheldText(caller.withheld) }));
    body.append(el("div", { className: "lead", text: t("withheld.lead") }));
    return body;
  }
  if (status === "internal") {
    body.append(el("div", { className: "headline internal", text: t("status.internal", { ext: caller.raw || number }) }));
    body.append(el("div", { className: "lead", text: t("status.internalLead") }));
    return body;
  }
  if (status === "degraded") {
    body.append(bigNumber(number || t("status.noNumber")));
    // The reason in the staff's words; the technical detail only as a tooltip.
    const reason = DEGRADED_KEYS[card.degraded_reason] || "status.degraded.error";
    body.append(
      el("div", {
        className: "warning",
        text: t(reason),
        attrs: { role: "alert", title: card.message, "data-reason": card.degraded_reason },
      }),
    );
    return body;
  }
  if (status === "invalid") {
    body.append(el("div", { className: "headline unknown", text: t("status.invalid") }));
    body.append(bigNumber(number || t("status.noNumber")));
    return body;
  }
  if (!card) {
    // No card yet (or a call we only know from its end): the number, no claim about it.
    body.append(bigNumber(number || t("status.noNumber")));
    return body;
  }
  body.append(el("div", { className: "headline unknown", text: t("status.unknown") }));
  body.append(bigNumber(number || t("status.noNumber")));
  const previous = el("div", { className: "previous" });
  if (card.previous_calls > 0) {
    previous.append(el("span", { text: t("previous.count", { count: card.previous_calls }) }));
    if (card.last_call_at) {
      previous.append(el("span", { text: `, ${t("previous.last", { date: formatDate(card.last_call_at) })}` }));
    }
  } else {
    previous.append(el("span", { text: t("previous.none") }));
  }
  body.append(previous);
  return body;
}

/** 応答しました, and what the server said to this page's last claim. */
function claimRow(entry, handlers) {
  const claim = entry.claim || {};
  const show = claimable(entry.call);
  if (!show && !claim.error) return null;
  const row = el("div", { className: "claim-row" });
  if (show) {
    const button = el("button", {
      className: "claim-button",
      text: claim.busy ? t("claim.busy") : t("claim.button"),
      attrs: { type: "button", "data-key": "claim", "data-testid": "claim" },
    });
    if (claim.busy) button.setAttribute("aria-disabled", "true");
    button.addEventListener("click", () => {
      if (!(entry.claim && entry.claim.busy)) handlers.onClaim(entry);
    });
    row.append(button);
  }
  if (claim.error) {
    row.append(el("span", { className: "claim-error", text: claim.error, attrs: { role: "status", "data-testid": "claim-error" } }));
  }
  return row;
}

/**
 * The card for one board entry {call, card, selected, copyFeedback, claim}.
 * handlers: {onSelectCustomer(entry, index), onCopyExtension(entry, ext), onToggle(entry),
 * onClaim(entry)}.
 * mode: "full" for an active call; "compact" (the short form) or "expanded" for an
 * ended one in 最近の着信, which opens and closes with its heading's button.
 * Focusable controls carry data-key, stable across redraws of the same call, so the
 * page can give focus back to the same control in the new card.
 */
export function renderCall(entry, handlers, { mode = "full" } = {}) {
  const call = entry.call || {};
  const state = call.state || "ringing";
  const status = entry.card ? entry.card.status : "none";
  const compact = mode === "compact";
  const idBase = `call-${call.id}`;
  const article = el("article", {
    className: `call-card state-${state} card-${status} mode-${mode}${compact ? " compact" : ""}`,
    attrs: { "data-call-id": call.id, "data-state": state, "data-testid": "call-card" },
  });
  const details = el("div", { className: "card-details", attrs: { id: `${idBase}-details` } });
  const disclosure =
    mode === "full"
      ? null
      : { expanded: !compact, controls: details.id, onToggle: () => handlers.onToggle(entry) };
  const meId = handlers.meId ? handlers.meId() : null;
  const handover = call.handover;
  if (handover && meId !== null && handover.to_staff_id === meId && mode === "full") {
    // 転送メモ for me: on top, before anything else on the card.
    article.append(
      el("div", { className: "handover-note", attrs: { "data-testid": "handover-note", role: "note" } }, [
        el("span", { className: "handover-note-label", text: t("handover.noteLabel") }),
        el("span", { className: "handover-note-text", text: handover.note }),
        el("span", {
          className: "handover-note-from",
          text: t("handover.noteFrom", { from: handover.from_name || t("claim.someone") }),
        }),
      ]),
    );
  }
  article.append(topLine(entry, disclosure));
  if (handover) {
    article.append(
      el("div", {
        className: `handover-line handover-${handover.state}`,
        attrs: { "data-testid": "handover-line", "data-handover-state": handover.state },
        text: t(`handover.line.${handover.state}`, {
          from: familyName(handover.from_name) || t("claim.someone"),
          to: familyName(handover.to_name) || t("claim.ext", { ext: handover.to_extension }),
        }),
      }),
    );
  }
  const claim = claimRow(entry, handlers);
  if (claim) article.append(claim);
  article.append(details);
  if (state === "ended" && call.outcome) {
    details.append(
      el("div", { className: `ended-banner outcome-${call.outcome}`, text: outcomeText(call.outcome) }),
    );
  }
  const list = customers(entry.card);
  if (status === "matched" && list.length > 0) {
    if (list.length > 1 && !compact) details.append(picker(entry, list, handlers, idBase));
    details.append(customerBody(entry, selectedCustomer(entry), handlers, { compact }));
  } else {
    details.append(statusBody(entry));
  }
  if (disclosure) {
    // A pointer shortcut: a click on the card's text does what its heading button does.
    // Keyboards and screen readers use the button; controls inside keep their own click.
    article.addEventListener("click", (event) => {
      if (event.target.closest("button, a, input, select, textarea, label")) return;
      const selection = window.getSelection();
      if (selection && !selection.isCollapsed) return; // selecting text, not opening
      handlers.onToggle(entry);
    });
  }
  return article;
}
