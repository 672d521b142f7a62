// Fixed formats for dates, times and money, the same in every browser.
//
// Dates are always YYYY-MM-DD and times HH:MM in Asia/Tokyo, computed by hand
// instead of with toLocaleString/Intl, whose output depends on the browser's
// locale data. Japan has kept UTC+9 without daylight saving since 1951, so a fixed
// offset is exact. Money is ¥ with comma groups. Which number of a call to show
// (the caller's, the office line's) is decided here too, and how an API error reads.
// Nothing here touches the DOM.

const TOKYO_OFFSET_MS = 9 * 60 * 60 * 1000;
const DATE_ONLY = /^(\d{4})-(\d{2})-(\d{2})$/;

function pad2(n) {
  return String(n).padStart(2, "0");
}

/** Date in Tokyo time, shifted so that its UTC fields read as Tokyo wall time. */
function tokyoParts(iso) {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return null;
  const d = new Date(ms + TOKYO_OFFSET_MS);
  return {
    year: d.getUTCFullYear(),
    month: d.getUTCMonth() + 1,
    day: d.getUTCDate(),
    hour: d.getUTCHours(),
    minute: d.getUTCMinutes(),
  };
}

/** "2026-06-13" from an ISO date or date-time (date-times are read in Asia/Tokyo). */
export function formatDate(iso) {
  if (typeof iso !== "string" || iso === "") return "";
  const plain = DATE_ONLY.exec(iso);
  if (plain) return iso; // a calendar date has no time zone to convert
  const p = tokyoParts(iso);
  if (!p) return iso;
  return `${p.year}-${pad2(p.month)}-${pad2(p.day)}`;
}

/** "10:31" (Asia/Tokyo) from an ISO date-time. */
export function formatTime(iso) {
  if (typeof iso !== "string" || iso === "") return "";
  const p = tokyoParts(iso);
  if (!p) return "";
  return `${pad2(p.hour)}:${pad2(p.minute)}`;
}

/** "¥58,000" from a whole number of yen; "" when there is no amount. */
export function formatYen(amount) {
  if (typeof amount !== "number" || !Number.isFinite(amount)) return "";
  const sign = amount < 0 ? "-" : "";
  const digits = String(Math.round(Math.abs(amount)));
  return `${sign}¥${digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",")}`;
}

/** The number to show for a call: national format, else as SIP presented it. */
export function displayNumber(call, card) {
  const caller = (call && call.caller) || {};
  return (
    caller.national ||
    (card && card.national) ||
    caller.raw ||
    (card && card.raw_number) ||
    caller.number ||
    ""
  );
}

/** The office line a call came in on: its name (代表), else its number; "" if unknown. */
export function dialedLine(call) {
  const line = call && call.dialed_line;
  if (!line || typeof line !== "object") return "";
  return line.name || line.national || line.number || "";
}

/** The detail of an error answer as text (FastAPI's 422 detail is a list). */
export function detailText(data, status) {
  const detail = data && data.detail;
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) {
    const parts = detail.map((d) => (d && typeof d.msg === "string" ? d.msg : "")).filter(Boolean);
    if (parts.length) return parts.join(" / ");
  }
  return `HTTP ${status}`;
}
