"""The call log and the missed calls through the real server (``/api/calls…``)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from db.calls import record_call_answered, record_call_ended, record_call_started
from tests.web.conftest import TOKYO, Live

pytestmark = pytest.mark.asyncio

NUMBER = "+81311112222"
SPELLINGS = [
    "03-1111-2222",
    "0311112222",
    "+81311112222",
    "81311112222",
    "０３ー１１１１ー２２２２",
]


def log_calls(live: Live, count: int, *, start: datetime) -> list[str]:
    """``count`` calls from NUMBER, one a minute from ``start``; the first one answered."""
    ids = [f"{n:02d}" + "a" * 30 for n in range(count)]
    with live.web.services.session_factory() as session:
        for n, call_id in enumerate(ids):
            at = start + timedelta(minutes=n)
            record_call_started(
                session,
                id=call_id,
                sip_call_id=f"{call_id}@pbx",
                caller_e164=NUMBER,
                caller_raw="0311112222",
                display_name=None,
                withheld=None,
                dialed_e164="+81335550100",
                started_at=at,
                customer_id=None,
            )
            if n == 0:
                record_call_answered(
                    session, id=call_id, staff_id=1, extension="203", at=at, how="identity"
                )
            record_call_ended(
                session,
                id=call_id,
                ended_at=at + timedelta(seconds=42),
                outcome="hangup" if n == 0 else "abandoned",
            )
        session.commit()
    return ids


async def test_the_log_pages_newest_first_and_finds_a_number_however_written(
    live_web: Live,
) -> None:
    client = await live_web.login()
    start = datetime.now(TOKYO) - timedelta(hours=1)
    ids = log_calls(live_web, 5, start=start)
    for spelling in SPELLINGS:
        page = (await client.get("/api/calls", params={"number": spelling, "page_size": 2})).json()
        assert (page["total"], page["page"], page["page_size"]) == (5, 1, 2), spelling
        assert [c["id"] for c in page["calls"]] == [ids[4], ids[3]], spelling
    last = (
        await client.get("/api/calls", params={"number": "0311112222", "page": 3, "page_size": 2})
    ).json()
    [first] = last["calls"]
    assert first["id"] == ids[0]
    assert first["caller_number"] == NUMBER and first["caller_national"] == "03-1111-2222"
    assert first["dialed_number"] == "+81335550100"
    assert (first["dialed_national"], first["dialed_name"]) == ("03-3555-0100", "代表")
    assert first["answered_by"] == {"staff_id": 1, "name": "佐藤 健", "extension": "203"}
    assert (first["talk_seconds"], first["outcome"]) == (42, "hangup")
    assert first["started_at"].endswith("+09:00")
    # A time window: since is inclusive, until exclusive; a naive time is Tokyo time.
    window = (
        await client.get(
            "/api/calls",
            params={
                "since": (start + timedelta(minutes=1)).isoformat(),
                "until": (start + timedelta(minutes=3)).replace(tzinfo=None).isoformat(),
            },
        )
    ).json()
    assert [c["id"] for c in window["calls"]] == [ids[2], ids[1]]
    # Everything: the demo's calls too, newest first.
    everything = (await client.get("/api/calls", params={"page_size": 200})).json()
    assert everything["total"] == 5 + 5
    times = [c["started_at"] for c in everything["calls"]]
    assert times == sorted(times, reverse=True)


async def test_bad_queries_are_the_clients_mistake(live_web: Live) -> None:
    client = await live_web.login()
    for params in (
        {"number": "not a number"},
        {"page_size": "201"},
        {"page": "0"},
        {"since": "yesterday"},
        {"since": "0001-01-01T00:00:00"},
        {"until": "9999-12-31T23:59:59+14:00"},
    ):
        response = await client.get("/api/calls", params=params)
        assert response.status_code == 422, (params, response.text)


async def test_missed_calls_group_by_caller_and_leave_the_list_once_resolved(
    live_web: Live,
) -> None:
    client = await live_web.login()
    log_calls(live_web, 3, start=datetime.now(TOKYO) - timedelta(minutes=30))
    with live_web.web.services.session_factory() as session:
        for n in range(2):  # two withheld callers: a row each
            call_id = f"w{n}" + "b" * 30
            at = datetime.now(TOKYO) - timedelta(minutes=10 - n)
            record_call_started(
                session,
                id=call_id,
                sip_call_id=f"{call_id}@pbx",
                caller_e164=None,
                caller_raw="anonymous",
                display_name=None,
                withheld="anonymous",
                dialed_e164=None,
                started_at=at,
                customer_id=None,
            )
            record_call_ended(session, id=call_id, ended_at=at, outcome="timeout")
        session.commit()

    missed = (await client.get("/api/calls/missed")).json()["missed"]
    rows = [(m["number"], m["national"], m["attempts"]) for m in missed]
    assert rows == [
        (None, None, 1),
        (None, None, 1),
        (NUMBER, "03-1111-2222", 2),  # the answered first call is not missed
        ("+819099990000", "090-9999-0000", 2),  # the demo's two abandoned calls
    ]
    assert missed[0]["call_ids"] == ["w1" + "b" * 30]
    assert missed[2]["status"] is None and missed[2]["resolved_by"] is None
    assert missed[2]["first_at"] < missed[2]["last_at"]

    answer = await client.post(
        "/api/calls/missed/resolve",
        json={"call_ids": missed[2]["call_ids"], "status": "called_back", "note": "見積送付"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"resolved": 2}
    again = await client.post(
        "/api/calls/missed/resolve",
        json={"call_ids": missed[2]["call_ids"], "status": "no_action", "note": None},
    )
    assert again.json() == {"resolved": 0}

    still = (await client.get("/api/calls/missed")).json()["missed"]
    assert NUMBER not in [m["number"] for m in still]
    assert len(still) == 3
    everything = (
        await client.get("/api/calls/missed", params={"include_resolved": "true"})
    ).json()["missed"]
    [done] = [m for m in everything if m["number"] == NUMBER]
    assert (done["status"], done["resolved_by"], done["resolution_note"]) == (
        "called_back",
        "佐藤 健",
        "見積送付",
    )
    assert done["resolved_at"].endswith("+09:00")

    for bad in (
        {"call_ids": [], "status": "called_back"},
        {"call_ids": ["x"], "status": "done"},
        {"call_ids": ["x" * 33], "status": "no_action"},
        {"call_ids": ["x"] * 501, "status": "no_action"},
    ):
        assert (await client.post("/api/calls/missed/resolve", json=bad)).status_code == 422
