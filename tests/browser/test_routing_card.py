"""The card of a routed call (known-customer routing), in real Chromium.

The card module of the real service (``/static/card.js``) draws board entries whose
``call.routing`` is what the server sends (docs/protocol.md): straight to the 担当者
(「佐藤 健へ直通」) or to the ring group (「代表グループ (内線 600) へ」), each with its
reason as text, in Japanese and in English; a name with markup stays text.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.browser.conftest import Service

pytestmark = pytest.mark.browser

RENDER = """async () => {
  const { renderCall } = await import("/static/card.js");
  const { setLanguage } = await import("/static/i18n.js");
  const call = (routing, extra = {}) => ({
    id: "c1", sip_call_id: "1@pbx", started_at: "2026-11-22T11:02:00.005+09:00",
    ended_at: null, state: "ringing", outcome: null, answered_by: null,
    caller: { number: "+81312345678", national: "03-1234-5678", raw: "0312345678",
              display_name: null, withheld: null, source: "from" },
    dialed_line: { number: "+81335550100", national: "03-3555-0100", name: "代表" },
    routing, ...extra });
  const card = { status: "unknown", number: "+81312345678", national: "03-1234-5678",
                 raw_number: "0312345678", customers: [], previous_calls: 0 };
  const routed = (routing, extra) => {
    const article = renderCall({ call: call(routing, extra), card }, { onToggle() {} });
    const chip = article.querySelector("[data-testid=routing]");
    return { text: chip ? chip.textContent : null,
             markup: chip ? chip.children.length : null,
             banner: (article.querySelector(".ended-banner") || {}).textContent || null };
  };
  const sato = { target: "sip:203@pbx", extension: "203", staff_id: 2, name: "佐藤 健",
                 reason: "assignee-idle", decided_at: "2026-11-22T11:02:00.021+09:00" };
  const group = { target: "sip:600@pbx", extension: "600", staff_id: null, name: null,
                  reason: "assignee-busy", decided_at: "2026-11-22T11:02:00.021+09:00" };
  const out = {};
  for (const lang of ["ja", "en"]) {
    setLanguage(lang);
    out[lang] = {
      sato: routed(sato), group: routed(group), none: routed(null),
      markup: routed({ ...sato, name: "<b>佐藤</b>" }),
      ended: routed(group, { state: "ended", outcome: "routed",
                             ended_at: "2026-11-22T11:03:00.000+09:00" }),
    };
  }
  setLanguage("ja");
  return out;
}"""


def test_a_routed_call_says_where_it_went_and_why(page: Any, service: Service) -> None:
    page.goto(service.url)  # the login page: same origin, /static needs no session
    shown = page.evaluate(RENDER)
    ja, en = shown["ja"], shown["en"]
    assert ja["sato"]["text"] == "佐藤 健へ直通 — 担当者が空いています"
    assert ja["group"]["text"] == "代表グループ (内線 600) へ — 担当者は通話中か呼出中です"
    assert ja["none"]["text"] is None  # a call on another line has no routing chip
    assert ja["markup"]["text"] == "<b>佐藤</b>へ直通 — 担当者が空いています"
    assert ja["markup"]["markup"] == 0  # text, never markup
    assert ja["ended"]["banner"] == "転送しました (その後の応答は不明)"
    assert en["sato"]["text"] == "Straight to 佐藤 健 — the person in charge is free"
    assert en["group"]["text"] == (
        "To the ring group (ext. 600) — the person in charge is on a call or ringing"
    )
    assert en["ended"]["banner"] == "Routed (whether it was answered is not known)"


LOG_LABELS = """async () => {
  const { outcomeLabel } = await import("/static/calllog.js");
  const { setLanguage } = await import("/static/i18n.js");
  const base = { outcome: "hangup", answered_by: null, handover: null, routing: null };
  const sato = { staff_id: 2, name: "佐藤 健", extension: "203" };
  const suzuki = { staff_id: 3, name: "鈴木 美咲", extension: "204" };
  const handover = (state) => ({ from_staff_id: 2, from_name: "佐藤 健", to_staff_id: 3,
    to_name: "鈴木 美咲", to_extension: "204", state, note: "2階北側" });
  const out = {};
  for (const lang of ["ja", "en"]) {
    setLanguage(lang);
    out[lang] = {
      transferred: outcomeLabel({ ...base, answered_by: suzuki, handover: handover("answered") }),
      requested: outcomeLabel({ ...base, answered_by: sato, handover: handover("requested") }),
      direct: outcomeLabel({ ...base, answered_by: sato,
        routing: { to: "203", staff_id: 2, name: "佐藤 健", reason: "assignee-idle" } }),
      unseen: outcomeLabel({ ...base, outcome: "routed",
        routing: { to: "600", staff_id: null, name: null, reason: "unknown-caller" } }),
    };
  }
  setLanguage("ja");
  return out;
}"""


def test_the_call_log_says_who_it_was_handed_to_and_where_it_was_routed(
    page: Any, service: Service
) -> None:
    page.goto(service.url)
    ja = page.evaluate(LOG_LABELS)["ja"]
    assert ja["transferred"] == "応答: 佐藤 健 / 転送: 鈴木 美咲"
    assert ja["requested"] == "応答: 佐藤 健 / 転送メモ: 鈴木 美咲"
    assert ja["direct"] == "応答: 佐藤 健 / 佐藤 健へ直通 — 担当者が空いています"
    assert ja["unseen"] == (
        "転送しました (応答不明) / 代表グループ (内線 600) へ — 登録のない番号です"
    )
