// The staff page: login, the live call board, the WebSocket and notifications.
//
// The board's state and the wire protocol live in board.js (no I/O); this file owns
// the session round-trips of docs/protocol.md (POST/DELETE /api/session,
// GET /api/me), the /ws connection with reconnect and back-off, and the DOM of the
// board. Each call has one <article>, keyed by call id, that stays in the page and is
// replaced only when that call changes, so focus, scroll position and a screen
// reader's place survive the next call; a new call is announced once through a
// separate live region. Messages are applied to the board as they arrive, but the
// page is drawn at most once per animation frame: a burst of a few hundred messages
// redraws each changed card once, not once per message (see scheduleDraw). Cards are drawn by card.js and words come from i18n.js.
//
// A call the logged-in person took (応答しました, answered_by is them) gets its note
// form (notes.js) under its card, in a slot of its own that a redraw of the card does
// not touch; while the form is open the call keeps its place in the main column, even
// after it ended, so the text box never moves while someone types. The 不在着信 view
// (missed.js) is the header's second tab.
// Data is only ever put in the page as text (see card.js); this file never uses
// innerHTML.

import { applyServerDefault, initLanguage, setLanguage, t, translatePage } from "./i18n.js";
import { Board, SNAPSHOT } from "./board.js";
import { callerSummary, renderCall } from "./card.js";
import { MissedCalls } from "./missed.js";
import { CallLogView } from "./calllog.js";
import { WhichPrompts } from "./which.js";
import { NoteDesk, talkOver } from "./notes.js";
import { familyName, renderStaffStrip } from "./presence.js";
import { HandoverForms } from "./handover.js";
import { CustomersView } from "./customers.js";
import { FollowupsView } from "./followups.js";
import { AdminView, openPasswordDialog } from "./admin.js";

const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 30000;
const COPY_FEEDBACK_MS = 4000;
// The live region is emptied and filled a moment later, so that the same words
// twice (the same customer calling back) are announced twice.
const ANNOUNCE_DELAY_MS = 100;
// RFC 6455 §7.4.2 application range, as the server uses it (docs/protocol.md).
const CLOSE_UNAUTHENTICATED = 4401;
// RFC 6455 §7.4.1: a normal closure; the page leaves to fetch a fresh snapshot.
const CLOSE_NORMAL = 1000;
// requestAnimationFrame does not run in a hidden tab, where the title and the desktop
// notifications matter most: a timer draws then (browsers slow it to ~1 s there).
const DRAW_FALLBACK_MS = 250;
// More new calls than this in one frame are announced as one count (着信 12件), not
// read out one by one.
const ANNOUNCE_EACH_MAX = 3;
// After a call ends unanswered the server publishes first and writes its row after
// (callpop/calls.py), so the missed list is asked again a little later too.
const MISSED_RELOAD_MS = [300, 1500, 5000];

const board = new Board();
// call id -> its slot (<div class=call-slot>: the card's <article>, then the note form
// if any) in #active-list or #recent-list
const views = new Map();

const state = {
  me: null,
  companyName: "",
  conn: "connecting",
  everOpened: false,
  socket: null,
  retries: 0,
  retryTimer: null,
  running: false, // true between login and logout
  notifications: new Map(), // call id -> Notification
  announcements: [], // texts waiting for the live region
  announceTimer: null,
  // Applied to the board, not drawn yet: ids to redraw and new calls, drawn next frame.
  pendingIds: new Set(),
  pendingFresh: [],
  pendingStaff: false, // the staff strip changed (snapshot, staff.presence)
  handoversSeen: new Set(), // calls handed over to me that were announced already
  drawFrame: null,
  drawTimer: null,
  view: "board", // board | missed | calllog | customers | followups | admin
  missedTimers: [],
};

const $ = (id) => document.getElementById(id);

const desk = new NoteDesk({ api, onChange: (id) => drawCalls([id]) });
const forms = new HandoverForms({ api, onChange: (id) => drawCalls([id]) });
let missed = null; // made in start(), once the page's elements exist
let calllog = null; // 通話履歴 (calllog.js), made in start() too
let which = null; // どちらが応答しましたか (which.js), made in start() too
// The record views, made in start(): each has load(params) (shown, with what to open),
// clear() (logged out: drop every customer fact) and render() (language changed).
const pages = {};

// --- HTTP ---------------------------------------------------------------------

async function api(method, path, body) {
  const init = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let data = null;
  if (response.status !== 204) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  return { status: response.status, data };
}

// --- screens --------------------------------------------------------------------

function showLogin(message) {
  state.running = false;
  stopSocket();
  state.me = null;
  // Logged out: no customer data may stay in the page.
  cancelDraw();
  board.clear();
  views.clear();
  desk.stop();
  forms.stop();
  state.handoversSeen.clear();
  renderStrip();
  if (missed) missed.clear();
  if (calllog) calllog.clear();
  for (const page of Object.values(pages)) page.clear();
  if (which) which.start(null);
  cancelMissedReloads();
  showView("board");
  for (const n of state.notifications.values()) n.close();
  state.notifications.clear();
  window.clearTimeout(state.announceTimer);
  state.announceTimer = null;
  state.announcements = [];
  $("announcer").replaceChildren();
  $("active-list").replaceChildren();
  $("recent-list").replaceChildren();
  $("board-screen").hidden = true;
  $("login-screen").hidden = false;
  $("boot").hidden = true;
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("login-password").value = "";
  document.title = t("title.idle");
  $("login-id").focus();
}

async function showBoard(me) {
  state.me = me;
  state.running = true;
  state.everOpened = false;
  $("login-screen").hidden = true;
  $("boot").hidden = true;
  $("board-screen").hidden = false;
  renderHeader();
  $("tab-admin").hidden = me.role !== "admin";
  desk.start(me);
  which.start(me);
  redrawAll();
  connect();
  missed.load();
  pages.followups.count();
  await loadUiSettings();
  openFromLocation();
}

async function loadUiSettings() {
  // Company name and default language from the server's [ui] settings, when offered.
  try {
    const { status, data } = await api("GET", "/api/ui");
    if (status === 200 && data) {
      state.companyName = typeof data.company_name === "string" ? data.company_name : "";
      if (applyServerDefault(data.language)) {
        translatePage();
        desk.translate();
        missed.render();
        for (const page of Object.values(pages)) page.render();
        redrawAll();
      }
      renderHeader();
    }
  } catch {
    // not offered: the header shows the product name
  }
}

// --- header -----------------------------------------------------------------------

function renderHeader() {
  $("company-name").textContent = state.companyName || "callpop";
  const me = state.me;
  $("staff-name").textContent = me ? t("header.staff", { name: me.name }) : "";
  renderConn();
  renderNotifyControls();
  for (const button of document.querySelectorAll(".lang")) {
    const on = button.dataset.lang === document.documentElement.lang;
    button.setAttribute("aria-pressed", on ? "true" : "false");
    button.classList.toggle("on", on);
  }
}

function setConn(conn) {
  state.conn = conn;
  renderConn();
}

function renderConn() {
  const box = $("conn-status");
  box.className = `conn conn-${state.conn}`;
  box.dataset.state = state.conn;
  $("conn-text").textContent = t(`conn.${state.conn}`);
}

function renderNotifyControls() {
  const button = $("notify-button");
  const note = $("notify-state");
  if (!("Notification" in window)) {
    button.hidden = true;
    note.hidden = true;
    return;
  }
  const permission = Notification.permission;
  button.hidden = permission !== "default";
  note.hidden = permission === "default";
  note.textContent = permission === "granted" ? t("notify.on") : t("notify.denied");
}

// --- board --------------------------------------------------------------------------

const handlers = {
  // The customer's page (顧客ページ) from the card's name.
  onOpenCustomer(customerId) {
    navigate("customers", { id: customerId });
  },
  onSelectCustomer(entry, index) {
    drawCalls(board.select(entry.call.id, index));
  },
  onCopyExtension(entry, ext) {
    const done = (ok) => {
      entry.copyFeedback = { ext, ok };
      drawCalls([entry.call.id]);
      window.setTimeout(() => {
        if (entry.copyFeedback && entry.copyFeedback.ext === ext) {
          entry.copyFeedback = null;
          drawCalls([entry.call.id]);
        }
      }, COPY_FEEDBACK_MS);
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(ext).then(
        () => done(true),
        () => done(false),
      );
    } else {
      done(false);
    }
  },
  onToggle(entry) {
    drawCalls(board.toggle(entry.call.id));
  },
  onClaim(entry) {
    claim(entry.call.id);
  },
  // card.js: the 担当者's presence beside 担当, and the 転送メモ meant for me.
  presenceOf(staffId) {
    return board.presenceOf(staffId);
  },
  meId() {
    return state.me ? state.me.id : null;
  },
  // card.js: 修正 and 履歴 on a note of the card's 対応履歴.
  noteControl(callId, note) {
    return desk.cardNote(callId, note);
  },
};

/** The staff strip over the board, from board.staff (hidden when nobody is watched). */
function renderStrip() {
  renderStaffStrip($("staff-strip"), board.staffList(), { meId: state.me ? state.me.id : null });
}

/**
 * A 転送メモ for me that should pop: `requested` as well as `ringing` and `answered`,
 * because without the PBX's dialog events (trunk mode) a hand-over never gets past
 * `requested`; while requested, only as long as the call is on.
 */
function handedToMe(entry) {
  const handover = entry && entry.call && entry.call.handover;
  if (!handover || !state.me || handover.to_staff_id !== state.me.id) return false;
  if (handover.state === "ringing" || handover.state === "answered") return true;
  return handover.state === "requested" && entry.call.state !== "ended";
}

/** 応答しました: tell the server; its call.answered tells every browser. */
async function claim(id) {
  const entry = board.entry(id);
  if (!entry) return;
  entry.claim = { busy: true, error: "" };
  drawCalls([id]);
  let answer = null;
  try {
    answer = await api("POST", `/api/calls/${encodeURIComponent(id)}/claim`);
  } catch {
    answer = null;
  }
  const now = board.entry(id); // logged out, or the call left the board meanwhile
  if (!now) return;
  if (answer && answer.status === 200 && answer.data) {
    now.claim = null;
    // Who has it, now: the note form opens without waiting for the socket.
    drawCalls(new Set([id, ...board.claimed(answer.data)]));
    return;
  }
  const detail = answer && answer.data && typeof answer.data.detail === "string" ? answer.data.detail : "";
  // 409: 佐藤 健が応答済みです — the server's words name who has it.
  now.claim = { busy: false, error: detail || t("claim.failed") };
  drawCalls([id]);
}

function isMine(entry) {
  const by = entry && entry.call && entry.call.answered_by;
  return Boolean(by && state.me && by.staff_id === state.me.id);
}

function byNewest(a, b) {
  return String(b.call.started_at || "").localeCompare(String(a.call.started_at || ""));
}

function activeEntries() {
  return [...board.active.values()].sort(byNewest);
}

function startedAt(id) {
  const entry = board.entry(id);
  return String((entry && entry.call.started_at) || desk.startedAt(id) || "");
}

/**
 * Where a call's slot goes: "main" (着信中: active calls, and calls whose note form
 * is open or, off the board, shows its saved note), "recent", or null (not shown).
 */
function placeOf(id) {
  const where = board.where(id);
  if (where === "active" || desk.isOpen(id) || (!where && desk.has(id))) return "main";
  if (where && handedToMe(board.entry(id))) return "main";
  return where === "recent" ? "recent" : null;
}

function mainIds() {
  const ids = new Set([...board.active.keys(), ...board.recent.map((e) => e.call.id), ...desk.ids()]);
  return [...ids].filter((id) => placeOf(id) === "main").sort((a, b) => startedAt(b).localeCompare(startedAt(a)));
}

function recentIds() {
  return board.recent.map((e) => e.call.id).filter((id) => placeOf(id) === "recent");
}

/** The data-key of the control focused inside `element`; null when focus is elsewhere. */
function focusedKey(element) {
  const focused = document.activeElement;
  if (!focused || focused === element || !element.contains(focused)) return null;
  return focused.dataset.key || "";
}

/** Focus the control `key` of a redrawn card, else its heading's button. */
function restoreFocus(element, key) {
  if (!element) return;
  if (element.contains(document.activeElement)) return; // never left (the note form stays put)
  for (const selector of [`[data-key="${CSS.escape(key)}"]`, "[data-key=toggle]"]) {
    const target = element.querySelector(selector);
    if (!target) continue;
    target.focus({ preventScroll: true });
    if (document.activeElement === target) return;
  }
}

/**
 * Replace the card of call `id` in its slot (or take the slot away); arrange() puts
 * new slots in place. The slot's note form is the same element across redraws.
 * True when the call's note form opened just now.
 */
function drawCall(id) {
  const where = board.where(id);
  const entry = where ? board.entry(id) : null;
  let opened = false;
  if (entry && isMine(entry)) {
    opened = desk.open(entry);
    // The call just ended: the cursor goes to its note too, as when the form opened.
    if (desk.sync(entry)) opened = true;
  }
  const place = placeOf(id);
  let slot = views.get(id);
  if (!place) {
    if (slot) slot.remove();
    views.delete(id);
    forms.drop(id);
    return false;
  }
  if (!slot) {
    slot = document.createElement("div");
    slot.className = "call-slot";
    slot.dataset.slotId = id;
    views.set(id, slot);
  }
  slot.classList.toggle("with-note", desk.has(id));
  const old = slot.querySelector(":scope > [data-testid=call-card]");
  if (entry) {
    const mode = place === "main" ? "full" : board.expanded === id ? "expanded" : "compact";
    const element = renderCall(entry, handlers, { mode });
    // Only a call's first appearance slides in: a redraw of the same call stays still.
    if (!old && where === "active") element.classList.add("arriving");
    if (old) old.replaceWith(element);
    else slot.prepend(element);
  }
  // (No entry: a form whose call left the board keeps the last card drawn, if any.)
  const panel = desk.panel(id);
  for (const stale of slot.querySelectorAll(":scope > .note-panel")) {
    if (stale !== panel) stale.remove();
  }
  if (panel && panel.parentElement !== slot) slot.append(panel);
  // 転送メモ: the person who has the call, while it is in the main column; under the
  // note form (which joins the card), else under the card. Moved only when out of place,
  // so focus in it survives.
  const card = slot.querySelector(":scope > [data-testid=call-card]");
  const on = entry && !talkOver(entry.call); // a call whose talk ended is handed to nobody
  const form =
    on && card && place === "main" && isMine(entry) ? forms.panel(entry, board.staffList(), state.me.id) : null;
  for (const stale of slot.querySelectorAll(":scope > .handover-form")) {
    if (stale !== form) stale.remove();
  }
  const before = panel && panel.parentElement === slot ? panel : card;
  if (form && form.previousElementSibling !== before) before.after(form);
  return opened;
}

/**
 * Give `list` exactly `elements`, in order, moving only what is out of place: a new
 * card goes in before the others without taking them out of the page (taking a
 * focused element out and back loses its focus).
 */
function arrange(list, elements) {
  let cursor = list.firstElementChild;
  for (const element of elements) {
    if (element === cursor) {
      cursor = cursor.nextElementSibling;
    } else {
      list.insertBefore(element, cursor);
    }
  }
  while (cursor) {
    const next = cursor.nextElementSibling;
    cursor.remove();
    cursor = next;
  }
}

/** Redraw the calls in `ids` and nothing else; focus inside them stays on its control. */
function drawCalls(ids) {
  let refocus = null;
  const opened = [];
  for (const id of ids) {
    const old = views.get(id);
    const key = old ? focusedKey(old) : null;
    if (key !== null) refocus = { id, key };
    if (drawCall(id)) opened.push(id);
  }
  // A call the board has but the page has not drawn yet (its frame is still to come)
  // has no view: it is left out now and put in place when its frame draws it.
  const viewsOf = (list) => list.map((id) => views.get(id)).filter(Boolean);
  const main = viewsOf(mainIds());
  arrange($("active-list"), main);
  arrange($("recent-list"), viewsOf(recentIds()));
  if (refocus) restoreFocus(views.get(refocus.id), refocus.key);
  // The call is yours: the cursor goes to its note, unless you are busy elsewhere.
  for (const id of opened) {
    const focused = document.activeElement;
    const slot = views.get(id);
    if (!focused || focused === document.body || (slot && slot.contains(focused))) desk.focus(id);
  }
  $("board-empty").hidden = main.length > 0;
  $("recent-empty").hidden = board.recent.length > 0;
  updateTitle();
}

/** Every card again, in place (a new language). */
function redrawAll() {
  drawCalls(new Set([...board.active.keys(), ...board.recent.map((entry) => entry.call.id), ...desk.ids()]));
}

function updateTitle() {
  const ringing = activeEntries().filter((e) => e.call.state === "ringing");
  if (ringing.length === 0) {
    document.title = t("title.idle");
    return;
  }
  const who = callerSummary(ringing[0]);
  const more = ringing.length > 1 ? `(${ringing.length}) ` : "";
  document.title = more + t("title.ringing", { who });
}

/** Say a new call once, through the live region (the cards themselves are not live). */
function announce(text) {
  state.announcements.push(text);
  if (state.announceTimer !== null) return;
  $("announcer").replaceChildren();
  state.announceTimer = window.setTimeout(() => {
    state.announceTimer = null;
    $("announcer").textContent = state.announcements.join(" ");
    state.announcements = [];
  }, ANNOUNCE_DELAY_MS);
}

function notify(entry) {
  if (!document.hidden || !("Notification" in window) || Notification.permission !== "granted") {
    return;
  }
  const customer =
    entry.card && entry.card.status === "matched" && entry.card.customers && entry.card.customers[0];
  const staff = customer && customer.assigned_staff;
  const parts = [];
  const caller = entry.call.caller || {};
  if (caller.national || caller.raw) parts.push(caller.national || caller.raw);
  if (staff) {
    parts.push(
      staff.extension
        ? t("customer.assignedExt", { name: staff.name, ext: staff.extension })
        : t("customer.assigned", { name: staff.name }),
    );
  }
  try {
    const n = new Notification(t("notify.title", { who: callerSummary(entry) }), {
      body: parts.join("\n"),
      tag: `callpop-${entry.call.id}`,
      icon: "/static/favicon.svg",
    });
    n.onclick = () => {
      window.focus();
      n.close();
    };
    state.notifications.set(entry.call.id, n);
  } catch {
    // Some browsers only allow notifications from a service worker: the title still changes.
  }
}

function closeNotification(id) {
  const n = state.notifications.get(id);
  if (n) {
    n.close();
    state.notifications.delete(id);
  }
}

function handleMessage(socket, message) {
  const change = board.receive(message);
  if (change.resync) {
    resync(socket, change.resync);
    return;
  }
  if (message.type === SNAPSHOT) {
    which.snapshot(message.questions); // the questions still open, for me only
    state.retries = 0; // in sync again: the next outage starts its back-off afresh
    setConn("open");
    desk.retryNow(); // back online: unconfirmed note saves go now
    reloadMissedSoon();
  } else if (missedChange(message)) {
    reloadMissedSoon();
  } else if (message.type === "call.which") {
    which.receive(message); // どちらが応答しましたか, shown on the phone's person's board
  }
  for (const id of change.ended) closeNotification(id);
  for (const id of change.changed) state.pendingIds.add(id);
  if (change.staffChanged) {
    // Presence shows on cards (担当) and in the 転送メモ pickers too.
    state.pendingStaff = true;
    for (const id of [...board.active.keys(), ...board.recent.map((e) => e.call.id)]) state.pendingIds.add(id);
  }
  state.pendingFresh.push(...change.fresh);
  scheduleDraw();
}

/** Draw what the board received, once, at the next animation frame (or timer). */
function scheduleDraw() {
  if (state.drawFrame !== null || state.drawTimer !== null) return;
  state.drawFrame = window.requestAnimationFrame(flushDraw);
  state.drawTimer = window.setTimeout(flushDraw, DRAW_FALLBACK_MS);
}

function cancelDraw() {
  if (state.drawFrame !== null) window.cancelAnimationFrame(state.drawFrame);
  window.clearTimeout(state.drawTimer);
  state.drawFrame = null;
  state.drawTimer = null;
  state.pendingIds.clear();
  state.pendingFresh = [];
  state.pendingStaff = false;
}

function flushDraw() {
  const ids = [...state.pendingIds];
  const freshIds = state.pendingFresh;
  const staffChanged = state.pendingStaff;
  cancelDraw();
  if (!state.running) return;
  if (staffChanged) renderStrip();
  drawCalls(ids);
  // A 転送メモ for me pops once: said through the live region, the board in front.
  for (const id of ids) {
    const entry = board.entry(id);
    if (!handedToMe(entry) || state.handoversSeen.has(id)) continue;
    state.handoversSeen.add(id);
    // Bounded: the oldest ids go (the board itself keeps at most RECENT_LIMIT ended calls).
    if (state.handoversSeen.size > 200) state.handoversSeen.delete(state.handoversSeen.values().next().value);
    navigate("board");
    const handover = entry.call.handover;
    announce(t("handover.announce", { from: familyName(handover.from_name), note: handover.note }));
  }
  // A call that rang and ended within the same frame is already under 最近の着信:
  // nothing rings any more, so it is neither notified nor announced.
  const fresh = freshIds.filter((id) => board.where(id) === "active").map((id) => board.entry(id));
  for (const entry of fresh) notify(entry);
  // A phone ringing wins over the missed-call list.
  if (fresh.some((entry) => entry.call.state === "ringing")) navigate("board");
  if (fresh.length > ANNOUNCE_EACH_MAX) {
    announce(t("announce.many", { count: fresh.length }));
  } else if (fresh.length > 0) {
    announce(fresh.map((entry) => t("announce.ringing", { who: callerSummary(entry) })).join(" "));
  }
}

// --- 不在着信 -------------------------------------------------------------------------

/** A call ended with nobody answering, or someone claimed an ended one: the list changed. */
function missedChange(message) {
  const call = message && message.call;
  if (!call) return false;
  if (message.type === "call.ended") {
    return (call.outcome === "abandoned" || call.outcome === "timeout") && !call.answered_by;
  }
  return message.type === "call.answered" && call.state === "ended";
}

function reloadMissedSoon() {
  cancelMissedReloads();
  state.missedTimers = MISSED_RELOAD_MS.map((ms) =>
    window.setTimeout(() => {
      if (state.running) missed.load();
    }, ms),
  );
}

function cancelMissedReloads() {
  for (const timer of state.missedTimers) window.clearTimeout(timer);
  state.missedTimers = [];
}

function renderMissedCount(count) {
  const badge = $("missed-count");
  badge.hidden = !count;
  badge.textContent = count ? String(count) : "";
  badge.setAttribute("aria-label", t("missed.count", { count }));
}

const VIEWS = ["board", "missed", "calllog", "customers", "followups", "admin"];

/** Show one view (every view stays in the page; only one is visible). */
function showView(view) {
  state.view = view;
  for (const name of VIEWS) $(`${name}-view`).hidden = view !== name;
  for (const tab of document.querySelectorAll(".view-tab")) {
    tab.setAttribute("aria-pressed", tab.dataset.view === view ? "true" : "false");
  }
}

/**
 * Open a view and what it shows: navigate("customers", { id: 12 }) opens 山田様's page.
 * The address follows (#/customers/12), so a reload or a link opens the same thing.
 */
function navigate(view, params = {}, { push = true } = {}) {
  if (!VIEWS.includes(view) || (view === "admin" && state.me?.role !== "admin")) view = "board";
  const hash = view === "board" ? "" : `#/${view}${params.id ? `/${params.id}` : ""}`;
  if (push && window.location.hash !== hash) {
    window.history.pushState(null, "", hash || window.location.pathname);
  }
  const same = view === state.view;
  showView(view);
  if (!state.running) return;
  if (view === "missed" && !same) missed.load();
  if (view === "calllog" && !same) calllog.load();
  if (pages[view]) pages[view].load(params);
}

/** The view the address names (#/customers/12), after login and on back/forward. */
function openFromLocation() {
  const [, view = "board", id = ""] = window.location.hash.split("/");
  const number = Number.parseInt(id, 10);
  navigate(view || "board", Number.isSafeInteger(number) && number > 0 ? { id: number } : {}, {
    push: false,
  });
}

function onViewTab(event) {
  const view = event.currentTarget.dataset.view;
  if (view === state.view && !pages[view]) return;
  navigate(view);
}

// --- WebSocket ------------------------------------------------------------------------

function connect() {
  window.clearTimeout(state.retryTimer);
  state.retryTimer = null;
  if (!state.running) return;
  setConn(state.everOpened ? "reconnecting" : "connecting");
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(`${scheme}//${window.location.host}/ws`);
  state.socket = socket;
  socket.addEventListener("open", () => {
    if (state.socket !== socket) return;
    state.everOpened = true;
    // 接続中 only once the snapshot is in: until then the board may be behind.
    board.connectionOpened();
  });
  socket.addEventListener("message", (event) => {
    if (state.socket !== socket) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      message = null; // not JSON: handled as a message the board cannot place
    }
    handleMessage(socket, message);
  });
  socket.addEventListener("close", (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    if (!state.running) return;
    setConn("reconnecting");
    afterClose(event.code);
  });
}

async function afterClose(code) {
  // A refused handshake shows up as 1006 in browsers: ask the server whether we are
  // still logged in before trying again, so an expired session lands on the login.
  try {
    const { status, data } = await api("GET", "/api/me");
    if (status === 401) {
      showLogin("");
      return;
    }
    if (code === CLOSE_UNAUTHENTICATED) state.retries = Math.max(state.retries, 3);
    if (status === 200 && data) {
      state.me = data;
      renderHeader();
    }
  } catch {
    // server unreachable: keep retrying
  }
  scheduleReconnect();
}

/** The board missed or doubted a message: leave, and let the next snapshot re-sync it. */
function resync(socket, reason) {
  if (state.socket !== socket) return;
  console.warn(`callpop: ${reason}; reconnecting for a fresh board.snapshot`);
  state.socket = null;
  socket.close(CLOSE_NORMAL, "resync");
  setConn("reconnecting");
  // The back-off grows until a snapshot arrives, so a server that keeps confusing
  // the board is not hammered.
  scheduleReconnect();
}

function scheduleReconnect() {
  if (!state.running || state.retryTimer !== null) return;
  const ceiling = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** state.retries);
  // Full jitter spreads a whole office of browsers reconnecting after a restart.
  const delay = Math.max(250, Math.round(ceiling / 2 + Math.random() * (ceiling / 2)));
  state.retries = Math.min(state.retries + 1, 10);
  state.retryTimer = window.setTimeout(() => {
    state.retryTimer = null;
    connect();
  }, delay);
}

function stopSocket() {
  window.clearTimeout(state.retryTimer);
  state.retryTimer = null;
  const socket = state.socket;
  state.socket = null;
  if (socket) socket.close(1000);
}

// --- events --------------------------------------------------------------------------------

async function onLogin(event) {
  event.preventDefault();
  const login = $("login-id").value.trim();
  const password = $("login-password").value;
  const error = $("login-error");
  const submit = $("login-submit");
  if (!login || !password) {
    error.textContent = t("login.failed");
    error.hidden = false;
    return;
  }
  submit.disabled = true;
  submit.textContent = t("login.busy");
  try {
    const { status, data } = await api("POST", "/api/session", { login, password });
    if (status === 200 && data && data.staff) {
      error.hidden = true;
      $("login-password").value = "";
      await showBoard(data.staff);
      return;
    }
    // 429: too many attempts for this login or address; 503: the server is checking as
    // many passwords as it will at once (docs/security.md) — neither says the password
    // was wrong.
    error.textContent =
      status === 429 ? t("login.throttled") : status === 503 ? t("login.overloaded") : t("login.failed");
    error.hidden = false;
    $("login-password").select();
  } catch {
    error.textContent = t("login.unreachable");
    error.hidden = false;
  } finally {
    submit.disabled = false;
    submit.textContent = t("login.submit");
  }
}

async function onLogout() {
  try {
    await api("DELETE", "/api/session");
  } catch {
    // the cookie stays until it expires; the page is cleared either way
  }
  showLogin("");
}

async function onEnableNotifications() {
  if (!("Notification" in window)) return;
  try {
    await Notification.requestPermission();
  } catch {
    // older callback-style API: the state is read again below
  }
  renderNotifyControls();
}

function onLanguage(event) {
  const lang = event.currentTarget.dataset.lang;
  setLanguage(lang);
  translatePage();
  renderHeader();
  desk.translate();
  renderStrip();
  if (missed) missed.render();
  if (calllog) calllog.render();
  for (const page of Object.values(pages)) page.render();
  if (which) which.render();
  if (state.running) redrawAll();
  else document.title = t("title.idle");
}

// Escape closes the ended call shown in full, from inside it or from nowhere in
// particular; focus inside it goes back to its heading's button.
function onEscape(event) {
  if (event.key !== "Escape" || !state.running || board.expanded === null) return;
  const card = views.get(board.expanded);
  const focused = document.activeElement;
  const inside = Boolean(card && focused && card.contains(focused));
  if (!inside && focused && focused !== document.body && !$("recent-list").contains(focused)) return;
  event.preventDefault();
  const id = board.expanded;
  drawCalls(board.collapse());
  if (inside) restoreFocus(views.get(id), "toggle");
}

async function start() {
  initLanguage(null);
  translatePage();
  renderHeader();
  $("login-form").addEventListener("submit", onLogin);
  $("logout-button").addEventListener("click", onLogout);
  $("password-button").addEventListener("click", () => openPasswordDialog({ api }));
  $("notify-button").addEventListener("click", onEnableNotifications);
  missed = new MissedCalls({
    api,
    onCount: renderMissedCount,
    list: $("missed-list"),
    status: $("missed-status"),
    showResolved: $("missed-show-resolved"),
  });
  calllog = new CallLogView({ api, root: $("calllog-view"), navigate });
  pages.customers = new CustomersView({ api, root: $("customers-view"), navigate, me: () => state.me });
  pages.followups = new FollowupsView({
    api,
    root: $("followups-view"),
    navigate,
    onCount: (count) => {
      const badge = $("followups-count");
      badge.hidden = !count;
      badge.textContent = count ? String(count) : "";
      badge.setAttribute("aria-label", t("followups.count", { count }));
    },
  });
  pages.admin = new AdminView({ api, root: $("admin-view"), navigate, me: () => state.me });
  window.addEventListener("popstate", () => {
    if (state.running) openFromLocation();
  });
  which = new WhichPrompts({
    api,
    list: $("which-list"),
    // Who has it now: the note form opens without waiting for the socket.
    onClaimed: (call) => drawCalls(new Set([call.id, ...board.claimed(call)])),
  });
  for (const tab of document.querySelectorAll(".view-tab")) tab.addEventListener("click", onViewTab);
  $("missed-refresh").addEventListener("click", () => missed.load());
  for (const button of document.querySelectorAll(".lang")) {
    button.addEventListener("click", onLanguage);
  }
  document.addEventListener("keydown", onEscape);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) {
      for (const n of state.notifications.values()) n.close();
      state.notifications.clear();
    }
  });
  let me = null;
  try {
    const { status, data } = await api("GET", "/api/me");
    if (status === 200 && data) me = data;
  } catch {
    me = null;
  }
  if (me) await showBoard(me);
  else showLogin("");
}

start();
