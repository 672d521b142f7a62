"""The app factory: the FastAPI app, its routes, middleware and static files.

``create_app(config, start)`` builds the web app; ``start`` is the composition's
async context manager that builds the running parts (database, lookup, hub, SIP)
and yields :class:`~popup_ui.context.WebServices`. The app enters it in its lifespan
and keeps the parts on ``app.state.web``; there are no module globals and nothing
happens at import time. This module knows HTTP and browsers, not how the parts work.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import HTTPConnection, Request
from starlette.routing import Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from popup_ui import admin, api, auth, customers, followups, health, records, trash, ws
from popup_ui import search as customer_search
from popup_ui.auth import declare_access
from popup_ui.context import StartupError, WebConfig, WebServices, WebState
from popup_ui.login_guard import LoginLimiter, PasswordCheck
from popup_ui.sessions import SessionStore

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
DOCS_ASSETS = "/docs/assets"


def swagger_ui_dir() -> Path | None:
    """Swagger UI's dist files as the ``swagger-ui-py`` package ships them, or None.

    Found without importing the package (its ``__init__`` pulls in its own web glue);
    only the static files are used. Swagger UI 5 is the first that reads OpenAPI 3.1,
    which FastAPI writes.
    """
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    return static if (static / "swagger-ui-bundle.js").is_file() else None


try:
    VERSION = version("callpop")
except PackageNotFoundError:  # running from a checkout that was never installed
    VERSION = "0.0.0"


def create_app(
    config: WebConfig, start: Callable[[], AbstractAsyncContextManager[WebServices]]
) -> FastAPI:
    """The callpop web app over the parts ``start`` builds for the app's lifetime."""
    # Sessions live in the database; this keeps the web side's view of them.
    sessions = SessionStore(max_age=config.session_max_age)
    limiter = LoginLimiter()
    password_check = PasswordCheck()
    startup_failure: list[str] = []  # read by OneLineStartupError

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with start() as services:
                app.state.web = WebState(
                    config=config,
                    services=services,
                    sessions=sessions,
                    login_limiter=limiter,
                    password_check=password_check,
                )
                try:
                    yield
                finally:
                    sessions.close()
                    password_check.close()
        except StartupError as exc:
            startup_failure.append(str(exc))
            raise

    app = FastAPI(
        title="callpop",
        version=VERSION,
        description="Caller-ID screen pop: staff sessions, active calls, caller cards.",
        lifespan=lifespan,
        docs_url=None,  # served below, from this package's own files
        redoc_url=None,
    )
    # Every route declares who may use it (popup_ui.auth.access_of; test_roles walks them).
    app.include_router(auth.router)
    app.include_router(api.router)
    app.include_router(records.router)
    app.include_router(customers.router)
    app.include_router(trash.router)
    app.include_router(followups.router)
    app.include_router(customer_search.router)
    app.include_router(admin.router)
    app.include_router(admin.me_router)
    app.include_router(ws.router)
    # /healthz is for monitors, without a login: counters and states, no customer data.
    declare_access("public")(health.healthz)
    app.include_router(health.router)
    _declare_openapi_public(app)
    app.mount(
        "/static",
        declare_access("public")(StaticFiles(directory=STATIC_DIR, check_dir=False)),
        name="static",
    )
    docs_page, docs_csp = _docs_page(app.openapi_url or "/openapi.json", app.title)
    swagger_dir = swagger_ui_dir()
    if swagger_dir is not None:
        # Same origin, from the installed package: no CDN can run script as the
        # logged-in user, and /docs works in an office without internet.
        app.mount(
            DOCS_ASSETS,
            declare_access("public")(StaticFiles(directory=swagger_dir)),
            name="docs-assets",
        )

    @app.get("/docs", include_in_schema=False)
    @declare_access("public")
    async def docs() -> Response:
        if swagger_dir is None:
            return PlainTextResponse("callpop: swagger-ui-py is not installed", status_code=503)
        return HTMLResponse(docs_page)

    @app.get("/", include_in_schema=False)
    @declare_access("public")  # the page itself: it logs in, then asks /api/ for data
    async def index() -> Response:
        page = STATIC_DIR / "index.html"
        if not page.is_file():
            return PlainTextResponse("callpop: the browser UI is not installed", status_code=503)
        return FileResponse(page, media_type="text/html; charset=utf-8")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own handler echoes each bad value back ("input"), which fails to
        # render for some (a JSON 1e999 is a float infinity: a 500) and would repeat a
        # 10 KB string or a password to the sender. Where and why is enough.
        errors = [
            {
                "type": str(e.get("type", "")),
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": str(e.get("msg", "")),
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(SQLAlchemyError)
    async def database_unavailable(request: Request, exc: SQLAlchemyError) -> Response:
        # A database outage is a state of the service, not a bug: say so, briefly.
        log.warning("%s %s: database error: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "データベースに接続できません"}, status_code=503)

    app.add_middleware(SameOriginWrites, allowed_origins=config.allowed_origins)
    app.add_middleware(SecurityHeaders, docs_csp=docs_csp)
    app.add_middleware(OneLineStartupError, failure=startup_failure)
    return app


def _declare_openapi_public(app: FastAPI) -> None:
    """The OpenAPI document FastAPI serves describes the API, holds no data: public."""
    for route in app.routes:
        if isinstance(route, Route) and route.path == app.openapi_url:
            declare_access("public")(route.endpoint)


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

    def __init__(self, app: ASGIApp, *, docs_csp: bytes) -> None:
        self.app = app
        self.docs_csp = docs_csp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = self.docs_csp if scope["path"] == "/docs" else PAGE_CSP

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
                    extra.append((b"content-security-policy", csp))
                    extra.append((b"cache-control", b"no-cache"))
                headers += [(n, v) for n, v in extra if n not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# connect-src 'self' covers same-origin ws:/wss: in CSP Level 3 browsers.
PAGE_CSP = (
    b"default-src 'self'; connect-src 'self'; img-src 'self' data:; "
    b"object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _docs_page(openapi_url: str, title: str) -> tuple[str, bytes]:
    """FastAPI's Swagger UI page over our own copy of the assets, and its CSP.

    The page starts Swagger UI with an inline script; rather than allow every inline
    script ('unsafe-inline'), the policy names that one by its SHA-256 (CSP Level 2
    hash source), so an injected script still does not run.
    """
    body = get_swagger_ui_html(
        openapi_url=openapi_url,
        title=f"{title} API",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        oauth2_redirect_url=None,
    ).body
    page = bytes(body).decode()
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(page)
    )
    csp = (
        f"default-src 'self'; script-src 'self' {hashes}; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
        "form-action 'self'; frame-ancestors 'none'"
    )
    return page, csp.encode()
