"""Fixtures for the browser tier: the real service, real calls, real Chromium.

``service`` prepares a SQLite database (migrations, the demo data, and extra
customers the tests need), then starts ``callpop demo`` on it as a subprocess on
free loopback ports, the way a person would. ``dial`` places real SIP calls with
``callpop call``. ``browser`` is Debian's Chromium driven by Playwright (never a
downloaded one). On a failed test the page's console is printed and a screenshot
saved under ``test-artifacts/``. Every process started here is ended by its PID.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.processes import (
    callpop_command,
    free_tcp_port,
    free_udp_port,
    stop_process,
    wait_until_serving,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
TOKYO = ZoneInfo("Asia/Tokyo")

# A customer whose name is markup: the page must show it as text.
XSS_NAME = "<img src=x onerror=alert(1)>"
XSS_NUMBER = "06-6000-1234"
XSS_E164 = "+81660001234"

# A customer with nothing but a name and a number: every optional field NULL, no
# transactions, notes or calls. Its card must not say "null" anywhere.
BARE_NAME = "空欄 花子"
BARE_NUMBER = "06-6000-5678"
BARE_E164 = "+81660005678"

START_DEADLINE = 45.0  # seconds for the service to answer /healthz on a busy 2-core box
RING_TIMEOUT_MS = 20_000  # a pop normally takes well under a second; this is a busy-CI bound


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    url: str
    http_port: int
    sip_port: int
    login: str
    password: str
    log_path: Path
    data_dir: Path

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no service log)"
        return "\n".join(text.splitlines()[-lines:])


def _prepare_database(data_dir: Path) -> tuple[str, str]:
    """Migrate, seed the demo data, add the test's own customers; return the login."""
    from db.demo import seed_demo
    from db.engine import make_engine, make_session_factory, migrate
    from db.models import Customer, CustomerPhone

    # The file name `callpop demo --data-dir` uses, so the demo keeps this database.
    url = f"sqlite:///{data_dir / 'callpop-demo.db'}"
    engine = make_engine(url)
    try:
        migrate(engine)
        with make_session_factory(engine)() as session:
            info = seed_demo(session, today=datetime.now(TOKYO).date())
            customer = Customer(name=XSS_NAME, furigana="<b>xss</b>", company="<script>x</script>")
            session.add(customer)
            session.flush()
            session.add(
                CustomerPhone(
                    customer_id=customer.id, e164=XSS_E164, raw=XSS_NUMBER, label="<i>会社</i>"
                )
            )
            bare = Customer(
                name=BARE_NAME,
                furigana=None,
                company=None,
                rank=None,
                tags=None,  # JSON null, as a hand-made import leaves it
                preferences=None,
                memo=None,
                birthday=None,
                assigned_staff_id=None,
            )
            session.add(bare)
            session.flush()
            session.add(CustomerPhone(customer_id=bare.id, e164=BARE_E164, raw=None, label=None))
            session.commit()
            return info.login, info.password
    finally:
        engine.dispose()


@contextlib.contextmanager
def run_service(data_dir: Path, *, ports: tuple[int, int] | None = None) -> Iterator[Service]:
    """``callpop demo`` on a prepared database in ``data_dir``, ended by PID on exit.

    ``ports`` (HTTP, SIP) starts it again where an earlier run listened; the session
    secret is kept per ``data_dir``, so a restart keeps the browsers' sessions.
    """
    secret_file = data_dir / "session-secret"
    if not secret_file.exists():
        login, password = _prepare_database(data_dir)
        secret_file.write_text(secrets.token_urlsafe(32))
        (data_dir / "login").write_text(f"{login}\n{password}\n")
    login, password = (data_dir / "login").read_text().splitlines()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CALLPOP_HTTP__SESSION_SECRET": secret_file.read_text(),
    }
    failure = ""
    for _attempt in range(1 if ports else 3):  # a free port can be taken before we bind it
        http_port, sip_port = ports or (free_tcp_port(), free_udp_port())
        url = f"http://127.0.0.1:{http_port}/"
        log_path = data_dir / f"service-{http_port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    *callpop_command(),
                    "demo",
                    "--host",
                    "127.0.0.1",
                    "--http-port",
                    str(http_port),
                    "--sip-port",
                    str(sip_port),
                    "--data-dir",
                    str(data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
                env=env,
            )
        problem = wait_until_serving(proc, url, START_DEADLINE)
        if problem is None:
            break
        stop_process(proc)
        failure = f"{problem}\n--- service log ---\n{log_path.read_text(errors='replace')}"
    else:
        pytest.fail(f"could not start the service:\n{failure}")
    try:
        yield Service(
            url=url,
            http_port=http_port,
            sip_port=sip_port,
            login=login,
            password=password,
            log_path=log_path,
            data_dir=data_dir,
        )
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for the module's tests (its call log grows as they run)."""
    with run_service(tmp_path_factory.mktemp("callpop-browser")) as svc:
        yield svc


@dataclass(slots=True)
class Dialer:
    """Places real SIP calls at the service with ``callpop call`` subprocesses."""

    service: Service
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def call(
        self,
        number: str,
        *,
        ring_seconds: float,
        answered_elsewhere: bool = False,
        withheld: str | None = None,
        name: str | None = None,
        line: str | None = None,
    ) -> subprocess.Popen[str]:
        """Ring ``number``; ``line`` is the office number dialled (the demo names
        03-3555-0100 「代表」)."""
        args = [
            *callpop_command(),
            "call",
            number,
            "--to",
            f"127.0.0.1:{self.service.sip_port}",
            "--ring-seconds",
            str(ring_seconds),
        ]
        if answered_elsewhere:
            args.append("--answered-elsewhere")
        if withheld:
            args += ["--withheld", withheld]
        if name:
            args += ["--name", name]
        if line:
            args += ["--line", line]
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
        )
        self.procs.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[str], timeout: float = 60.0) -> str:
        """Wait for a call to end by itself; its output. Fails on a non-zero exit."""
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            pytest.fail(f"callpop call did not finish within {timeout} s")
        assert proc.returncode == 0, f"callpop call failed ({proc.returncode}):\n{output}"
        return output

    def close(self) -> None:
        for proc in self.procs:
            try:
                proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                stop_process(proc)


@pytest.fixture
def dial(service: Service) -> Iterator[Dialer]:
    dialer = Dialer(service)
    try:
        yield dialer
    finally:
        # Every call ends before the next test, so no test sees another's ring.
        dialer.close()


# Package scope, not session: Playwright's sync API keeps an asyncio loop marked as
# running in this thread while it is started, which breaks every asyncio test that
# runs after it. Stopping it when the browser tier ends leaves the thread clean.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium package "
            "(the browser tests never download a browser)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the playwright Python package is missing: pip install -e .[test]")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass(slots=True)
class PageLog:
    lines: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def watch(self, page: Any) -> None:
        page.on("console", lambda m: self.lines.append(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.lines.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.lines.append(f"requestfailed: {r.url}"))

        def on_dialog(dialog: Any) -> None:
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)


@pytest.fixture
def page_log() -> PageLog:
    return PageLog()


@pytest.fixture
def new_page(
    browser: Any, page_log: PageLog, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Any]]:
    """Pages in fresh browser contexts (no cookies, no storage) watched for failures."""
    contexts: list[Any] = []
    pages: list[Any] = []

    def make(viewport: tuple[int, int] = (1280, 800), locale: str = "ja-JP") -> Any:
        context = browser.new_context(
            viewport={"width": viewport[0], "height": viewport[1]},
            locale=locale,
            timezone_id="Asia/Tokyo",
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page_log.watch(page)
        pages.append(page)
        return page

    yield make

    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        for index, page in enumerate(pages):
            path = ARTIFACTS / f"{request.node.name}-{index}.png"
            with contextlib.suppress(Exception):
                page.screenshot(path=str(path), full_page=True)
                print(f"screenshot: {path}")
        print("--- browser console ---")
        print("\n".join(page_log.lines) or "(empty)")
        for value in request.node.funcargs.values():
            if isinstance(value, Service):
                print(f"--- service log (tail) {value.url} ---")
                print(value.log_tail())
    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()


@pytest.fixture
def page(new_page: Callable[..., Any]) -> Any:
    return new_page()


def log_in(page: Any, service: Service, login: str | None = None) -> None:
    """Log in through the login form (as the demo account ``login``, else the
    service's) and wait for the live board."""
    password = service.password
    if login is not None and login != service.login:
        from db.demo import DEMO_ACCOUNTS

        password = next(a.password for a in DEMO_ACCOUNTS if a.login == login)
    page.goto(service.url)
    page.locator("#login-id").fill(login or service.login)
    page.locator("#login-password").fill(password)
    page.locator("#login-submit").click()
    page.locator("#board-screen").wait_for(state="visible")
    page.locator("#conn-status[data-state=open]").wait_for()


@pytest.fixture
def board(page: Any, service: Service) -> Any:
    """A page logged in on the board with the WebSocket connected."""
    log_in(page, service)
    return page


def ringing_card(page: Any, text: str) -> Any:
    """The card of an active (ringing) call showing ``text``."""
    return page.locator("[data-testid=call-card][data-state=ringing]", has_text=text)


def ended_card(page: Any, text: str) -> Any:
    """The card in 最近の着信 of an ended call showing ``text``."""
    return page.locator("#recent-list [data-testid=call-card][data-state=ended]", has_text=text)
