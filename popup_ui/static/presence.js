// Staff presence (idle / ringing / busy / unknown) as the page shows it: the staff strip
// over the board, the presence chip beside a card's 担当, and the words for both.
//
// The data lives in board.js (Board.staff, from the snapshot's `staff` and
// staff.presence); this module only draws what it is given, so a test can feed it a
// board and look at the DOM. Text goes in with textContent only.

import { t } from "./i18n.js";
import { el } from "./card.js";

/** The word for a presence: 待機中 / 呼出中 / 通話中 / 不明. */
export function presenceText(presence) {
  return t(`presence.${presence || "unknown"}`);
}

/** 佐藤 健 -> 佐藤: how people say a colleague's name on the phone. */
export function familyName(name) {
  const text = String(name || "").trim();
  return text.split(/[\s\u3000]+/)[0] || text;
}

/** A dot and a word; `testid` names it for tests. */
export function presenceChip(presence, testid = "presence") {
  const p = presence || "unknown";
  return el("span", { className: `presence presence-${p}`, attrs: { "data-presence": p, "data-testid": testid } }, [
    el("span", { className: "presence-dot", attrs: { "aria-hidden": "true" } }),
    el("span", { className: "presence-word", text: presenceText(p) }),
  ]);
}

/**
 * Draw the staff strip into `container` (its list is `container.querySelector("ul")`):
 * one chip per entry of `list` ({staff_id, name, extension, presence}). Hidden when
 * nobody's presence is known (no extension watched: trunk mode).
 */
export function renderStaffStrip(container, list, { meId = null } = {}) {
  const ul = container.querySelector("ul");
  container.hidden = list.length === 0;
  ul.replaceChildren(
    ...list.map((staff) => {
      const mine = meId !== null && staff.staff_id === meId;
      const item = el(
        "li",
        {
          className: `staff-chip presence-${staff.presence}${mine ? " me" : ""}`,
          attrs: { "data-testid": "staff-chip", "data-extension": staff.extension, "data-presence": staff.presence },
        },
        [
          el("span", { className: "staff-chip-name", text: staff.name || t("presence.noName") }),
          el("span", { className: "staff-chip-ext", text: t("claim.ext", { ext: staff.extension }) }),
          presenceChip(staff.presence, "staff-presence"),
        ],
      );
      if (mine) item.append(el("span", { className: "staff-chip-me", text: t("presence.me") }));
      return item;
    }),
  );
}
