"""The 担当者 cannot take the call: the card names who else handled the customer lately.

The card module of the real service (``/static/card.js``) draws an entry whose customer
has ``recent_staff`` (the writers of the last notes, from the lookup) with presence
from the board (``handlers.presenceOf``): 「佐藤は通話中です」 then 「最近の対応: 鈴木 美咲
(内線 204) 待機中」. Nothing is added while the 担当者 is free or has the call, the person on
the call is not named, and a name with markup stays text.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Service

pytestmark = pytest.mark.browser

RENDER = """async () => {
  const { renderCall } = await import("/static/card.js");
  const { setLanguage } = await import("/static/i18n.js");
  const sato = { id: 1, name: "佐藤 健", furigana: null, extension: "203" };
  const suzuki = { id: 2, name: "鈴木 美咲", furigana: null, extension: "204" };
  const takahashi = { id: 3, name: "<b>高橋</b> 誠", furigana: null, extension: "201" };
  const entry = (answeredBy) => ({
    call: { id: "c1", sip_call_id: "1@pbx", started_at: "2026-11-22T11:02:00+09:00",
            ended_at: null, state: answeredBy ? "answered" : "ringing", outcome: null,
            answered_by: answeredBy,
            caller: { number: "+81312345678", national: "03-1234-5678", raw: "0312345678",
                      display_name: null, withheld: null, source: "from" } },
    card: { status: "matched", number: "+81312345678", national: "03-1234-5678",
            raw_number: "0312345678", previous_calls: 3,
            customers: [{ id: 1, name: "山田 太郎", furigana: "やまだ たろう", company: null,
                          rank: null, tags: [], assigned_staff: sato, transactions: [],
                          notes: [], recent_staff: [suzuki, takahashi] }] } });
  const draw = (presence, answeredBy = null) => {
    const handlers = { onToggle() {}, presenceOf: (id) => presence[id] || null };
    const article = renderCall(entry(answeredBy), handlers, { mode: "full" });
    const line = article.querySelector("[data-testid=recent-staff]");
    return {
      warning: (article.querySelector("[data-testid=assigned-warning]") || {}).textContent || null,
      line: line ? line.textContent : null,
      chips: line ? [...line.querySelectorAll("[data-testid=recent-staff-presence]")]
        .map((c) => c.dataset.presence) : [],
      markup: line ? line.querySelectorAll("b").length : null,
    };
  };
  const out = {};
  for (const lang of ["ja", "en"]) {
    setLanguage(lang);
    out[lang] = {
      busy: draw({ 1: "busy", 2: "idle", 3: "ringing" }),
      idle: draw({ 1: "idle", 2: "idle", 3: "idle" }),
      suzukiHasIt: draw({ 1: "busy", 2: "busy", 3: "idle" },
                        { staff_id: 2, name: "鈴木 美咲", extension: "204", how: "identity" }),
      satoHasIt: draw({ 1: "busy", 2: "idle", 3: "idle" },
                      { staff_id: 1, name: "佐藤 健", extension: "203", how: "identity" }),
    };
  }
  setLanguage("ja");
  return out;
}"""


def test_a_busy_assignee_names_who_else_handled_the_customer(page: Any, service: Service) -> None:
    page.goto(service.url)  # the login page: same origin, /static needs no session
    shown = page.evaluate(RENDER)
    ja, en = shown["ja"], shown["en"]
    assert ja["busy"]["warning"] == "佐藤は通話中です"
    assert ja["busy"]["line"] == (
        "最近の対応:鈴木 美咲 (内線 204) 待機中<b>高橋</b> 誠 (内線 201) 呼出中"
    )
    assert ja["busy"]["chips"] == ["idle", "ringing"]
    assert ja["busy"]["markup"] == 0  # a name is text, never markup
    assert ja["idle"] == {"warning": None, "line": None, "chips": [], "markup": None}
    # 鈴木 has this call: 佐藤 is busy elsewhere, and 鈴木 is not offered to herself.
    assert ja["suzukiHasIt"]["line"] == "最近の対応:<b>高橋</b> 誠 (内線 201) 待機中"
    # 佐藤, the 担当者, has it: nothing to warn about, nobody else to name.
    assert ja["satoHasIt"]["warning"] is None and ja["satoHasIt"]["line"] is None
    assert en["busy"]["line"].startswith("Recently handled by:鈴木 美咲 (ext. 204)")
