"""/api/followups through the real server on the demo data: 今日のフォロー, 完了, 休眠."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio

from tests.web.conftest import TOKYO, DemoTemplate, Live, start_live, stop_live

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def live_a60(tmp_path: Path, demo_template: DemoTemplate) -> AsyncIterator[Live]:
    """The web side with ``[followups] dormant_days = {A = 60}``."""
    running, task = await start_live(
        tmp_path,
        demo_template,
        with_sip=False,
        followups={"dormant_days_default": 90, "dormant_days": {"A": 60}},
    )
    try:
        yield running
    finally:
        await stop_live(running, task)


async def test_today_lists_the_demo_follow_ups_and_done_removes_them(live_a60: Live) -> None:
    client = await live_a60.login()
    today = datetime.now(TOKYO).date()
    response = await client.get("/api/followups/today")
    assert response.status_code == 200
    found = response.json()
    assert found["date"] == today.isoformat() and found["truncated"] is False
    items = found["items"]
    assert [(i["kind"], i["customer"]["name"], i["due"], i["overdue"]) for i in items] == [
        ("note", "田中 和子", (today - timedelta(days=2)).isoformat(), True),
        ("note", "山田 太郎", today.isoformat(), False),
        ("customer", "小川 智子", today.isoformat(), False),
    ]
    yamada = items[1]
    assert yamada["body"].startswith("奥様より電話。")
    assert yamada["customer"]["furigana"] == "やまだ たろう"
    assert yamada["customer"]["honorific"] == "様"
    assert yamada["customer"]["assigned_staff"]["name"] == "佐藤 健"
    assert items[2]["note_id"] is None and items[2]["body"] is None

    done = await client.post(f"/api/followups/notes/{yamada['note_id']}/done")
    assert done.status_code == 200
    ogawa = items[2]["customer"]["id"]
    assert (await client.post(f"/api/followups/customers/{ogawa}/done")).status_code == 200
    left = (await client.get("/api/followups/today")).json()["items"]
    assert [i["customer"]["name"] for i in left] == ["田中 和子"]
    # Ticked off twice is still fine; nothing there is a Japanese 404.
    again = await client.post(f"/api/followups/notes/{yamada['note_id']}/done")
    assert again.status_code == 200
    missing = await client.post("/api/followups/notes/999999/done")
    assert missing.status_code == 404 and "見つかりません" in missing.json()["detail"]
    missing = await client.post("/api/followups/customers/999999/done")
    assert missing.status_code == 404 and "見つかりません" in missing.json()["detail"]
    # The customer's own date is cleared, and the change is in the audit trail.
    with live_a60.db() as db:
        cleared = db.execute("SELECT next_follow_up_on FROM customers WHERE id = ?", (ogawa,))
        assert cleared.fetchone() == (None,)
        entries = db.execute(
            "SELECT entity, action FROM audit_log WHERE entity_id IN (?, ?) ORDER BY id",
            (yamada["note_id"], ogawa),
        ).fetchall()
    assert entries == [("note", "update"), ("customer", "update")]


async def test_dormant_per_rank_and_limit(live_a60: Live) -> None:
    client = await live_a60.login()
    found = (await client.get("/api/followups/dormant", params={"limit": 100})).json()
    items = found["items"]
    assert found["truncated"] is False and items
    by_name = {i["customer"]["name"]: i for i in items}
    # 渡辺 (A): the last contact 209 days ago, over A's 60 days.
    watanabe = by_name["渡辺 恵子"]
    assert (watanabe["rank"], watanabe["threshold_days"], watanabe["days"]) == ("A", 60, 209)
    # 井上 (A): a transaction 15 days ago, not dormant; 吉田 (B) after 90 days is.
    assert "井上 真理子" not in by_name
    assert by_name["吉田 茂"]["threshold_days"] == 90
    days = [i["days"] for i in items]
    assert days == sorted(days, reverse=True)  # the longest without contact first
    only_a = (await client.get("/api/followups/dormant", params={"rank": "A"})).json()["items"]
    assert only_a and {i["rank"] for i in only_a} == {"A"}
    every = await client.get("/api/followups/dormant", params={"rank": "", "limit": 100})
    assert every.json()["items"] == items  # an empty rank: every rank
    one = (await client.get("/api/followups/dormant", params={"limit": 1})).json()
    assert one["truncated"] is True and len(one["items"]) == 1
    too_many = await client.get("/api/followups/dormant", params={"limit": 100_000})
    assert too_many.status_code == 422


async def test_followups_need_a_session(live_a60: Live) -> None:
    client = live_a60.client()
    assert (await client.get("/api/followups/today")).status_code == 401
    assert (await client.get("/api/followups/dormant")).status_code == 401
    assert (await client.post("/api/followups/notes/1/done")).status_code == 401
