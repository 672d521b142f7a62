// The フォロー view: 今日のフォロー (follow-ups due today or overdue) and 休眠のお客様.
//
// Owns the DOM inside #followups-view. Reads GET /api/followups/today and
// GET /api/followups/dormant?rank= (docs/architecture.md, "Follow-ups and openers"),
// ticks a follow-up off with POST /api/followups/notes/{id}/done or
// /customers/{id}/done, and opens a customer's page through navigate("customers",
// {id}). count() fills the tab's badge (onCount). An answer that arrives after
// clear() (logged out) or after a newer request is dropped: what is shown always
// belongs to the last request of the logged-in person. Customer data reaches the page
// only as text (el() from card.js). Knows nothing of the board or sockets.

import { t } from "./i18n.js";
import { el } from "./card.js";
import { detailText, formatDate } from "./format.js";

export const TODAY_LIMIT = 200;
export const DORMANT_LIMIT = 100;

/** 「山田 太郎 様」 in Japanese (the customer's own honorific, else 様); the name in English. */
export function namedCustomer(customer) {
  return t("followups.named", { name: customer.name, honorific: customer.honorific || "様" });
}

export class FollowupsView {
  constructor({ api, root, navigate, onCount }) {
    this.api = api;
    this.root = root;
    this.navigate = navigate;
    this.onCount = onCount || (() => {});
    this.generation = 0; // bumped by clear() and each load: late answers are dropped
    this.today = null; // {date, items, truncated} or null
    this.dormant = null; // {items, truncated} or null
    this.rank = ""; // the dormant list's rank filter; "" = every rank
    this.ranks = new Set(); // ranks seen on the unfiltered dormant list
    this.error = "";
    this.message = ""; // what the last 完了 said (an error), shown under the list
    this.loading = false;
  }

  // --- the view's contract (app.js) ---------------------------------------------------

  async load() {
    const generation = ++this.generation;
    this.loading = true;
    this.error = "";
    this.render();
    const [today, dormant] = await Promise.all([
      this.api("GET", `/api/followups/today?limit=${TODAY_LIMIT}`),
      this.api("GET", this.dormantPath()),
    ]);
    if (generation !== this.generation) return;
    this.loading = false;
    if (today.status === 200) {
      this.today = today.data;
      this.onCount(this.today.items.length);
    } else {
      this.error = t("followups.error", { detail: detailText(today.data, today.status) });
    }
    if (dormant.status === 200) this.setDormant(dormant.data);
    else if (!this.error) this.error = t("followups.error", { detail: detailText(dormant.data, dormant.status) });
    this.render();
  }

  /** The badge only: how many follow-ups are due (the tab shows it without opening the view). */
  async count() {
    const generation = this.generation;
    const answer = await this.api("GET", `/api/followups/today?limit=${TODAY_LIMIT}`);
    if (generation !== this.generation || answer.status !== 200) return;
    this.onCount(answer.data.items.length);
  }

  clear() {
    this.generation += 1;
    this.today = null;
    this.dormant = null;
    this.rank = "";
    this.ranks = new Set();
    this.error = "";
    this.message = "";
    this.loading = false;
    this.root.replaceChildren();
    this.onCount(0);
  }

  render() {
    const focused = this.root.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    this.root.replaceChildren(this.todaySection(), this.dormantSection());
    if (focused) this.focusKey(focused);
  }

  // --- data ---------------------------------------------------------------------------

  dormantPath() {
    const query = new URLSearchParams({ limit: String(DORMANT_LIMIT) });
    if (this.rank) query.set("rank", this.rank);
    return `/api/followups/dormant?${query}`;
  }

  setDormant(data) {
    this.dormant = data;
    if (!this.rank) {
      for (const item of data.items) if (item.rank) this.ranks.add(item.rank);
    }
  }

  async filterRank(rank) {
    this.rank = rank;
    const generation = ++this.generation;
    const answer = await this.api("GET", this.dormantPath());
    if (generation !== this.generation) return;
    if (answer.status === 200) this.setDormant(answer.data);
    else this.error = t("followups.error", { detail: detailText(answer.data, answer.status) });
    this.render();
    this.focusKey("rank");
  }

  async markDone(item, index) {
    const path =
      item.kind === "note"
        ? `/api/followups/notes/${item.note_id}/done`
        : `/api/followups/customers/${item.customer.id}/done`;
    const generation = this.generation;
    const answer = await this.api("POST", path);
    if (generation !== this.generation) return;
    if (answer.status !== 200) {
      this.message = t("followups.doneFailed", { detail: detailText(answer.data, answer.status) });
      this.render();
      return;
    }
    this.message = "";
    const items = this.today.items.filter((other) => other !== item);
    this.today = { ...this.today, items };
    this.onCount(items.length);
    this.render();
    // Focus where the eye goes next: the next item's 完了, else the list's heading.
    const next = items[Math.min(index, items.length - 1)];
    if (next) this.focusKey(`done-${itemKey(next)}`);
    else this.focusKey("today-title");
  }

  // --- drawing ------------------------------------------------------------------------

  focusKey(key) {
    const target = this.root.querySelector(`[data-key="${CSS.escape(key)}"]`);
    if (target) target.focus();
  }

  todaySection() {
    const title = el("h2", {
      className: "followups-title",
      text: t("followups.today.title"),
      attrs: { id: "followups-today-title", tabindex: "-1", "data-key": "today-title" },
    });
    if (this.today) title.append(el("span", { className: "followups-date", text: formatDate(this.today.date) }));
    const section = el("section", {
      className: "followups-today",
      attrs: { "aria-labelledby": "followups-today-title", "data-testid": "followups-today" },
    }, [title]);
    const status = el("p", { className: "followups-status", attrs: { role: "status", "data-testid": "followups-status" } });
    section.append(status);
    if (this.loading && !this.today) status.textContent = t("followups.loading");
    if (this.error) status.textContent = this.error;
    if (!this.today) return section;
    if (this.today.items.length === 0) {
      status.textContent = t("followups.today.empty");
      return section;
    }
    const list = el("ul", { className: "followups-list", attrs: { "data-testid": "followups-list" } });
    this.today.items.forEach((item, index) => list.append(this.todayItem(item, index)));
    section.append(list);
    if (this.today.truncated) {
      section.append(el("p", { className: "followups-truncated", text: t("followups.truncated", { count: this.today.items.length }) }));
    }
    if (this.message) {
      section.append(el("p", { className: "followups-error", text: this.message, attrs: { role: "alert" } }));
    }
    return section;
  }

  customerButton(customer, key) {
    const button = el(
      "button",
      {
        className: "followup-customer",
        attrs: { type: "button", "data-key": key, "data-testid": "followup-customer", title: t("followups.openCustomer") },
      },
      [
        customer.furigana ? el("span", { className: "followup-furigana", text: customer.furigana, attrs: { lang: "ja" } }) : null,
        el("span", { className: "followup-name", text: namedCustomer(customer) }),
      ],
    );
    button.addEventListener("click", () => this.navigate("customers", { id: customer.id }));
    return button;
  }

  whoBlock(customer, key) {
    const who = el("div", { className: "followup-who" }, [this.customerButton(customer, key)]);
    const extra = [customer.company, customer.assigned_staff ? t("followups.assigned", { name: customer.assigned_staff.name }) : null]
      .filter(Boolean)
      .join(" / ");
    if (extra) who.append(el("span", { className: "followup-extra", text: extra }));
    return who;
  }

  todayItem(item, index) {
    const key = itemKey(item);
    const li = el("li", {
      className: `followup-item${item.overdue ? " overdue" : ""}`,
      attrs: { "data-testid": "followup-item", "data-kind": item.kind, "data-customer-id": String(item.customer.id) },
    });
    const due = el("div", { className: "followup-due" }, [
      el("span", { className: "followup-due-date", text: t("followups.due", { date: formatDate(item.due) }) }),
      item.overdue ? el("span", { className: "followup-overdue", text: t("followups.overdue"), attrs: { "data-testid": "followup-overdue" } }) : null,
    ]);
    const body = el("div", { className: "followup-body" }, [
      el("span", { className: "followup-kind", text: t(`followups.kind.${item.kind}`) }),
      item.body ? el("span", { className: "followup-text", text: item.body }) : null,
    ]);
    const done = el("button", {
      className: "followup-done",
      text: t("followups.done"),
      attrs: {
        type: "button",
        "data-key": `done-${key}`,
        "data-testid": "followup-done",
        "aria-label": t("followups.doneLabel", { name: namedCustomer(item.customer) }),
      },
    });
    done.addEventListener("click", () => {
      done.disabled = true;
      this.markDone(item, index);
    });
    li.append(this.whoBlock(item.customer, `customer-${key}`), due, body, done);
    return li;
  }

  dormantSection() {
    const section = el("section", {
      className: "followups-dormant",
      attrs: { "aria-labelledby": "followups-dormant-title", "data-testid": "dormant" },
    }, [el("h2", { className: "followups-title", text: t("followups.dormant.title"), attrs: { id: "followups-dormant-title" } })]);
    const select = el("select", { attrs: { id: "followups-rank", "data-key": "rank", "data-testid": "dormant-rank" } }, [
      el("option", { text: t("followups.dormant.allRanks"), attrs: { value: "" } }),
    ]);
    const ranks = new Set(this.ranks);
    if (this.rank) ranks.add(this.rank);
    for (const rank of [...ranks].sort()) {
      select.append(el("option", { text: rank, attrs: { value: rank } }));
    }
    select.value = this.rank;
    select.addEventListener("change", () => this.filterRank(select.value));
    section.append(
      el("div", { className: "followups-filter" }, [
        el("label", { text: t("followups.dormant.rank"), attrs: { for: "followups-rank" } }),
        select,
        el("span", { className: "followups-hint", text: t("followups.dormant.hint") }),
      ]),
    );
    if (!this.dormant) return section;
    if (this.dormant.items.length === 0) {
      section.append(el("p", { className: "followups-status", text: t("followups.dormant.empty") }));
      return section;
    }
    const list = el("ul", { className: "followups-list dormant-list", attrs: { "data-testid": "dormant-list" } });
    for (const item of this.dormant.items) {
      const last = item.last_contact_on
        ? t("followups.dormant.last", { date: formatDate(item.last_contact_on) })
        : t("followups.dormant.never");
      list.append(
        el("li", { className: "followup-item dormant-item", attrs: { "data-testid": "dormant-item", "data-customer-id": String(item.customer.id) } }, [
          this.whoBlock(item.customer, `dormant-${item.customer.id}`),
          el("div", { className: "followup-due" }, [
            item.rank ? el("span", { className: "badge rank", text: t("customer.rank", { rank: item.rank }) }) : null,
            el("span", { className: "dormant-last", text: last }),
          ]),
          el("div", {
            className: "dormant-days",
            text: t("followups.dormant.days", { days: item.days, threshold: item.threshold_days }),
          }),
        ]),
      );
    }
    section.append(list);
    if (this.dormant.truncated) {
      section.append(el("p", { className: "followups-truncated", text: t("followups.truncated", { count: this.dormant.items.length }) }));
    }
    return section;
  }
}

function itemKey(item) {
  return item.kind === "note" ? `note-${item.note_id}` : `customer-${item.customer.id}`;
}
