"""The ``callpop`` command line: serve, demo, call, explain-invite, explain-notify, lookup,
import, export, backup, restore, user.

This module only parses arguments, builds settings and calls into the parts; it
holds no protocol or database logic of its own. Exit codes: 0 success, 1 runtime
failure (message on stderr), 2 bad input or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from callpop.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DEMO_HTTP_PORT = 8080
DEFAULT_DEMO_SIP_PORT = 5062
# The demo office's own numbers, named as [numbering.lines] names them.
DEMO_MAIN_LINE = "03-3555-0100"
DEMO_LINES = {DEMO_MAIN_LINE: "代表", "03-3555-0101": "FAX", "03-3555-0199": "採用窓口"}
LOG_LEVELS = ["debug", "info", "warning", "error"]
TOKYO = ZoneInfo("Asia/Tokyo")


class CliError(Exception):
    """A failure to report on stderr as one line, with an exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except CliError as exc:
        print(f"callpop: {exc}", file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        print(f"callpop: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="callpop", description="Caller-ID screen pop for small businesses."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the service with a config file")
    serve.add_argument("--config", type=Path, help="TOML config file (see config.example.toml)")
    _log_level_option(serve)
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser(
        "demo", help="run on a throw-away SQLite database with sample data, trunk mode on loopback"
    )
    demo.add_argument("--host", default="127.0.0.1", help="HTTP and SIP bind address")
    demo.add_argument("--http-port", type=int, default=DEFAULT_DEMO_HTTP_PORT)
    demo.add_argument("--sip-port", type=int, default=DEFAULT_DEMO_SIP_PORT)
    demo.add_argument(
        "--data-dir", type=Path, help="keep the demo database here (default: a temporary directory)"
    )
    demo.add_argument("--language", choices=["ja", "en"], default="ja", help="default UI language")
    _log_level_option(demo)
    demo.set_defaults(func=cmd_demo)

    call = sub.add_parser("call", help="place a real SIP test call: INVITE, ring, then CANCEL")
    call.add_argument("number", help="caller number to present, e.g. 03-1234-5678")
    call.add_argument(
        "--to",
        default=f"127.0.0.1:{DEFAULT_DEMO_SIP_PORT}",
        help="HOST:PORT of the callpop SIP listener (default: the demo's)",
    )
    call.add_argument("--name", help="display name to present")
    call.add_argument(
        "--line",
        default=DEMO_MAIN_LINE,
        help=f"the office number being called (default: the demo's 代表, {DEMO_MAIN_LINE})",
    )
    call.add_argument("--ring-seconds", type=float, default=3.0, help="ring this long, then cancel")
    call.add_argument(
        "--answered-elsewhere",
        action="store_true",
        help='CANCEL with "Reason: SIP;cause=200" (someone picked up) instead of a missed call',
    )
    call.add_argument(
        "--withheld",
        choices=["anonymous", "payphone", "unavailable"],
        help="present a withheld caller instead of the number",
    )
    call.add_argument("--from-host", default="127.0.0.1", help="local address to send from")
    call.set_defaults(func=cmd_call)

    explain = sub.add_parser(
        "explain-invite", help="print the caller ID callpop reads from one raw SIP message"
    )
    explain.add_argument(
        "file", nargs="?", default="-", help="file with the message, or - for stdin"
    )
    explain.add_argument(
        "--config", type=Path, help="TOML config file: its [numbering] rules apply"
    )
    explain.set_defaults(func=cmd_explain_invite)

    notify = sub.add_parser(
        "explain-notify",
        help="print what callpop reads from one dialog-info NOTIFY (body or whole message)",
    )
    notify.add_argument(
        "file", nargs="?", default="-", help="file with the body or message, or - for stdin"
    )
    notify.set_defaults(func=cmd_explain_notify)

    lookup = sub.add_parser("lookup", help="print the caller card for a number as JSON")
    lookup.add_argument("number")
    lookup.add_argument("--config", type=Path)
    lookup.set_defaults(func=cmd_lookup)

    imp = sub.add_parser("import", help="bring records in from a CSV file saved by Excel")
    imp_sub = imp.add_subparsers(dest="import_what", required=True, metavar="WHAT")
    imp_customers = imp_sub.add_parser(
        "customers", help="create or update customers from a CSV file (all rows or none)"
    )
    imp_customers.add_argument("file", type=Path)
    imp_customers.add_argument(
        "--encoding", choices=["auto", "utf-8", "utf-8-sig", "cp932"], default="auto"
    )
    imp_customers.add_argument(
        "--mapping", type=Path, help='TOML file: [columns] "header" = "field", for other layouts'
    )
    imp_customers.add_argument(
        "--dry-run", action="store_true", help="check every row and report; write nothing"
    )
    imp_customers.add_argument("--json", action="store_true", help="print the report as JSON")
    imp_customers.add_argument("--config", type=Path)
    imp_customers.set_defaults(func=cmd_import_customers)

    exp = sub.add_parser("export", help="write records to a CSV file that Excel opens")
    exp_sub = exp.add_subparsers(dest="export_what", required=True, metavar="WHAT")
    exp_customers = exp_sub.add_parser(
        "customers", help="every customer, in the columns the import reads"
    )
    exp_customers.add_argument("file", type=Path)
    exp_customers.add_argument("--encoding", choices=["utf-8-sig", "cp932"], default="utf-8-sig")
    exp_customers.add_argument("--config", type=Path)
    exp_customers.set_defaults(func=cmd_export_customers)

    backup = sub.add_parser(
        "backup", help="copy the configured database to PATH (online: callpop may be running)"
    )
    backup.add_argument("path", type=Path, help="the backup file to write (replaced atomically)")
    backup.add_argument("--config", type=Path)
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser(
        "restore", help="replace the configured database with a backup (stop callpop first)"
    )
    restore.add_argument("path", type=Path, help="a file written by callpop backup")
    restore.add_argument("--config", type=Path)
    restore.set_defaults(func=cmd_restore)

    user = sub.add_parser("user", help="manage staff accounts")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_sub.add_parser("add", help="add a staff member who can log in")
    add.add_argument("login")
    add.add_argument("--name", required=True, help="display name, e.g. 佐藤 健")
    add.add_argument("--furigana")
    add.add_argument("--extension", help="PBX extension, e.g. 203")
    add.add_argument("--role", choices=["staff", "admin"], default="staff")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (no prompt)"
    )
    add.add_argument("--config", type=Path)
    add.set_defaults(func=cmd_user_add)
    passwd = user_sub.add_parser(
        "passwd", help="set a staff member's password (ends all their sessions)"
    )
    passwd.add_argument("login")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from stdin (no prompt)"
    )
    passwd.add_argument("--config", type=Path)
    passwd.set_defaults(func=cmd_user_passwd)
    deactivate = user_sub.add_parser(
        "deactivate", help="stop a staff member logging in (ends all their sessions)"
    )
    deactivate.add_argument("login")
    deactivate.add_argument("--config", type=Path)
    deactivate.set_defaults(func=cmd_user_deactivate)
    return parser


def _log_level_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, help="overrides [log] level of the config (info)"
    )


# --- serve / demo -------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    _run_server(settings, log_level=args.log_level)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from db.demo import DEMO_ACCOUNTS, seed_demo
    from db.engine import make_engine, make_session_factory, migrate

    data_dir: Path = args.data_dir or Path(tempfile.mkdtemp(prefix="callpop-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    db_path = data_dir / "callpop-demo.db"
    url = f"sqlite:///{db_path}"
    settings = Settings.model_validate(
        {
            "sip": {
                "mode": "trunk",
                "bind_host": args.host,
                "bind_port": args.sip_port,
                "allowed_hosts": ["127.0.0.1", "::1", args.host],
            },
            "numbering": {"lines": DEMO_LINES},
            "database": {"url": url},
            "http": {"host": args.host, "port": args.http_port},
            "ui": {"language": args.language, "company_name": "やまもと工務店"},
        }
    )
    engine = make_engine(url)
    try:
        migrate(engine)
        factory = make_session_factory(engine)
        with factory() as session:
            if _is_seeded(session):
                info = None
            else:
                info = seed_demo(session, today=datetime.now(TOKYO).date())
                session.commit()
    finally:
        engine.dispose()

    host = "[::1]" if args.host == "::1" else args.host
    lines = [
        "",
        "callpop demo",
        f"  URL:       http://{host}:{args.http_port}/",
    ]
    if info is not None:
        lines.append(f"  Login:     {info.login} / {info.password}")
    else:
        kept = DEMO_ACCOUNTS[0]
        lines.append(
            f"  Login:     {kept.login} / {kept.password} (the database of an earlier demo "
            "is kept: unless a password was changed there)"
        )
    admin = next(account for account in DEMO_ACCOUNTS if account.role == "admin")
    lines.append(f"  Admin:     {admin.login} / {admin.password} (manages staff accounts)")
    call = _own_command()
    if args.sip_port != DEFAULT_DEMO_SIP_PORT or args.host != "127.0.0.1":
        call += f" --to {host}:{args.sip_port}"
    lines += [
        f"  Database:  {db_path}",
        f"  SIP:       trunk mode, listening on {host}:{args.sip_port}/udp (loopback callers only)",
        f"  Test call: {call} 03-1234-5678        (山田 太郎 様, 担当 佐藤 健)",
        f"             {call} 090-9999-0000       (an unknown number)",
        f"             {call} x --withheld anonymous  (非通知)",
        "  Stop:      Ctrl+C",
        "",
    ]
    print("\n".join(lines), flush=True)
    _run_server(settings, log_level=args.log_level)
    return 0


def _is_seeded(session: Any) -> bool:
    from sqlalchemy import func, select

    from db.models import Staff

    return bool(session.scalar(select(func.count()).select_from(Staff)))


def _own_command() -> str:
    """How the person who started this process can run ``callpop call`` from the same shell:
    ``callpop`` when that is on PATH, else the script's path (``.venv/bin/callpop``)."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    on_path = shutil.which("callpop")
    if script is None or script.suffix == ".py" or not script.is_file():
        return f"{sys.executable} -m callpop.cli call"
    if on_path and Path(on_path).resolve() == script:
        return "callpop call"
    try:
        shown = str(script.relative_to(Path.cwd()))
    except ValueError:
        shown = str(script)
    return f"{shown} call"


def server_config(app: Any, *, host: str, port: int, trusted_proxies: Sequence[str] = ()) -> Any:
    """The uvicorn config callpop runs under (the tests use the same).

    ``log_config=None``: logging is configured once, by :func:`configure_logging`.
    ``trusted_proxies`` (``http.trusted_proxies``): only connections from these have
    their X-Forwarded-For/-Proto believed. uvicorn's default believes them from
    127.0.0.1, so anything on the same machine could pick the client address the
    login limits count by; here nothing is believed unless configured.

    HTTP is uvicorn's h11 protocol with callpop's bounds (:mod:`callpop.http_server`):
    the app's own guard when ``build_app`` made it (``app.state.http_guard``, which
    /healthz reports), else one with the default ``[http]`` bounds.
    """
    import uvicorn

    from callpop.http_server import ConnectionGuard, protocol_for
    from callpop.settings import HttpSettings

    guard = getattr(getattr(app, "state", None), "http_guard", None)
    if not isinstance(guard, ConnectionGuard):
        guard = ConnectionGuard.from_settings(HttpSettings())
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_for(guard),
        timeout_keep_alive=guard.keep_alive_timeout,
        proxy_headers=bool(trusted_proxies),
        forwarded_allow_ips=list(trusted_proxies),
        log_config=None,
        lifespan="on",
        ws="websockets-sansio",
        # Pops are a few KB on an office LAN: compressing each one again for every
        # browser cost more CPU on the fan-out path than it saved on the wire
        # (bench/README.md).
        ws_per_message_deflate=False,
    )


def _run_server(settings: Settings, *, log_level: str | None = None) -> None:
    import uvicorn

    from callpop.http_server import raise_file_limit
    from callpop.logs import configure_logging
    from callpop.service import build_app, numbering_of

    configure_logging(log_level or settings.log.level, settings.log.format)
    numbering_of(settings)  # a bad [numbering] is a config error before anything starts
    raise_file_limit()  # before build_app: the connection cap is computed from it
    app = build_app(settings)
    server = uvicorn.Server(
        server_config(
            app,
            host=settings.http.host,
            port=settings.http.port,
            trusted_proxies=settings.http.trusted_proxies,
        )
    )
    server.run()
    if not server.started:
        raise CliError(
            f"could not start on http://{settings.http.host}:{settings.http.port}/ "
            "(see the error above)"
        )


# --- call ----------------------------------------------------------------------


def cmd_call(args: argparse.Namespace) -> int:
    from telephony.dialer import DialError
    from telephony.transport import place_call

    to = _parse_host_port(args.to)
    number = "anonymous" if args.withheld else args.number
    try:
        result = asyncio.run(
            place_call(
                number,
                to=to,
                name=args.name,
                line=dialable_line(args.line),
                ring_seconds=args.ring_seconds,
                answered_elsewhere=args.answered_elsewhere,
                withheld=args.withheld,
                local_host=args.from_host,
            )
        )
    except DialError as exc:
        raise CliError(str(exc)) from exc
    codes = " ".join(str(code) for code in result.responses)
    print(f"call {result.call_id} to {args.to}: responses {codes}")
    return 0


def _parse_host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise CliError(f"--to: expected HOST:PORT, got {text!r}", code=2)
    return host.strip("[]") or "127.0.0.1", int(port)


# --- explain-invite / lookup ---------------------------------------------------------


def dialable_line(line: str) -> str:
    """The office number as a SIP user part: digits (and +) only."""
    return "".join(ch for ch in line if ch.isdigit() or ch == "+") or line


def cmd_explain_invite(args: argparse.Namespace) -> int:
    from callpop.explain import ExplainError, explain_invite
    from callpop.service import numbering_of

    numbering = numbering_of(load_settings(args.config))
    if args.file == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(args.file).read_bytes()
        except OSError as exc:
            raise CliError(f"{args.file}: {exc.strerror}", code=2) from exc
    try:
        result = explain_invite(data, numbering=numbering)
    except ExplainError as exc:
        raise CliError(str(exc), code=2) from exc
    print(json.dumps(result, ensure_ascii=False))
    return 0


def cmd_explain_notify(args: argparse.Namespace) -> int:
    from callpop.explain import ExplainError, explain_notify

    data = _read_input(args.file)
    try:
        result = explain_notify(data)
    except ExplainError as exc:
        raise CliError(str(exc), code=2) from exc
    print(json.dumps(result, ensure_ascii=False))
    return 0


def _read_input(file: str) -> bytes:
    if file == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        raise CliError(f"{file}: {exc.strerror}", code=2) from exc


@contextmanager
def _migrated(settings: Settings) -> Iterator[sessionmaker[Session]]:
    """The configured database, brought to the current schema first: every command that
    reads or writes it (lookup, import, export, user) works on what ``serve`` would."""
    from db.engine import make_engine, make_session_factory, migrate

    engine = make_engine(settings.database.url)
    try:
        migrate(engine)
        yield make_session_factory(engine)
    finally:
        engine.dispose()


def cmd_lookup(args: argparse.Namespace) -> int:
    from callpop.service import numbering_of, opener_rules
    from lookup.service import CallerLookup

    settings = load_settings(args.config)
    numbering = numbering_of(settings)
    with _migrated(settings) as sessions:
        lookup = CallerLookup(sessions, numbering=numbering, rules=opener_rules(settings))
        card = lookup.card_for_number(args.number, now=datetime.now(UTC))
    print(card.model_dump_json(indent=2))
    return 0


# --- import / export customers ------------------------------------------------------


def cmd_import_customers(args: argparse.Namespace) -> int:
    """Exit 0: imported (or would be); 1: row errors, nothing written; 2: unreadable file."""
    from callpop.service import numbering_of
    from db.customer_import import (
        ImportFileError,
        decode,
        import_customers,
        load_mapping,
        read_bounded,
    )

    settings = load_settings(args.config)
    numbering = numbering_of(settings)
    try:
        mapping = load_mapping(args.mapping) if args.mapping else None
        text = decode(read_bounded(args.file), args.encoding)
    except OSError as exc:
        raise CliError(f"{args.file}: {exc.strerror or exc}", code=2) from exc
    except ImportFileError as exc:
        raise CliError(f"{args.file}: {exc}", code=2) from exc
    with _migrated(settings) as sessions, sessions() as session:
        try:
            report = import_customers(
                session, text, numbering=numbering, mapping=mapping, write=not args.dry_run
            )
        except ImportFileError as exc:
            raise CliError(f"{args.file}: {exc}", code=2) from exc
        if report.errors or args.dry_run:
            session.rollback()
        else:
            session.commit()
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        _print_import_report(report, dry_run=args.dry_run)
    return 1 if report.errors else 0


def _print_import_report(report: Any, *, dry_run: bool) -> None:
    for error in report.errors:
        where = f"line {error['line']}" + (f", {error['column']}" if error["column"] else "")
        print(f"{where}: {error['message']}")
    shown = 20  # every repair is in --json; a terminal gets the first ones
    for fix in report.repaired[:shown]:
        print(f"line {fix['line']}: {fix['from']} read as {fix['to']} (leading 0 restored)")
    if len(report.repaired) > shown:
        print(f"… {len(report.repaired) - shown} more numbers read with their leading 0")
    counts = (
        f"{report.rows} rows: {report.created} new, {report.updated} updated,"
        f" {report.unchanged} unchanged"
    )
    if report.errors:
        print(f"{len(report.errors)} errors; nothing written ({counts} without them)")
    elif dry_run:
        print(f"dry run, nothing written: {counts}")
    else:
        print(f"imported {counts}")


def cmd_export_customers(args: argparse.Namespace) -> int:
    from callpop.service import numbering_of
    from db.customer_import import export_customers

    settings = load_settings(args.config)
    numbering = numbering_of(settings)
    with _migrated(settings) as sessions, sessions() as session:
        try:
            data = export_customers(session, numbering, args.encoding)
        except ValueError as exc:
            raise CliError(str(exc), code=1) from exc
    partial = args.file.with_name(args.file.name + ".partial")
    try:
        partial.write_bytes(data)
        partial.replace(args.file)  # a reader never sees half a file
    except OSError as exc:
        raise CliError(f"{args.file}: {exc.strerror or exc}", code=2) from exc
    print(f"exported customers to {args.file}")
    return 0


# --- backup / restore --------------------------------------------------------------


def cmd_backup(args: argparse.Namespace) -> int:
    """The database as it is, schema too: an older one stays older (restore migrates)."""
    from callpop.backup import BackupError, backup_database

    settings = load_settings(args.config)
    try:
        result = backup_database(settings.database.url, args.path)
    except BackupError as exc:
        raise CliError(str(exc), code=exc.code) from exc
    except OSError as exc:
        raise CliError(f"{args.path}: {exc.strerror or exc}") from exc
    print(f"backup written: {result.path} ({result.size} bytes)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from callpop.backup import BackupError, restore_database

    settings = load_settings(args.config)
    try:
        restore_database(settings.database.url, args.path)
    except BackupError as exc:
        raise CliError(str(exc), code=exc.code) from exc
    print(f"restored from {args.path}; database migrated to the current schema")
    return 0


# --- user add ----------------------------------------------------------------------


def cmd_user_add(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import IntegrityError

    from db.staff import create_staff

    password = _read_password(args, prompt="Password: ")
    settings = load_settings(args.config)
    with _migrated(settings) as sessions, sessions() as session:
        try:
            staff = create_staff(
                session,
                login=args.login,
                name=args.name,
                password=password,
                extension=args.extension,
                role=args.role,
                furigana=args.furigana,
            )
            session.commit()
        except IntegrityError as exc:
            raise CliError(f"login {args.login!r} already exists", code=2) from exc
        print(f"added {staff.login} ({staff.name}, role {staff.role})")
    return 0


# --- user passwd / deactivate ----------------------------------------------------------------


def _read_password(args: argparse.Namespace, *, prompt: str) -> str:
    """From stdin with ``--password-stdin``, else typed twice; at least 8 characters."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass(prompt)
        if password != getpass.getpass("Again: "):
            raise CliError("passwords do not match", code=2)
    from db.staff import MIN_PASSWORD

    if len(password) < MIN_PASSWORD:
        raise CliError(f"password must be at least {MIN_PASSWORD} characters", code=2)
    return password


def cmd_user_passwd(args: argparse.Namespace) -> int:
    from db.staff import set_password

    password = _read_password(args, prompt="New password: ")
    _change_staff(args, lambda session: set_password(session, args.login, password), "password set")
    return 0


def cmd_user_deactivate(args: argparse.Namespace) -> int:
    from db.staff import deactivate

    _change_staff(args, lambda session: deactivate(session, args.login), "deactivated")
    return 0


def _change_staff(args: argparse.Namespace, change: Any, done: str) -> None:
    """Run ``change(session)`` on the configured database; it ends the person's sessions
    there, and a running callpop closes their open pages within seconds."""
    settings = load_settings(args.config)
    with _migrated(settings) as sessions, sessions() as session:
        staff = change(session)
        if staff is None:
            raise CliError(f"no staff member with login {args.login!r}", code=2)
        session.commit()
        print(f"{staff.login}: {done}; all sessions ended")


if __name__ == "__main__":
    raise SystemExit(main())
