"""``GET /api/customers`` over real HTTP on the demo database: the session it needs, the
bounds on the query, and the shape of a hit."""

from __future__ import annotations

import pytest

from tests.web.conftest import Live


@pytest.mark.asyncio
async def test_search_needs_a_session(live_web: Live) -> None:
    response = await live_web.client().get("/api/customers", params={"q": "やまだ"})
    assert response.status_code == 401
    assert "山田" not in response.text


@pytest.mark.asyncio
async def test_a_too_long_query_or_a_bad_limit_is_refused(live_web: Live) -> None:
    client = await live_web.login()
    assert (await client.get("/api/customers", params={"q": "あ" * 100})).status_code == 200
    for params in ({"q": "あ" * 101}, {"limit": 0}, {"limit": 101}, {"limit": "x"}):
        response = await client.get("/api/customers", params=params)
        assert response.status_code == 422, (params, response.text)


@pytest.mark.asyncio
async def test_a_hit_in_half_width_kana_and_by_part_of_a_number(live_web: Live) -> None:
    client = await live_web.login()
    response = await client.get("/api/customers", params={"q": "ﾔﾏﾀﾞ ﾀﾛｳ"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "ﾔﾏﾀﾞ ﾀﾛｳ" and body["truncated"] is False
    [hit] = body["results"]
    assert isinstance(hit.pop("id"), int)
    assert hit["assigned_staff"].pop("id") > 0
    assert hit == {
        "code": None,
        "name": "山田 太郎",
        "furigana": "やまだ たろう",
        "honorific": "様",
        "company": None,
        "department": None,
        "rank": "A",
        "tags": ["リピーター", "紹介元"],
        "assigned_staff": {"name": "佐藤 健", "furigana": "さとう けん", "extension": "203"},
        "phones": [
            {"number": "+81312345678", "national": "03-1234-5678", "label": "自宅"},
            {"number": "+819012345678", "national": "090-1234-5678", "label": "携帯"},
        ],
        "matched": "furigana",
    }
    by_number = await client.get("/api/customers", params={"q": "+81 3 1234"})
    assert [h["name"] for h in by_number.json()["results"]] == ["山田 太郎"]
    assert by_number.json()["results"][0]["matched"] == "phone"


@pytest.mark.asyncio
async def test_the_limit_truncates_and_an_empty_query_lists_customers(live_web: Live) -> None:
    client = await live_web.login()
    body = (await client.get("/api/customers", params={"q": "株式会社", "limit": 2})).json()
    assert len(body["results"]) == 2 and body["truncated"] is True
    assert {hit["company"] for hit in body["results"]} == {"株式会社 青葉不動産"}
    assert {hit["matched"] for hit in body["results"]} == {"company"}
    listed = (await client.get("/api/customers")).json()
    assert listed["query"] == "" and len(listed["results"]) == 20
    assert listed["truncated"] is True  # the demo has 24 customers
    assert {hit["matched"] for hit in listed["results"]} == {None}
