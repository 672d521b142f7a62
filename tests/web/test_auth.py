"""Staff sessions over real HTTP: login, cookie flags, logout, rate limit, 401s."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import update

from db.models import Staff
from tests.web.conftest import Live

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
async def test_repeated_failures_are_rate_limited_per_login_and_address(live_web: Live) -> None:
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
