"""The app factory: the FastAPI app, its routes, middleware and static files.

``create_app(config, start)`` builds the web app; ``start`` is the composition's
async context manager that builds the running parts (database, lookup, hub, SIP)
and yields :class:`~popup_ui.context.WebServices`. The app enters it in its lifespan
and keeps the parts on ``app.state.web``; there are no module globals and nothing
happens at import time. This module knows HTTP and browsers, not how the parts work.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection, Request
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from popup_ui import api, auth, health, ws
from popup_ui.auth import LoginLimiter, SessionCodec
from popup_ui.context import StartupError, WebConfig, WebServices, WebState

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

try:
    VERSION = version("callpop")
except PackageNotFoundError:  # running from a checkout that was never installed
    VERSION = "0.0.0"


def create_app(
    config: WebConfig, start: Callable[[], AbstractAsyncContextManager[WebServices]]
) -> FastAPI:
    """The callpop web app over the parts ``start`` builds for the app's lifetime."""
    # One secret per app: with none configured, sessions end when the process does.
    sessions = SessionCodec(config.session_secret, max_age=config.session_max_age)
    limiter = LoginLimiter()
    startup_failure: list[str] = []  # read by OneLineStartupError

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with start() as services:
                app.state.web = WebState(
                    config=config, services=services, sessions=sessions, login_limiter=limiter
                )
                yield
        except StartupError as exc:
            startup_failure.append(str(exc))
            raise

    app = FastAPI(
        title="callpop",
        version=VERSION,
        description="Caller-ID screen pop: staff sessions, active calls, caller cards.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.include_router(auth.router)
    app.include_router(api.router)
    app.include_router(ws.router)
    app.include_router(health.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return PlainTextResponse("callpop: the browser UI is not installed", status_code=503)
        return FileResponse(page, media_type="text/html; charset=utf-8")

    @app.exception_handler(SQLAlchemyError)
    async def database_unavailable(request: Request, exc: SQLAlchemyError) -> Response:
        # A database outage is a state of the service, not a bug: say so, briefly.
        log.warning("%s %s: database error: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "データベースに接続できません"}, status_code=503)

    app.add_middleware(SameOriginWrites, allowed_origins=config.allowed_origins)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(OneLineStartupError, failure=startup_failure)
    return app


class OneLineStartupError:
    """Turn a start-up failure into one log line instead of a traceback.

    Starlette reports a failed lifespan with the formatted traceback; for a
    :class:`StartupError` (port in use, database unreachable) the person running
    callpop needs the one line that says what to fix. The lifespan notes the error in
    ``failure`` before Starlette reports it, and this rewrites the report.
    """

    def __init__(self, app: ASGIApp, *, failure: list[str]) -> None:
        self.app = app
        self.failure = failure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_reworded(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and self.failure:
                message = {**message, "message": f"callpop could not start: {self.failure[-1]}"}
            await send(message)

        await self.app(scope, receive, send_reworded)


class SameOriginWrites:
    """Refuse cross-site writes to ``/api/`` (login CSRF and friends) by their Origin.

    SameSite=Lax already keeps the cookie off cross-site POSTs; this also stops a
    foreign page from logging a browser in. Requests without Origin (scripts, curl)
    pass: they cannot carry a victim's cookie.
    """

    def __init__(self, app: ASGIApp, *, allowed_origins: tuple[str, ...]) -> None:
        self.app = app
        self.allowed_origins = allowed_origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in ("GET", "HEAD", "OPTIONS")
            and scope["path"].startswith("/api/")
        ):
            conn = HTTPConnection(scope)
            if "origin" in conn.headers and not ws.origin_allowed(conn, self.allowed_origins):
                response = JSONResponse({"detail": "cross-origin request refused"}, 403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class SecurityHeaders:
    """Headers every response gets, and a strict CSP on HTML pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"] in ("/docs", "/docs/oauth2-redirect")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                extra = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                ]
                content_type = dict(headers).get(b"content-type", b"")
                if content_type.startswith(b"text/html"):
                    extra.append((b"content-security-policy", _csp(docs=docs)))
                    extra.append((b"cache-control", b"no-cache"))
                headers += [(n, v) for n, v in extra if n not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _csp(*, docs: bool) -> bytes:
    if docs:
        # FastAPI's Swagger UI page loads its script and style from jsDelivr and starts
        # with an inline script; only that page gets these allowances.
        cdn = "https://cdn.jsdelivr.net"
        return (
            f"default-src 'self'; script-src 'self' 'unsafe-inline' {cdn}; "
            f"style-src 'self' {cdn}; img-src 'self' data: https://fastapi.tiangolo.com; "
            "frame-ancestors 'none'"
        ).encode()
    # connect-src 'self' covers same-origin ws:/wss: in CSP Level 3 browsers.
    return (
        b"default-src 'self'; connect-src 'self'; img-src 'self' data:; "
        b"object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    )
