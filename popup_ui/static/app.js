// The staff page: login, the live call board, the WebSocket and notifications.
//
// Owns the board's state (calls ringing now, the last RECENT_LIMIT that ended),
// the session round-trips of docs/protocol.md (POST/DELETE /api/session,
// GET /api/me) and the /ws connection with reconnect and back-off. Cards are drawn
// by card.js and words come from i18n.js. Data is only ever put in the page as
// text (see card.js); this file never uses innerHTML.

import { applyServerDefault, initLanguage, setLanguage, t, translatePage } from "./i18n.js";
import { callerSummary, renderCall } from "./card.js";

const RECENT_LIMIT = 20;
const RETRY_BASE_MS = 1000;
const RETRY_MAX_MS = 30000;
const COPY_FEEDBACK_MS = 4000;
// RFC 6455 §7.4.2 application range, as the server uses it (docs/protocol.md).
const CLOSE_UNAUTHENTICATED = 4401;

const state = {
  me: null,
  companyName: "",
  active: new Map(), // call id -> entry, ringing or answered
  recent: [], // ended entries, newest first
  expandedRecent: null, // id of the ended entry shown in full
  conn: "connecting",
  everOpened: false,
  socket: null,
  retries: 0,
  retryTimer: null,
  running: false, // true between login and logout
  notifications: new Map(), // call id -> Notification
};

const $ = (id) => document.getElementById(id);

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
  state.active.clear();
  state.recent = [];
  state.expandedRecent = null;
  for (const n of state.notifications.values()) n.close();
  state.notifications.clear();
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
  renderBoard();
  connect();
  await loadUiSettings();
}

async function loadUiSettings() {
  // Company name and default language from the server's [ui] settings, when offered.
  try {
    const { status, data } = await api("GET", "/api/ui");
    if (status === 200 && data) {
      state.companyName = typeof data.company_name === "string" ? data.company_name : "";
      if (applyServerDefault(data.language)) {
        translatePage();
        renderBoard();
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
  onSelectCustomer(entry, index) {
    entry.selected = index;
    renderBoard();
  },
  onCopyExtension(entry, ext) {
    const done = (ok) => {
      entry.copyFeedback = { ext, ok };
      renderBoard();
      window.setTimeout(() => {
        if (entry.copyFeedback && entry.copyFeedback.ext === ext) {
          entry.copyFeedback = null;
          renderBoard();
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
    state.expandedRecent = state.expandedRecent === entry.call.id ? null : entry.call.id;
    renderBoard();
  },
};

function byNewest(a, b) {
  return String(b.call.started_at || "").localeCompare(String(a.call.started_at || ""));
}

function renderBoard() {
  const active = [...state.active.values()].sort(byNewest);
  $("active-list").replaceChildren(...active.map((entry) => renderCall(entry, handlers)));
  $("board-empty").hidden = active.length > 0;

  const recent = state.recent.map((entry) => {
    const full = entry.call.id === state.expandedRecent;
    const card = renderCall(entry, handlers, { compact: !full });
    if (full) {
      card.classList.add("expanded");
      card.addEventListener("click", () => handlers.onToggle(entry));
    }
    return card;
  });
  $("recent-list").replaceChildren(...recent);
  $("recent-empty").hidden = state.recent.length > 0;
  updateTitle();
}

function updateTitle() {
  const ringing = [...state.active.values()].filter((e) => e.call.state === "ringing").sort(byNewest);
  if (ringing.length === 0) {
    document.title = t("title.idle");
    return;
  }
  const who = callerSummary(ringing[0]);
  const more = ringing.length > 1 ? `(${ringing.length}) ` : "";
  document.title = more + t("title.ringing", { who });
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

function endEntry(entry, call) {
  state.active.delete(call.id);
  entry.call = call;
  state.recent = [entry, ...state.recent.filter((e) => e.call.id !== call.id)].slice(0, RECENT_LIMIT);
  state.expandedRecent = call.id; // the call that just ended is the one people look at
  closeNotification(call.id);
}

function handleMessage(message) {
  if (!message || typeof message !== "object" || !message.call || !message.call.id) return;
  const call = message.call;
  const id = call.id;
  const existing = state.active.get(id);
  switch (message.type) {
    case "call.ringing": {
      if (state.recent.some((e) => e.call.id === id)) return; // its end already arrived
      if (existing) {
        // A replay after reconnect, or a repeat: same call, fresh data, no second pop.
        existing.call = call;
        if (message.card) existing.card = message.card;
      } else {
        const entry = { call, card: message.card || null, selected: 0, copyFeedback: null };
        state.active.set(id, entry);
        notify(entry);
      }
      break;
    }
    case "call.answered":
    case "call.updated": {
      const entry = existing || state.recent.find((e) => e.call.id === id);
      if (!entry) return;
      entry.call = { ...entry.call, ...call };
      if (message.card) entry.card = message.card;
      if (entry.call.state === "ended" && existing) endEntry(existing, entry.call);
      break;
    }
    case "call.ended": {
      if (existing) {
        endEntry(existing, call);
      } else if (!state.recent.some((e) => e.call.id === id)) {
        endEntry({ call, card: null, selected: 0, copyFeedback: null }, call);
      } else {
        return;
      }
      break;
    }
    default:
      return;
  }
  renderBoard();
}

// Calls we showed as ringing before a reconnect whose end we missed while offline.
async function reconcile(knownBefore) {
  if (knownBefore.length === 0) return;
  let response;
  try {
    response = await api("GET", "/api/calls/active");
  } catch {
    return;
  }
  if (response.status !== 200 || !response.data) return;
  const items = Array.isArray(response.data) ? response.data : response.data.calls || [];
  const stillActive = new Set(items.map((item) => (item.call ? item.call.id : item.id)));
  let changed = false;
  for (const id of knownBefore) {
    const entry = state.active.get(id);
    if (entry && !stillActive.has(id)) {
      endEntry(entry, { ...entry.call, state: "ended", outcome: null });
      changed = true;
    }
  }
  if (changed) renderBoard();
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
    const knownBefore = [...state.active.keys()];
    state.everOpened = true;
    state.retries = 0;
    setConn("open");
    reconcile(knownBefore);
  });
  socket.addEventListener("message", (event) => {
    if (state.socket !== socket) return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    handleMessage(message);
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
    error.textContent = status === 429 ? t("login.throttled") : t("login.failed");
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
  if (state.running) renderBoard();
  else document.title = t("title.idle");
}

async function start() {
  initLanguage(null);
  translatePage();
  renderHeader();
  $("login-form").addEventListener("submit", onLogin);
  $("logout-button").addEventListener("click", onLogout);
  $("notify-button").addEventListener("click", onEnableNotifications);
  for (const button of document.querySelectorAll(".lang")) {
    button.addEventListener("click", onLanguage);
  }
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
