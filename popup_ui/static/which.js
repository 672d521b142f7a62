// 「どちらが応答しましたか」: the logged-in person's phone answered one of several calls
// and the PBX did not say which (docs/protocol.md, `call.which`).
//
// Owns the open questions meant for this person (the snapshot's `questions`, then each
// `call.which`: open with the calls still offered, or closed), and their DOM in
// #which-list: one prompt per question with a button per candidate caller. A button
// claims that call (POST /api/calls/{id}/claim, how "claimed"); the server then closes
// the question and every browser sees who has the call. Questions for anyone else are
// ignored here, the way the note form opens only for the person who had the call.
// Customer data reaches the page only as text (see card.js).

import { t } from "./i18n.js";
import { el } from "./card.js";
import { formatTime } from "./format.js";

const LIMIT = 20; // questions kept at most (the server keeps at most 50 open for everyone)

export class WhichPrompts {
  /** api(method, path, body) -> {status, data}; onClaimed(call) after a claim. */
  constructor({ api, list, onClaimed = () => {} }) {
    this.api = api;
    this.list = list;
    this.onClaimed = onClaimed;
    this.staffId = null;
    this.questions = new Map(); // question id -> message, oldest first
    this.errors = new Map(); // question id -> text
    this.busy = new Set(); // question ids with a claim under way
  }

  start(me) {
    this.staffId = me ? me.id : null;
    this.clear();
  }

  clear() {
    this.questions.clear();
    this.errors.clear();
    this.busy.clear();
    this.render();
  }

  mine(message) {
    return this.staffId !== null && message && message.staff_id === this.staffId;
  }

  /** A board.snapshot: its open questions replace what was shown. */
  snapshot(questions) {
    this.questions.clear();
    for (const question of Array.isArray(questions) ? questions : []) this.take(question);
    this.render();
  }

  /** One call.which. */
  receive(message) {
    if (!message || typeof message.question_id !== "string") return;
    if (!this.mine(message)) return;
    this.take(message);
    this.render();
  }

  take(message) {
    if (!this.mine(message)) return;
    const id = message.question_id;
    this.questions.delete(id);
    if (message.state !== "open" || !Array.isArray(message.calls) || message.calls.length === 0) {
      this.errors.delete(id);
      this.busy.delete(id);
      return;
    }
    this.questions.set(id, message);
    while (this.questions.size > LIMIT) this.questions.delete(this.questions.keys().next().value);
  }

  async claim(question, candidate) {
    const id = question.question_id;
    if (this.busy.has(id)) return;
    this.busy.add(id);
    this.errors.delete(id);
    this.render();
    let answer = null;
    try {
      answer = await this.api("POST", `/api/calls/${encodeURIComponent(candidate.call_id)}/claim`);
    } catch {
      answer = null;
    }
    this.busy.delete(id);
    if (answer && answer.status === 200 && answer.data) {
      // The server's call.which (closed) follows; the prompt goes now.
      this.questions.delete(id);
      this.render();
      this.onClaimed(answer.data);
      return;
    }
    const detail = answer && answer.data && typeof answer.data.detail === "string" ? answer.data.detail : "";
    this.errors.set(id, detail || t("claim.failed"));
    this.render();
  }

  candidateText(candidate) {
    const caller = candidate.caller || {};
    const who = candidate.customer_name
      ? t("honorific", { name: candidate.customer_name })
      : caller.display_name || caller.national || caller.raw || t("status.noNumber");
    const number = candidate.customer_name || caller.display_name ? caller.national || caller.raw || "" : "";
    return { who, number, time: t("which.at", { time: formatTime(candidate.started_at || "") }) };
  }

  render() {
    const prompts = [...this.questions.values()].map((question) => {
      const id = question.question_id;
      const titleId = `which-${id}-title`;
      const buttons = question.calls.map((candidate) => {
        const { who, number, time } = this.candidateText(candidate);
        const button = el("button", {
          className: "which-choice",
          attrs: { type: "button", "data-testid": "which-choice", "data-call-id": candidate.call_id },
        }, [
          el("span", { className: "which-who", text: who }),
          number ? el("span", { className: "which-number", text: number }) : null,
          el("span", { className: "which-time", text: time }),
        ]);
        if (this.busy.has(id)) button.setAttribute("aria-disabled", "true");
        button.addEventListener("click", () => this.claim(question, candidate));
        return button;
      });
      const box = el("section", {
        className: "which-prompt",
        attrs: { role: "alertdialog", "aria-labelledby": titleId, "data-testid": "which-prompt", "data-question": id },
      }, [
        el("h2", { className: "which-title", text: t("which.title"), attrs: { id: titleId } }),
        el("p", { className: "which-lead", text: t("which.lead", { ext: question.extension }) }),
        el("div", { className: "which-choices", attrs: { role: "group", "aria-labelledby": titleId } }, buttons),
      ]);
      const error = this.errors.get(id);
      if (error) box.append(el("p", { className: "which-error", text: error, attrs: { role: "status" } }));
      return box;
    });
    this.list.replaceChildren(...prompts);
    this.list.hidden = prompts.length === 0;
  }
}
