"""``/healthz``: SIP registration, database and hub state for monitors.

No login and no customer data: only the service's own state. ``status`` is
``degraded`` (HTTP 503) when the database does not answer or, in register mode,
the PBX registration is not up. Knows nothing of calls or browsers beyond counts.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.engine import Engine

from db.models import Staff
from popup_ui.auth import get_services

# A health check that hangs is worse than one that says "down".
_DB_TIMEOUT = 2.0

router = APIRouter(tags=["health"])


def _ping(engine: Engine) -> None:
    # A real read of a real table: "SELECT 1" succeeds on SQLite even when the file is
    # damaged or the schema is gone, since it never opens a page.
    with engine.connect() as connection:
        connection.execute(select(Staff.id).limit(1)).all()


async def database_state(engine: Engine) -> dict[str, Any]:
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping, engine), _DB_TIMEOUT)
    except TimeoutError:
        return {"ok": False, "detail": f"no answer within {_DB_TIMEOUT:g} s"}
    except Exception as exc:  # any driver error means "down"; the class says which
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return {"ok": False, "detail": f"{type(exc).__name__}: {first_line}"[:200]}
    return {"ok": True, "detail": engine.dialect.name}


@router.get("/healthz")
async def healthz(request: Request) -> JSONResponse:
    services = get_services(request)
    sip_settings = services.settings.sip
    transport = services.transport
    if transport is None:
        sip: dict[str, Any] = {
            "mode": sip_settings.mode,
            "enabled": False,
            "registration": "disabled",
            "local_address": None,
            "stats": {},
        }
        sip_ok = True
    else:
        host, port = transport.local_address[:2]
        registration = transport.registration_state.value
        sip = {
            "mode": sip_settings.mode,
            "enabled": True,
            "registration": registration,
            "local_address": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "stats": dict(transport.stats),
        }
        sip_ok = sip_settings.mode == "trunk" or registration == "registered"
    database = await database_state(services.engine)
    hub = {"subscribers": services.hub.subscriber_count}
    ok = sip_ok and database["ok"]
    body = {"status": "ok" if ok else "degraded", "sip": sip, "database": database, "hub": hub}
    return JSONResponse(body, status_code=200 if ok else 503)
