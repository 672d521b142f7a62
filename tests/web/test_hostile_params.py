"""Every route in ``/openapi.json`` with hostile parameters: never a 500.

A bad path parameter or query is the client's mistake (404/422), not the server's: an
unhandled overflow or a NUL byte reaching the database must not end in an exception.
Walks every operation the app itself publishes (so a route added later is walked too),
with each hostile value in each path and query parameter and as JSON bodies, logged out
and logged in; then the files the app serves outside the schema.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.web.conftest import Live

pytestmark = pytest.mark.asyncio

# Each value as it goes on the wire (already percent-encoded where it needs to be).
HOSTILE = {
    "huge int": "99999999999999999999999",
    "2**63": str(2**63),
    "2**64": str(2**64),
    "negative": "-1",
    "negative huge": "-99999999999999999999999",
    "zero": "0",
    "float": "1.5e308",
    "nan": "NaN",
    "NUL": "%00",
    "NUL in digits": "1%002",
    "10 KB": "9" * 10_240,
    "10 KB text": "a" * 10_240,
    "non-UTF-8": "%ff%fe%c0%af",
    "lone surrogate escape": "%ed%a0%80",
    "unicode digits": quote("１２３٣"),
    "unicode": quote("山田🙂\u202e"),
    "dot dot": "..%2f..%2fetc%2fpasswd",
    "empty": "",
    "spaces": "%20%20",
    "sql": quote("1' OR '1'='1"),
}

JSON_BODIES: list[Any] = [
    {"login": "\x00", "password": "\x00"},
    {"login": "a" * 10_240, "password": "b" * 10_240},
    {"login": 99999999999999999999999, "password": -1},
    {"login": ["x"], "password": {"y": 1}},
    {
        "login": "山田\u202e🙂",
        "password": "\ud800".encode("utf-8", "surrogatepass").decode("latin-1"),
    },
    [],
    None,
    "x" * 10_240,
]
RAW_BODIES = [b"\xff\xfe\x00", b"{" * 10_000, b'{"login": "a", "password": 1e999}']


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method.upper(), path, operation))
    return found


def _urls(path: str, operation: dict[str, Any]) -> list[tuple[str, str]]:
    """(what, url) pairs: each hostile value in each path and query parameter."""
    params = operation.get("parameters", [])
    in_path = [p["name"] for p in params if p["in"] == "path"]
    in_query = [p["name"] for p in params if p["in"] == "query"]
    plain = path
    for name in in_path:
        plain = plain.replace("{" + name + "}", "1")
    urls = [("as published", plain)]
    for label, value in HOSTILE.items():
        for name in in_path:
            target = path
            for other in in_path:
                target = target.replace("{" + other + "}", value if other == name else "1")
            urls.append((f"path {name}: {label}", target))
        for name in in_query:
            urls.append((f"query {name}: {label}", f"{plain}?{name}={value}"))
        # A parameter the route does not declare, and a repeated one.
        urls.append((f"unknown query: {label}", f"{plain}?x={value}&x={value}"))
    return urls


async def _walk(client: httpx.AsyncClient, schema: dict[str, Any]) -> tuple[list[str], int]:
    """Server errors seen, and how many answers were 401 before the session routes ran."""
    failures = []
    unauthorized = 0
    # The session routes last: a logged-in walk must not log itself out half-way.
    for method, path, operation in sorted(
        _operations(schema), key=lambda op: op[1] == "/api/session"
    ):
        for what, url in _urls(path, operation):
            # httpx would re-encode the raw escapes; send the target as given.
            request = client.build_request(method, url)
            request.url = request.url.copy_with(raw_path=url.encode("ascii"))
            response = await client.send(request)
            if response.status_code >= 500:
                failures.append(f"{method} {url[:120]} ({what}): {response.status_code}")
            if response.status_code == 401 and path != "/api/session":
                unauthorized += 1
        if "requestBody" in operation:
            for body in JSON_BODIES:
                response = await client.request(method, path, json=body)
                if response.status_code >= 500:
                    failures.append(
                        f"{method} {path} json {str(body)[:60]}: {response.status_code}"
                    )
            for raw in RAW_BODIES:
                response = await client.request(
                    method, path, content=raw, headers={"content-type": "application/json"}
                )
                if response.status_code >= 500:
                    failures.append(f"{method} {path} raw {raw[:20]!r}: {response.status_code}")
    return failures, unauthorized


async def test_every_route_answers_hostile_parameters_without_a_server_error(
    live_web: Live,
) -> None:
    anonymous = live_web.client()
    schema = (await anonymous.get("/openapi.json")).json()
    operations = _operations(schema)
    # The walk covers what the app publishes, including the customer route of the report.
    assert ("GET", "/api/customers/{customer_id}") in {(m, p) for m, p, _ in operations}
    assert len(operations) >= 7

    failures, unauthorized = await _walk(anonymous, schema)
    assert unauthorized > 0  # the staff routes did refuse the stranger
    logged_in = await live_web.login()
    more, unauthorized = await _walk(logged_in, schema)
    # Logged in, the hostile values reached the routes themselves, not the login check.
    assert unauthorized == 0
    assert not failures + more, "\n".join(failures + more)


@pytest.mark.parametrize(
    ("customer_id", "expected"),
    [
        ("99999999999999999999999", 422),
        (str(2**63), 422),
        (str(2**31), 422),  # beyond PostgreSQL's INTEGER
        (str(2**31 - 1), 404),
        ("-1", 422),
        ("0", 422),
        ("%00", 422),
        ("1", 200),
    ],
)
async def test_customer_ids_out_of_range_are_the_clients_mistake(
    live_web: Live, customer_id: str, expected: int
) -> None:
    client = await live_web.login()
    request = client.build_request("GET", "/api/customers/x")
    request.url = request.url.copy_with(raw_path=f"/api/customers/{customer_id}".encode())
    response = await client.send(request)
    assert response.status_code == expected, response.text


async def test_served_files_answer_hostile_paths_without_a_server_error(live_web: Live) -> None:
    client = live_web.client()
    failures = []
    for prefix in ("/static/", "/docs/assets/", "/"):
        for label, value in HOSTILE.items():
            url = prefix + value
            request = client.build_request("GET", "/")
            request.url = request.url.copy_with(raw_path=url.encode("ascii"))
            response = await client.send(request)
            if response.status_code >= 500:
                failures.append(f"GET {url[:120]} ({label}): {response.status_code}")
    assert not failures, "\n".join(failures)


async def test_a_validation_error_says_where_and_why_without_echoing_the_value(
    live_web: Live,
) -> None:
    client = live_web.client()
    secret = "my-secret-password-" + "x" * 1000
    response = await client.post("/api/session", json={"login": "x", "password": [secret]})
    assert response.status_code == 422
    assert "my-secret-password" not in response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "password"]
    assert error["msg"] and error["type"]
    # JSON's 1e999 is a float infinity to Python: still a 422, not a 500.
    infinite = await client.post(
        "/api/session",
        content=b'{"login": "a", "password": 1e999}',
        headers={"content-type": "application/json"},
    )
    assert infinite.status_code == 422
