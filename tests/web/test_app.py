"""The app factory: start-up failures, /healthz, REST routes, headers, static files."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from callpop.service import build_app
from popup_ui.context import StartupError
from tests.processes import free_tcp_port, free_udp_port
from tests.web.conftest import (
    DemoTemplate,
    Live,
    drop_table,
    make_settings,
    start_live,
    stop_live,
)


async def _lifespan_messages(app: Any) -> list[dict[str, Any]]:
    """Drive the ASGI lifespan protocol by hand, as a server does; return what was sent."""
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    try:
        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    except StartupError:
        pass
    return sent


@pytest.mark.asyncio
async def test_sip_port_in_use_is_a_one_line_startup_error(
    tmp_path: Path, demo_template: DemoTemplate
) -> None:
    settings = make_settings(demo_template.copy_to(tmp_path))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", settings.sip.bind_port))
        sent = await _lifespan_messages(build_app(settings))
    assert sent[-1]["type"] == "lifespan.startup.failed"
    message = sent[-1]["message"]
    assert "\n" not in message
    assert message.startswith("callpop could not start: SIP cannot listen on 127.0.0.1:")
    assert "in use" in message


@pytest.mark.asyncio
async def test_unusable_databases_are_one_line_startup_errors(tmp_path: Path) -> None:
    # A SQLite path under a regular file: the directory cannot exist.
    (tmp_path / "a-file").write_text("not a directory")
    settings = make_settings(tmp_path / "a-file" / "callpop.db")
    sent = await _lifespan_messages(build_app(settings, sip=False))
    assert sent[-1]["type"] == "lifespan.startup.failed"
    assert "\n" not in sent[-1]["message"]
    assert sent[-1]["message"].startswith("callpop could not start: database sqlite:///")

    # A PostgreSQL server that is not there (nothing listens on the port); the
    # password must not be echoed.
    url = f"postgresql+psycopg://callpop:s3cret@127.0.0.1:{free_tcp_port()}/callpop"
    settings = make_settings(tmp_path / "x.db", database={"url": url})
    sent = await _lifespan_messages(build_app(settings, sip=False))
    message = sent[-1]["message"]
    assert "\n" not in message
    assert message.startswith("callpop could not start: database postgresql+psycopg://callpop:***@")
    assert "s3cret" not in message

    settings = make_settings(tmp_path / "x.db", database={"url": "not a url"})
    sent = await _lifespan_messages(build_app(settings, sip=False))
    assert sent[-1]["message"] == (
        "callpop could not start: database.url is not a database URL: "
        "Could not parse SQLAlchemy URL from given URL string"
    )


@pytest.mark.asyncio
async def test_healthz_without_sip_and_with_the_database_broken(live_web: Live) -> None:
    client = live_web.client()
    ok = await client.get("/healthz")
    assert ok.status_code == 200
    assert ok.json()["status"] == "ok"
    assert ok.json()["sip"]["enabled"] is False
    assert ok.json()["database"] == {"ok": True, "detail": "sqlite"}

    # The database file replaced by garbage: the check fails and says so.
    live_web.services.engine.dispose()
    live_web.db_path.write_bytes(b"this is not a database" * 100)
    down = await client.get("/healthz")
    assert down.status_code == 503
    assert down.json()["status"] == "degraded"
    assert down.json()["database"]["ok"] is False
    assert "DatabaseError" in down.json()["database"]["detail"]


@pytest.mark.asyncio
async def test_register_mode_not_registered_is_degraded(
    tmp_path: Path, demo_template: DemoTemplate
) -> None:
    # A registrar that never answers: registration cannot be up.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        live, task = await start_live(
            tmp_path,
            demo_template,
            sip={
                "mode": "register",
                "registrar_host": "127.0.0.1",
                "registrar_port": silent.getsockname()[1],
                "bind_port": free_udp_port(),
                "password": "secret",
            },
        )
        try:
            response = await live.client().get("/healthz")
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "degraded"
            assert body["sip"]["mode"] == "register"
            assert body["sip"]["registration"] != "registered"
            assert body["database"]["ok"] is True
        finally:
            await stop_live(live, task)


@pytest.mark.asyncio
async def test_lookup_and_customer_routes_for_staff(live_web: Live) -> None:
    client = await live_web.login()
    card = (await client.get("/api/lookup", params={"number": "03-1234-5678"})).json()
    assert card["status"] == "matched"
    customer = card["customers"][0]
    assert customer["name"] == "山田 太郎"

    detail = await client.get(f"/api/customers/{customer['id']}")
    assert detail.status_code == 200
    body = detail.json()
    assert body["name"] == "山田 太郎"
    assert any(p["number"] == "+81312345678" for p in body["phones"])
    assert body["assigned_staff"]["extension"] == "203"
    assert isinstance(body["transactions"], list) and isinstance(body["notes"], list)

    assert (await client.get("/api/customers/999999")).status_code == 404
    assert (await client.get("/api/ui")).json() == {"company_name": "", "language": "ja"}
    assert (await client.get("/api/lookup")).status_code == 422


@pytest.mark.asyncio
async def test_lookup_route_is_degraded_when_the_database_breaks(live_web: Live) -> None:
    client = await live_web.login()
    drop_table(live_web.db_path, "customer_phones")
    card = (await client.get("/api/lookup", params={"number": "0312345678"})).json()
    assert card["status"] == "degraded"


@pytest.mark.asyncio
async def test_security_headers_and_docs(live_web: Live) -> None:
    client = live_web.client()
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]
    assert docs.headers["x-content-type-options"] == "nosniff"
    openapi = (await client.get("/openapi.json")).json()
    assert {"/api/session", "/api/me", "/api/calls/active", "/api/lookup", "/healthz"} <= set(
        openapi["paths"]
    )
    # Every JSON answer has a real schema in /docs, not an untyped object.
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            ok = operation["responses"].get("200")
            if ok is None or "content" not in ok:
                continue
            schema = ok["content"]["application/json"]["schema"]
            assert "$ref" in schema, f"{method.upper()} {path} answers an untyped {schema}"
    schemas = openapi["components"]["schemas"]
    assert {"CallerCard", "BoardSnapshot", "Health", "CustomerOut", "StaffOut"} <= set(schemas)

    index = await client.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert index.headers["referrer-policy"] == "same-origin"
    csp = index.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp

    style = await client.get("/static/style.css")
    assert style.status_code == 200
    assert style.headers["content-type"].startswith("text/css")
    assert style.headers["x-content-type-options"] == "nosniff"
    assert (await client.get("/static/no-such-file.js")).status_code == 404
