"""``/healthz``: SIP registration, database, board and call-log state for monitors.

No login and no customer data: only the service's own state, as the composition
reports it (:class:`~popup_ui.schemas.Health`). ``status`` is ``degraded`` (HTTP 503)
when the database does not answer or, in register mode, the PBX registration is not
up. Knows nothing of how those are measured.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from popup_ui.context import get_web
from popup_ui.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(request: Request) -> Response:
    health = await get_web(request).services.health()
    return Response(
        health.model_dump_json(),
        status_code=200 if health.status == "ok" else 503,
        media_type="application/json",
    )
