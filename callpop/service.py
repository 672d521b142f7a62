"""The composition root: builds the parts from the settings and wires them together.

``running(settings)`` opens the database (and runs the migrations), builds the one
numbering plan, the caller lookup, the hub and the call service, starts the SIP
transport and routes its events: call events to the call service, registration
changes and refused datagrams to the log. ``build_app(settings)`` is the web app
over those parts (``popup_ui.create_app`` with this as its lifespan). This module
knows how the parts fit, not how they work.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from callpop.backup import BackupStatus, parse_daily_at, run_daily
from callpop.calllog import CallLog, DatabaseFile, journal_path_for
from callpop.calls import CallService, StaffOnExtension
from callpop.dialogs import DialogRouter, StaffWatch, wanted_extensions
from callpop.http_server import ConnectionGuard
from callpop.logs import Throttle
from callpop.routing import CallRouter, target_uri
from callpop.settings import ConfigError, Settings
from db.calls import (
    close_interrupted_calls,
    record_call_answered,
    record_call_customer,
    record_call_ended,
    record_call_started,
)
from db.engine import make_engine, make_session_factory, migrate, sqlite_file
from db.models import Staff
from db.staff import staff_extensions
from lookup.numbers import Numbering, load_all_metadata
from lookup.openers import OpenerRules
from lookup.service import CallerLookup
from popup_ui.app import VERSION, create_app
from popup_ui.auth import auth_health
from popup_ui.context import StartupError, WebConfig, WebServices
from popup_ui.hub import InProcessHub
from popup_ui.schemas import (
    AuthHealth,
    BackupHealth,
    CallLogHealth,
    CallLogWriterHealth,
    DatabaseHealth,
    Health,
    HttpHealth,
    HubHealth,
    SipHealth,
)
from telephony.endpoint import EndpointConfig
from telephony.events import (
    CallAnswered,
    CallEnded,
    CallRedirected,
    CallRinging,
    DialogNotified,
    Event,
    RegistrationChanged,
    RegistrationState,
    RequestRejected,
    SubscriptionChanged,
    SubscriptionState,
)
from telephony.transport import SipTransport, advertised_host
from telephony.uri import hostport

log = logging.getLogger("callpop")
TOKYO = ZoneInfo("Asia/Tokyo")
sip_log = logging.getLogger("callpop.sip")

# A health check that hangs is worse than one that says "down".
_DB_TIMEOUT = 2.0


def numbering_of(settings: Settings) -> Numbering:
    """The office's numbering plan from ``[numbering]``; ConfigError names a bad key."""
    numbering = settings.numbering
    try:
        return Numbering.from_config(
            region=numbering.region,
            rewrite=[(rule.pattern, rule.replace) for rule in numbering.rewrite],
            extension_max_digits=numbering.extension_max_digits,
            lines=numbering.lines,
        )
    except ValueError as exc:
        raise ConfigError(f"numbering: {exc}") from exc


@dataclass(slots=True)
class SipWatch:
    """Routes the SIP side's events: calls to the call service, the rest to the log.

    Remembers the registration's last state and its reason for /healthz, and says
    each change at WARNING (failed) or INFO. Refused datagrams are what a stranger
    controls, so they are logged once per host and kind per minute, with a count.

    Watched extensions: a subscription's change is said at WARNING (failed) or INFO,
    once per state and detail per minute (a PBX restart changes hundreds at once; the
    rest are counted in the next line, the numbers are in /healthz). A NOTIFY body goes
    to ``on_dialog`` (``callpop.dialogs.DialogRouter``: parsed, tracked per extension,
    matched to calls) and is logged at DEBUG only: it names callers.
    """

    calls: CallService
    registration_detail: str = ""
    on_dialog: Callable[[DialogNotified], None] | None = None
    on_subscription: Callable[[SubscriptionChanged], None] | None = None
    _refused: Throttle = field(default_factory=Throttle)
    _subscriptions: Throttle = field(default_factory=Throttle)

    def handle(self, event: Event) -> None:
        if isinstance(event, CallRinging | CallEnded | CallRedirected):
            self.calls.handle(event)
        elif isinstance(event, RegistrationChanged):
            self.registration_detail = event.detail
            level = logging.WARNING if event.state is RegistrationState.FAILED else logging.INFO
            sip_log.log(level, "registration %s: %s", event.state.value, event.detail or "-")
        elif isinstance(event, RequestRejected):
            host = event.remote[0]
            kind = event.reason.split(":", 1)[0]
            held_back = self._refused.allow(f"{host}|{kind}")
            if held_back is not None:
                more = f" ({held_back} more since the last line)" if held_back else ""
                sip_log.warning("refused a datagram from %s: %s%s", host, event.reason, more)
        elif isinstance(event, CallAnswered):
            sip_log.debug("call %s answered by %s", event.call_id, event.answered_by)
        elif isinstance(event, SubscriptionChanged):
            self._say_subscription(event)
            if self.on_subscription is not None:
                self.on_subscription(event)
        elif isinstance(event, DialogNotified):
            sip_log.debug(
                "dialog NOTIFY for %s: %d bytes of %s",
                event.extension,
                len(event.body),
                event.content_type or "(no Content-Type)",
            )
            if self.on_dialog is not None:
                self.on_dialog(event)

    def _say_subscription(self, event: SubscriptionChanged) -> None:
        held_back = self._subscriptions.allow(f"{event.state.value}|{event.detail}")
        if held_back is None:
            return
        failed = event.state is SubscriptionState.FAILED
        more = f" ({held_back} more extensions since the last line)" if held_back else ""
        sip_log.log(
            logging.WARNING if failed else logging.INFO,
            "watching extension %s: %s%s%s",
            event.extension,
            event.state.value,
            f" ({event.detail})" if event.detail else "",
            more,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Runtime:
    """What ``running`` built; the tests and the benchmark reach the parts here."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    numbering: Numbering
    lookup: CallerLookup
    hub: InProcessHub
    calls: CallService
    sip: SipWatch
    transport: SipTransport | None
    call_log: CallLog
    database_file: DatabaseFile | None = None  # SQLite: the file the engine opened
    http: ConnectionGuard | None = None  # the HTTP server's bounds and counters
    router: CallRouter | None = None  # known-customer routing ([routing])
    # Watched extensions kept in step with the staff table (register mode with SIP).
    staff_watch: StaffWatch | None = None
    # Re-read the staff list now (after a change made in this process), not at the next
    # sip.staff_refresh_seconds.
    refresh_staff: Callable[[], None] = lambda: None
    # The daily backup's outcome ([backup]); disabled when [backup] dir is empty.
    backup: BackupStatus = field(default_factory=BackupStatus)

    async def health(self, *, auth: AuthHealth | None = None) -> Health:
        """/healthz; ``auth`` is the web side's login and session counters."""
        database = await database_state(self.engine)
        # A deleted or replaced SQLite file still answers through the open connections.
        moved = self.database_file.problem() if self.database_file is not None else None
        if moved is not None:
            database = DatabaseHealth(ok=False, detail=f"{moved}; call-log writes are held")
        sip = self._sip_health()
        registered = sip.registration == RegistrationState.REGISTERED.value
        sip_ok = not sip.enabled or sip.mode == "trunk" or registered
        hub = self.hub.stats
        return Health(
            status="ok" if sip_ok and database.ok else "degraded",
            sip=sip,
            database=database,
            hub=HubHealth(
                seq=hub.seq,
                active_calls=hub.active_calls,
                subscribers=hub.subscribers,
                dropped_subscribers=hub.dropped_subscribers,
            ),
            calls=CallLogHealth(
                calls=self.calls.calls,
                record_failures=self.call_log.stats.failed,
                lookup_timeouts=self.lookup.timeouts,
                lookup_failures=self.lookup.failures,
                dialogs_matched=self.calls.dialogs_matched,
                dialogs_unmatched=self.calls.dialogs_unmatched,
                which_asked=self.calls.which_asked,
                which_dropped=self.calls.which_dropped,
            ),
            auth=auth or AuthHealth(),
            call_log=self._call_log_health(),
            http=self._http_health(),
            backup=BackupHealth(
                enabled=self.backup.enabled,
                last_ok_at=self.backup.last_ok_at,
                last_error=self.backup.last_error,
                failures=self.backup.failures,
            ),
        )

    def _http_health(self) -> HttpHealth:
        guard = self.http
        if guard is None:
            return HttpHealth()
        return HttpHealth(
            connections=guard.open_connections,
            peak_connections=guard.peak_connections,
            max_connections=guard.max_connections,
            file_limit=guard.file_limit,
            closed_idle=guard.closed_idle,
            closed_slow=guard.closed_slow,
            refused_over_cap=guard.refused_over_cap,
        )

    def _call_log_health(self) -> CallLogWriterHealth:
        log_ = self.call_log
        return CallLogWriterHealth(
            written=log_.stats.written,
            retried=log_.stats.retried,
            failed=log_.stats.failed,
            spilled=log_.stats.spilled,
            replayed=log_.stats.replayed,
            queue=log_.queue_depth,
            queue_limit=log_.max_queue,
            journal=log_.journal_entries,
            held=log_.held,
        )

    def _sip_health(self) -> SipHealth:
        mode = self.settings.sip.mode
        if self.transport is None:
            return SipHealth(
                mode=mode,
                enabled=False,
                registration="disabled",
                registration_detail="",
                local_address=None,
                stats={},
            )
        return SipHealth(
            mode=mode,
            enabled=True,
            registration=self.transport.registration_state.value,
            registration_detail=self.sip.registration_detail,
            local_address=hostport(*self.transport.local_address[:2]),
            stats={**self.transport.stats, **self._routing_stats()},
        )

    def _routing_stats(self) -> dict[str, int]:
        """Known-customer routing's counters, when a line is routed (docs/telephony.md)."""
        if self.router is None or not self.router.lines:
            return {}
        return {
            **self.router.stats,
            "routing_errors": self.calls.routing_errors,
            "routed_overflow": self.calls.routed_overflow,
        }

    def web(self, *, auth: Callable[[], AuthHealth] = AuthHealth) -> WebServices:
        async def health() -> Health:
            return await self.health(auth=auth())

        return WebServices(
            session_factory=self.session_factory,
            lookup=self.lookup,
            hub=self.hub,
            calls=self.calls,
            health=health,
        )


@asynccontextmanager
async def running(
    settings: Settings, *, sip: bool = True, http: ConnectionGuard | None = None
) -> AsyncIterator[Runtime]:
    """Every part of callpop, started; stopped in reverse order on exit.

    ``http`` is the HTTP server's guard, whose counters /healthz reports.
    """
    # Every region's number metadata now: loaded lazily, a failed read (no file
    # handle left) would leave phonenumbers' lock held and the next call hang.
    load_all_metadata()
    numbering = numbering_of(settings)
    engine = await _open_database(settings.database.url)
    database_path = sqlite_file(settings.database.url)
    database_file = DatabaseFile(database_path) if database_path is not None else None
    call_log: CallLog | None = None
    watcher: asyncio.Task[None] | None = None
    staff_follower: asyncio.Task[None] | None = None
    backups: asyncio.Task[None] | None = None
    backup_status = BackupStatus()
    try:
        session_factory = make_session_factory(engine)
        call_log = open_call_log(settings, session_factory, database_file)
        # Before SIP listens, and first in the writer's queue (after a journal left by
        # the last run): no call of this run can be closed by it.
        call_log.submit(close_calls_left_open, now=datetime.now(TOKYO))
        if database_file is not None:
            watcher = asyncio.get_running_loop().create_task(
                watch_database_file(database_file, engine, call_log)
            )
        lookup = CallerLookup(
            session_factory,
            numbering=numbering,
            timeout=settings.database.lookup_timeout_ms / 1000,
            rules=opener_rules(settings),
        )
        hub = InProcessHub()
        router = router_of(settings, numbering)
        calls = CallService(
            hub=hub,
            lookup=lookup,
            numbering=numbering,
            call_log=call_log,
            router=router,
            ring_timeout=settings.sip.ring_timeout,
        )
        staff = await asyncio.to_thread(_staff_on_extensions, session_factory, settings)
        dialogs = DialogRouter(calls, staff)
        router.presence = dialogs.presence
        dialogs.announce()
        watch = SipWatch(
            calls, on_dialog=dialogs.notified, on_subscription=dialogs.subscription_changed
        )
        transport = None
        staff_watch: StaffWatch | None = None
        staff_wake = asyncio.Event()
        if sip:
            transport = await _start_sip(settings, watch, list(staff), router=router)
            router.redirect = transport.redirect
            if settings.sip.mode == "register":
                staff_watch = StaffWatch(
                    router=dialogs,
                    sip=transport,
                    configured=tuple(settings.sip.watch_extensions),
                    watching=list(transport.endpoint.watched),
                )
                staff_follower = asyncio.get_running_loop().create_task(
                    follow_staff(session_factory, settings, staff_watch, staff_wake)
                )
        if settings.backup.dir:
            backups = asyncio.get_running_loop().create_task(
                run_daily(
                    settings.database.url,
                    Path(settings.backup.dir).expanduser(),
                    daily_at=parse_daily_at(settings.backup.daily_at),
                    keep=settings.backup.keep,
                    status=backup_status,
                    now=lambda: datetime.now(TOKYO),
                )
            )
        try:
            runtime = Runtime(
                settings=settings,
                engine=engine,
                session_factory=session_factory,
                numbering=numbering,
                lookup=lookup,
                hub=hub,
                calls=calls,
                sip=watch,
                transport=transport,
                call_log=call_log,
                database_file=database_file,
                http=http,
                router=router,
                staff_watch=staff_watch,
                refresh_staff=staff_wake.set,
                backup=backup_status,
            )
            _say_started(runtime)
            yield runtime
        finally:
            if staff_follower is not None:
                staff_follower.cancel()
                await asyncio.wait({staff_follower})
            if transport is not None:
                await transport.close()
            dialogs.close()
            await calls.close()
            await hub.close()
    finally:
        if backups is not None:
            backups.cancel()
            await asyncio.wait({backups})
        if watcher is not None:
            watcher.cancel()
            await asyncio.wait({watcher})
        if call_log is not None:
            await call_log.close()
        engine.dispose()


# --- the call log ---------------------------------------------------------------------------

_WATCH_INTERVAL = 2.0  # seconds between looks at the SQLite file's identity


def close_calls_left_open(session: Session, *, now: datetime) -> None:
    """The start-up write: calls a crash left ``ringing`` end as ``interrupted``."""
    closed = close_interrupted_calls(session, now)
    if closed:
        log.warning("%d call(s) left open by an unclean stop closed as interrupted", closed)


CALL_LOG_WRITES = (
    record_call_started,
    record_call_customer,
    record_call_answered,
    record_call_ended,
    close_calls_left_open,
)


def open_call_log(
    settings: Settings,
    session_factory: sessionmaker[Session],
    database_file: DatabaseFile | None,
) -> CallLog:
    """The call log's writer; its journal beside the SQLite file unless configured."""
    database = settings.database
    if database.call_log_journal:
        journal = Path(database.call_log_journal).expanduser()
    elif database_file is not None:
        journal = journal_path_for(database_file.path)
    else:
        journal = Path("callpop.calllog-journal.jsonl").resolve()
    return CallLog(
        session_factory,
        writes=CALL_LOG_WRITES,
        journal=journal,
        max_queue=database.call_log_queue,
        guard=database_file.problem if database_file is not None else None,
    )


async def watch_database_file(
    database_file: DatabaseFile,
    engine: Engine,
    call_log: CallLog,
    *,
    interval: float = _WATCH_INTERVAL,
) -> None:
    """Notice the SQLite file deleted or replaced; re-open it once a file is back.

    While the path is not the file the engine opened, the call log holds its writes
    (its guard is :meth:`DatabaseFile.problem`) and /healthz says so. A file at the path
    again (restored from a backup, or moved into place) is migrated and adopted: the
    engine's connections to the old file are closed, and the held writes follow in order.
    A new empty database is never made here: that would split the log and hide the loss.
    """
    said: str | None = None  # the problem last logged
    reopen_failed: str | None = None
    while True:
        problem = database_file.problem()
        if problem is not None and said is None:
            said = problem
            log.error(
                "%s: call-log writes are held (not lost) until a database file is back at"
                " that path (restore it from a backup); the lookup answers from the old copy",
                problem,
            )
        if said is not None and database_file.current() is not None:
            try:
                await asyncio.to_thread(_reopen, engine, database_file)
            except Exception as exc:
                if reopen_failed != _first_line(exc):
                    reopen_failed = _first_line(exc)
                    log.error("cannot open %s: %s", database_file.path, reopen_failed)
            else:
                log.warning(
                    "the database file %s is back: %d held call-log writes follow",
                    database_file.path,
                    call_log.queue_depth + call_log.journal_entries,
                )
                said = reopen_failed = None
                call_log.wake()
        await asyncio.sleep(interval)


def _reopen(engine: Engine, database_file: DatabaseFile) -> None:
    engine.dispose()  # pooled connections still point at the old file
    migrate(engine)
    database_file.adopt()


def web_config(settings: Settings) -> WebConfig:
    http, ui = settings.http, settings.ui
    return WebConfig(
        session_secret=http.session_secret,
        session_max_age=http.session_max_age,
        cookie_secure=http.cookie_secure,
        allowed_origins=tuple(http.allowed_origins),
        language=ui.language,
        company_name=ui.company_name,
        followups=opener_rules(settings),
    )


def opener_rules(settings: Settings) -> OpenerRules:
    """``[followups]``: the rules of the pop's openers and the dormant-customer list."""
    followups = settings.followups
    return OpenerRules(
        dormant_days_default=followups.dormant_days_default,
        dormant_days=dict(followups.dormant_days),
        transaction_follow_up_days=followups.transaction_follow_up_days,
    )


def build_app(settings: Settings, *, sip: bool = True) -> FastAPI:
    """The web app over ``running(settings)``; ``app.state.runtime`` holds the parts.

    With ``sip=False`` no SIP listener is started (the web alone).
    """

    # The HTTP server's bounds (cli.server_config finds them on app.state).
    guard = ConnectionGuard.from_settings(settings.http)

    @asynccontextmanager
    async def start() -> AsyncIterator[WebServices]:
        try:
            async with running(settings, sip=sip, http=guard) as runtime:
                app.state.runtime = runtime
                yield runtime.web(auth=lambda: _auth_counters(app))
        except ConfigError as exc:
            raise StartupError(f"config: {exc}") from exc

    app = create_app(web_config(settings), start)
    app.state.http_guard = guard
    return app


def _auth_counters(app: FastAPI) -> AuthHealth:
    # popup_ui keeps these counters on its own parts (app.state.web); callpop reads them.
    web = app.state.web
    return auth_health(web.login_limiter, web.password_check, web.sessions)


def _say_started(runtime: Runtime) -> None:
    settings = runtime.settings
    database = make_url(settings.database.url).render_as_string(hide_password=True)
    if runtime.transport is None:
        sip = "SIP off"
    else:
        sip = (
            f"SIP {settings.sip.mode} mode on {hostport(*runtime.transport.local_address[:2])}/udp"
        )
        if settings.sip.mode == "register":
            registrar = hostport(settings.sip.registrar_host, settings.sip.registrar_port)
            sip += f" registering {settings.sip.user} at {registrar}"
    url = f"http://{hostport(settings.http.host, settings.http.port)}/"
    if runtime.http is not None:
        guard = runtime.http
        url += f" (at most {guard.max_connections} connections, open-file limit {guard.file_limit})"
    log.info("callpop %s: %s; database %s; HTTP %s", VERSION, sip, database, url)


# --- start-up steps ----------------------------------------------------------------------


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
    if sqlite_file(url) is not None:
        # The file exists now; from here on a missing file is an error, not a new
        # empty database (db.engine.make_engine, create_file).
        engine.dispose()
        engine = make_engine(url, create_file=False)
    return engine


async def follow_staff(
    session_factory: sessionmaker[Session],
    settings: Settings,
    staff_watch: StaffWatch,
    wake: asyncio.Event,
) -> None:
    """Re-read the staff on extensions every ``sip.staff_refresh_seconds`` (or at once when
    ``wake`` is set) and bring the watched extensions in step (:class:`StaffWatch`).

    Staff are changed by another process (``callpop user add/deactivate``) writing the
    same database, so the table is read again rather than told. A failed read is logged
    (once per kind of failure) and tried again at the next turn.
    """
    problem: str | None = None
    while True:
        try:
            await asyncio.wait_for(wake.wait(), settings.sip.staff_refresh_seconds)
        except TimeoutError:
            pass
        wake.clear()
        try:
            staff = await asyncio.to_thread(_staff_on_extensions, session_factory, settings)
        except Exception as exc:  # any driver error: the database is down or busy
            if problem != _first_line(exc):
                problem = _first_line(exc)
                log.warning("cannot re-read the staff list (tried again later): %s", problem)
            continue
        problem = None
        staff_watch.apply(staff)


def _staff_on_extensions(
    session_factory: sessionmaker[Session], settings: Settings
) -> dict[str, StaffOnExtension]:
    """Who sits at each active staff extension (register mode: the extensions watched
    for dialog events; trunk mode watches none). Read at start-up and by
    :func:`follow_staff`."""
    if settings.sip.mode != "register":
        return {}
    with session_factory() as session:
        extensions = staff_extensions(session)
        rows = session.execute(
            select(Staff.id, Staff.name, Staff.extension)
            .where(Staff.active.is_(True), Staff.extension.in_(extensions))
            .order_by(Staff.id)  # two on one extension: the one added last has it
        ).all()
    return {
        row.extension: StaffOnExtension(id=row.id, name=row.name, extension=row.extension)
        for row in rows
    }


def watched_extensions(settings: Settings, staff: Sequence[str] = ()) -> tuple[str, ...]:
    """``[sip] watch_extensions`` then the staff's extensions: each once, at most
    ``sip.max_watched`` (500).

    The configured ones were checked with the settings; one from the database (typed
    by an admin) that cannot be watched is skipped with a warning, and so is anything
    past the limit.
    """
    wanted, unusable = wanted_extensions(settings.sip.watch_extensions, staff)
    if unusable:
        log.warning(
            "%d staff extension(s) cannot be watched (not 1-32 of 0-9 A-Z a-z * # + . _ -): %s",
            len(unusable),
            ", ".join(repr(e) for e in unusable[:10]),
        )
    limit = settings.sip.max_watched
    if len(wanted) > limit:
        log.warning("%d extensions to watch; only the first %d are watched", len(wanted), limit)
    return wanted[:limit]


def endpoint_config(
    settings: Settings,
    *,
    local_host: str,
    staff_extensions: Sequence[str] = (),
    router: CallRouter | None = None,
) -> EndpointConfig:
    """``[sip]`` as the SIP endpoint takes it (the endpoint applies its own defaults).

    ``staff_extensions`` (from the database) are watched besides ``sip.watch_extensions``.
    """
    sip = settings.sip
    return EndpointConfig(
        mode=sip.mode,
        local_host=local_host,
        local_port=sip.bind_port,
        allowed_hosts=frozenset(sip.allowed_hosts),
        registrar_host=sip.registrar_host,
        registrar_port=sip.registrar_port,
        domain=sip.domain,
        user=sip.user,
        auth_user=sip.auth_user,
        password=sip.password,
        expires=sip.expires,
        ring_timeout=sip.ring_timeout,
        max_ringing=sip.max_ringing,
        user_agent=f"callpop/{VERSION}",
        watch_extensions=watched_extensions(settings, staff_extensions),
        subscription_expires=sip.subscription_expires,
        max_watched=sip.max_watched,
        route_for=router.route_for if router is not None and router.lines else None,
        route_deadline=settings.routing.decision_deadline,
    )


def router_of(settings: Settings, numbering: Numbering) -> CallRouter:
    """``[routing]`` checked: each line a number, each ring group an extension or URI.

    An extension becomes ``sip:EXT@<sip.domain>``, or ``@<registrar_host[:port]>`` (the
    PBX that follows the 302 must take it as one of its own).
    """
    sip = settings.sip
    domain = sip.domain
    if not domain and sip.registrar_host:
        host = sip.registrar_host
        domain = hostport(host, sip.registrar_port) if sip.registrar_port != 5060 else host
        if ":" in host and sip.registrar_port == 5060:
            domain = f"[{host}]"
    if settings.routing.lines and not domain:
        # The 担当者's extension is sent as sip:EXT@<domain>: without one there is no
        # address the PBX would take as its own.
        raise ConfigError("routing.lines: routing needs sip.domain (or sip.registrar_host)")
    lines: dict[str, str] = {}
    for index, routed in enumerate(settings.routing.lines):
        where = f"routing.lines[{index}]"
        e164 = numbering.normalise(routed.line).e164
        if e164 is None:
            raise ConfigError(f"{where}.line: {routed.line!r} is not a phone number")
        if e164 in lines:
            raise ConfigError(f"{where}.line: {routed.line!r} is routed twice")
        try:
            lines[e164] = target_uri(routed.ring_group, domain)
        except ValueError as exc:
            raise ConfigError(f"{where}.ring_group: {exc}") from exc
    lookup = settings.database.lookup_timeout_ms / 1000
    if lines and lookup >= settings.routing.decision_deadline:
        log.warning(
            "routing.decision_deadline (%g s) is not longer than database.lookup_timeout_ms"
            " (%g s): a slow lookup sends routed calls to the ring group by the deadline",
            settings.routing.decision_deadline,
            lookup,
        )
    return CallRouter(lines=lines, numbering=numbering, domain=domain)


async def _start_sip(
    settings: Settings,
    watch: SipWatch,
    staff: Sequence[str] = (),
    *,
    router: CallRouter | None = None,
) -> SipTransport:
    sip = settings.sip
    if sip.mode == "register" and not sip.registrar_host:
        raise StartupError("sip.registrar_host is empty (register mode needs the PBX address)")
    where = f"{hostport(sip.bind_host, sip.bind_port)}/udp"
    local_host = await asyncio.to_thread(
        advertised_host,
        public_host=sip.public_host,
        bind_host=sip.bind_host,
        mode=sip.mode,
        registrar_host=sip.registrar_host,
        registrar_port=sip.registrar_port,
    )
    try:
        return await SipTransport.start(
            endpoint_config(settings, local_host=local_host, staff_extensions=staff, router=router),
            watch.handle,
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


# --- health --------------------------------------------------------------------------------


def _ping(engine: Engine) -> None:
    # A real read of a real table: "SELECT 1" succeeds on SQLite even when the file is
    # damaged or the schema is gone, since it never opens a page.
    with engine.connect() as connection:
        connection.execute(select(Staff.id).limit(1)).all()


async def database_state(engine: Engine) -> DatabaseHealth:
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping, engine), _DB_TIMEOUT)
    except TimeoutError:
        return DatabaseHealth(ok=False, detail=f"no answer within {_DB_TIMEOUT:g} s")
    except Exception as exc:  # any driver error means "down"; the class says which
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return DatabaseHealth(ok=False, detail=f"{type(exc).__name__}: {first_line}"[:200])
    return DatabaseHealth(ok=True, detail=engine.dialect.name)
