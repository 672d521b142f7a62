"""The app factory: callpop's composition root.

``create_app(settings)`` builds a FastAPI app whose lifespan creates the database
engine (and runs the migrations), the caller lookup, the hub, the call service and
the SIP transport, and wires telephony events through the call service to the hub.
Everything lives on ``app.state.services``; there are no module globals and nothing
happens at import time. This module knows how the parts fit, not how they work.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import HTTPConnection, Request
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from db.engine import make_engine, make_session_factory, migrate
from lookup.numbers import compile_rules
from lookup.service import CallerLookup
from popup_ui import api, auth, health, ws
from popup_ui.auth import LoginLimiter, SessionCodec
from popup_ui.calls import CallService, Numbering
from popup_ui.hub import Hub, InProcessHub
from popup_ui.settings import Settings, SipSettings
from telephony.endpoint import EndpointConfig
from telephony.transport import SipTransport

log = logging.getLogger("callpop")

STATIC_DIR = Path(__file__).resolve().parent / "static"

try:
    VERSION = version("callpop")
except PackageNotFoundError:  # running from a checkout that was never installed
    VERSION = "0.0.0"


class StartupError(Exception):
    """The service cannot start; the message is one line a person can act on."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """What the lifespan built; routes reach it through ``app.state.services``."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    lookup: CallerLookup
    hub: Hub
    calls: CallService
    transport: SipTransport | None
    sessions: SessionCodec
    login_limiter: LoginLimiter


def create_app(settings: Settings, *, sip: bool = True) -> FastAPI:
    """The callpop web app. With ``sip=False`` no SIP listener is started (web only)."""
    # One secret per app: with none configured, sessions end when the process does.
    sessions = SessionCodec(settings.http.session_secret, max_age=settings.http.session_max_age)
    limiter = LoginLimiter()
    startup_failure: list[str] = []  # read by OneLineStartupError

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            async with _running(settings, sip=sip, sessions=sessions, limiter=limiter) as services:
                app.state.services = services
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
    app.state.settings = settings
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

    app.add_middleware(SameOriginWrites, allowed_origins=settings.http.allowed_origins)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(OneLineStartupError, failure=startup_failure)
    return app


@asynccontextmanager
async def _running(
    settings: Settings, *, sip: bool, sessions: SessionCodec, limiter: LoginLimiter
) -> AsyncIterator[Services]:
    engine = await _open_database(settings.database.url)
    try:
        session_factory = make_session_factory(engine)
        rules = compile_rules([(r.pattern, r.replace) for r in settings.numbering.rewrite])
        lookup = CallerLookup(
            session_factory,
            region=settings.numbering.region,
            rules=rules,
            extension_max_digits=settings.numbering.extension_max_digits,
            timeout=settings.database.lookup_timeout_ms / 1000,
        )
        hub = InProcessHub()
        calls = CallService(
            hub=hub,
            lookup=lookup,
            session_factory=session_factory,
            numbering=Numbering(
                region=settings.numbering.region,
                rules=rules,
                extension_max_digits=settings.numbering.extension_max_digits,
            ),
        )
        transport = await _start_sip(settings, calls) if sip else None
        try:
            yield Services(
                settings=settings,
                engine=engine,
                session_factory=session_factory,
                lookup=lookup,
                hub=hub,
                calls=calls,
                transport=transport,
                sessions=sessions,
                login_limiter=limiter,
            )
        finally:
            if transport is not None:
                await transport.close()
            await calls.close()
            await hub.close()
    finally:
        engine.dispose()


async def _open_database(url: str) -> Engine:
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except Exception as exc:
        raise StartupError(f"database.url is not a database URL: {exc}") from exc
    try:
        engine = make_engine(url)
    except Exception as exc:
        raise StartupError(f"database {shown}: {_first_line(exc)}") from exc
    try:
        # Alembic is blocking; run it off the event loop (the loop is idle at start-up,
        # but a slow PostgreSQL must not stall signal handling).
        await asyncio.to_thread(migrate, engine)
    except Exception as exc:
        engine.dispose()
        raise StartupError(f"database {shown}: {_first_line(exc)}") from exc
    return engine


_ANY_ADDRESS = ("", "0.0.0.0", "::")


def advertised_host(sip: SipSettings) -> str:
    """The address put in Via/Contact: ``public_host``, else ``bind_host`` unless it is
    a wildcard, else the local address the OS routes to the registrar from (blocking:
    it may resolve the registrar's name)."""
    if sip.public_host:
        return sip.public_host
    if sip.bind_host not in _ANY_ADDRESS or not (sip.mode == "register" and sip.registrar_host):
        return sip.bind_host
    family = socket.AF_INET6 if ":" in sip.bind_host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            # A UDP connect sends nothing; it only makes the kernel pick the route
            # and with it the source address the PBX will see.
            probe.connect((sip.registrar_host, sip.registrar_port))
            host: str = probe.getsockname()[0]
            return host
    except OSError:
        return sip.bind_host


def endpoint_config(settings: Settings, *, local_host: str | None = None) -> EndpointConfig:
    """The SIP endpoint's config from ``settings.sip`` (register or trunk mode)."""
    sip = settings.sip
    allowed = set(sip.allowed_hosts)
    if sip.mode == "register" and sip.registrar_host:
        allowed.add(sip.registrar_host)  # the registrar's INVITEs are always wanted
    return EndpointConfig(
        mode=sip.mode,
        local_host=local_host or sip.public_host or sip.bind_host,
        local_port=sip.bind_port,
        allowed_hosts=frozenset(allowed),
        registrar_host=sip.registrar_host,
        registrar_port=sip.registrar_port,
        domain=sip.domain or sip.registrar_host,
        user=sip.user,
        auth_user=sip.auth_user,
        password=sip.password,
        expires=sip.expires,
        ring_timeout=sip.ring_timeout,
        user_agent=f"callpop/{VERSION}",
    )


async def _start_sip(settings: Settings, calls: CallService) -> SipTransport:
    sip = settings.sip
    if sip.mode == "register" and not sip.registrar_host:
        raise StartupError("sip.registrar_host is empty (register mode needs the PBX address)")
    where = f"{sip.bind_host}:{sip.bind_port}/udp"
    local_host = await asyncio.to_thread(advertised_host, sip)
    try:
        return await SipTransport.start(
            endpoint_config(settings, local_host=local_host),
            calls.handle,
            bind_host=sip.bind_host,
            bind_port=sip.bind_port,
        )
    except socket.gaierror as exc:
        raise StartupError(
            f"SIP registrar {sip.registrar_host!r} cannot be resolved: {exc.strerror or exc}"
        ) from exc
    except OSError as exc:
        raise StartupError(f"SIP cannot listen on {where}: {_bind_problem(exc)}") from exc


def _bind_problem(exc: OSError) -> str:
    # asyncio raises the bind's own OSError; uvloop wraps it (errno on the cause).
    if exc.errno is None and isinstance(exc.__cause__, OSError):
        exc = exc.__cause__
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (another callpop, or a softphone/PBX on this port?)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address (check sip.bind_host)"
    return os.strerror(exc.errno) if exc.errno else str(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


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

    def __init__(self, app: ASGIApp, *, allowed_origins: list[str]) -> None:
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
