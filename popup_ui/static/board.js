// The board's state and the /ws wire protocol (docs/protocol.md), without I/O.
//
// Owns which calls are active (ringing or answered), the last RECENT_LIMIT that
// ended, which ended call is shown in full, and the message sequence of the current
// connection. `receive(message)` applies one WebSocket message and answers what
// changed; it never touches the DOM, a socket, a timer or the clock, so the page
// (app.js) decides how to draw, pop and reconnect, and a test can feed it messages.
//
// Theory of operation. A connection starts with one `board.snapshot` {seq, calls}:
// every call active at seq, oldest first. It replaces the active set; a call this
// page showed as active that is not in it ended while we were away (outcome
// unknown). Every later message carries seq = previous + 1. Anything else — a gap,
// a repeat, a call message before the snapshot — means this page missed something:
// `receive` answers `resync` and changes nothing; the page closes the socket and
// the next connection's snapshot puts it right.

export const RECENT_LIMIT = 20;

export const SNAPSHOT = "board.snapshot";
export const PRESENCE = "staff.presence";
export const PRESENCES = ["idle", "ringing", "busy", "unknown"];
// Bounds the staff strip whatever the server sends (the server watches at most 500).
export const STAFF_LIMIT = 500;

// (message type, where the board has the call) -> action. A pair that is missing
// contradicts what the board knows (every active call came in the snapshot or a
// later call.ringing), so the page resyncs instead of guessing.
const TRANSITIONS = {
  "call.ringing": { none: "add", active: "update" },
  "call.answered": { active: "update", recent: "update" },
  // Someone claimed a call whose ring leg had already ended (docs/protocol.md): it
  // keeps state "ended". Unknown here when it left the recent list or ended before
  // this page connected; there is nothing to show then.
  "call.answered.ended": { none: "ignore", active: "update", recent: "update" },
  // Unknown: it ended and left the recent list, or ended before this page connected.
  "call.updated": { none: "ignore", active: "update", recent: "update" },
  // Unknown: it ended before its ringing reached us; show it as a call we only know
  // from its end.
  "call.ended": { none: "addEnded", active: "end", recent: "update" },
};

/** The TRANSITIONS row of a message: an answer for an ended call has a row of its own. */
function transitionKey(message) {
  const call = message.call;
  if (message.type === "call.answered" && call && call.state === "ended") return "call.answered.ended";
  return message.type;
}

function newEntry(call, card) {
  // claim: {busy, error} of this page's 応答しました for the call (app.js).
  return { call, card: card || null, selected: 0, copyFeedback: null, claim: null };
}

/** What one message changed; `resync` is a reason string when the page must reconnect. */
function outcome() {
  return { changed: new Set(), fresh: [], ended: [], resync: null, staffChanged: false };
}

/** One staff entry as the page keeps it, or null when it is not one. */
function staffEntry(item) {
  if (!item || typeof item !== "object" || typeof item.extension !== "string" || !item.extension) {
    return null;
  }
  return {
    staff_id: Number.isInteger(item.staff_id) ? item.staff_id : null,
    name: typeof item.name === "string" ? item.name : null,
    extension: item.extension,
    presence: PRESENCES.includes(item.presence) ? item.presence : "unknown",
  };
}

export class Board {
  constructor({ recentLimit = RECENT_LIMIT } = {}) {
    this.recentLimit = recentLimit;
    this.active = new Map(); // call id -> entry {call, card, selected, copyFeedback}
    this.recent = []; // ended entries, newest end first
    this.expanded = null; // id of the ended entry shown in full
    this.seq = null; // last seq applied on this connection; null until its snapshot
    // extension -> {staff_id, name, extension, presence}: the snapshot's `staff`, then
    // staff.presence (docs/protocol.md). Empty when no extension is watched (trunk mode).
    this.staff = new Map();
  }

  /** A new connection: it must start with a snapshot. */
  connectionOpened() {
    this.seq = null;
  }

  /** Forget every call (logout: no customer data may stay in the page). */
  clear() {
    this.active.clear();
    this.recent = [];
    this.expanded = null;
    this.seq = null;
    this.staff.clear();
  }

  /** Every staff entry, in extension order. */
  staffList() {
    return [...this.staff.values()].sort((a, b) =>
      a.extension.localeCompare(b.extension, "en", { numeric: true }),
    );
  }

  /** The presence of staff member `staffId` (idle | ringing | busy | unknown), or null if not listed. */
  presenceOf(staffId) {
    if (staffId === null || staffId === undefined) return null;
    for (const entry of this.staff.values()) {
      if (entry.staff_id === staffId) return entry.presence;
    }
    return null;
  }

  applyStaff(items, { replace }) {
    if (replace) this.staff.clear();
    for (const item of items) {
      const entry = staffEntry(item);
      if (!entry) continue;
      if (!this.staff.has(entry.extension) && this.staff.size >= STAFF_LIMIT) continue;
      this.staff.set(entry.extension, entry);
    }
  }

  /** "active", "recent" or null. */
  where(id) {
    if (this.active.has(id)) return "active";
    if (this.recent.some((e) => e.call.id === id)) return "recent";
    return null;
  }

  entry(id) {
    return this.active.get(id) || this.recent.find((e) => e.call.id === id) || null;
  }

  /** Apply one parsed WebSocket message. */
  receive(message) {
    const result = outcome();
    if (!message || typeof message !== "object") {
      result.resync = "a message that is not a JSON object";
      return result;
    }
    if (message.type === SNAPSHOT) {
      if (!Number.isInteger(message.seq) || !Array.isArray(message.calls)) {
        result.resync = "a malformed board.snapshot";
        return result;
      }
      this.seq = message.seq;
      this.applySnapshot(message.calls, result);
      // An older server sends no `staff`: nobody's presence is known then.
      this.applyStaff(Array.isArray(message.staff) ? message.staff : [], { replace: true });
      result.staffChanged = true;
      return result;
    }
    if (this.seq === null) {
      result.resync = `${message.type} before board.snapshot`;
      return result;
    }
    if (message.seq !== this.seq + 1) {
      result.resync = `seq ${message.seq ?? "missing"} after ${this.seq}`;
      return result;
    }
    if (message.type === PRESENCE) {
      if (!Array.isArray(message.staff)) {
        result.resync = "a staff.presence without staff";
        return result;
      }
      this.seq = message.seq;
      this.applyStaff(message.staff, { replace: false });
      result.staffChanged = true;
      return result;
    }
    const table = TRANSITIONS[transitionKey(message)];
    if (!table) {
      // A type this page does not know yet: it counts in seq, there is nothing to show.
      this.seq = message.seq;
      return result;
    }
    const call = message.call;
    if (!call || typeof call !== "object" || !call.id) {
      result.resync = `${message.type} without a call id`;
      return result;
    }
    const where = this.where(call.id) || "none";
    const action = table[where];
    if (!action) {
      result.resync = `${message.type} for a call that is ${where === "none" ? "unknown" : where}`;
      return result;
    }
    this.seq = message.seq;
    this[action](call, message.card, result);
    return result;
  }

  /**
   * Take what this page's own claim answered (POST /api/calls/{id}/claim) before its
   * call.answered arrives: who has the call, nothing else (the state stays the
   * socket's to change). The ids to redraw.
   */
  claimed(call) {
    const entry = call && this.entry(call.id);
    if (!entry || !call.answered_by) return new Set();
    entry.call = { ...entry.call, answered_by: call.answered_by, answered_at: call.answered_at ?? null };
    return new Set([call.id]);
  }

  // --- actions of TRANSITIONS ------------------------------------------------------

  add(call, card, result) {
    this.active.set(call.id, newEntry(call, card));
    result.changed.add(call.id);
    result.fresh.push(call.id);
  }

  update(call, card, result) {
    const entry = this.entry(call.id);
    entry.call = call;
    if (card) entry.card = card; // call.updated without a card keeps the one shown
    result.changed.add(call.id);
    if (call.state !== "ended" && !this.active.has(call.id)) {
      // Answered again after its ring leg ended (a ring-all group: a watched phone
      // picked up and callpop's leg was cancelled): back among the active calls.
      this.recent = this.recent.filter((e) => e !== entry);
      if (this.expanded === call.id) this.expanded = null;
      this.active.set(call.id, entry);
    }
    if (call.state === "ended" && this.active.has(call.id)) this.end(call, null, result);
  }

  end(call, card, result) {
    const entry = this.active.get(call.id);
    this.active.delete(call.id);
    entry.call = call;
    if (card) entry.card = card;
    this.pushRecent(entry, result);
    // The call that just ended is the one people look at.
    this.setExpanded(call.id, result);
    result.ended.push(call.id);
  }

  addEnded(call, card, result) {
    this.pushRecent(newEntry(call, card), result);
    this.setExpanded(call.id, result);
  }

  ignore() {}

  // --- snapshot ----------------------------------------------------------------------

  applySnapshot(items, result) {
    const now = new Set();
    for (const item of items) {
      const call = item && item.call;
      if (!call || !call.id) continue;
      now.add(call.id);
      const where = this.where(call.id);
      if (where === "active") {
        const entry = this.active.get(call.id);
        entry.call = call;
        if (item.card) entry.card = item.card;
      } else {
        // New to this page, or (after an earlier snapshot guessed wrong) back from recent.
        const old = where === "recent" ? this.entry(call.id) : null;
        if (old) this.recent = this.recent.filter((e) => e !== old);
        if (old && this.expanded === call.id) this.expanded = null;
        const entry = old || newEntry(call, item.card);
        entry.call = call;
        if (item.card) entry.card = item.card;
        this.active.set(call.id, entry);
        if (!old && call.state === "ringing") result.fresh.push(call.id);
      }
      result.changed.add(call.id);
    }
    for (const [id, entry] of [...this.active]) {
      if (now.has(id)) continue;
      // Ended while we were disconnected: how, we cannot know, so no outcome is claimed.
      this.active.delete(id);
      entry.call = { ...entry.call, state: "ended", outcome: null, ended_at: null };
      this.pushRecent(entry, result);
      result.ended.push(id);
    }
  }

  // --- ended calls -------------------------------------------------------------------

  pushRecent(entry, result) {
    this.recent = [entry, ...this.recent.filter((e) => e.call.id !== entry.call.id)];
    for (const dropped of this.recent.splice(this.recentLimit)) {
      result.changed.add(dropped.call.id);
      if (this.expanded === dropped.call.id) this.expanded = null;
    }
    result.changed.add(entry.call.id);
  }

  setExpanded(id, result) {
    if (this.expanded === id) return;
    if (this.expanded !== null) result.changed.add(this.expanded);
    this.expanded = id;
    if (id !== null) result.changed.add(id);
  }

  /** Open or close an ended call's details; the ids to redraw. */
  toggle(id) {
    const result = outcome();
    if (this.where(id) !== "recent") return result.changed;
    this.setExpanded(this.expanded === id ? null : id, result);
    return result.changed;
  }

  /** Close the expanded ended call; the ids to redraw. */
  collapse() {
    const result = outcome();
    this.setExpanded(null, result);
    return result.changed;
  }

  /** Show the index-th customer of a number several customers share. */
  select(id, index) {
    const entry = this.entry(id);
    if (!entry) return new Set();
    entry.selected = index;
    return new Set([id]);
  }
}
