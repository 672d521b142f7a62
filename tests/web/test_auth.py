"""Staff sessions over real HTTP: login, cookie flags, logout, login limits, 401s.

The limits are counted before the password check (so parallel guesses cannot outrun
them), per address across logins and per login across addresses, by the address
uvicorn resolved (forwarded headers only from ``http.trusted_proxies``); password
checks beyond a small bound are refused at once with 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import uvicorn
from sqlalchemy import update

from callpop.cli import server_config
from callpop.service import build_app
from db.models import Staff
from popup_ui.login_guard import PasswordCheck
from tests.waiting import wait_for
from tests.web.conftest import DemoTemplate, Live, make_settings, stop_live

STAFF_ROUTES = [
    ("GET", "/api/me"),
    ("GET", "/api/ui"),
    ("GET", "/api/calls/active"),
    ("GET", "/api/lookup?number=0312345678"),
    ("GET", "/api/customers/1"),
]


def _set_cookie(response: httpx.Response) -> str:
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    return headers[0]


@pytest.mark.asyncio
async def test_login_sets_an_httponly_samesite_cookie_and_me_answers(live_web: Live) -> None:
    client = live_web.client()
    response = await client.post(
        "/api/session", json={"login": live_web.demo.login, "password": live_web.demo.password}
    )
    assert response.status_code == 200, response.text
    staff = response.json()["staff"]
    assert staff["login"] == live_web.demo.login
    assert set(staff) == {"id", "login", "name", "furigana", "extension", "role"}

    cookie = _set_cookie(response).lower()
    assert cookie.startswith("callpop_session=")
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/" in cookie
    assert f"max-age={live_web.settings.http.session_max_age}" in cookie
    assert "secure" not in [part.strip() for part in cookie.split(";")]  # cookie_secure off

    me = await client.get("/api/me")
    assert me.status_code == 200
    assert me.json() == staff


@pytest.mark.asyncio
async def test_wrong_password_and_unknown_login_get_the_same_401(live_web: Live) -> None:
    client = live_web.client()
    wrong = await client.post(
        "/api/session", json={"login": live_web.demo.login, "password": "not-the-password"}
    )
    unknown = await client.post(
        "/api/session", json={"login": "nobody-here", "password": "not-the-password"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()
    assert "set-cookie" not in wrong.headers
    assert (await client.get("/api/me")).status_code == 401


@pytest.mark.asyncio
async def test_repeated_failures_are_rate_limited_per_login(live_web: Live) -> None:
    client = live_web.client()
    login = live_web.demo.login
    limit = live_web.web.login_limiter.limit
    for _ in range(limit):
        response = await client.post("/api/session", json={"login": login, "password": "x"})
        assert response.status_code == 401
    blocked = await client.post(
        "/api/session", json={"login": login, "password": live_web.demo.password}
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    # Another login from the same address is not locked out by someone else's failures.
    other = await client.post("/api/session", json={"login": "someone-else", "password": "x"})
    assert other.status_code == 401


@pytest.mark.asyncio
async def test_logout_clears_the_cookie(live_web: Live) -> None:
    client = await live_web.login()
    response = await client.delete("/api/session")
    assert response.status_code == 204
    assert "max-age=0" in _set_cookie(response).lower()
    assert (await client.get("/api/me")).status_code == 401


@pytest.mark.asyncio
@pytest.mark.parametrize(("method", "path"), STAFF_ROUTES)
async def test_every_staff_route_answers_401_without_a_session(
    live_web: Live, method: str, path: str
) -> None:
    response = await live_web.client().request(method, path)
    assert response.status_code == 401


@pytest.mark.asyncio
async def test_a_forged_or_foreign_cookie_is_not_a_session(live_web: Live) -> None:
    client = live_web.client()
    client.cookies.set("callpop_session", "eyJzaWQiOjF9.forged.signature")
    assert (await client.get("/api/me")).status_code == 401


@pytest.mark.asyncio
async def test_a_deactivated_account_loses_its_session(live_web: Live) -> None:
    client = await live_web.login()
    assert (await client.get("/api/me")).status_code == 200
    with live_web.services.session_factory() as session:
        session.execute(
            update(Staff).where(Staff.login == live_web.demo.login).values(active=False)
        )
        session.commit()
    assert (await client.get("/api/me")).status_code == 401


@pytest.mark.asyncio
async def test_cross_site_login_is_refused(live_web: Live) -> None:
    response = await live_web.client().post(
        "/api/session",
        json={"login": live_web.demo.login, "password": live_web.demo.password},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403
    assert "set-cookie" not in response.headers


async def _statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


@pytest.mark.asyncio
async def test_parallel_wrong_passwords_get_at_most_limit_401s(live_web: Live) -> None:
    client = live_web.client()
    login = live_web.demo.login
    limit = live_web.web.login_limiter.limit
    responses = await asyncio.gather(
        *(
            client.post("/api/session", json={"login": login, "password": f"guess-{i}"})
            for i in range(200)
        )
    )
    statuses = await _statuses(responses)
    assert set(statuses) <= {401, 429}, statuses
    assert 1 <= statuses[401] <= limit, statuses
    assert statuses[429] == 200 - statuses[401]
    health = (await client.get("/healthz")).json()["auth"]
    assert health["refused_limit"] == statuses[429]
    assert health["login_failures"] == statuses[401]


@pytest.mark.asyncio
async def test_spraying_many_logins_from_one_address_is_limited_per_address(
    live_web: Live,
) -> None:
    client = live_web.client()
    per_address = live_web.web.login_limiter.per_address
    statuses: Counter[int] = Counter()
    for n in range(40):
        responses = await asyncio.gather(
            *(
                client.post("/api/session", json={"login": f"user{n}", "password": f"pw{i}"})
                for i in range(10)
            )
        )
        statuses += await _statuses(responses)
    assert statuses == Counter({401: per_address, 429: 400 - per_address})


@pytest.mark.asyncio
async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(live_web: Live) -> None:
    client = live_web.client()
    per_address = live_web.web.login_limiter.per_address
    statuses: Counter[int] = Counter()
    for n in range(per_address + 5):
        response = await client.post(
            "/api/session",
            json={"login": f"user{n}", "password": "x"},
            headers={"X-Forwarded-For": f"203.0.113.{n}"},
        )
        statuses[response.status_code] += 1
    # Each attempt claimed another address; all of them counted as this peer's.
    assert statuses == Counter({401: per_address, 429: 5})


@pytest_asyncio.fixture
async def behind_proxy(tmp_path: Path, demo_template: DemoTemplate) -> AsyncIterator[Live]:
    """callpop with ``http.trusted_proxies = ["127.0.0.1"]``: a proxy on this machine."""
    db_path = demo_template.copy_to(tmp_path)
    settings = make_settings(db_path, http={"trusted_proxies": ["127.0.0.1"]})
    app = build_app(settings, sip=False)
    server = uvicorn.Server(
        server_config(app, host="127.0.0.1", port=0, trusted_proxies=settings.http.trusted_proxies)
    )
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.ensure_future(server.serve())
    await wait_for(lambda: server.started or task.done(), timeout=15, what="uvicorn start-up")
    assert not task.done(), "uvicorn stopped during start-up"
    port = server.servers[0].sockets[0].getsockname()[1]
    live = Live(app, server, settings, demo_template.info, db_path, port)
    try:
        yield live
    finally:
        await stop_live(live, task)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_x_forwarded_for_from_a_trusted_proxy_is_the_client(behind_proxy: Live) -> None:
    client = behind_proxy.client()
    per_address = behind_proxy.web.login_limiter.per_address
    # Many clients behind the proxy: each is counted on its own address...
    for n in range(per_address + 5):
        response = await client.post(
            "/api/session",
            json={"login": f"user{n}", "password": "x"},
            headers={"X-Forwarded-For": f"203.0.113.{n}"},
        )
        assert response.status_code == 401
    # ...and one of them spraying is limited on its address, not the proxy's.
    statuses: Counter[int] = Counter()
    for n in range(per_address + 5):
        response = await client.post(
            "/api/session",
            json={"login": f"spray{n}", "password": "x"},
            headers={"X-Forwarded-For": "198.51.100.7"},
        )
        statuses[response.status_code] += 1
    assert statuses == Counter({401: per_address, 429: 5})
    other = await client.post(
        "/api/session",
        json={"login": "someone", "password": "x"},
        headers={"X-Forwarded-For": "198.51.100.8"},
    )
    assert other.status_code == 401


def _flood_client(live: Live, n: int) -> httpx.AsyncClient:
    # One loopback source address per client (127.0.0.2, …): a botnet, so no address
    # limit applies and only the bound on password checks stands in the way.
    transport = httpx.AsyncHTTPTransport(local_address=f"127.0.0.{n + 2}")
    return httpx.AsyncClient(
        base_url=live.base_url, transport=transport, trust_env=False, timeout=30
    )


def test_password_checks_run_at_the_lowest_cpu_priority() -> None:
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    check = PasswordCheck()
    try:
        seen = asyncio.run(check.run("127.0.0.1", niceness))
    finally:
        check.close()
    assert seen == 19


@pytest.mark.asyncio
async def test_an_address_that_logged_in_before_gets_past_a_flood(live_web: Live) -> None:
    await live_web.login()  # 127.0.0.1 is an office PC now
    check = live_web.web.password_check
    stop = asyncio.Event()
    flood_statuses: Counter[int] = Counter()

    async def flood(n: int) -> None:
        async with _flood_client(live_web, n) as client:
            while not stop.is_set():
                login = f"random-{secrets.token_hex(4)}"
                response = await client.post("/api/session", json={"login": login, "password": "x"})
                flood_statuses[response.status_code] += 1

    workers = [asyncio.ensure_future(flood(n)) for n in range(3 * (check.workers + check.queue))]
    try:
        await wait_for(lambda: flood_statuses[503] > 0, timeout=30, what="the main lane full")
        response = await live_web.client().post(
            "/api/session", json={"login": live_web.demo.login, "password": live_web.demo.password}
        )
        assert response.status_code == 200
    finally:
        stop.set()
        await asyncio.gather(*workers)


@pytest.mark.asyncio
async def test_logins_beyond_the_hashing_bound_get_a_fast_503(live_web: Live) -> None:
    check = live_web.web.password_check
    bound = check.workers + check.queue
    attempts = 4 * bound

    async def attempt(n: int) -> httpx.Response:
        async with _flood_client(live_web, n) as client:
            login = f"random-{secrets.token_hex(4)}"
            return await client.post("/api/session", json={"login": login, "password": "x"})

    responses = await asyncio.gather(*(attempt(n) for n in range(attempts)))
    statuses = await _statuses(list(responses))
    assert set(statuses) <= {401, 503}, statuses
    assert statuses[401] >= check.workers
    assert statuses[503] >= 1, statuses
    busy = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" for r in busy)
    health = (await live_web.client().get("/healthz")).json()["auth"]
    assert health["refused_load"] == statuses[503]
    # Refused for load is no failure: the real user logs in right after.
    assert (await live_web.login()).cookies.get("callpop_session")
